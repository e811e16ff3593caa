"""Reading and writing configs: defaults, YAML and dotted overrides merged and type-checked by omegaconf;
unknown keys and wrong types are a ConfigError naming the key."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from synboost.errors import ConfigError

T = TypeVar("T")


def _one_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _explain(exc: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    if isinstance(exc, ConfigKeyError):
        return ConfigError(f"{source}: unknown config key '{key}'")
    if isinstance(exc, ValidationError):
        return ConfigError(f"{source}: bad value for '{key}': {_one_line(exc)}")
    return ConfigError(f"{source}: {_one_line(exc)}")


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Build a ``schema`` dataclass from its defaults, an optional YAML file and dotted overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found (see configs/ for examples)")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {_one_line(e)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of config keys at the top level")
    return merge_config(schema, data, overrides, str(path or schema.__name__))


def merge_config(schema: type[T], data: dict[str, Any], overrides: Sequence[str] = (), source: str = "") -> T:
    """A ``schema`` dataclass from its defaults, merged with ``data`` (read from ``source``) and overrides."""
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    merged: DictConfig = base
    source = source or schema.__name__
    if data:
        try:
            merged = OmegaConf.merge(merged, OmegaConf.create(data))
        except OmegaConfBaseException as e:
            raise _explain(e, source) from None
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override '{ov}': expected key=value, e.g. train.lr=1e-4")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([ov]))
        except OmegaConfBaseException as e:
            raise _explain(e, f"override '{ov}'") from None
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise _explain(e, source) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass (nested)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically)."""
    from synboost.data.io import write_text

    path = Path(path)
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def from_dict(schema: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from a dict (e.g. a checkpoint's metadata), with the same key checks."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(data))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise _explain(e, schema.__name__) from None
