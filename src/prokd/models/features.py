"""Named feature taps: forward hooks that collect intermediate feature maps for feature distillation.

Feature distillation (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015) matches a student's
intermediate feature maps to a teacher's, through 1x1 adapters where the widths differ. A *tap* is a
submodule, named as in ``model.named_modules()``, whose output ``(B, C_l, H_l, W_l)`` is collected on each
forward pass; :func:`tap_channels` gives the ``(C_l, H_l, W_l)`` needed to build the adapters.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from functools import partial
from types import TracebackType
from typing import Any

import torch
from monai.networks.blocks import ADN, Convolution
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["FeatureTaps", "valid_tap_names", "forward_with_features", "tap_channels"]

_LAYER_WRAPPERS = (Convolution, ADN)
_UNCALLED_CONTAINERS = (nn.ModuleList, nn.ModuleDict)


def valid_tap_names(model: nn.Module) -> list[str]:
    """Names of the block-level submodules of ``model``, in definition order: the tap points worth using.

    A block is a submodule with children of its own, except MONAI's single-layer wrappers
    (``Convolution``, ``ADN``) and ``ModuleList`` / ``ModuleDict`` containers, which are never called;
    nothing inside a wrapper is listed. This keeps the list to a few dozen names (encoder and decoder
    blocks, bottleneck), where ``model.named_modules()`` has hundreds. :class:`FeatureTaps` also accepts
    any other submodule name, e.g. a single ``Conv2d``.
    """
    names: list[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            name = prefix + child_name
            if isinstance(child, _UNCALLED_CONTAINERS):
                visit(child, name + ".")
            elif next(child.children(), None) is not None and not isinstance(child, _LAYER_WRAPPERS):
                names.append(name)
                visit(child, name + ".")

    visit(model, "")
    return names


class FeatureTaps:
    """Collect the outputs of the submodules ``names`` of ``model`` on every forward pass.

    Example::

        with FeatureTaps(model, ["model.0", "model.1.submodule.0"]) as taps:
            logits = model(images)  # (B, C, H, W)
            features = taps.outputs()  # name -> (B, C_l, H_l, W_l), in the order of ``names``

    The maps of the latest forward are kept with their autograd graph, so a student can be trained through
    them. A pre-hook on ``model`` clears them when a forward starts, and a tap that fires twice within one
    forward raises: a module run twice has no single feature map. Use as a context manager or call
    :meth:`remove` to detach the hooks.

    Raises:
        ValueError: a name is not a submodule of ``model`` (the message lists the block-level names) or is
            repeated.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.names = tuple(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"feature taps must be distinct, got {list(self.names)}")
        modules = dict(model.named_modules())
        for name in self.names:
            if not name or name not in modules:
                raise ValueError(_unknown_tap_message(model, name, modules))
        self._features: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = [model.register_forward_pre_hook(self._clear)]
        self._handles += [modules[name].register_forward_hook(partial(self._collect, name)) for name in self.names]

    def outputs(self) -> dict[str, torch.Tensor]:
        """The maps ``name -> (B, C_l, H_l, W_l)`` of the latest forward, in the order of ``names``.

        Raises:
            RuntimeError: some taps did not run in the latest forward (or no forward ran yet).
        """
        missing = [name for name in self.names if name not in self._features]
        if missing:
            raise RuntimeError(f"feature taps did not run in the latest forward: {', '.join(missing)}")
        return {name: self._features[name] for name in self.names}

    def remove(self) -> None:
        """Detach all hooks and drop the collected maps."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._features.clear()

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.remove()

    def _clear(self, module: nn.Module, args: Any) -> None:
        self._features.clear()

    def _collect(self, name: str, module: nn.Module, args: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            kind = type(output).__name__
            raise TypeError(f"feature tap '{name}' ({type(module).__name__}) returns a {kind}, not a tensor")
        if name in self._features:
            raise RuntimeError(f"feature tap '{name}' ran twice in one forward; tap a module that runs once")
        self._features[name] = output


def forward_with_features(
    model: nn.Module, x: torch.Tensor, names: Sequence[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model`` on ``x`` ``(B, C, H, W)``; return its logits and the tapped maps ``name -> (B, C_l, H_l, W_l)``."""
    with FeatureTaps(model, names) as taps:
        logits = model(x)
        return logits, taps.outputs()


def tap_channels(
    model: nn.Module, names: Sequence[str], in_shape: tuple[int, int, int]
) -> dict[str, tuple[int, ...]]:
    """Shapes ``name -> (C_l, H_l, W_l)`` of the taps for one input of shape ``in_shape = (C, H, W)``.

    Found by a dry run on one zero image in evaluation mode without gradients, on the model's device and
    dtype; every submodule's training flag is restored afterwards.
    """
    parameter = next(model.parameters())
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros((1, *in_shape), device=parameter.device, dtype=parameter.dtype)
            _, features = forward_with_features(model, x, names)
    finally:
        for module, training in modes.items():
            module.training = training
    return {name: tuple(f.shape[1:]) for name, f in features.items()}


def _unknown_tap_message(model: nn.Module, name: str, modules: dict[str, nn.Module]) -> str:
    """``UNet has no submodule 'x' (did you mean ...?); block-level taps: ...``."""
    close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    blocks = ", ".join(valid_tap_names(model))
    return f"{type(model).__name__} has no submodule '{name}'{hint}; block-level taps: {blocks}"
