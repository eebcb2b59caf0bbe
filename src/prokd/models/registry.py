"""Registry of 2D segmentation networks by name, so that a new architecture is one file.

Each architecture family module (e.g. :mod:`prokd.models.unet`) defines one builder
``builder(in_channels, out_channels, *, ...) -> nn.Module`` with keyword-only hyper-parameters and
decorates it with :func:`register_model` once per named configuration. Importing :mod:`prokd.models`
imports every family module, which fills the registry.

Every registered network maps an input ``(B, in_channels, H, W)``, with ``H`` and ``W`` multiples of 16,
to logits ``(B, out_channels, H, W)``: one logit for a sigmoid, two for a softmax.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import nn

__all__ = ["ModelSpec", "register_model", "build_model", "get_spec", "list_models"]

ModelBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """One named network configuration.

    Attributes:
        name: registry name, e.g. ``"unet-small"``.
        builder: ``builder(in_channels, out_channels, **kwargs) -> nn.Module``.
        description: one line for listings (role, size, architecture).
        default_taps: names of submodules (as in ``model.named_modules()``) whose outputs serve as
            feature-distillation taps, shallowest first, at decreasing spatial resolution. They refer to
            the default depth; overriding the depth (e.g. the length of ``channels``) needs explicit taps.
        default_kwargs: keyword arguments passed to ``builder`` unless overridden.
    """

    name: str
    builder: ModelBuilder
    description: str
    default_taps: tuple[str, ...]
    default_kwargs: Mapping[str, Any]

    def accepted_kwargs(self) -> tuple[str, ...]:
        """Names of the keyword-only hyper-parameters of ``builder``."""
        parameters = inspect.signature(self.builder).parameters.values()
        return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, description: str, default_taps: tuple[str, ...], **default_kwargs: Any
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder`` under ``name`` with ``default_kwargs``; returns ``builder`` unchanged.

    Decorators may be stacked to register several configurations of one builder. The defaults must
    name exactly the builder's keyword-only parameters, so that every hyper-parameter of a registered
    model is explicit.

    Raises:
        ValueError: ``name`` is already registered or the defaults do not match the builder's parameters.
    """

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered")
        spec = ModelSpec(name, builder, description, tuple(default_taps), MappingProxyType(dict(default_kwargs)))
        expected, given = set(spec.accepted_kwargs()), set(default_kwargs)
        if given != expected:
            raise ValueError(
                f"model '{name}': defaults must set exactly {sorted(expected)}; "
                f"missing {sorted(expected - given)}, unknown {sorted(given - expected)}"
            )
        _REGISTRY[name] = spec
        return builder

    return decorate


def get_spec(name: str) -> ModelSpec:
    """The registered :class:`ModelSpec` called ``name``.

    Raises:
        ValueError: no model of that name; the message lists the registered names.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model '{name}'; registered models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_models() -> list[ModelSpec]:
    """All registered models, sorted by name."""
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def build_model(name: str, in_channels: int = 1, out_channels: int = 1, **kwargs: Any) -> nn.Module:
    """Build the registered network ``name``; ``kwargs`` override its ``default_kwargs``.

    Args:
        name: registry name (see :func:`list_models`).
        in_channels: input channels ``C`` of ``(B, C, H, W)``; ``2 * context + 1`` for 2.5D input.
        out_channels: 1 (sigmoid) or 2 (softmax) logits.
        kwargs: hyper-parameter overrides, e.g. ``dropout=0.1``.

    Raises:
        ValueError: unknown model name, or a keyword the model does not accept (both listed in the message).
    """
    spec = get_spec(name)
    unknown = sorted(set(kwargs) - set(spec.accepted_kwargs()))
    if unknown:
        raise ValueError(
            f"model '{name}' does not accept {', '.join(unknown)}; accepted: {', '.join(spec.accepted_kwargs())}"
        )
    return spec.builder(in_channels, out_channels, **{**spec.default_kwargs, **kwargs})
