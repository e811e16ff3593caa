"""A name -> builder registry for every network of the package (timm's ``create_model`` pattern)."""
from __future__ import annotations

from typing import Callable

import torch

_MODELS: dict[str, Callable[..., torch.nn.Module]] = {}


def register_model(name: str):
    """Decorator: register a builder under ``name`` (a second registration of one name is an error)."""
    def deco(fn):
        if name in _MODELS:
            raise ValueError(f"model '{name}' registered twice")
        _MODELS[name] = fn
        return fn
    return deco


def create_model(name: str, **kwargs) -> torch.nn.Module:
    """Build the registered model ``name`` with ``kwargs`` (timm's ``create_model``)."""
    _import_all()
    if name not in _MODELS:
        raise KeyError(f"unknown model '{name}'; known: {', '.join(sorted(_MODELS))}")
    return _MODELS[name](**kwargs)


def list_models() -> list[str]:
    """The names of every registered model, sorted."""
    _import_all()
    return sorted(_MODELS)


def _import_all() -> None:
    """Importing the package imports every model module, which registers its builders."""
    import synboost.models  # noqa: F401
