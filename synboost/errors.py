"""The package's error types.

Every error a user can cause (a missing file, a corrupt image, a wrong config key, a checkpoint of another
model) is raised as a :class:`SynboostError` whose message is one line naming the file or key and the fix.
The CLI prints that line and exits with status 2, never a traceback.
"""


class SynboostError(Exception):
    """Base class: a user-facing error whose message is one complete line."""


class ConfigError(SynboostError):
    """A config file or override is wrong (unknown key, wrong type, missing file)."""


class DataError(SynboostError):
    """A dataset, image or label file is missing or malformed."""


class ImageReadError(DataError):
    """One image or label file cannot be used (corrupt, empty, wrong size, unknown ids)."""


class CheckpointError(SynboostError):
    """A checkpoint is missing, unsafe, or belongs to another model."""
