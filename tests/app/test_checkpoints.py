"""Our checkpoints as data: nothing in one names code to call, resume is honest, and
`mobilenet_pl.from_checkpoint` rebuilds the exact network (EMA weights included)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from mobilenet_pl import from_checkpoint, mobilenet_v1
from mobilenet_pl.lit.classifier import MobileNetClassifier
from mobilenet_pl.lit.data import FakeDataModule
from mobilenet_pl.models import WeightsFileError

MODEL = {"name": "v1", "width": 0.25, "small_input": True}
OPTIMIZER = {"name": "adamw", "lr": 0.005, "weight_decay": 0.05}
SCHEDULER = {"name": "cosine", "warmup_epochs": 1, "min_lr_ratio": 0.01}
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def trainer(root: Path, **kwargs: Any) -> L.Trainer:
    options: dict[str, Any] = {
        "max_epochs": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": str(root),
    }
    return L.Trainer(**{**options, **kwargs})


def data() -> FakeDataModule:
    return FakeDataModule(resolution=32, batch_size=8)


def new_module(**overrides: Any) -> MobileNetClassifier:
    options: dict[str, Any] = {
        "model": MODEL,
        "num_classes": 10,
        "resolution": 32,
        "optimizer": OPTIMIZER,
        "scheduler": SCHEDULER,
        "ema_decay": 0.5,
    }
    return MobileNetClassifier(**{**options, **overrides})


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint after two training steps with an EMA of the weights (EMA != trained weights)."""
    root = tmp_path_factory.mktemp("ckpt")
    module = new_module()
    fit = trainer(root)
    fit.fit(module, data())
    fit.save_checkpoint(root / "run.ckpt")
    return root / "run.ckpt"


def rewrite(source: Path, target: Path, **hparams: Any) -> Path:
    raw = torch.load(source, map_location="cpu", weights_only=True)
    raw["hyper_parameters"].update(hparams)
    torch.save(raw, target)
    torch.load(target, weights_only=True)  # the attack passes the weights_only check
    return target


