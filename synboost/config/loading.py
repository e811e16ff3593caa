"""Reading and writing configs: defaults, YAML and dotted overrides merged and type-checked by omegaconf;
unknown keys and wrong types are a ConfigError naming the key."""
from __future__ import annotations

import dataclasses
import os
import re
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


def _check_override_value(ov: str, value: str) -> None:
    """The value of ``--set KEY=VALUE`` is read as YAML (by omegaconf): refuse tags (``!!python/object:...``,
    ``!!binary``, ``!custom``) and say what is wrong with malformed YAML, in one line."""
    try:
        tags = [t.value[0] + t.value[1] for t in yaml.scan(value) if isinstance(t, yaml.TagToken)]
        if not tags:
            yaml.compose(value, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{ov}': the value is not valid YAML ({_yaml_problem(e)}); quote it "
                          "(--set 'key=\"...\"') if it is a string, or close the brackets of a list [a, b]") from None
    if tags:
        raise ConfigError(f"override '{ov}': YAML tags ({tags[0]}) are not allowed in a value; give a plain value "
                          "(a number, a string, a list [a, b])")


def _yaml_problem(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None) or getattr(e, "context", None)
    return " ".join(str(problem).split()) if problem else _one_line(e)


def _apply_override(merged: DictConfig, ov: str) -> DictConfig:
    """Merge one ``key=value`` override; every failure (unknown key, wrong type, bad YAML, a tag) is one line."""
    key, eq, value = ov.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"override '{ov}': expected key=value, e.g. train.lr=1e-4")
    _check_override_value(ov, value)
    try:
        return OmegaConf.merge(merged, OmegaConf.from_dotlist([ov]))
    except OmegaConfBaseException as e:
        raise _explain(e, f"override '{ov}'") from None
    except yaml.YAMLError as e:  # what the scan above did not catch (e.g. an undefined alias *x)
        raise ConfigError(f"override '{ov}': the value is not valid YAML ({_yaml_problem(e)})") from None


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Build a ``schema`` dataclass from its defaults, an optional YAML file and dotted overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found (see configs/ for examples)")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.constructor.ConstructorError as e:  # a tag such as !!python/object:...: never constructed
            raise ConfigError(f"{p}: YAML tags are not allowed in a config file ({_yaml_problem(e)}); give plain "
                              "values") from None
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
        merged = _apply_override(merged, ov)
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


_SPEC = re.compile(r"^(?P<kind>[a-z][a-z0-9_]+:)?(?P<path>.*?)(?P<split>@[A-Za-z0-9_]+)?$")


def same_path(a: str, b: str, out_a: str, out_b: str) -> bool:
    """Two path values of two configs (or data specs ``kind:path@split``, the kind and split compared as they
    are) name the same thing: the same file or folder, or the same place relative to each config's own run
    folder ``out_a`` / ``out_b`` (a run moved together with its inputs). Strings without a ``/`` are names,
    never paths."""
    if a == b:
        return True
    if "/" not in a + b or not out_a or not out_b:
        return False
    ma, mb = _SPEC.match(a), _SPEC.match(b)
    if ma["kind"] != mb["kind"] or ma["split"] != mb["split"] or not ma["path"] or not mb["path"]:
        return False
    pa, pb = ma["path"], mb["path"]
    return os.path.abspath(pa) == os.path.abspath(pb) or os.path.relpath(pa, out_a) == os.path.relpath(pb, out_b)


def config_difference(a: dict[str, Any], b: dict[str, Any], ignore: Sequence[str] = ()) -> str | None:
    """The first key (dotted) whose value differs between two configs as dicts, as ``key: A -> B``; None when
    they describe the same run. Paths compare by what they name (:func:`same_path`, relative to each config's
    ``out``); keys in ``ignore`` (dotted) are not compared."""
    out_a, out_b = str(a.get("out", "")), str(b.get("out", ""))

    def walk(x, y, key):
        if key in ignore:
            return None
        if isinstance(x, dict) and isinstance(y, dict):
            for k in list(x) + [k for k in y if k not in x]:
                found = walk(x.get(k), y.get(k), f"{key}.{k}" if key else k)
                if found:
                    return found
            return None
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)) and len(x) == len(y):
            same = all(walk(u, v, key) is None for u, v in zip(x, y))
        elif isinstance(x, str) and isinstance(y, str):
            same = same_path(x, y, out_a, out_b)
        else:
            same = x == y
        return None if same else f"{key}: {x!r} -> {y!r}"

    return walk(a, b, "")


def saved_config_difference(cfg: Any, path: str | os.PathLike, ignore: Sequence[str] = ()) -> str | None:
    """How the config saved at ``path`` (parsed by ``cfg``'s schema, so a field added since at its default is
    no difference) differs from ``cfg``: ``key: saved -> now`` for the first key, None for the same run; a file
    that does not parse, or holds a key the schema no longer has, is a difference too."""
    path = Path(path)
    try:
        saved = yaml.safe_load(path.read_text())
        if not isinstance(saved, dict):
            return f"{path} is not a config"
        return config_difference(to_dict(from_dict(type(cfg), saved)), to_dict(cfg), ignore)
    except (yaml.YAMLError, ConfigError, OSError) as e:
        return f"{path} does not parse ({_one_line(e)})"
