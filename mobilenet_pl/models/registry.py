"""The model registry: every builder is addressable by name (``"v2"``); imports nothing else of ours,
so checkpoint readers and converters can resolve names without importing the builders' dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_MODELS: dict[str, Callable[..., Any]] = {}
_ALIASES = {"v1": "mobilenet_v1", "v2": "mobilenet_v2"}
Builder = TypeVar("Builder", bound=Callable[..., Any])


def register_model(fn: Builder) -> Builder:
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered models (``create_model`` also takes the short aliases ``v1``, ``v2``)."""
    return sorted(_MODELS)


def resolve_model_name(name: str) -> str:
    """Canonical registry name for ``name`` or an alias; ValueError listing the choices otherwise."""
    canonical = _ALIASES.get(name, name)
    if canonical not in _MODELS:
        choices = sorted([*_MODELS, *_ALIASES])
        raise ValueError(f"model={name!r} is unknown; choose one of {choices}")
    return canonical


def build_registered(name: str, **kwargs: Any) -> Any:
    """The registered builder of ``name`` (or an alias) called with ``kwargs``: `create_model` without the
    typed overloads, for readers below the builders (the weights reader checks shapes with it)."""
    return _MODELS[resolve_model_name(name)](**kwargs)
