from __future__ import annotations

import pytest
import torch
from torch import nn

import prokd.models.registry as registry
from prokd.models import build_model, get_spec, list_models, register_model

MODEL_NAMES = [spec.name for spec in list_models()]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def test_required_models_are_registered() -> None:
    required = {"unet-large", "unet-small", "unet-tiny", "attention-unet", "segresnet", "basicunet-small"}
    assert required <= set(MODEL_NAMES)
    assert MODEL_NAMES == sorted(MODEL_NAMES)


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("unet-large", 6.4e6, 6.6e6),
        ("unet-small", 0.3e6, 0.5e6),
        ("unet-tiny", 0.1e6, 0.3e6),
        ("basicunet-small", 0.3e6, 0.5e6),
        ("attention-unet", 1.5e6, 3e6),
        ("segresnet", 1e6, 2e6),
        ("flexunet-b0", 6e6, 8e6),
    ],
)
def test_parameter_counts(name: str, low: float, high: float) -> None:
    assert low <= count_parameters(build_model(name)) <= high


def test_in_channels_only_change_the_first_convolution() -> None:
    # a 3x3 convolution from 1 to 3 input channels adds 2 * 3 * 3 weights per output channel (8 for unet-small),
    # and the residual 3x3 projection of the first unit adds as many again
    extra = count_parameters(build_model("unet-small", in_channels=3)) - count_parameters(build_model("unet-small"))
    assert extra == 2 * (2 * 3 * 3 * 8)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize(("in_channels", "out_channels"), [(1, 1), (1, 2), (3, 1), (3, 2)])
def test_forward_returns_full_resolution_logits(name: str, in_channels: int, out_channels: int) -> None:
    model = build_model(name, in_channels, out_channels).eval()
    with torch.no_grad():
        for batch, height, width in [(2, 128, 128), (1, 160, 160), (1, 144, 176)]:
            logits = model(torch.randn(batch, in_channels, height, width))
            assert logits.shape == (batch, out_channels, height, width)
            assert torch.isfinite(logits).all()


def test_unknown_model_lists_registered_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'unet-huge'") as err:
        build_model("unet-huge")
    for name in MODEL_NAMES:
        assert name in str(err.value)


def test_unknown_keyword_lists_accepted_keywords() -> None:
    with pytest.raises(ValueError, match="does not accept dropuot; accepted: channels, strides, num_res_units"):
        build_model("unet-small", dropuot=0.1)


def test_kwargs_override_defaults() -> None:
    dropout_rates = {m.p for m in build_model("unet-small").modules() if isinstance(m, nn.Dropout)}
    assert dropout_rates == {0.0}
    dropout_rates = {m.p for m in build_model("unet-small", dropout=0.2).modules() if isinstance(m, nn.Dropout)}
    assert dropout_rates == {0.2}
    wide = build_model("unet-small", channels=(16, 32, 64, 128, 256))
    assert wide.get_submodule("model.0.conv.unit0.conv").out_channels == 16
    assert get_spec("unet-small").default_kwargs["channels"] == (8, 16, 32, 64, 128)


def test_yaml_style_lists_are_accepted_as_kwargs() -> None:
    model = build_model("unet-small", channels=[8, 16, 32, 64], strides=[2, 2, 2], norm=["instance", {"affine": True}])
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_norm_choices_are_explicit() -> None:
    assert get_spec("unet-large").default_kwargs["norm"] == ("instance", {"affine": True})
    assert norm_layers("unet-small") == {(nn.InstanceNorm2d, True)}
    assert norm_layers("basicunet-small") == {(nn.InstanceNorm2d, True)}
    assert norm_layers("segresnet") == {(nn.GroupNorm, True)}


def norm_layers(name: str) -> set[tuple[type, bool]]:
    """(type, affine) of every normalisation layer of the registered model ``name``."""
    norm_types = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)
    return {(type(m), m.affine) for m in build_model(name).modules() if isinstance(m, norm_types)}


def test_flexible_unet_rejects_non_efficientnet_backbones() -> None:
    with pytest.raises(ValueError, match="efficientnet-b\\* encoder, got 'resnet18'"):
        build_model("flexunet-b0", backbone="resnet18")


def test_default_kwargs_are_read_only() -> None:
    with pytest.raises(TypeError):
        get_spec("unet-small").default_kwargs["dropout"] = 0.5  # type: ignore[index]


def test_a_new_model_is_one_decorated_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model("conv-probe", description="one 3x3 convolution", default_taps=("0",), width=4)
    def conv_probe(in_channels: int, out_channels: int, *, width: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.Conv2d(width, out_channels, 1))

    assert "conv-probe" in [spec.name for spec in registry.list_models()]
    model = build_model("conv-probe", 2, 1, width=5)
    assert count_parameters(model) == (2 * 9 * 5 + 5) + (5 + 1)
    assert get_spec("conv-probe").accepted_kwargs() == ("width",)


def test_register_rejects_duplicates_and_incomplete_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def probe(in_channels: int, out_channels: int, *, width: int, depth: int) -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="'unet-small' is already registered"):
        register_model("unet-small", description="", default_taps=(), width=1, depth=1)(probe)
    with pytest.raises(ValueError, match=r"missing \['width'\], unknown \['widht'\]"):
        register_model("probe", description="", default_taps=(), widht=1, depth=1)(probe)
    assert "probe" not in registry._REGISTRY
