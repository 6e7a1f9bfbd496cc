"""A tiny model registry: ``register_model`` (refuses duplicates), ``list_models``, ``get_model``."""

from __future__ import annotations

from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_model(name: str, **config) -> nn.Module:
    """Build a registered model: ``get_model("abn_cifar", num_classes=4, in_channels=1, input_size=(64, 64))``."""
    try:
        builder = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}") from None
    return builder(**config)
