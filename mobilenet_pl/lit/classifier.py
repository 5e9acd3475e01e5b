"""``MobileNetClassifier``: a LightningModule around either backbone.

Hyperparameters are plain values only (the ``model`` dict of `create_model` keywords, numbers, and
optimizer/scheduler names from allow-lists, never a ``_target_``), so a checkpoint loads with
``torch.load(path, weights_only=True)``, ``MobileNetClassifier.load_from_checkpoint(path)`` needs no
other argument, and nothing read from a checkpoint names code to call. The feature extractor is ``self.backbone`` (a MobileNet without classifier) and
the linear head is ``self.classifier``, so Lightning's ``BackboneFinetuning`` freezes the one and trains
the other. ``to_model()`` puts them back together into one MobileNet for export.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from timm.loss import SoftTargetCrossEntropy
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from mobilenet_pl.lit import lightning_internals
from mobilenet_pl.lit.data.images import IGNORE_INDEX
from mobilenet_pl.lit.optim import (
    build_optimizer,
    build_scheduler,
    check_config,
    default_optimizer,
    rescale_checkpoint_lr,
    scaled_lr,
)
from mobilenet_pl.models import create_model
from mobilenet_pl.models.hparams import RUN_SETTINGS_KEY, model_hparams
from mobilenet_pl.models.mobilenet import MIN_INPUT_SIZE, check_fraction, check_positive, check_whole
from mobilenet_pl.models.weights import read_weights

# Restored from the checkpoint on resume (optimizer and scheduler state), so a new value would be ignored.
RESUME_FIXED = ("optimizer", "scheduler", "scale_lr")


class MobileNetClassifier(L.LightningModule):
    """Image classifier with a MobileNet V1/V2 backbone (https://arxiv.org/abs/1704.04861,
    https://arxiv.org/abs/1801.04381).

    Args:
        model: the backbone as ``{"name": "mobilenet_v2", "width": 0.5, "small_input": True, ...}``: a
            registered name (or alias ``v1``/``v2``) and the keywords of `mobilenet_pl.create_model`
            (``width``, ``dropout``, ``drop_path_rate``, ``small_input``, ``act_layer``, ``init``);
            keywords left out take the model's defaults, and the saved hyperparameter lists them all.
        num_classes: classes of the data set.
        in_chans: image channels.
        resolution: training image side (kept so evaluation and export know it).
        pretrained: ImageNet weights to start from (``True``, a tag or a file); not saved as a
            hyperparameter, because a checkpoint already holds the weights.
        optimizer: ``{"name": "sgd", "lr": ..., ...}``, a name of `mobilenet_pl.lit.optim.OPTIMIZERS` plus
            numbers; None: `mobilenet_pl.lit.optim.DEFAULT_OPTIMIZER` (AdamW, lr 0.005, weight decay 0.05,
            the training app's default too). BatchNorm parameters and biases get no weight decay.
        scheduler: ``{"name": "cosine", "warmup_epochs": 1, ...}`` (`mobilenet_pl.lit.optim.SCHEDULERS`)
            or None for a constant lr.
        scale_lr: multiply lr by global batch / 256 (set by the training app).
        label_smoothing: label smoothing of the cross-entropy loss (the app's recipe sets it).
        mixup: timm Mixup alpha (0 disables).
        cutmix: timm CutMix alpha (0 disables).
        ema_decay: keep an exponential moving average of the weights (timm ModelEmaV3) and evaluate it.
        channels_last: run the backbone in channels_last memory format.
        compile: ``torch.compile`` the backbone (state-dict keys stay ``backbone.*``).
        class_names: names for reports and exports.

    Example:
        >>> module = MobileNetClassifier({"name": "v2", "width": 0.5}, num_classes=10, resolution=32)
        >>> module(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> module.hparams["model"].get("small_input")
        False
    """

    def __init__(
        self,
        model: Mapping[str, Any] | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        resolution: int = 224,
        pretrained: bool | str = False,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        scale_lr: bool = False,
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        ema_decay: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        class_names: list[str] | None = None,
    ) -> None:
        _check_arguments(num_classes, in_chans, resolution, label_smoothing, mixup, cutmix, ema_decay, class_names)
        # normalised before save_hyperparameters reads them: plain, complete and checked values only
        model = model_hparams(model or {"name": "mobilenet_v2"})
        optimizer = check_config("optimizer", optimizer) or default_optimizer()
        scheduler = check_config("scheduler", scheduler)
        super().__init__()
        self.save_hyperparameters(ignore=["pretrained"])
        net = create_model(**model, num_classes=num_classes, in_chans=in_chans, pretrained=pretrained)
        # the head moves out of the backbone (keeping pretrained weights when the class count matches)
        self.classifier: nn.Module = net.classifier
        net.reset_classifier(0)
        self.backbone = net
        self.ema: Any = None  # timm ModelEmaV3: .module is a Sequential(backbone, classifier)
        if ema_decay > 0:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self._net(), decay=ema_decay)
        self.mixup_fn = None
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup

            self.mixup_fn = Mixup(
                mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes
            )
        self.soft_target_loss = SoftTargetCrossEntropy()  # for Mixup/CutMix's soft labels

        top5 = min(5, num_classes)
        for stage in ("val", "test"):
            metrics = MetricCollection(
                {
                    "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro", ignore_index=IGNORE_INDEX),
                    "acc5": MulticlassAccuracy(num_classes, top_k=top5, average="micro", ignore_index=IGNORE_INDEX),
                },
                prefix=f"{stage}/",
            )
            setattr(self, f"{stage}_metrics", metrics)
            setattr(self, f"{stage}_loss", MeanMetric())
            setattr(self, f"{stage}_samples", SumMetric())
        self.test_confmat = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)
        self.test_confusion: Tensor | None = None  # filled at the end of a test epoch
        self._compiled: Any = None
        self._loss_sum: Tensor | None = None  # training loss summed on the device since the bar's last update
        self._loss_steps = 0
        self._epoch_loss: Tensor | None = None  # this epoch's training loss x batch size, summed on the device
        self._epoch_samples = 0

    # -- forward -------------------------------------------------------------------------------------------
    def _net(self) -> nn.Sequential:
        """Backbone and head as one module (a view: no parameters are copied)."""
        return nn.Sequential(self.backbone, self.classifier)

    def to_model(self, ema: bool = True) -> nn.Module:
        """One plain MobileNet with this module's weights (the EMA weights when EMA is on and ``ema``)."""
        hp = self.hparams
        model = create_model(**hp["model"], num_classes=hp["num_classes"], in_chans=hp["in_chans"])
        source = self.ema.module if ema and self.ema is not None else self._net()
        backbone, classifier = source[0], source[1]
        model.load_state_dict(
            {**backbone.state_dict(), **{f"classifier.{k}": v for k, v in classifier.state_dict().items()}}
        )
        return model.eval()

    def configure_model(self) -> None:
        if self.hparams["channels_last"]:
            self.backbone.to(memory_format=torch.channels_last)
        if self.hparams["compile"] and self._compiled is None:
            # kept out of the module tree so state-dict keys never get an ``_orig_mod.`` prefix
            object.__setattr__(self, "_compiled", torch.compile(self.backbone))

    def _prepare(self, x: Tensor) -> Tensor:
        # the memory format the run asked for, whatever the data gives (device decoding gives channels_last):
        # convolutions follow their input's layout, so passing x through would switch layouts unasked
        layout = torch.channels_last if self.hparams["channels_last"] else torch.contiguous_format
        return x.contiguous(memory_format=layout)

    def forward(self, x: Tensor) -> Tensor:
        features = self._compiled if self._compiled is not None else self.backbone
        return self.classifier(features(self._prepare(x)))

    def eval_forward(self, x: Tensor) -> Tensor:
        """Logits from the weights that are evaluated: the EMA copy when EMA is on."""
        return self.ema.module(self._prepare(x)) if self.ema is not None else self(x)

    # -- steps ---------------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.mixup_fn is not None:
            x, soft = self.mixup_fn(x, y)
            loss = self.soft_target_loss(self(x), soft)
        else:
            loss = F.cross_entropy(self(x), y, label_smoothing=self.hparams["label_smoothing"])
        self._log_loss(loss.detach(), len(y))
        self._bar_loss(loss)
        return loss

    def _log_loss(self, loss: Tensor, batch_size: int) -> None:
        """``train/loss_step`` and ``train/loss_epoch`` for the loggers, as ``self.log("train/loss", on_step=True,
        on_epoch=True)`` would write them, at a fraction of the cost: ``self.log`` costs ~1 ms of Python per call
        (3-4% of a 30 ms step), so the step value is logged only on the steps Lightning writes to the loggers
        (every ``trainer.log_every_n_steps``) and the epoch's batch-size-weighted mean accumulates here, on the
        device (no sync), and is logged at the epoch's end. Not prog_bar: Lightning converts per-step bar values
        to numbers after every step, a host-device sync per step on a GPU; the bar gets ``_bar_loss`` instead."""
        weighted = loss * batch_size
        self._epoch_loss = weighted if self._epoch_loss is None else self._epoch_loss + weighted
        self._epoch_samples += batch_size
        trainer = self._trainer
        # Lightning's own test of "the loggers are written after this step" (no public API: lightning_internals)
        if (
            trainer is None
            or lightning_internals.should_update_logs(trainer)
            or getattr(trainer, "fast_dev_run", False)
        ):
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, batch_size=batch_size)

    def _bar_loss(self, loss: Tensor) -> None:
        """Show the mean training loss of the last N steps (N = ``trainer.log_every_n_steps``) in the
        progress bar: summed on the device and read back once per N steps, as a CPU tensor that the bar
        can read every step for free."""
        loss = loss.detach()
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._loss_steps += 1
        every = max(1, int(getattr(self._trainer, "log_every_n_steps", 1) or 1))
        if self._loss_steps >= every:
            mean = (self._loss_sum / self._loss_steps).float().cpu()
            self.log("loss", mean, prog_bar=True, logger=False, on_step=True, on_epoch=False)
            self._loss_sum, self._loss_steps = None, 0

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_steps = None, 0
        self._epoch_loss, self._epoch_samples = None, 0

    def on_train_epoch_end(self) -> None:
        if self._epoch_loss is not None:
            self.log("train/loss_epoch", self._epoch_loss / self._epoch_samples, on_step=False, on_epoch=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self._net(), step=self.global_step)

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self.eval_forward(x)
        # under DDP, shards are topped up with IGNORE_INDEX samples: they count nowhere
        valid = (y != IGNORE_INDEX).sum()
        loss = F.cross_entropy(logits, y, reduction="sum", ignore_index=IGNORE_INDEX) / valid.clamp(min=1)
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(logits, y)
        getattr(self, f"{stage}_loss").update(loss, weight=valid)
        getattr(self, f"{stage}_samples").update(valid)
        # metric objects are logged, so Lightning syncs them across ranks once per epoch
        self.log_dict(metrics, on_epoch=True, prog_bar=stage == "val")
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), on_epoch=True)
        self.log(f"{stage}/samples", getattr(self, f"{stage}_samples"), on_epoch=True)
        return logits

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        logits = self._eval_step(batch, "test")
        self.test_confmat.update(logits, batch[1])

    def on_test_epoch_end(self) -> None:
        self.test_confusion = self.test_confmat.compute().cpu()
        self.test_confmat.reset()

    # -- optimisation --------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        config = dict(self.hparams["optimizer"])
        if self.hparams["scale_lr"]:
            global_batch = self.trainer.world_size * self._batch_size()
            config["lr"] = scaled_lr(config["lr"], global_batch)
        optimizer = build_optimizer(config, self._net())
        if not self.hparams["scheduler"]:
            return optimizer
        max_epochs = max(1, self.trainer.max_epochs or 1)
        steps_per_epoch = max(1, self.trainer.estimated_stepping_batches // max_epochs)
        schedule = build_scheduler(
            self.hparams["scheduler"], optimizer, steps_per_epoch=int(steps_per_epoch), max_epochs=int(max_epochs)
        )
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def _batch_size(self) -> int:
        datamodule = getattr(self.trainer, "datamodule", None)
        return int(getattr(datamodule, "batch_size", 1))

    # -- checkpoints -----------------------------------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's ``load_from_checkpoint``, reading with ``weights_only=True`` unless told otherwise
        (Lightning's default unpickles anything). A file path is first checked by the models' reader, so a
        missing, empty, truncated, pickled or foreign file is one `WeightsFileError` line naming
        ``checkpoint_path``, not torch's mmap or pickle message."""
        kwargs.setdefault("weights_only", True)
        if isinstance(checkpoint_path, (str, Path)):
            read_weights(checkpoint_path, key="checkpoint_path", checkpoint=True)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the run settings a resumed run may change, so that it can say which it changed."""
        trainer = self._trainer
        if trainer is not None:
            datamodule = getattr(trainer, "datamodule", None)
            checkpoint[RUN_SETTINGS_KEY] = {
                "trainer.max_epochs": trainer.max_epochs,
                "data.batch_size": getattr(datamodule, "batch_size", None),
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """On resume the optimizer and scheduler state come from the checkpoint, so a changed optimizer or
        schedule (`RESUME_FIXED`) would be silently ignored: refused instead. A new ``optimizer.lr`` alone is
        used: the restored optimizer's and schedule's learning rates are rescaled by new / old (the schedule's
        shape and position are kept)."""
        trainer = self._trainer
        if trainer is None or trainer.state.fn != "fit":
            return
        saved = checkpoint.get("hyper_parameters", {})
        for key in RESUME_FIXED:
            old = saved.get(key) if key == "scale_lr" else check_config(key, saved.get(key))
            new = self.hparams[key]
            difference = _first_difference(key, old, new)
            if difference and key == "optimizer" and isinstance(old, dict) and _only_lr_differs(old, new):
                rescale_checkpoint_lr(checkpoint, new["lr"] / old["lr"])
                rank_zero_info(f"resumed with optimizer.lr {old['lr']!r} -> {new['lr']!r} (the schedule is rescaled)")
                continue
            if difference:
                raise ValueError(
                    f"{difference}: resuming restores the checkpoint's optimizer and scheduler, so the new value "
                    "would not apply; resume with the old value, or start a new run from the weights "
                    "(model.pretrained=PATH)"
                )


def _check_arguments(
    num_classes: Any,
    in_chans: Any,
    resolution: Any,
    label_smoothing: Any,
    mixup: Any,
    cutmix: Any,
    ema_decay: Any,
    class_names: Any,
) -> None:
    """Values that cannot work are refused when given, naming the argument (not at step 1, or never: an
    ``ema_decay`` of 1 froze the average at its first value and evaluated that)."""
    check_whole("num_classes", num_classes, 1)
    check_whole("in_chans", in_chans, 1)
    check_whole("resolution", resolution, MIN_INPUT_SIZE)
    check_fraction("label_smoothing", label_smoothing)
    check_fraction("ema_decay", ema_decay)
    check_positive("mixup", mixup, allow_zero=True)
    check_positive("cutmix", cutmix, allow_zero=True)
    if class_names is not None and (
        isinstance(class_names, str)
        or not all(isinstance(name, str) for name in class_names)
        or len(class_names) != num_classes
    ):
        raise ValueError(f"class_names must be {num_classes} strings (one per class), got {repr(class_names)[:200]}")


def _only_lr_differs(old: Any, new: Any) -> bool:
    return (
        isinstance(old, dict)
        and isinstance(new, dict)
        and old.get("lr") not in (None, 0)
        and {k: v for k, v in old.items() if k != "lr"} == {k: v for k, v in new.items() if k != "lr"}
    )


def _first_difference(key: str, old: Any, new: Any) -> str | None:
    """``"key.name=new differs from the resumed checkpoint's old"`` for the first differing value."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in sorted(old.keys() | new.keys()):
            if old.get(name) != new.get(name):
                return f"{key}.{name}={new.get(name)!r} differs from the resumed checkpoint's {old.get(name)!r}"
        return None
    return None if old == new else f"{key}={new!r} differs from the resumed checkpoint's {old!r}"
