"""Parity with the independent references: torchvision's and timm's models after weight conversion."""

from pathlib import Path

import pytest
import timm
import torch
import torchvision

from mobilenet_pl import convert_state_dict, create_model
from mobilenet_pl.models import convert
from mobilenet_pl.models.convert import check_state_dict, detect_source, to_foreign_state_dict
from mobilenet_pl.models.weights import WeightsFileError, read_weights

TIMM_MODELS = [
    ("mobilenetv1_100", "mobilenet_v1", 1.0),
    ("mobilenetv1_125", "mobilenet_v1", 1.25),
    ("mobilenetv2_050", "mobilenet_v2", 0.5),
    ("mobilenetv2_100", "mobilenet_v2", 1.0),
    ("mobilenetv2_140", "mobilenet_v2", 1.4),
]


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights and non-trivial BN statistics, so a wrongly mapped BN cannot hide."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2, generator=gen)
                module.running_var.uniform_(0.5, 2.0, generator=gen)
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.normal_(0, 0.2, generator=gen)
    return model.eval()


def assert_same_function(theirs: torch.nn.Module, ours: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert expected.abs().max() > 0.1  # a meaningful signal, not all zeros
    assert (expected - got).abs().max() <= 1e-5


@pytest.mark.parametrize("width", [0.35, 0.5, 0.75, 1.0, 1.4])
def test_torchvision_parity(width: float) -> None:
    theirs = randomize(torchvision.models.mobilenet_v2(width_mult=width))
    ours = create_model("v2", width=width).eval()
    ours.load_state_dict(convert_state_dict(theirs.state_dict(), "torchvision"), strict=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert_same_function(theirs, ours)


@pytest.mark.parametrize(("timm_name", "name", "width"), TIMM_MODELS)
def test_timm_parity(timm_name: str, name: str, width: float) -> None:
    theirs = randomize(timm.create_model(timm_name, pretrained=False))
    ours = create_model(name, width=width).eval()
    ours.load_state_dict(convert_state_dict(theirs.state_dict(), "timm"), strict=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert_same_function(theirs, ours)


def test_detect_source_and_unknown_state_dict() -> None:
    assert detect_source(torchvision.models.mobilenet_v2().state_dict()) == "torchvision"
    assert detect_source(timm.create_model("mobilenetv1_100").state_dict()) == "timm"
    assert detect_source(create_model("v1").state_dict()) == "mobilenet_pl"
    with pytest.raises(ValueError, match="not a MobileNet from torchvision, timm or mobilenet_pl"):
        detect_source({"fc.weight": torch.zeros(1)})


def test_wrong_width_is_reported_key_by_key() -> None:
    state = convert_state_dict(torchvision.models.mobilenet_v2(width_mult=0.5).state_dict())
    with pytest.raises(ValueError, match=r"mis-shaped \(\d+\): .*checkpoint \(16, 3, 3, 3\) vs model \(32, 3, 3, 3\)"):
        check_state_dict(create_model("v2"), state)
    with pytest.raises(ValueError, match=r"missing \(6\): head.conv.weight, head.bn.weight"):
        check_state_dict(create_model("v2", width=0.5), {k: v for k, v in state.items() if not k.startswith("head")})


def test_local_file_in_every_format(tmp_path: Path) -> None:
    ref = randomize(timm.create_model("mobilenetv2_050"))
    files = {
        "timm.pth": ref.state_dict(),
        "lightning.ckpt": {"state_dict": {f"backbone.{k}": v for k, v in convert_state_dict(ref.state_dict()).items()}},
        "tv.pth": torchvision.models.mobilenet_v2(width_mult=0.5).state_dict(),
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
    from safetensors.torch import save_file

    save_file(ref.state_dict(), tmp_path / "timm.safetensors")
    for name in ["timm.pth", "lightning.ckpt", "timm.safetensors"]:
        ours = create_model("v2", width=0.5, pretrained=str(tmp_path / name)).eval()
        assert_same_function(ref, ours)
    assert set(read_weights(tmp_path / "tv.pth").state_dict) == set(create_model("v2", width=0.5).state_dict())


def test_pretrained_file_into_other_num_classes_and_features(tmp_path: Path) -> None:
    ref = randomize(timm.create_model("mobilenetv1_100"))
    torch.save(ref.state_dict(), tmp_path / "v1.pth")
    ten = create_model("v1", num_classes=10, pretrained=tmp_path / "v1.pth")
    torch.testing.assert_close(ten.stem.conv.weight, ref.conv_stem.weight)
    assert ten.classifier.weight.shape == (10, 1024)
    feats = create_model("v1", features_only=True, pretrained=tmp_path / "v1.pth")
    torch.testing.assert_close(feats.stages[4][1].conv_pw.conv.weight, ref.blocks[4][1].conv_pw.weight)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    torch.save({"model": create_model("v1", width=0.25)}, tmp_path / "pickled.pth")  # a whole module: code
    with pytest.raises(
        WeightsFileError,
        match=r"pretrained=.*pickled.pth' is not allowed: it holds pickled objects: .*refused for safety",
    ):
        create_model("v1", width=0.25, pretrained=str(tmp_path / "pickled.pth"))


def test_missing_file_and_unknown_tag() -> None:
    with pytest.raises(
        WeightsFileError, match=r"pretrained='/nonexistent/weights\.pth' is not allowed: the file does not exist"
    ):
        create_model("v2", pretrained="/nonexistent/weights.pth")
    with pytest.raises(ValueError, match=r"pretrained='imagenet21k' is neither a tag .*\['torchvision_v2'"):
        create_model("v2", pretrained="imagenet21k")


def test_no_weights_for_width_says_which_exist() -> None:
    with pytest.raises(
        ValueError, match=r"no ImageNet weights for mobilenet_v2 width 0.75.*mobilenet_v1 width 1 \(timm\), 1.25"
    ):
        create_model("v2", width=0.75, pretrained=True)


@pytest.mark.parametrize("name", ["v1", "v2"])
def test_offline_download_fails_with_one_clear_message(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Real download code, pointed at empty caches with the hubs offline: it must fail fast and clearly.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(RuntimeError, match=r"could not fetch .* offline\? .*pass pretrained='/path/to/weights.pth'"):
        create_model(name, pretrained=True)


def test_download_path_is_used_for_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    served = randomize(torchvision.models.mobilenet_v2())
    asked = []

    def fake_download(weights: convert.PretrainedWeights) -> dict:
        asked.append(weights)
        return served.state_dict()

    monkeypatch.setattr(convert, "_download", fake_download)
    ours = create_model("v2", pretrained="torchvision_v1").eval()
    assert asked == [convert.PRETRAINED[("mobilenet_v2", 1.0)]["torchvision_v1"]]
    assert_same_function(served, ours)


def test_unwrap_nested_wrapper_prefixes() -> None:
    ours = create_model("v1", width=0.25).state_dict()
    wrapped = {"state_dict": {f"model._orig_mod.{k}": v for k, v in ours.items()}, "epoch": 3}
    assert list(convert.unwrap_state_dict(wrapped)) == list(ours)


# -- the reverse: our weights in timm's and torchvision's layout, loaded by those libraries' own loaders --
@pytest.mark.parametrize("width", [0.5, 1.0])
def test_to_torchvision_layout_loads_into_torchvision(width: float) -> None:
    ours = randomize(create_model("v2", width=width))
    theirs = torchvision.models.mobilenet_v2(width_mult=width).eval()
    theirs.load_state_dict(to_foreign_state_dict(ours.state_dict(), "torchvision"), strict=True)
    assert_same_function(theirs, ours)


@pytest.mark.parametrize(("timm_name", "name", "width"), [TIMM_MODELS[0], TIMM_MODELS[2], TIMM_MODELS[3]])
def test_to_timm_layout_loads_through_pretrained_cfg_overlay(
    timm_name: str, name: str, width: float, tmp_path: Path
) -> None:
    """timm's own pretrained loader reads the file offline (``pretrained_cfg_overlay=dict(file=...)``)."""
    ours = randomize(create_model(name, width=width))
    torch.save(to_foreign_state_dict(ours.state_dict(), "timm", name), tmp_path / "ours_as_timm.pth")
    theirs = timm.create_model(
        timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "ours_as_timm.pth")}
    ).eval()
    assert_same_function(theirs, ours)


def test_to_foreign_layout_refuses_what_it_cannot_map() -> None:
    with pytest.raises(ValueError, match=r"no torchvision layout for mobilenet_v1"):
        to_foreign_state_dict(create_model("v1").state_dict(), "torchvision", "mobilenet_v1")
    with pytest.raises(ValueError, match=r"keys with no timm mobilenet_v2 counterpart"):
        to_foreign_state_dict(create_model("v1").state_dict(), "timm", "mobilenet_v2")
