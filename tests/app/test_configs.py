"""Every option of every config group composes and instantiates: a new YAML file is tested by construction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import CONF, compose_train, make_image_folder
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mobilenet_pl.app.build import build_module
from mobilenet_pl.app.config import SCHEMAS, TOOLS, ConfigError, validate
from mobilenet_pl.lit.optim import build_optimizer, build_scheduler


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_options_and_docs() -> None:
    for group in ["model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment"]:
        found = options(group)
        assert found, group
        for option in found:
            text = (CONF / group / f"{option}.yaml").read_text()
            assert text.lstrip().startswith("#") or "defaults:" in text.split("\n")[0], (
                f"{group}/{option}.yaml has no comment"
            )


@pytest.mark.parametrize("option", options("data"))
def test_data_options_instantiate(option: str, run_dir: Path, tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images")
    extra = {
        "imagefolder": [f"data.root={root}"],
        "cifar10": [f"data.root={tmp_path}"],
        "cifar100": [f"data.root={tmp_path}"],
    }
    cfg = compose_train([f"data={option}", *extra.get(option, [])], run_dir)
    validate(cfg)
    datamodule = instantiate(cfg.data)
    assert datamodule.num_classes >= 3 and datamodule.resolution >= 32
    if option.startswith("cifar"):
        with pytest.raises(RuntimeError, match=r"could not be downloaded .*offline\?"):
            instantiate(cfg.data, download=False).setup("fit")
        return
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.shape[1:] == (datamodule.in_chans, datamodule.resolution, datamodule.resolution)
    assert y.dtype == torch.int64


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_model_and_optimizer_options(model: str, optimizer: str, run_dir: Path) -> None:
    cfg = compose_train([f"model={model}", f"optimizer={optimizer}", "width=0.25"], run_dir)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    opt = build_optimizer(OmegaConf.to_container(cfg.optimizer), module.backbone)  # type: ignore[arg-type]
    assert opt.defaults["lr"] == cfg.optimizer.lr
    assert module.backbone.feature_info[0]["num_chs"] >= 8


@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_scheduler_options(scheduler: str, run_dir: Path) -> None:
    cfg = compose_train([f"scheduler={scheduler}"], run_dir)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = build_scheduler(OmegaConf.to_container(cfg.scheduler), opt, steps_per_epoch=10, max_epochs=5)  # type: ignore[arg-type]
    assert schedule["interval"] in ("step", "epoch")
    lrs = []
    for _ in range(50 if schedule["interval"] == "step" else 5):
        opt.step()
        schedule["scheduler"].step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(0 < lr <= 0.1 + 1e-12 for lr in lrs)
    if scheduler != "none":
        assert lrs[-1] < 0.1


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_options(trainer: str, run_dir: Path) -> None:
    overrides = [f"trainer={trainer}"]
    if trainer in ("gpu", "ddp") and not torch.cuda.is_available():
        overrides += ["trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.devices=1"]
    cfg = compose_train(overrides, run_dir)
    validate(cfg)
    assert instantiate(cfg.trainer, logger=False, default_root_dir=str(run_dir)).max_epochs is not None


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_options(logger: str, run_dir: Path) -> None:
    cfg = compose_train([f"logger={logger}"], run_dir)
    if logger == "none":
        assert "_target_" not in cfg.logger
        return
    instance = instantiate(cfg.logger, save_dir=str(run_dir))
    assert instance is not None


def test_callbacks_options(run_dir: Path) -> None:
    for option in options("callbacks"):
        cfg = compose_train([f"callbacks={option}"], run_dir)
        assert all(instantiate(c) is not None for c in cfg.callbacks.values())


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_presets_compose_and_validate(experiment: str, run_dir: Path, tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images")
    cfg = compose_train(
        [f"experiment={experiment}", f"data.root={root}" if experiment.startswith("imagenet") else "seed=0"], run_dir
    )
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        cfg.trainer.accelerator = "cpu"
    validate(cfg)
    assert cfg.width > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("width=0", "width=0.0 is not allowed: width must be a number > 0"),
        ("width=-0.5", "width=-0.5 is not allowed"),
        ("resolution=16", "resolution=16 is not allowed: resolution must be a whole number >= 32"),
        ("data.batch_size=0", "data.batch_size=0 is not allowed"),
        ("optimizer.lr=0", "optimizer.lr=0 is not allowed"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 is not allowed"),
        ("ckpt_path=/nonexistent.ckpt", "ckpt_path='/nonexistent.ckpt' is not allowed: the file does not exist"),
        ("recipe.ema_decay=1.0", r"recipe.ema_decay=1.0 is not allowed: it must be in \[0, 1\)"),
    ],
)
def test_validation_names_key_value_and_range(override: str, message: str, run_dir: Path) -> None:
    cfg = compose_train([override], run_dir)
    with pytest.raises(ValueError, match=message):  # ConfigError, or the weights reader's WeightsFileError
        validate(cfg)


def test_gpu_devices_beyond_available_are_refused(run_dir: Path) -> None:
    cfg = compose_train(["trainer=gpu", f"trainer.devices={torch.cuda.device_count() + 1}"], run_dir)
    with pytest.raises(ConfigError, match=r"trainer.devices=\d+ is not allowed: only \d+ gpu device"):
        validate(cfg)


def test_imagefolder_without_root_is_refused(run_dir: Path, tmp_path: Path) -> None:
    cfg = compose_train(["data=imagefolder", f"data.root={tmp_path / 'missing'}"], run_dir)
    with pytest.raises(
        ConfigError, match=r"data.root=.*missing' is not allowed: it must be an existing, non-empty folder"
    ):
        validate(cfg)


def test_imagefolder_val_subset_keeps_train_class_indices(tmp_path: Path) -> None:
    from mobilenet_pl.lit.data import ImageFolderDataModule

    root = make_image_folder(tmp_path / "images", classes=3, splits=("train",))
    make_image_folder(tmp_path / "val_only", classes=3, splits=("val",))
    (root / "val").mkdir()
    (tmp_path / "val_only" / "val" / "class_2").rename(root / "val" / "class_2")  # val holds class_2 only
    datamodule = ImageFolderDataModule(root=str(root), resolution=32, batch_size=4)
    datamodule.setup("fit")
    assert {label for _, label in datamodule.val_set.samples} == {2}


def test_imagefolder_val_class_absent_from_train_is_refused(tmp_path: Path) -> None:
    from mobilenet_pl.lit.data import ImageFolderDataModule

    root = make_image_folder(tmp_path / "images", classes=2)
    (root / "val" / "zebra").mkdir()
    (root / "val" / "class_0" / "img_0.jpg").rename(root / "val" / "zebra" / "img_0.jpg")
    with pytest.raises(ValueError, match=r"val/ has classes absent from train/: \['zebra'\]"):
        ImageFolderDataModule(root=str(root), resolution=32).setup("fit")


# -- every tool's config: one source of truth for defaults -------------------------------------------------

REQUIRED = {"eval": {"ckpt_path"}, "export": {"ckpt_path"}, "quantize": {"ckpt_path"}, "report": {"sweep_dir"}}


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_schema_has_no_defaults_and_yaml_sets_every_key(tool: str) -> None:
    """The schema only types keys; conf/<tool>.yaml holds every default, so the two cannot disagree."""
    schema = OmegaConf.structured(SCHEMAS[tool])
    assert OmegaConf.missing_keys(schema) == set(schema.keys())  # no default in the dataclass
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(tool)
    assert set(cfg.keys()) == set(schema.keys())
    missing = {key.split(".")[0] for key in OmegaConf.missing_keys(cfg)}
    assert missing == REQUIRED.get(tool, set()), f"conf/{tool}.yaml leaves {missing} unset"


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_yaml_rejects_unknown_keys(tool: str) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"), pytest.raises(Exception, match="nosuchkey"):
        compose(tool, overrides=["nosuchkey=1"])
