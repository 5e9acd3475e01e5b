"""``ImageDataModule``: the loaders every data set shares.

``batch_size`` is per device (per process), as in Lightning; the global batch is
``batch_size x devices x num_nodes``, which is what ``recipe.scale_lr`` scales by.

Under DDP the loaders shard themselves (the app sets ``use_distributed_sampler=False``): training uses
an `EpochSampler` (a ``DistributedSampler`` that can start mid-epoch); validation and test use `EvalShard`,
which gives every sample to exactly one rank (see `mobilenet_pl.lit.data.sampling`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mobilenet_pl.lit import lightning_internals
from mobilenet_pl.lit.data.sampling import EpochSampler, EvalShard, SeededSamples


class ImageDataModule(L.LightningDataModule):
    """Loaders shared by every data set; subclasses fill ``train_set``, ``val_set`` and ``test_set``."""

    num_classes: int
    in_chans: int = 3
    default_resolution = 224  # used when resolution is None (the app's ``resolution: null``)
    small_input = False  # whether the model should use its small-input variant by default

    def __init__(
        self,
        *,
        resolution: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.resolution = resolution or self.default_resolution
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.train_set: Dataset[Any] | None = None
        self.val_set: Dataset[Any] | None = None
        self.test_set: Dataset[Any] | None = None
        self.class_names: list[str] = []
        self.collate_fn: Any = None  # the DataLoader's; device decoding batches file bytes
        self.device_augment: dict[bool, Any] | None = None  # DeviceAugment for training (True) and evaluation
        self.resume_at = {"epoch": 0, "samples": 0}  # where the training sampler starts (load_state_dict)

    def partition(self) -> dict[str, Any]:
        """What decides which image lands in train, val or test, keyed by the app's config keys: saved in
        every checkpoint (`state_dict`) so that a resumed run can refuse another partition (images the
        checkpoint trained on landing in the new val or test split). Subclasses add their own keys."""
        return {"data": type(self).__name__, "seed": self.seed}

    def state_dict(self) -> dict[str, Any]:
        """The training sampler's position, saved in every checkpoint so that a resumed run draws the same
        batches as an uninterrupted one: the epoch, and the samples this rank has drawn in it so far; and the
        data `partition`."""
        trainer = self.trainer
        if trainer is None:
            return {"partition": self.partition()}
        # (no public API for the loop's position: lightning_internals.train_position)
        epoch, completed = lightning_internals.train_position(trainer)
        # an epoch's end: Lightning resumes with the next epoch (``epoch`` counts this one); mid-epoch
        # (SIGTERM): the same epoch, after the batches done
        batches = 0 if trainer.is_last_batch else completed
        return {"epoch": epoch, "samples": int(batches * self.batch_size), "partition": self.partition()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resume_at = {"epoch": int(state_dict.get("epoch", 0)), "samples": int(state_dict.get("samples", 0))}

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset: Dataset[Any] | None, train: bool) -> DataLoader[Any]:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a data loader")
        rank, world = self._rank_and_world()
        sampler: DistributedSampler[Any] | None = None
        if train:
            # the shuffle order is a function of (seed, epoch), each augmentation of (seed, epoch, index): exact
            # resume. The sampler starts at the checkpoint's position: Lightning builds a resumed run's first
            # iterator before it sets the sampler's epoch.
            sampler = EpochSampler(
                dataset,
                epoch=self.resume_at["epoch"],
                skip=self.resume_at["samples"],
                num_replicas=world,
                rank=rank,
                shuffle=True,
                seed=self.seed,
                drop_last=True,
            )
            # timm's RandAugment (data.randaugment) draws from NumPy and ``random``; the other transforms from torch
            dataset = SeededSamples(dataset, self.seed, python_rngs=bool(getattr(self, "randaugment", None)))
        elif world > 1:
            dataset = EvalShard(dataset, rank, world)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=train and len(dataset) > self.batch_size,  # type: ignore[arg-type]
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            collate_fn=self.collate_fn,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Decode and augment on the device when ``device_augment`` is set (``data.decode_on=device``)."""
        if self.device_augment is None:
            return batch
        trainer = self.trainer
        training = bool(trainer is not None and trainer.training)
        augment = self.device_augment[training]
        if training and augment.epoch != trainer.current_epoch:  # type: ignore[union-attr]
            augment.set_epoch(trainer.current_epoch)  # type: ignore[union-attr]
        stage = trainer.state.stage if trainer is not None else None
        return augment(batch, stage.value if stage is not None else ("train" if training else "test"))

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.test_set, train=False)

    def skipped_images(self) -> dict[str, int]:
        """Unreadable images per split (only image folders can have any)."""
        return {"train": 0, "val": 0, "test": 0}

    def split_dataloader(self, split: str) -> DataLoader[Any]:
        """The loader of ``split`` in a fixed order (for ``train``: no shuffling, augmentation kept)."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be one of ['train', 'val', 'test'], got {split!r}")
        return self._loader(getattr(self, f"{split}_set"), train=False)
