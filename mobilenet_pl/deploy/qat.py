"""Quantization-aware fine-tuning of a PT2E-prepared graph through Lightning.

torchvision's QAT recipe for MobileNetV2 (https://github.com/pytorch/vision/tree/main/references/classification#qat-mobilenetv2):
start from the float weights, fine-tune with fake quantization at a small learning rate, freeze the
observers (quantization ranges) after a few epochs and the BatchNorm statistics after a few epochs,
then convert. Here: ``qat_freeze_bn_epoch`` switches the captured graph to its eval form (BatchNorm uses
its running statistics, dropout is off; gradients still flow), ``qat_freeze_observer_epoch`` stops the
range updates (``disable_observer``). The loop is Lightning's: progress bar, logger, checkpoints in the
QAT run dir, a ``last.ckpt`` on SIGTERM that ``qat_ckpt_path=`` resumes.
"""

from __future__ import annotations

import contextlib
import sys
import types
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from mobilenet_pl._checks import is_finite_number
from mobilenet_pl.lit.optim import rescale_checkpoint_lr, warmup_cosine

RECIPE_KEY = "qat_recipe"


class QATModule(L.LightningModule):
    """Fine-tunes a ``prepare_qat_pt2e`` graph with cross-entropy; logs ``train/loss`` and ``val/acc1``."""

    def __init__(
        self,
        prepared: torch.fx.GraphModule,
        lr: float,
        freeze_bn_epoch: int,
        freeze_observer_epoch: int,
        epochs: int,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        self.model = prepared
        self.lr, self.epochs, self.label_smoothing = lr, epochs, label_smoothing
        self.freeze_bn_epoch, self.freeze_observer_epoch = freeze_bn_epoch, freeze_observer_epoch
        self.bn_frozen = False

        # an exported graph refuses .train()/.eval() (its BatchNorm and dropout are ops, not modules);
        # Lightning calls both around validation: map them onto torchao's rewrites, with BatchNorm kept
        # frozen once the recipe froze it
        def train(graph: torch.fx.GraphModule, mode: bool = True) -> torch.fx.GraphModule:
            if mode and not self.bn_frozen:
                move_exported_model_to_train(graph)
            else:
                move_exported_model_to_eval(graph)
            graph.training = mode
            return graph

        prepared.train = types.MethodType(train, prepared)  # type: ignore[method-assign]
        prepared.eval = types.MethodType(lambda graph: train(graph, False), prepared)  # type: ignore[method-assign]

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        from torchao.quantization.pt2e import disable_observer

        if self.current_epoch >= self.freeze_bn_epoch:
            self.bn_frozen = True
        # every epoch, not only at the freeze: a resumed run starts from a fresh graph in its train form
        self.model.train()  # the train form, or the eval form once BatchNorm is frozen
        if self.current_epoch >= self.freeze_observer_epoch:
            self.model.apply(disable_observer)

    def on_train_start(self) -> None:
        """Once, after Lightning restored a resumed run: set the optimizer's rates to the schedule as configured
        now. The restored rate is the old schedule's (0 after its last epoch), and the schedule would set a new
        one only at the epoch's end. A fresh run's rates are unchanged (the factor at epoch 0 is 1)."""
        schedule = cast(LambdaLR, self.lr_schedulers())
        optimizer = cast(torch.optim.Optimizer, self.optimizers())
        for group, base_lr, factor in zip(optimizer.param_groups, schedule.base_lrs, schedule.lr_lambdas, strict=True):
            group["lr"] = base_lr * factor(schedule.last_epoch)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self.model(x), y, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        acc = (self.model(x).argmax(1) == y).float().mean()
        self.log("val/acc1", acc, prog_bar=True, batch_size=len(y))

    def configure_optimizers(self) -> Any:
        # torchvision's QAT: SGD, momentum 0.9, lr 1e-4 from converged float weights; a cosine decay to 0 per
        # epoch. A lambda schedule: its length is not restored on resume (CosineAnnealingLR's T_max is), so a
        # resumed run with more qat_epochs continues on the longer cosine instead of at learning rate 0
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=1e-5)
        schedule = warmup_cosine(optimizer, steps_per_epoch=1, max_epochs=self.epochs, warmup_epochs=0, min_lr_ratio=0)
        return {"optimizer": optimizer, "lr_scheduler": {**schedule, "interval": "epoch"}}

    def recipe(self) -> dict[str, Any]:
        """The command's QAT settings, saved in each checkpoint so that a resumed run can say what changed."""
        partition = getattr(getattr(self._trainer, "datamodule", None), "partition", None)
        return {
            "qat_epochs": self.epochs,
            "qat_lr": self.lr,
            "qat_freeze_bn_epoch": self.freeze_bn_epoch,
            "qat_freeze_observer_epoch": self.freeze_observer_epoch,
            "partition": partition() if callable(partition) else None,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["qat_bn_frozen"] = self.bn_frozen
        checkpoint[RECIPE_KEY] = self.recipe()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A resumed run fine-tunes the same data: another partition (test images the checkpoint trained on)
        is refused. New QAT settings are used and printed; a new ``qat_lr`` rescales the restored rates."""
        self.bn_frozen = bool(checkpoint.get("qat_bn_frozen", False))
        old, new = checkpoint.get(RECIPE_KEY), self.recipe()
        if not isinstance(old, dict):  # a checkpoint from before the record: nothing to compare
            return
        if old.get("partition") != new["partition"]:
            raise ValueError(
                f"qat_ckpt_path: the QAT checkpoint fine-tuned on data {old.get('partition')}; this run's data is "
                f"{new['partition']}: resume with the same data settings, or start a new QAT run (another qat_dir)"
            )
        old_lr: Any = old.get("qat_lr")
        if not (is_finite_number(old_lr) and old_lr > 0):  # a foreign or edited record: its rates mean nothing
            raise ValueError(f"qat_ckpt_path: the QAT checkpoint records qat_lr={old_lr!r}, not a rate > 0")
        if old_lr != self.lr:
            rescale_checkpoint_lr(checkpoint, self.lr / old_lr)
        changed = [f"{key} {old.get(key)!r} -> {value!r}" for key, value in new.items() if old.get(key) != value]
        if changed:
            print(f"resuming the QAT run with changed settings: {', '.join(changed)}", file=sys.stderr)


def fine_tune(prepared: torch.fx.GraphModule, datamodule: Any, cfg: Any, run_dir: Any) -> dict[str, Any]:
    """Fine-tune ``prepared`` in place for ``cfg.qat_epochs`` on ``datamodule``'s training split, validating
    each epoch; checkpoints (``checkpoints/last.ckpt``, SIGTERM included) and the logger's files go to
    ``run_dir``."""
    from pathlib import Path

    from lightning.pytorch.callbacks import ModelCheckpoint

    from mobilenet_pl.app.build import build_logger
    from mobilenet_pl.lit.callbacks import CheckpointOnSigterm
    from mobilenet_pl.lit.checkpoint_io import AtomicCheckpointIO

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)  # augmentation and dropout
    module = QATModule(
        prepared,
        lr=float(cfg.qat_lr),
        freeze_bn_epoch=int(cfg.qat_freeze_bn_epoch),
        freeze_observer_epoch=int(cfg.qat_freeze_observer_epoch),
        epochs=int(cfg.qat_epochs),
    )
    logger = build_logger(cfg, run_dir, None)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=int(cfg.qat_epochs),
        logger=logger if logger is not None else False,
        callbacks=[
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="qat-epoch{epoch:03d}",
                auto_insert_metric_name=False,
                save_top_k=-1,  # one per epoch: a few MB each
                save_last=True,
            ),
            CheckpointOnSigterm(),
        ],
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=min(50, max(1, len(datamodule.train_dataloader()))),
    )
    # the command's stdout is its report (JSON with json=true): the progress bar and Lightning's lines go to stderr
    with contextlib.redirect_stdout(sys.stderr):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.qat_ckpt_path, weights_only=True)
    prepared.eval()
    return {
        "epochs": int(cfg.qat_epochs),
        "dir": str(run_dir),
        "val_acc1": float(trainer.callback_metrics.get("val/acc1", float("nan"))),
        "lr": float(cfg.qat_lr),
        "freeze_bn_epoch": int(cfg.qat_freeze_bn_epoch),
        "freeze_observer_epoch": int(cfg.qat_freeze_observer_epoch),
    }
