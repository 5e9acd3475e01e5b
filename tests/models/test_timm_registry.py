"""Our models in timm's registry: every timm.create_model keyword, pretrained_cfg, peers' weights by file."""

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from timm.models._features import FeatureGetterNet, FeatureListNet

import mobilenet_pl  # registers the models in timm
from mobilenet_pl import MobileNet, MobileNetFeatures
from mobilenet_pl.models import MIN_INPUT_SIZE
from mobilenet_pl.models.timm_registry import VARIANTS

X = torch.randn(2, 3, 64, 64)


def _randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics and affine terms, so converted weights are really compared."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor in (module.weight, module.bias, module.running_mean):
                tensor.data.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.data.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


def test_ten_architectures_registered_with_real_pretrained_cfgs() -> None:
    names = timm.list_models("mobilenet_pl_*")
    assert names == sorted(f"mobilenet_pl_v1_{w}" for w in ("025", "050", "075", "100", "125")) + sorted(
        f"mobilenet_pl_v2_{w}" for w in ("035", "050", "075", "100", "140")
    )
    assert set(timm.list_pretrained("mobilenet_pl_v2_100*")) == {
        "mobilenet_pl_v2_100.tv2_in1k",
        "mobilenet_pl_v2_100.tv_in1k",
        "mobilenet_pl_v2_100.ra_in1k",
    }
    # the default (first) tag is torchvision's IMAGENET1K_V2, as for mobilenet_v2(pretrained=True)
    default = timm.models.get_pretrained_cfg("mobilenet_pl_v2_100")
    assert default.tag == "tv2_in1k" and default.url == torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V2.url
    assert default.crop_pct == pytest.approx(224 / 232)  # torchvision's resize 232 -> crop 224
    ra = timm.models.get_pretrained_cfg("mobilenet_pl_v2_100.ra_in1k")
    assert ra.hf_hub_id == "timm/mobilenetv2_100.ra_in1k"
    v1 = timm.models.get_pretrained_cfg("mobilenet_pl_v1_100")
    assert v1.mean == timm.models.get_pretrained_cfg("mobilenetv1_100").mean  # timm's weights, timm's normalisation
    for name in names:
        cfg = timm.create_model(name).pretrained_cfg
        assert cfg["first_conv"] == "stem.conv" and cfg["classifier"] == "classifier"
        assert cfg["input_size"] == (3, 224, 224) and cfg["pool_size"] == (7, 7)
        assert cfg["min_input_size"] == (3, MIN_INPUT_SIZE, MIN_INPUT_SIZE)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_matches_our_builder(variant: str) -> None:
    name, _, width = VARIANTS[variant]
    ours = mobilenet_pl.create_model(name, width=width)
    theirs = timm.create_model(variant)
    assert isinstance(theirs, MobileNet)
    assert {k: v.shape for k, v in theirs.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}


def test_every_timm_keyword() -> None:
    model = timm.create_model(
        "mobilenet_pl_v2_035", num_classes=7, in_chans=1, drop_rate=0.3, drop_path_rate=0.1, global_pool="max"
    )
    assert model.stem.conv.in_channels == 1 and model.in_chans == 1
    assert model.classifier.out_features == 7 and model.num_classes == 7
    assert model.dropout.p == 0.3
    assert max(getattr(m, "drop_prob", 0.0) for m in model.modules()) > 0
    assert model.global_pool.pool_type == "max"
    assert model.eval()(torch.randn(2, 1, 64, 64)).shape == (2, 7)

    spatial = timm.create_model("mobilenet_pl_v1_025", num_classes=0, global_pool="")
    assert spatial(X).shape == (2, 256, 2, 2)

    features = timm.create_model("mobilenet_pl_v2_075", features_only=True, out_indices=(1, 3))
    assert type(features) is MobileNetFeatures
    assert [f.shape[1] for f in features(X)] == features.feature_info.channels() == [24, 72]
    assert "num_classes" not in features.pretrained_cfg

    for feature_cls in ("getter", "hook", "dict", "list", "fx"):
        wrapped = timm.create_model(
            "mobilenet_pl_v2_075", features_only=True, out_indices=(1, 3), feature_cls=feature_cls
        )
        out = wrapped.eval()(X)
        out = list(out.values()) if isinstance(out, dict) else out
        for ours, theirs in zip(features.eval()(X), out, strict=True):
            assert ours.shape == theirs.shape, feature_cls
    assert isinstance(timm.create_model("mobilenet_pl_v1_050", features_only=True, feature_cls="list"), FeatureListNet)
    assert isinstance(
        timm.create_model("mobilenet_pl_v1_050", features_only=True, feature_cls="getter"), FeatureGetterNet
    )

    overlay = timm.create_model("mobilenet_pl_v2_050", pretrained_cfg_overlay={"input_size": (3, 160, 160)})
    assert overlay.pretrained_cfg["input_size"] == (3, 160, 160)

    with pytest.raises(TypeError):
        timm.create_model("mobilenet_pl_v2_050", not_a_model_arg=1)


def test_device_and_dtype_keywords() -> None:
    model = timm.create_model("mobilenet_pl_v1_025", device="meta", dtype=torch.float64)
    assert {t.device.type for t in model.parameters()} == {"meta"}
    assert {t.dtype for t in model.parameters()} == {torch.float64}


@pytest.mark.parametrize("source", ["torchvision", "timm", "mobilenet_pl"])
def test_pretrained_file_from_each_library(source: str, tmp_path: Path) -> None:
    if source == "torchvision":
        reference: torch.nn.Module = torchvision.models.mobilenet_v2()
    elif source == "timm":
        reference = timm.create_model("mobilenetv2_100", drop_rate=0.2)
    else:
        reference = mobilenet_pl.mobilenet_v2()
    reference = _randomize_bn(reference)
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    model = timm.create_model("mobilenet_pl_v2_100", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    torch.testing.assert_close(model.eval()(X), reference(X))

    # features_only loads the same file strictly, dropping only what the sibling does not build
    features = timm.create_model(
        "mobilenet_pl_v2_100", pretrained=True, features_only=True, pretrained_cfg_overlay={"file": str(path)}
    ).eval()
    torch.testing.assert_close(features(X)[-1], model.forward_intermediates(X, intermediates_only=True)[-1])

    # timm adapts the stem to in_chans and drops a classifier of another size
    gray = timm.create_model(
        "mobilenet_pl_v2_100", pretrained=True, in_chans=1, num_classes=5, pretrained_cfg_overlay={"file": str(path)}
    )
    assert gray.stem.conv.weight.shape[1] == 1 and gray.classifier.out_features == 5
    torch.testing.assert_close(gray.stem.conv.weight, model.stem.conv.weight.sum(1, keepdim=True))


def test_pretrained_v1_file_from_timm(tmp_path: Path) -> None:
    reference = _randomize_bn(timm.create_model("mobilenetv1_100"))
    torch.save(reference.state_dict(), tmp_path / "v1.pth")
    model = timm.create_model(
        "mobilenet_pl_v1_100", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "v1.pth")}
    )
    torch.testing.assert_close(model.eval()(X), reference(X))


def test_untrained_width_has_no_weights() -> None:
    with pytest.raises(RuntimeError, match="No pretrained weights exist"):
        timm.create_model("mobilenet_pl_v2_075", pretrained=True)
