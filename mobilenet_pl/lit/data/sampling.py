"""The samplers and splits every DataModule shares: exact distributed evaluation, exact mid-epoch resume.

- `EvalShard`: under DDP, every validation/test sample goes to exactly one rank, and shorter shards are topped
  up with copies labelled ``IGNORE_INDEX`` that all metrics skip, so distributed accuracy equals
  single-process accuracy (Lightning's ``DistributedSampler`` pads with duplicates that count).
- `EpochSampler` and `SeededSamples`: the training order is a function of (seed, epoch) and each sample's
  augmentation of (seed, epoch, index), so a run resumed mid-epoch draws the batches an uninterrupted one would.
- `split_sizes`, `seeded_split`: reproducible train/val/test splits, with one error line per bad fraction.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, Subset, random_split

from mobilenet_pl.lit.data.images import IGNORE_INDEX


class EvalShard(Dataset[tuple[Tensor, int]]):
    """Rank ``rank`` of ``world`` sees samples rank, rank + world, ...; every rank gets the same length
    (so collective ops stay in step), and the top-up samples carry ``IGNORE_INDEX``. Labels are ``int``
    (every data set here yields ``int`` labels; a tensor label would not collate with a top-up's)."""

    def __init__(self, dataset: Dataset[Any], rank: int, world: int) -> None:
        self.dataset = dataset
        size = len(dataset)  # type: ignore[arg-type]
        self.indices = list(range(rank, size, world))
        self.length = -(-size // world)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if index < len(self.indices):
            image, label = self.dataset[self.indices[index]]
            return image, int(label)  # one label type in a batch, whatever the data set yields
        image, _ = self.dataset[self.indices[0] if self.indices else 0]
        return image, IGNORE_INDEX


class EpochSampler(DistributedSampler[Any]):
    """``DistributedSampler`` (order a function of seed and epoch) that yields ``(epoch, index)`` keys for
    ``SeededSamples`` and can start ``skip`` samples into its first epoch (a resumed mid-epoch checkpoint)."""

    def __init__(self, dataset: Dataset[Any], *, epoch: int = 0, skip: int = 0, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.epoch, self.skip = epoch, skip

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0  # the position applies to the epoch the checkpoint was written in
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch, indices = self.epoch, list(super().__iter__())
        # the length stays the epoch's: Lightning counts a resumed epoch's batches from the checkpoint's
        return iter([(epoch, index) for index in indices[self.skip :]])


class SeededSamples(Dataset[Any]):
    """Training samples whose random augmentation is a function of (seed, epoch, index) alone.

    Each sample reseeds torch's CPU generator (and, with ``python_rngs``, NumPy's and ``random``'s: timm's
    RandAugment draws from them), restoring them afterwards, so what a sample looks like does not depend on
    which DataLoader worker draws it, on that worker's history (persistent workers) or on where a run was
    resumed: resumed and uninterrupted runs see identical batches. Saving and restoring NumPy's state costs
    as much as a tenth of a sample's decoding, hence only when a transform uses it.
    """

    def __init__(self, dataset: Dataset[Any], seed: int, python_rngs: bool = True) -> None:
        self.dataset, self.seed, self.python_rngs = dataset, seed, python_rngs

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if isinstance(key, int):  # an ordered pass (split_dataloader): no reseeding
            return self.dataset[key]
        epoch, index = key
        sample_seed = hash((self.seed, epoch, index)) % 2**32
        # the CPU generator alone: torch.manual_seed would also reseed (and not restore) the CUDA ones
        torch_state = torch.default_generator.get_state()
        python_state = (random.getstate(), np.random.get_state()) if self.python_rngs else None
        torch.default_generator.manual_seed(sample_seed)
        if python_state is not None:
            random.seed(sample_seed)
            np.random.seed(sample_seed)
        try:
            return self.dataset[index]
        finally:
            torch.default_generator.set_state(torch_state)
            if python_state is not None:
                random.setstate(python_state[0])
                np.random.set_state(python_state[1])


def split_sizes(n: int, fractions: dict[str, float]) -> list[int]:
    """Sizes of the ``fractions`` splits of ``n`` samples (in that order), the rest last; each named
    fraction must be in (0, 1), leave at least one sample in its split, and all must sum below 1."""
    for key, value in fractions.items():
        if not 0 < value < 1:
            raise ValueError(f"{key}={value} is not allowed: must be a fraction in (0, 1)")
        if round(n * value) < 1:
            raise ValueError(f"{key}={value} is not allowed: leaves no image of {n} in that split")
    sizes = [round(n * value) for value in fractions.values()]
    if sum(sizes) >= n:
        raise ValueError(
            f"{' + '.join(fractions)} = {sum(fractions.values()):g} is not allowed: leaves no training images"
        )
    return [*sizes, n - sum(sizes)]


def seeded_split(n: int, fractions: dict[str, float], seed: int) -> list[list[int]]:
    """Indices of a reproducible split of ``range(n)``: one list per fraction, then the rest (training)."""
    parts: list[Subset[int]] = random_split(
        range(n),  # type: ignore[arg-type]
        split_sizes(n, fractions),
        generator=torch.Generator().manual_seed(seed),
    )
    return [list(part.indices) for part in parts]
