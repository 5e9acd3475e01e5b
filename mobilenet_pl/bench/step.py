"""What the benchmark's sections share: the run's settings (`Config`) and the timed training step.

Its own module so that the sections kept in their own modules (``bench_app``, ``bench_modes``) and
``benchmark`` (which registers them) import it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mobilenet_pl.app.timing import interleaved
from mobilenet_pl.models import create_model

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# the same precisions as Lightning Trainer arguments (lightning and app sections)
LIGHTNING_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
FAMILIES = {"v1": "mobilenet_v1", "v2": "mobilenet_v2"}
# training-step variants of the modes section: torch.compile's mode for each (None: eager)
MODES: dict[str, str | None] = {"eager": None, "compile": "default", "cudagraphs": "reduce-overhead"}
LR, MOMENTUM, WEIGHT_DECAY, LABEL_SMOOTHING = 0.01, 0.9, 4e-5, 0.1


@dataclass
class Config:
    families: list[str]
    width: float
    resolution: int
    batch_size: int
    device: str
    precision: str
    channels_last: bool
    compile: bool
    steps: int
    repeats: int
    warmup: int
    infer_batch: int
    threads: int
    sections: list[str]
    json: str | None
    app_images: int
    app_classes: int
    app_steps: int
    app_workers: int
    modes: list[str]
    modes_batches: list[int]

    @property
    def dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]


def prepare(model: nn.Module, cfg: Config) -> nn.Module:
    model = model.to(cfg.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if cfg.compile else model  # type: ignore[return-value]


def make_batch(cfg: Config, batch_size: int, num_classes: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, cfg.resolution, cfg.resolution, generator=generator).to(cfg.device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(cfg.device)
    return x, y


def autocast_for(cfg: Config) -> torch.autocast:
    return torch.autocast(cfg.device, dtype=cfg.dtype, enabled=cfg.dtype is not None)


def sgd_step(
    model: nn.Module, cfg: Config, optimizer: torch.optim.Optimizer | None = None, label_smoothing: float = 0.0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``step(x, y)``: one training step of ``model`` (SGD with the benchmark's settings unless ``optimizer``
    is given, autocast and GradScaler as ``cfg`` says); returns the step's loss (detached, not read back)."""
    if optimizer is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    scaler = torch.amp.GradScaler(cfg.device) if cfg.dtype == torch.float16 else None

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast_for(cfg):
            loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def train_step(model: nn.Module, cfg: Config, batch: tuple[torch.Tensor, torch.Tensor]) -> Callable[[], torch.Tensor]:
    """One SGD training step on ``batch`` per call; returns the step's loss (detached, not read back)."""
    step = sgd_step(model, cfg)
    return lambda: step(*batch)


def network_train_samples(cfg: Config, family: str, num_classes: int) -> list[float]:
    """Seconds per training step of our model alone (the train section's step on one ready batch), one
    sample per repetition: the yardstick of the ``app`` section."""
    model = prepare(create_model(FAMILIES[family], width=cfg.width, num_classes=num_classes).train(), cfg)
    step = train_step(model, cfg, make_batch(cfg, cfg.batch_size, num_classes))
    return interleaved({"network": step}, cfg.steps, cfg.repeats, cfg.warmup)["network"]


def quiet_lightning() -> None:
    import logging
    import warnings

    # "GPU available but not used", "the number of training batches is small", ...: noise in a table
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
