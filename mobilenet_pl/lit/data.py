"""DataModules: bundled digits (the default), ImageNet-style image folders, CIFAR-10/100, FakeData.

``batch_size`` is per device (per process), as in Lightning; the global batch is
``batch_size x devices x num_nodes``, which is what ``recipe.scale_lr`` scales by.

Under DDP the loaders shard themselves (the app sets ``use_distributed_sampler=False``): training uses
a ``DistributedSampler``; validation and test use ``EvalShard``, which gives every sample to exactly
one rank and tops shorter shards up with copies labelled ``IGNORE_INDEX`` that all metrics skip, so
distributed accuracy equals single-process accuracy (Lightning's default pads with duplicates that count).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset
from torchvision.transforms import v2 as T

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IGNORE_INDEX = -100  # label of padding samples; F.cross_entropy's default ignore_index


class EvalShard(Dataset[tuple[Tensor, int]]):
    """Rank ``rank`` of ``world`` sees samples rank, rank + world, ...; every rank gets the same length
    (so collective ops stay in step), and the top-up samples carry ``IGNORE_INDEX``."""

    def __init__(self, dataset: Dataset[Any], rank: int, world: int) -> None:
        self.dataset = dataset
        size = len(dataset)  # type: ignore[arg-type]
        self.indices = list(range(rank, size, world))
        self.length = -(-size // world)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if index < len(self.indices):
            return self.dataset[self.indices[index]]  # type: ignore[no-any-return]
        image, _ = self.dataset[self.indices[0] if self.indices else 0]
        return image, IGNORE_INDEX


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

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset: Dataset[Any] | None, train: bool) -> DataLoader[Any]:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a data loader")
        rank, world = self._rank_and_world()
        sampler: DistributedSampler[Any] | None = None
        if train:
            # the shuffle order is a function of (seed, epoch) alone, also in one process: exact resume
            sampler = DistributedSampler(
                dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed, drop_last=True
            )
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
        )

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.test_set, train=False)

    def split_dataloader(self, split: str) -> DataLoader[Any]:
        """The loader of ``split`` in a fixed order (for ``train``: no shuffling, augmentation kept)."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be one of ['train', 'val', 'test'], got {split!r}")
        return self._loader(getattr(self, f"{split}_set"), train=False)


def seeded_split(n: int, fractions: tuple[float, float], seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Indices of a reproducible train / val / test split with the given val and test fractions."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val, n_test = round(n * fractions[0]), round(n * fractions[1])
    return perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]


