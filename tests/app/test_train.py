"""The training app end to end, in-process through Hydra's compose API (as lightning-hydra-template)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import FAST, compose_train, make_image_folder

from mobilenet_pl.app.results import REQUIRED_KEYS
from mobilenet_pl.lit.classifier import MobileNetClassifier
from mobilenet_pl.train import train


@pytest.mark.parametrize("model", ["v1", "v2"])
@pytest.mark.parametrize("data", ["digits", "fake", "imagefolder"])
def test_fast_dev_run_end_to_end(model: str, data: str, run_dir: Path, tmp_path: Path) -> None:
    overrides = [f"model={model}", f"data={data}", "trainer=debug", "logger=none", "width=0.25"]
    if data == "imagefolder":
        overrides += [
            f"data.root={make_image_folder(tmp_path / 'images')}",
            "resolution=32",
            "data.num_workers=0",
            "data.batch_size=4",
        ]
    results = train(compose_train(overrides, run_dir), run_dir)
    saved = json.loads((run_dir / "results.json").read_text())
    assert set(REQUIRED_KEYS) <= set(saved)
    assert saved["model"] == f"mobilenet_{model}" and saved["width"] == 0.25
    assert saved["test_samples"] == results["test_samples"] > 0
    assert {"test/acc1", "test/acc5", "test/loss"} <= set(saved["metrics"])
    assert 0.0 <= saved["metrics"]["test/acc1"] <= 1.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One short real run with checkpoints and the offline W&B logger (shared by the tests below)."""
    run_dir = tmp_path_factory.mktemp("trained")
    cfg = compose_train(
        ["data=fake", "width=0.25", "data.batch_size=16", "logger=wandb", "trainer.log_every_n_steps=1", *FAST], run_dir
    )
    results = train(cfg, run_dir)
    return results, run_dir


def test_results_json_contract(trained: tuple[dict, Path]) -> None:
    _results, run_dir = trained
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["test_samples"] == 32  # 2 test batches of 16: exactly what was evaluated
    assert saved["params"] == sum(
        p.numel() for p in MobileNetClassifier.load_from_checkpoint(saved["checkpoint"]).to_model().parameters()
    )
    assert saved["madds"] > 1e6
    assert Path(saved["checkpoint"]).is_file() and Path(saved["last_checkpoint"]).name == "last.ckpt"
    assert {"val/acc1", "test/acc1", "test/acc5", "test/loss"} <= set(saved["metrics"])
    assert saved["wall_time_s"] > 0 and (run_dir / "confusion_matrix.png").stat().st_size > 1000
    assert saved["train_images_per_s"] > 0  # the Throughput callback, found by its type


