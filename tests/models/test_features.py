from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from prokd.models import (
    FeatureTaps,
    ModelSpec,
    build_model,
    forward_with_features,
    list_models,
    tap_channels,
    valid_tap_names,
)

SPECS = list_models()
UNET_BOTTLENECK = "model.1.submodule.1.submodule.1.submodule.1.submodule"


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


class SharedBlock(nn.Module):
    """Runs its ``block`` twice per forward, so the block has no single feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.block(x))


class TupleBlock(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


class SkippedBranch(nn.Module):
    """``unused`` is never called; ``pair`` returns a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Conv2d(1, 1, 1)
        self.unused = nn.Conv2d(1, 1, 1)
        self.pair = TupleBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pair(self.used(x))[0]


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
def test_default_taps_fire_once_at_halving_resolutions(spec: ModelSpec) -> None:
    model = build_model(spec.name, in_channels=3).eval()
    calls: Counter[str] = Counter()
    for name in spec.default_taps:
        model.get_submodule(name).register_forward_hook(lambda *_, name=name: calls.update([name]))
    assert 2 <= len(spec.default_taps) <= 4
    assert set(spec.default_taps) <= set(valid_tap_names(model))
    with torch.no_grad():
        logits, features = forward_with_features(model, torch.randn(2, 3, 128, 96), spec.default_taps)
    assert calls == Counter(spec.default_taps)
    assert list(features) == list(spec.default_taps)
    # every registered model taps its encoder at 1/2, 1/4, 1/8 (and 1/16) of the input
    assert [f.shape[2:] for f in features.values()] == [(128 >> k, 96 >> k) for k in range(1, len(features) + 1)]
    assert all(f.shape[0] == 2 for f in features.values())
    assert logits.shape == (2, 1, 128, 96)


def test_tapped_maps_are_the_submodule_outputs() -> None:
    model = build_model("unet-small").eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        logits, features = forward_with_features(model, x, ["model.0", "model.1.submodule.0"])
        first = model.get_submodule("model.0")(x)
        second = model.get_submodule("model.1.submodule.0")(first)
        assert torch.equal(logits, model(x))
    assert torch.equal(features["model.0"], first)
    assert torch.equal(features["model.1.submodule.0"], second)


def test_tap_channels_of_unet_small() -> None:
    model = build_model("unet-small", in_channels=3)
    expected = {
        "model.0": (8, 80, 80),
        "model.1.submodule.0": (16, 40, 40),
        "model.1.submodule.1.submodule.0": (32, 20, 20),
        UNET_BOTTLENECK: (128, 10, 10),
    }
    assert tap_channels(model, list(expected), (3, 160, 160)) == expected


def test_tap_channels_restores_training_flags() -> None:
    model = build_model("unet-small").train()
    model.get_submodule("model.0").eval()
    before = {name: module.training for name, module in model.named_modules()}
    tap_channels(model, ["model.0"], (1, 32, 32))
    assert {name: module.training for name, module in model.named_modules()} == before
    assert before["model"] and not before["model.0"]


def test_bad_tap_name_lists_valid_names() -> None:
    model = build_model("unet-small")
    with pytest.raises(ValueError) as err:
        FeatureTaps(model, ["model.0", "model.1.submodule.O"])
    message = str(err.value)
    assert message.startswith("UNet has no submodule 'model.1.submodule.O' (did you mean model.1.submodule.")
    assert "block-level taps: model, model.0, model.0.conv, model.1, " in message
    assert UNET_BOTTLENECK in message
    assert len(valid_tap_names(model)) < 50 < len(dict(model.named_modules()))


def test_valid_tap_names_skip_layer_wrappers_and_single_layers() -> None:
    names = valid_tap_names(build_model("basicunet-small"))
    assert names[:5] == ["conv_0", "down_1", "down_1.convs", "down_2", "down_2.convs"]
    assert not [name for name in names if name.endswith((".conv", ".adn", "max_pooling")) or "conv_0." in name]


def test_any_submodule_is_accepted_as_a_tap() -> None:
    model = build_model("unet-small").eval()
    with torch.no_grad():
        _, features = forward_with_features(model, torch.zeros(1, 1, 32, 32), ["model.0.conv.unit0.conv"])
    assert features["model.0.conv.unit0.conv"].shape == (1, 8, 16, 16)


def test_repeated_tap_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="must be distinct"):
        FeatureTaps(build_model("unet-tiny"), ["model.0", "model.0"])


def test_root_is_not_a_tap() -> None:
    with pytest.raises(ValueError, match="has no submodule ''"):
        FeatureTaps(SharedBlock(), [""])


def test_module_run_twice_raises() -> None:
    model = SharedBlock()
    with FeatureTaps(model, ["block"]), pytest.raises(RuntimeError, match="'block' ran twice in one forward"):
        model(torch.zeros(1, 1, 2, 2))


def test_non_tensor_output_raises() -> None:
    model = SkippedBranch()
    with FeatureTaps(model, ["pair"]), pytest.raises(TypeError, match="'pair' \\(TupleBlock\\) returns a tuple"):
        model(torch.zeros(1, 1, 2, 2))


def test_taps_that_did_not_run_are_named() -> None:
    model = SkippedBranch()
    with FeatureTaps(model, ["used", "unused"]) as taps:
        with pytest.raises(RuntimeError, match="did not run in the latest forward: used, unused"):
            taps.outputs()
        model(torch.zeros(1, 1, 2, 2))
        with pytest.raises(RuntimeError, match="did not run in the latest forward: unused$"):
            taps.outputs()


def test_each_forward_replaces_the_maps_and_keeps_the_graph() -> None:
    model = build_model("unet-tiny").train()
    with FeatureTaps(model, ["model.0", UNET_BOTTLENECK]) as taps:
        model(torch.randn(2, 1, 64, 64))
        model(torch.randn(2, 1, 32, 48))
        features = taps.outputs()
        assert features[UNET_BOTTLENECK].shape == (2, 128, 2, 3)
        features[UNET_BOTTLENECK].square().mean().backward()
    first_weight = model.get_submodule("model.0.conv.unit0.conv").weight
    assert first_weight.grad is not None and first_weight.grad.abs().sum() > 0


def test_remove_detaches_every_hook() -> None:
    model = build_model("unet-tiny")
    taps = FeatureTaps(model, ["model.0", UNET_BOTTLENECK])
    taps.remove()
    assert not model._forward_pre_hooks
    assert not [name for name, module in model.named_modules() if module._forward_hooks]
    model(torch.zeros(1, 1, 32, 32))
    with pytest.raises(RuntimeError, match="did not run"):
        taps.outputs()
