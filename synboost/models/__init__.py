"""Pure blocks: nn.Modules built from arguments; no files, no configs, no CLI.

Models are registered by name (``register_model``) and built with ``create_model(name, **kwargs)``, timm-style.
"""
from synboost.models import ccfpse, discriminator, dissimilarity, generator, segmenter  # noqa: F401  (register builders)
from synboost.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