def test_checkpoint_loads_safely_with_no_arguments(trained: tuple[dict, Path]) -> None:
    results, _ = trained
    raw = torch.load(results["checkpoint"], map_location="cpu", weights_only=True)
    assert all(isinstance(v, (int, float, str, bool, list, dict, type(None))) for v in raw["hyper_parameters"].values())
    assert not any("_orig_mod" in k for k in raw["state_dict"])
    module = MobileNetClassifier.load_from_checkpoint(results["checkpoint"])
    assert module.hparams["model"]["width"] == 0.25 and module.hparams["num_classes"] == 10
    torch.testing.assert_close(
        module.state_dict()["backbone.stem.conv.weight"], raw["state_dict"]["backbone.stem.conv.weight"]
    )
    last = MobileNetClassifier.load_from_checkpoint(results["last_checkpoint"])
    assert last(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert last.to_model()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_offline_wandb_run_holds_metrics(trained: tuple[dict, Path]) -> None:
    results, run_dir = trained
    assert results["wandb_sync"].startswith("wandb sync ")  # the logger knew it ran offline
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "one W&B run per job"
    records = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in [
        b"train/loss_step",
        b"val/acc1",
        b"test/acc1",
        b"test/acc5",
        b"test/confusion_matrix",
        b"test/predictions",
    ]:
        assert key in records, key
    assert list((runs[0] / "files" / "media" / "images").rglob("confusion_matrix*.png"))


def test_resume_from_last_checkpoint(trained: tuple[dict, Path], tmp_path: Path) -> None:
    results, _ = trained
    run_dir = tmp_path / "resumed"
    run_dir.mkdir()
    fast = [o for o in FAST if not o.startswith("trainer.max_epochs")]
    cfg = compose_train(
        [
            "data=fake",
            "width=0.25",
            "data.batch_size=16",
            "logger=none",
            "trainer.max_epochs=2",
            f"ckpt_path={results['last_checkpoint']}",
            *fast,
        ],
        run_dir,
    )
    resumed = train(cfg, run_dir)
    assert resumed["epochs"] == 2


def test_compile_and_channels_last_keep_clean_keys(run_dir: Path) -> None:
    cfg = compose_train(
        [
            "model=v1",
            "data=fake",
            "width=0.25",
            "resolution=32",
            "logger=none",
            "channels_last=true",
            "compile=true",
            *FAST,
        ],
        run_dir,
    )
    results = train(cfg, run_dir)
    raw = torch.load(results["last_checkpoint"], weights_only=True)
    assert all(k.startswith(("backbone.", "classifier.", "val_", "test_")) for k in raw["state_dict"])
    assert not any("_orig_mod" in k for k in raw["state_dict"])


def test_recipe_options_train(run_dir: Path) -> None:
    cfg = compose_train(
        [
            "data=fake",
            "width=0.25",
            "resolution=32",
            "logger=csv",
            "recipe.mixup=0.2",
            "recipe.cutmix=1.0",
            "recipe.ema_decay=0.9",
            "optimizer=rmsprop",
            "scheduler=exponential",
            "data.batch_size=8",
            *FAST,
        ],
        run_dir,
    )
    results = train(cfg, run_dir)
    module = MobileNetClassifier.load_from_checkpoint(results["last_checkpoint"])
    assert module.ema is not None
    ema_w, w = module.ema.module[0].stem.conv.weight, module.backbone.stem.conv.weight
    assert not torch.equal(ema_w, w)  # the EMA copy trails the trained weights
    assert (run_dir / "csv").is_dir()


@pytest.mark.parametrize("scheduler", ["cosine", "exponential"])
def test_backbone_finetuning_freezes_then_unfreezes(scheduler: str, tmp_path: Path) -> None:
    """Lightning's BackboneFinetuning: the head learns while the backbone is frozen, then both do."""
    import lightning as L
    from lightning.pytorch.callbacks import BackboneFinetuning
    from omegaconf import OmegaConf

    from mobilenet_pl.lit.data import FakeDataModule

    sched = OmegaConf.to_container(
        OmegaConf.load(Path(__file__).parents[2] / "conf" / "scheduler" / f"{scheduler}.yaml")
    )
    module = MobileNetClassifier({"name": "v2", "width": 0.25}, num_classes=10, resolution=32, scheduler=sched)
    start = {k: v.clone() for k, v in module.state_dict().items()}
    conv, head = "backbone.stages.1.0.conv_pw.conv.weight", "classifier.weight"

    def changed(key: str) -> bool:
        return not torch.equal(module.state_dict()[key], start[key])

    datamodule = FakeDataModule(resolution=32, batch_size=8)
    trainer_args = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "default_root_dir": str(tmp_path),
    }
    # epoch 0 (frozen): only the head and BatchNorm learn
    L.Trainer(max_epochs=1, callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=1)], **trainer_args).fit(
        module, datamodule
    )
    assert changed(head) and not changed(conv)
    # a fresh run of 2 epochs unfreezes at epoch 1; the schedule adopts the added parameter group
    L.Trainer(max_epochs=2, callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=1)], **trainer_args).fit(
        module, datamodule
    )
    assert changed(conv)


def test_resume_with_a_new_optimizer_stops_with_one_line(trained: tuple[dict, Path], tmp_path: Path) -> None:
    """Resuming restores the checkpoint's optimizer: a new optimizer.weight_decay would be recorded but not run
    (a new optimizer.lr alone is used: tests/reliability/test_resume_keys.py)."""
    results, _ = trained
    cfg = compose_train(
        [
            "data=fake",
            "width=0.25",
            "data.batch_size=16",
            "logger=none",
            "optimizer.weight_decay=0.5",
            f"ckpt_path={results['last_checkpoint']}",
            *FAST,
        ],
        tmp_path,
    )
    with pytest.raises(ValueError, match=r"^optimizer\.weight_decay=0\.5 differs from the resumed checkpoint's"):
        train(cfg, tmp_path)


def test_non_utf8_class_folder_trains_to_results(run_dir: Path, tmp_path: Path) -> None:
    """A Latin-1 class folder name (surrogate-escaped by Python) reaches results.json and the plot."""
    import os

    root = make_image_folder(tmp_path / "images")
    for split in ("train", "val"):
        os.rename(root / split / "class_0", os.fsencode(root / split) + b"/caf\xe9")
    overrides = [f"data.root={root}", "resolution=32", "data.num_workers=0", "data.batch_size=4"]
    cfg = compose_train(["data=imagefolder", "logger=none", "width=0.25", *overrides, *FAST], run_dir)
    train(cfg, run_dir)
    assert (run_dir / "confusion_matrix.png").stat().st_size > 1000
    assert json.loads((run_dir / "results.json").read_text())["test_samples"] > 0
