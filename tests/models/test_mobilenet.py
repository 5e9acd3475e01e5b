"""Backbone behaviour, generated from the registry so a new model is tested by construction."""

from pathlib import Path

import pytest
import torch

from mobilenet_pl import create_model, list_models, mobilenet_v1, mobilenet_v2
from mobilenet_pl.models.blocks import InvertedResidual

MODELS = list_models()
WIDTHS = [0.25, 0.5, 1.0, 1.4]
GOLDEN = Path(__file__).parent.parent / "golden"


def test_registry_lists_both_generations() -> None:
    assert MODELS == ["mobilenet_v1", "mobilenet_v2"]
    assert type(create_model("v2")) is type(mobilenet_v2())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("width", WIDTHS)
def test_output_shape(name: str, width: float) -> None:
    model = create_model(name, width=width, num_classes=7).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("resolution", [32, 33, 96, 127])
def test_any_input_size_from_32(name: str, resolution: int) -> None:
    model = create_model(name, width=0.25, num_classes=3).eval()
    assert model(torch.randn(1, 3, resolution, resolution + 5)).shape == (1, 3)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("small_input", [False, True])
def test_feature_info_describes_real_feature_maps(name: str, small_input: bool) -> None:
    model = create_model(name, width=0.5, small_input=small_input).eval()
    x = torch.randn(1, 3, 64, 64)
    out = model.stem(x)
    maps = {}
    for i, stage in enumerate(model.stages):
        out = stage(out)
        maps[f"stages.{i}"] = out
    for info in model.feature_info:
        fmap = maps[info["module"]]
        assert fmap.shape[1] == info["num_chs"]
        assert 64 // fmap.shape[-1] == info["reduction"]
    expected = [1, 1, 2, 4, 8] if small_input else [2, 4, 8, 16, 32]
    assert model.feature_info.reduction()[-len(expected) :] == expected[-len(model.feature_info) :]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("out_indices", [None, (0, 2, 4), (1,), (-1,)])
