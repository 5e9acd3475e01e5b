"""``MobileNetClassifier``: a LightningModule around either backbone.

Hyperparameters are plain values only (model name, width, dicts of numbers and strings), so a checkpoint
loads with ``torch.load(path, weights_only=True)`` and ``MobileNetClassifier.load_from_checkpoint(path)``
needs no other argument. The feature extractor is ``self.backbone`` (a MobileNet without classifier) and
the linear head is ``self.classifier``, so Lightning's ``BackboneFinetuning`` freezes the one and trains
the other. ``to_model()`` puts them back together into one MobileNet for export.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from mobilenet_pl.lit.data import IGNORE_INDEX
from mobilenet_pl.lit.optim import param_groups, scaled_lr
from mobilenet_pl.models import create_model

DEFAULT_OPTIMIZER: dict[str, Any] = {
    "_target_": "torch.optim.AdamW",
    "_partial_": True,
    "lr": 5e-3,
    "weight_decay": 0.05,
}


class MobileNetClassifier(L.LightningModule):
    """Image classifier with a MobileNet V1/V2 backbone (https://arxiv.org/abs/1704.04861,
    https://arxiv.org/abs/1801.04381).

    Args:
        model: ``"v1"``, ``"v2"`` or a registered name.
        width: width multiplier.
        num_classes: classes of the data set.
        in_chans: image channels.
        resolution: training image side (kept so evaluation and export know it).
        dropout: dropout before the classifier.
        drop_path_rate: stochastic depth rate (V2's residual blocks).
        small_input: stem stride 1 for 32x32-ish images.
        act_layer: ``"relu6"`` or ``"relu"``.
        init: ``"default"`` or ``"xavier"``.
        pretrained: ImageNet weights to start from (``True``, a tag or a file); not saved as a
            hyperparameter, because a checkpoint already holds the weights.
        optimizer: ``{"_target_": "torch.optim.SGD", "_partial_": True, "lr": ..., ...}``; BatchNorm
            parameters and biases get no weight decay.
        scheduler: ``{"_target_": "mobilenet_pl.lit.optim.warmup_cosine", "_partial_": True, ...}`` or None.
        scale_lr: multiply lr by global batch / 256 (set by the training app).
        label_smoothing: label smoothing of the cross-entropy loss.
        mixup: timm Mixup alpha (0 disables).
        cutmix: timm CutMix alpha (0 disables).
        ema_decay: keep an exponential moving average of the weights (timm ModelEmaV3) and evaluate it.
        channels_last: run the backbone in channels_last memory format.
        compile: ``torch.compile`` the backbone (state-dict keys stay ``backbone.*``).
        class_names: names for reports and exports.

    Example:
        >>> module = MobileNetClassifier(model="v2", width=0.5, num_classes=10, resolution=32)
        >>> module(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        model: str = "v2",
        width: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        resolution: int = 224,
        dropout: float = 0.2,
        drop_path_rate: float = 0.0,
        small_input: bool = False,
        act_layer: str = "relu6",
        init: str = "default",
        pretrained: bool | str = False,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        scale_lr: bool = False,
        label_smoothing: float = 0.1,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        ema_decay: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["pretrained"])
        net = create_model(
            model,
            width=width,
            num_classes=num_classes,
            in_chans=in_chans,
            dropout=dropout,
            drop_path_rate=drop_path_rate,
            small_input=small_input,
            act_layer=act_layer,
            init=init,  # type: ignore[arg-type]
            pretrained=pretrained,
        )
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

    # -- forward -------------------------------------------------------------------------------------------
    def _net(self) -> nn.Sequential:
        """Backbone and head as one module (a view: no parameters are copied)."""
        return nn.Sequential(self.backbone, self.classifier)

    def to_model(self, ema: bool = True) -> nn.Module:
        """One plain MobileNet with this module's weights (the EMA weights when EMA is on and ``ema``)."""
        hp = self.hparams
        model = create_model(
            hp["model"],
            width=hp["width"],
            num_classes=hp["num_classes"],
            in_chans=hp["in_chans"],
            dropout=hp["dropout"],
            small_input=hp["small_input"],
            act_layer=hp["act_layer"],
        )
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
        return x.contiguous(memory_format=torch.channels_last) if self.hparams["channels_last"] else x

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
            loss = torch.sum(-soft * F.log_softmax(self(x), dim=-1), dim=-1).mean()
        else:
            loss = F.cross_entropy(self(x), y, label_smoothing=self.hparams["label_smoothing"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y))
        return loss

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
        from hydra.utils import instantiate  # only here: the module imports without Hydra (benchmarks, export)

        config = dict(self.hparams["optimizer"] or DEFAULT_OPTIMIZER)
        if self.hparams["scale_lr"]:
            global_batch = self.trainer.world_size * self._batch_size()
            config["lr"] = scaled_lr(config["lr"], global_batch)
        # the configured weight decay is also the optimizer default, for groups added later (finetuning)
        groups = param_groups([self.backbone, self.classifier], config.get("weight_decay", 0.0))
        optimizer = instantiate(config)(groups)
        scheduler_cfg = self.hparams["scheduler"]
        if not scheduler_cfg:
            return optimizer
        steps_per_epoch = max(1, self.trainer.estimated_stepping_batches // max(1, self.trainer.max_epochs or 1))
        schedule = instantiate(dict(scheduler_cfg))(
            optimizer, steps_per_epoch=int(steps_per_epoch), max_epochs=int(self.trainer.max_epochs or 1)
        )
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def _batch_size(self) -> int:
        datamodule = getattr(self.trainer, "datamodule", None)
        return int(getattr(datamodule, "batch_size", 1))
