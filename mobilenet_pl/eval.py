"""Evaluate a checkpoint: ``python -m mobilenet_pl.eval ckpt_path=PATH [data=digits] [split=test]``.

Prints and writes (results.json, confusion_matrix.png in the run dir) top-1, top-5, per-class accuracy
and the exact number of images evaluated. A plain single-process loop: the reference that distributed
evaluation is checked against.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mobilenet_pl.app.config import check_device, check_values
from mobilenet_pl.app.errors import ConfigError
from mobilenet_pl.app.results import RESULTS_FILE, chance_note, read_results, write_results
from mobilenet_pl.app.runner import checkpoint_datamodule, lightning_logs_once, run_tool, save_run_record

if TYPE_CHECKING:  # torch and Lightning are imported where used: a config mistake is reported before they load
    from torch.utils.data import DataLoader

    from mobilenet_pl.lit.classifier import MobileNetClassifier


def load_checkpoint(path: str | Path, device: str = "cpu") -> MobileNetClassifier:
    """Our checkpoint, read safely; NaN/inf weights are refused: their accuracy would mean nothing."""
    from mobilenet_pl.lit.classifier import MobileNetClassifier
    from mobilenet_pl.models.weights import read_weights

    lightning_logs_once()
    read_weights(path, key="ckpt_path", checkpoint=True, finite=True)
    module = MobileNetClassifier.load_from_checkpoint(path, map_location=device, weights_only=True)
    return module.eval()


def check_class_names(ckpt_path: str, trained: Sequence[str] | None, data: Sequence[str]) -> None:
    """Per-class numbers are reported under the checkpoint's names: the data's must be the same."""
    if not trained or list(trained) == list(data):
        return
    diffs = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(trained, data, strict=False)) if a != b][:3]
    raise ConfigError(
        f"ckpt_path={ckpt_path!r} was trained on other class names than the data's (class: checkpoint vs data; "
        f"first differences {', '.join(diffs)})"
    )


def evaluate(module: MobileNetClassifier, loader: DataLoader[Any], device: str = "cpu") -> dict[str, Any]:
    """Top-1, top-5, per-class accuracy, confusion matrix and sample count over every batch of ``loader``."""
    import torch
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

    with torch.no_grad():
        num_classes = module.hparams["num_classes"]
        metrics = MetricCollection(
            {
                "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                "acc5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
                "per_class": MulticlassAccuracy(num_classes, average="none"),
                "confusion": MulticlassConfusionMatrix(num_classes),
            }
        ).to(device)
        loss_sum, samples = 0.0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = module.eval_forward(x)
            loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
            samples += len(y)
            metrics.update(logits, y)
        out = metrics.compute()
        return {
            "acc1": out["acc1"].item(),
            "acc5": out["acc5"].item(),
            "loss": loss_sum / max(1, samples),
            "per_class": out["per_class"].cpu().tolist(),
            "confusion": out["confusion"].cpu(),
            "samples": samples,
        }


def run(cfg: DictConfig) -> dict[str, Any]:
    started = time.perf_counter()
    check_values(cfg, {"batch_size": 1})

    from mobilenet_pl.app.plots import save_confusion_matrix
    from mobilenet_pl.models.cost import count_madds

    device = check_device("device", cfg.device)
    module = load_checkpoint(cfg.ckpt_path, device)
    hp = module.hparams
    if cfg.resolution is None:
        cfg.resolution = hp["resolution"]
    datamodule = checkpoint_datamodule(cfg.data, hp, batch_size=cfg.batch_size)
    datamodule.setup("test")
    check_class_names(cfg.ckpt_path, hp.get("class_names"), list(datamodule.class_names))
    save_run_record()  # checked: only now the run's .hydra/ record is written
    result = evaluate(module, datamodule.split_dataloader(cfg.split), device)
    # unreadable files are named in the log and left out of the count (never replaced by the next image)
    skipped = len(getattr(getattr(datamodule, f"{cfg.split}_set", None), "skipped", None) or [])

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    names = list(hp.get("class_names") or [str(i) for i in range(hp["num_classes"])])
    save_confusion_matrix(result["confusion"], names, run_dir / "confusion_matrix.png", f"{cfg.split} confusion matrix")
    model = module.to_model()
    madds, _ = count_madds(model, hp["resolution"], hp["in_chans"])
    split = cfg.split
    write_results(
        run_dir,
        {
            "model": hp["model"]["name"],
            "width": hp["model"]["width"],
            "resolution": hp["resolution"],
            "params": sum(p.numel() for p in model.parameters()),
            "madds": madds,
            "split": split,
            "num_classes": hp["num_classes"],
            "metrics": {
                f"{split}/acc1": result["acc1"],
                f"{split}/acc5": result["acc5"],
                f"{split}/loss": result["loss"],
            },
            "per_class_acc1": dict(zip(names, result["per_class"], strict=True)),
            "skipped_images": {split: skipped},
            "test_samples": result["samples"],
            "checkpoint": str(Path(cfg.ckpt_path).expanduser().resolve()),
            "last_checkpoint": None,
            "wall_time_s": time.perf_counter() - started,
        },
    )
    print(
        f"{split}: top-1 {100 * result['acc1']:.2f}%  top-5 {100 * result['acc5']:.2f}%  on {result['samples']} images"
    )
    if skipped:
        print(f"unreadable   {skipped} image(s) of {split} left out (named above)")
    near_chance = chance_note(read_results(run_dir / RESULTS_FILE))
    if near_chance:
        print(near_chance)
    worst = sorted(zip(result["per_class"], names, strict=True))[:3]
    print("lowest per-class top-1: " + ", ".join(f"{name} {100 * acc:.1f}%" for acc, name in worst))
    print(f"results: {run_dir / 'results.json'}; confusion matrix: {run_dir / 'confusion_matrix.png'}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobilenet_pl.eval`` and the ``mobilenet-pl-eval`` console script."""
    return run_tool("eval", run, argv)


if __name__ == "__main__":
    sys.exit(main())