class _Augmented(Dataset[tuple[Tensor, int]]):
    def __init__(self, images: Tensor, labels: Tensor, transform: Any) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), bundled with scikit-learn.

    Images are upsampled to ``resolution`` once, normalised, and split with a fixed seed into
    train / val / test (``val_fraction``, ``test_fraction``; 360 test images by default). Training
    images get small random shifts and rotations.
    """

    num_classes = 10
    in_chans = 1
    default_resolution = 32
    small_input = True

    def __init__(
        self, *, val_fraction: float = 0.2, test_fraction: float = 0.2, augment: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.val_fraction, self.test_fraction, self.augment = val_fraction, test_fraction, augment
        self.class_names = [str(i) for i in range(10)]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        images = F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        images = (images - images.mean()) / images.std()
        labels = torch.tensor(digits.target)
        train, val, test = seeded_split(len(labels), (self.val_fraction, self.test_fraction), self.seed)
        augment = T.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)) if self.augment else T.Identity()
        self.train_set = _Augmented(images[train], labels[train], augment)
        self.val_set = TensorDataset(images[val], labels[val])
        self.test_set = TensorDataset(images[test], labels[test])


def pil_transforms(resolution: int, train: bool, randaugment: str | None = None) -> T.Compose:
    """ImageNet-style transforms: random-resized crop + flip (+ timm RandAugment) or resize + centre crop."""
    if train:
        ops: list[Any] = [T.RandomResizedCrop(resolution, antialias=True), T.RandomHorizontalFlip()]
        if randaugment:
            from timm.data.auto_augment import rand_augment_transform

            ops.append(rand_augment_transform(randaugment, {"translate_const": int(resolution * 0.45)}))
    else:
        ops = [T.Resize(int(resolution * 256 / 224), antialias=True), T.CenterCrop(resolution)]
    return T.Compose(
        [*ops, T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def tolerant_image_folder(root: str, transform: Any, on_corrupt: str = "skip") -> Any:
    """A torchvision ImageFolder that names unreadable images and skips them (or fails, ``on_corrupt="error"``).

    A skipped file is replaced by the next readable one, with a warning that counts the skips of this
    process (each DataLoader worker counts its own). Errors propagate out of workers: nothing hangs.
    """
    from torchvision.datasets import ImageFolder

    class TolerantImageFolder(ImageFolder):
        skipped = 0

        def __getitem__(self, index: int) -> Any:
            for offset in range(len(self.samples)):
                i = (index + offset) % len(self.samples)
                try:
                    return super().__getitem__(i)
                except (OSError, ValueError, SyntaxError) as err:  # PIL: unidentified, truncated, broken
                    path = self.samples[i][0]
                    if on_corrupt == "error":
                        raise RuntimeError(
                            f"corrupt or unreadable image {path} ({err}); data.on_corrupt=skip skips such files"
                        ) from err
                    TolerantImageFolder.skipped += 1
                    warnings.warn(
                        f"skipping corrupt image {path} ({err.__class__.__name__}); {TolerantImageFolder.skipped} skipped so far in this process",
                        stacklevel=2,
                    )
            raise RuntimeError(f"no readable image at all in {root}")

    if on_corrupt not in ("skip", "error"):
        raise ValueError(f"data.on_corrupt must be 'skip' or 'error', got {on_corrupt!r}")
    return TolerantImageFolder(root, transform)


class ImageFolderDataModule(ImageDataModule):
    """ImageNet layout: ``root/train/<class>/*`` and ``root/val/<class>/*`` (``root/test`` if present,
    else the val folder is also the test set). Unreadable images are skipped with a warning, or stop
    the run with ``on_corrupt="error"``."""

    def __init__(
        self, *, root: str | None = None, randaugment: str | None = None, on_corrupt: str = "skip", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser() if root else None
        self.randaugment = randaugment
        self.on_corrupt = on_corrupt
        self._scan()

    def _scan(self) -> None:
        if self.root is None:
            raise ValueError(
                "data.root is required for data=imagefolder: a folder with train/<class>/ and val/<class>/"
            )
        for split in ("train", "val"):
            folder = self.root / split
            if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
                raise ValueError(
                    f"data.root={str(self.root)!r} has no class folders in {split}/ (expected {split}/<class>/*.jpg)"
                )
        self.class_names = sorted(p.name for p in (self.root / "train").iterdir() if p.is_dir())
        self.num_classes = len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        assert self.root is not None
        train_tf, eval_tf = (
            pil_transforms(self.resolution, True, self.randaugment),
            pil_transforms(self.resolution, False),
        )
        self.train_set = tolerant_image_folder(str(self.root / "train"), train_tf, self.on_corrupt)
        test_dir = self.root / "test" if (self.root / "test").is_dir() else self.root / "val"
        val_set = tolerant_image_folder(str(self.root / "val"), eval_tf, self.on_corrupt)
        test_set = tolerant_image_folder(str(test_dir), eval_tf, self.on_corrupt)
        self.val_set, self.test_set = self._align(val_set, "val"), self._align(test_set, "test")

    def _align(self, dataset: Any, split: str) -> Any:
        """Give ``split`` the training set's class indices (its own folder list may be a subset)."""
        unknown = sorted(set(dataset.classes) - set(self.class_names))
        if unknown:
            raise ValueError(f"data.root={str(self.root)!r}: {split}/ has classes absent from train/: {unknown[:5]}")
        index = {name: i for i, name in enumerate(self.class_names)}
        dataset.samples = [(path, index[dataset.classes[target]]) for path, target in dataset.samples]
        dataset.targets = [target for _, target in dataset.samples]
        dataset.classes, dataset.class_to_idx = list(self.class_names), index
        return dataset


class CIFARDataModule(ImageDataModule):
    """CIFAR-10/100 through torchvision: downloaded into ``root`` when online, a clear error when not.

    45,000/5,000 train/val split of the official training set (seeded); the official test set.
    """

    default_resolution = 32
    small_input = True

    def __init__(
        self,
        *,
        name: str = "cifar10",
        root: str = "data",
        download: bool = True,
        randaugment: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if name not in ("cifar10", "cifar100"):
            raise ValueError(f"data.name must be 'cifar10' or 'cifar100', got {name!r}")
        self.name, self.root, self.download, self.randaugment = name, Path(root).expanduser(), download, randaugment
        self.num_classes = 10 if name == "cifar10" else 100

    def _dataset(self, train: bool, transform: Any) -> Any:
        from torchvision import datasets

        cls = datasets.CIFAR10 if self.name == "cifar10" else datasets.CIFAR100
        try:
            return cls(str(self.root), train=train, transform=transform, download=self.download)
        except Exception as err:  # offline: urllib raises; absent without download: RuntimeError
            raise RuntimeError(
                f"{self.name} is not in data.root={str(self.root)!r} and could not be downloaded "
                f"({err.__class__.__name__}); offline? Put the extracted torchvision {self.name} folder there."
            ) from err

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
        ops_train: list[Any] = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
        if self.randaugment:
            from timm.data.auto_augment import rand_augment_transform

            ops_train.append(rand_augment_transform(self.randaugment, {"translate_const": 14}))
        tail = [T.Resize(self.resolution, antialias=True)] if self.resolution != 32 else []
        tail += [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
        full_train = self._dataset(True, T.Compose(ops_train + tail))
        full_eval = self._dataset(True, T.Compose(tail))
        self.class_names = list(full_train.classes)
        train, val, _ = seeded_split(len(full_train), (0.1, 0.0), self.seed)
        self.train_set, self.val_set = Subset(full_train, train.tolist()), Subset(full_eval, val.tolist())
        self.test_set = self._dataset(False, T.Compose(tail))


class FakeDataModule(ImageDataModule):
    """torchvision FakeData: random images of a fixed size, for smoke tests and benchmarks."""

    default_resolution = 64

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        train_size: int = 256,
        val_size: int = 64,
        test_size: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.sizes = (train_size, val_size, test_size)
        self.class_names = [f"class_{i}" for i in range(num_classes)]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from torchvision.datasets import FakeData

        to_tensor = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True)])
        shape = (self.in_chans, self.resolution, self.resolution)
        self.train_set, self.val_set, self.test_set = (
            FakeData(size, shape, self.num_classes, transform=to_tensor, random_offset=offset)
            for size, offset in zip(self.sizes, (0, 10**6, 2 * 10**6), strict=True)
        )