# -- nothing read from a checkpoint may name code to call ----------------------------------------------------
ATTACKS = {
    # instantiated with Hydra, Path.touch(str) would create the file
    "optimizer_target": lambda f: {"optimizer": {"_target_": "pathlib.Path.touch", "_args_": [str(f)]}},
    "scheduler_target": lambda f: {"scheduler": {"_target_": "pathlib.Path.touch", "_partial_": True, "self": str(f)}},
    "optimizer_name": lambda f: {"optimizer": {"name": "pathlib.Path.touch", "lr": 0.1}},
    "optimizer_value": lambda f: {"optimizer": {"name": "sgd", "lr": 0.1, "foreach": str(f)}},
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_checkpoint_naming_code_is_refused(attack: str, saved: Path, tmp_path: Path) -> None:
    victim = tmp_path / "created-by-the-checkpoint"
    crafted = rewrite(saved, tmp_path / "crafted.ckpt", **ATTACKS[attack](victim))
    with pytest.raises(ValueError, match=r"(optimizer|scheduler)\.\w+=.* is not allowed"):
        module = MobileNetClassifier.load_from_checkpoint(crafted, weights_only=True)
        trainer(tmp_path, max_steps=1).fit(module, data())
    # resuming a run from it refuses too (the run's own module, the checkpoint's hyperparameters)
    with pytest.raises(ValueError, match=r"(optimizer|scheduler)\.\w+=.* is not allowed"):
        trainer(tmp_path, max_steps=3).fit(new_module(), data(), ckpt_path=crafted, weights_only=True)
    assert not victim.exists()


# -- resume with a new optimizer.lr --------------------------------------------------------------------------
def test_resume_with_a_changed_lr_rescales_the_schedule_and_other_changes_are_refused(
    saved: Path, tmp_path: Path
) -> None:

    restored = torch.load(saved, map_location="cpu", weights_only=True)
    old_last = restored["lr_schedulers"][0]["_last_lr"]
    changed = new_module(optimizer={**OPTIMIZER, "lr": 0.01})  # the checkpoint's lr: 0.005
    fit_changed = trainer(tmp_path, max_epochs=2)
    seen: list[list[float]] = []

    class FirstLr(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen.append(list(trainer.lr_scheduler_configs[0].scheduler.get_last_lr()))

    fit_changed.callbacks.append(FirstLr())
    fit_changed.fit(changed, data(), ckpt_path=saved, weights_only=True)
    assert fit_changed.global_step == 4
    assert seen[0] == pytest.approx([2 * lr for lr in old_last])  # the schedule goes on, at twice the scale
    with pytest.raises(ValueError, match=r"^optimizer\.weight_decay=0\.5 differs from the resumed checkpoint's"):
        trainer(tmp_path, max_epochs=2).fit(
            new_module(optimizer={**OPTIMIZER, "weight_decay": 0.5}), data(), ckpt_path=saved, weights_only=True
        )
    with pytest.raises(ValueError, match=r"^scheduler\.warmup_epochs=2 differs"):
        trainer(tmp_path, max_epochs=2).fit(
            new_module(scheduler={**SCHEDULER, "warmup_epochs": 2}), data(), ckpt_path=saved, weights_only=True
        )
    # the same values resume, and the restored optimizer runs the recorded lr
    same = new_module()
    fit = trainer(tmp_path, max_epochs=2)
    fit.fit(same, data(), ckpt_path=saved, weights_only=True)
    assert fit.global_step == 4
    assert fit.optimizers[0].defaults["lr"] == same.hparams["optimizer"]["lr"]


# -- from_checkpoint and pretrained=ckpt ---------------------------------------------------------------------
def test_from_checkpoint_rebuilds_the_architecture_with_ema_weights(saved: Path) -> None:
    module = MobileNetClassifier.load_from_checkpoint(saved, weights_only=True).eval()
    model = from_checkpoint(saved)
    assert model.stem.conv.stride == (1, 1)  # small_input came from the checkpoint, not from the caller
    with torch.no_grad():
        ema, raw = module.to_model()(X), module.to_model(ema=False)(X)
        assert (ema - raw).abs().max() > 1e-3  # the EMA copy really differs after two steps
        torch.testing.assert_close(model(X), ema, rtol=0, atol=0)
        torch.testing.assert_close(from_checkpoint(saved, ema=False)(X), raw, rtol=0, atol=0)
        torch.testing.assert_close(module.eval_forward(X), ema, rtol=0, atol=0)  # what eval and test used

    features = from_checkpoint(saved, features_only=True, out_indices=(1, 3))
    assert [f.shape[1] for f in features(X)] == features.feature_info.channels()
    torch.testing.assert_close(features.stem.conv.weight, model.stem.conv.weight)
    three = from_checkpoint(saved, num_classes=3)
    assert three.classifier.weight.shape[0] == 3
    torch.testing.assert_close(three.stages[0][0].conv_dw.conv.weight, model.stages[0][0].conv_dw.conv.weight)


def test_pretrained_checkpoint_loads_the_ema_weights(saved: Path) -> None:
    module = MobileNetClassifier.load_from_checkpoint(saved, weights_only=True).eval()
    model = mobilenet_v1(width=0.25, num_classes=10, small_input=True, pretrained=str(saved)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(X), module.to_model()(X), rtol=0, atol=0)


def test_pretrained_checkpoint_of_other_strides_is_refused(saved: Path) -> None:
    with pytest.raises(ValueError, match=r"trained as mobilenet_v1 with small_input=True, .* small_input=False"):
        mobilenet_v1(width=0.25, num_classes=10, pretrained=str(saved))  # small_input forgotten


def test_from_checkpoint_refuses_what_has_no_architecture(tmp_path: Path) -> None:
    torch.save(mobilenet_v1(width=0.25).state_dict(), tmp_path / "bare.pth")
    with pytest.raises(
        WeightsFileError, match=r"bare.pth' is not allowed: .*holds no mobilenet_pl hyperparameters.*cannot be read"
    ):
        from_checkpoint(tmp_path / "bare.pth")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "model.ts")
    with pytest.raises(WeightsFileError, match=r"model.ts' is not allowed: .*ONNX/TorchScript export"):
        from_checkpoint(tmp_path / "model.ts")
    with pytest.raises(WeightsFileError, match="the file does not exist"):
        from_checkpoint(tmp_path / "missing.ckpt")


def test_load_from_checkpoint_unpickles_no_code_by_default(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's own default would unpickle anything
    raw = torch.load(saved, map_location="cpu", weights_only=True)
    raw["callbacks"] = {"x": ClassNotAllowed()}  # a pickled object: loading it would run its code
    torch.save(raw, tmp_path / "pickled.ckpt")
    with pytest.raises(Exception, match="Weights only load failed"):
        MobileNetClassifier.load_from_checkpoint(tmp_path / "pickled.ckpt")
    with pytest.raises(Exception, match="Weights only load failed"):  # a file object: Lightning reads it
        MobileNetClassifier.load_from_checkpoint(io.BytesIO((tmp_path / "pickled.ckpt").read_bytes()))


class ClassNotAllowed:
    """Any class: ``weights_only=True`` refuses to build it."""