def test_features_only(name: str, out_indices: tuple[int, ...] | None) -> None:
    model = create_model(name, width=0.5, features_only=True, out_indices=out_indices).eval()
    full = create_model(name, width=0.5)
    indices = range(5) if out_indices is None else out_indices
    expected = [full.feature_info[i] for i in indices]
    feats = model(torch.randn(2, 3, 128, 128))
    assert len(feats) == len(expected) == len(model.feature_info)
    for fmap, info in zip(feats, expected, strict=True):
        assert fmap.shape == (2, info["num_chs"], 128 // info["reduction"], 128 // info["reduction"])
    assert model.feature_info.channels() == [i["num_chs"] for i in expected]
    assert not any(k.startswith(("classifier", "head")) for k in model.state_dict())


def test_features_only_matches_timm_taps() -> None:
    timm = pytest.importorskip("timm")
    for ours, theirs in [("mobilenet_v1", "mobilenetv1_100"), ("mobilenet_v2", "mobilenetv2_100")]:
        ref = timm.create_model(theirs, features_only=True, pretrained=False)
        model = create_model(ours, features_only=True)
        assert model.feature_info.channels() == ref.feature_info.channels()
        assert model.feature_info.reduction() == ref.feature_info.reduction()


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_keys_are_a_stable_contract(name: str) -> None:
    golden = (GOLDEN / f"{name}_keys.txt").read_text().split()
    assert list(create_model(name).state_dict()) == golden


@pytest.mark.parametrize("name", MODELS)
def test_backbone_surface(name: str) -> None:
    model = create_model(name, width=0.5, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features
    pooled = model.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    model.reset_classifier(4)
    assert model(x).shape == (2, 4) and model.num_classes == 4
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


def test_v2_head_width_rule() -> None:
    # the final 1x1 conv keeps 1280 below width 1 and scales above it (torchvision, timm, TF agree)
    assert mobilenet_v2(width=0.35).num_features == 1280
    assert mobilenet_v2(width=1.4).num_features == 1792
    assert mobilenet_v1(width=0.5).num_features == 512


def test_v2_residuals_only_where_shape_is_kept() -> None:
    model = mobilenet_v2()
    blocks = [b for b in model.modules() if isinstance(b, InvertedResidual)]
    # Table 2: n - 1 shortcuts per row (the first block of a row changes width or stride)
    assert sum(b.has_shortcut for b in blocks) == (1 - 1) + (2 - 1) + (3 - 1) + (4 - 1) + (3 - 1) + (3 - 1) + (1 - 1)
    assert all(isinstance(b.conv_pwl.act, torch.nn.Identity) for b in blocks), "projection must be linear"


def test_v1_has_no_shortcuts_and_relu6_by_default() -> None:
    model = mobilenet_v1()
    assert not any(isinstance(m, InvertedResidual) for m in model.modules())
    assert sum(isinstance(m, torch.nn.ReLU6) for m in model.modules()) == 27  # stem + 13 x (dw, pw)
    relu = mobilenet_v1(act_layer="relu")
    assert not any(isinstance(m, torch.nn.ReLU6) for m in relu.modules())


def test_drop_path_linear_schedule_on_residual_blocks_only() -> None:
    model = mobilenet_v2(drop_path_rate=0.2)
    blocks = [b for b in model.modules() if isinstance(b, InvertedResidual)]
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]
    assert all(r == 0.0 for b, r in zip(blocks, rates, strict=True) if not b.has_shortcut)
    shortcut_rates = [r for b, r in zip(blocks, rates, strict=True) if b.has_shortcut]
    assert shortcut_rates == sorted(shortcut_rates) and 0 < shortcut_rates[0] < shortcut_rates[-1] < 0.2
    model.train()
    x = torch.randn(4, 3, 32, 32)
    assert not torch.equal(model(x), model(x))  # stochastic in training
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_xavier_init_differs_from_default() -> None:
    default, xavier = mobilenet_v1(width=0.25), mobilenet_v1(width=0.25, init="xavier")
    w_default, w_xavier = default.stages[0][0].conv_pw.conv.weight, xavier.stages[0][0].conv_pw.conv.weight
    fan_in, fan_out = w_xavier.shape[1], w_xavier.shape[0]
    bound = (6 / (fan_in + fan_out)) ** 0.5
    assert w_xavier.abs().max() <= bound
    assert w_default.std() > w_xavier.std()  # He-normal (fan_out) is wider than Glorot here


@pytest.mark.parametrize("name", MODELS)
def test_channels_last_gives_same_output(name: str) -> None:
    model = create_model(name, width=0.5).eval()
    x = torch.randn(2, 3, 64, 64)
    ref = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("features_only", [False, True])
def test_torchscript(name: str, features_only: bool) -> None:
    model = create_model(name, width=0.25, features_only=features_only).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(1, 3, 64, 64)
    out, ref = scripted(x), model(x)
    for a, b in zip(out if features_only else [out], ref if features_only else [ref], strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(Exception, match="input size must be at least 32x32"):
        scripted(torch.randn(1, 3, 16, 64))


@pytest.mark.slow
def test_torch_compile_keeps_clean_keys() -> None:
    model = mobilenet_v2(width=0.35, num_classes=5).eval()
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
    assert list(model.state_dict()) == list(mobilenet_v2(width=0.35, num_classes=5).state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 0}, "width must be a number > 0, got 0"),
        ({"width": -0.5}, "width must be a number > 0, got -0.5"),
        ({"width": "wide"}, "width must be a number > 0, got 'wide'"),
        ({"num_classes": -1}, "num_classes must be a whole number >= 0"),
        ({"num_classes": 2.5}, "num_classes must be a whole number >= 0, got 2.5"),
        ({"in_chans": 2.5}, "in_chans must be a whole number >= 1, got 2.5"),
        ({"act_layer": None}, "act_layer=None is unknown"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"drop_path_rate": -0.1}, "drop_path_rate must be a number >= 0"),
        ({"init": "orthogonal"}, "init must be 'default' or 'xavier'"),
        ({"act_layer": "gelu6"}, "act_layer='gelu6' is unknown"),
        ({"out_indices": (0,)}, "out_indices is only valid with features_only=True"),
        ({"features_only": True, "out_indices": (5,)}, r"out_indices must be indices in \[0, 4\]"),
    ],
)
def test_bad_arguments_name_key_value_and_range(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_model("v2", **kwargs)


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(
        ValueError, match=r"model='v3' is unknown; choose one of \['mobilenet_v1', 'mobilenet_v2', 'v1', 'v2'\]"
    ):
        create_model("v3")


@pytest.mark.parametrize("name", MODELS)
def test_input_smaller_than_32_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"input size must be at least 32x32 .*got 31x40"):
        create_model(name, width=0.25)(torch.randn(1, 3, 31, 40))
