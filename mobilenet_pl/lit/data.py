"""DataModules: bundled digits (the default), ImageNet-style image folders, CIFAR-10/100, FakeData.

``batch_size`` is per device (per process), as in Lightning; the global batch is
``batch_size x devices x num_nodes``, which is what ``recipe.scale_lr`` scales by.

Under DDP the loaders shard themselves (the app sets ``use_distributed_sampler=False``): training uses
a ``DistributedSampler``; validation and test use ``EvalShard``, which gives every sample to exactly
one rank and tops shorter shards up with copies labelled ``IGNORE_INDEX`` that all metrics skip, so
distributed accuracy equals single-process accuracy (Lightning's default pads with duplicates that count).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, random_split
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension
from torchvision.transforms import v2 as T

from mobilenet_pl.lit.images import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, UnreadableImage, display_name, load_rgb

log = logging.getLogger(__name__)


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

    def state_dict(self) -> dict[str, Any]:
        """The training sampler's position, saved in every checkpoint so that a resumed run draws the same
        batches as an uninterrupted one: the epoch, and the samples this rank has drawn in it so far."""
        trainer = self.trainer
        if trainer is None:
            return {}
        loop = trainer.fit_loop
        progress = loop.epoch_loop.batch_progress
        # an epoch's end: Lightning resumes with the next epoch (``processed`` counts this one); mid-epoch
        # (SIGTERM): the same epoch, after the batches done
        batches = 0 if progress.is_last_batch else progress.current.completed
        epoch = loop.epoch_progress.current.processed  # type: ignore[attr-defined]
        return {"epoch": int(epoch), "samples": int(batches * self.batch_size)}

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
        return augment(batch)

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


class LabelledTensors(Dataset[tuple[Tensor, int]]):
    """Images and labels held as tensors; ``int`` labels like torchvision's data sets; optional transform."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Any = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), int(self.labels[index])


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
    size = 1797

    def __init__(
        self, *, val_fraction: float = 0.2, test_fraction: float = 0.2, augment: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.fractions = {"data.val_fraction": val_fraction, "data.test_fraction": test_fraction}
        split_sizes(self.size, self.fractions)  # a bad fraction fails here, before any work
        self.augment = augment
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
        val, test, train = seeded_split(len(labels), self.fractions, self.seed)
        augment = T.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)) if self.augment else None
        self.train_set = LabelledTensors(images[train], labels[train], augment)
        self.val_set = LabelledTensors(images[val], labels[val])
        self.test_set = LabelledTensors(images[test], labels[test])


class NormalizedTensor:
    """An 8-bit RGB PIL image as a normalised float32 CHW tensor, ``(x / 255 - mean) / std``.

    The same values as torchvision's ``ToImage, ToDtype(scale=True), Normalize`` (to float rounding) in two
    passes over the pixels instead of four; about 2.5x faster, which is a fifth of a training sample's time.
    """

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        self.mean = torch.tensor(mean).view(-1, 1, 1) * 255
        self.inv_std = 1 / (torch.tensor(std).view(-1, 1, 1) * 255)

    def __call__(self, image: Any) -> Tensor:
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # HWC uint8 as a CHW view (writable copy)
        out = torch.empty(pixels.shape, dtype=torch.float32)
        out.copy_(pixels)
        return out.sub_(self.mean).mul_(self.inv_std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.flatten().div(255).tolist()})"


def pil_transforms(resolution: int, train: bool, randaugment: str | None = None) -> T.Compose:
    """ImageNet-style transforms: random-resized crop + flip (+ timm RandAugment) or resize + centre crop."""
    if train:
        ops: list[Any] = [T.RandomResizedCrop(resolution, antialias=True), T.RandomHorizontalFlip()]
        if randaugment:
            from timm.data.auto_augment import rand_augment_transform

            ops.append(rand_augment_transform(randaugment, {"translate_const": int(resolution * 0.45)}))
    else:
        ops = [T.Resize(int(resolution * 256 / 224), antialias=True), T.CenterCrop(resolution)]
    return T.Compose([*ops, NormalizedTensor()])


def _is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0  # set from the launcher's env: log each notice once


def _read_error(path: str) -> UnreadableImage | None:
    try:
        load_rgb(path, max_side=64)
    except UnreadableImage as err:
        return err
    return None


# Evaluation folders this process has checked: a digest of the folder's files (paths, sizes, times, inodes) and
# of PIL's pixel limit -> its unreadable files. A second check of the same, unchanged folder (the
# next job of a multirun, or a DDP rank handed the first rank's checks by ``remember_checked_folders``) decodes
# only the files found unreadable before: one that reads now (repaired, or a passing I/O error) is evaluated.
_CHECKED_FOLDERS: dict[str, list[str]] = {}


def _folder_digest(root: str, paths: list[str]) -> str:
    import hashlib

    from PIL import Image

    digest = hashlib.sha256(f"{root}\0{Image.MAX_IMAGE_PIXELS}".encode("utf-8", "surrogateescape"))
    for path in paths:
        try:
            st = os.stat(path)
            # ctime too: writing a file and restoring its mtime (``cp -p``, ``touch -r``) still changes it
            stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"
        except OSError:
            stamp = "missing"
        digest.update(f"\0{path}\0{stamp}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def checked_folders() -> str:
    """This process's evaluation-folder checks as JSON (``remember_checked_folders`` reads it)."""
    import json

    return json.dumps(_CHECKED_FOLDERS)


def remember_checked_folders(text: str) -> None:
    """Take another process's ``checked_folders()``; anything that is not such JSON is ignored (the folders
    are then checked here)."""
    import json

    try:
        folders = json.loads(text) if text else {}
    except ValueError:
        return
    if not isinstance(folders, dict):
        return
    for digest, unreadable in folders.items():
        if isinstance(unreadable, list) and all(isinstance(path, str) for path in unreadable):
            _CHECKED_FOLDERS[digest] = unreadable


class CorruptImageError(ValueError):
    """An unreadable image with ``data.on_corrupt=error``, or an evaluation image that broke after its check."""


class ImageFolderSplit(ImageFolder):
    """One split of an image folder, read with ``images.load_rgb`` (16-bit and float images scaled to 8 bits).

    Unreadable files (corrupt, truncated, decompression bombs) are logged by name and, with
    ``on_corrupt="skip"``:

    - in evaluation splits (``check=True``) every file is decoded once here and the unreadable ones are
      left out, so accuracy and "N images" count exactly the images that were read (``self.skipped``);
    - in the training split a failed read is replaced by the next readable image, counted in
      ``self.replaced`` over all DataLoader workers of this process.

    A sample is ``(image, class index)``: the image decoded with PIL and passed through ``transform``, or,
    after ``set_encoded(True)`` (``data.decode_on=device``), a ``device_decode.EncodedImage`` (the JPEG's
    bytes, or the PIL-decoded uint8 image for files the device cannot decode) that ``DeviceAugment`` finishes.

    With ``on_corrupt="error"`` the first unreadable file stops the run, naming it. Class folders with
    names that are not valid UTF-8 keep their real path for reading; ``classes`` holds printable names.
    Directory symlinks are followed once each: a link back to a parent folder (a loop) adds nothing.
    """

    samples: list[tuple[str, int]]

    def __init__(self, root: str | Path, transform: Any, on_corrupt: str = "skip", check: bool = False) -> None:
        if on_corrupt not in ("skip", "error"):
            raise ValueError(f"data.on_corrupt={on_corrupt!r} is not allowed: must be 'skip' or 'error'")
        super().__init__(str(root), transform=transform, loader=load_rgb)
        self.on_corrupt, self.checked, self.pil_transform = on_corrupt, check, transform
        self.replaced = multiprocessing.Value("l", 0)  # shared with forked/spawned workers
        self.skipped: list[str] = self._check_all() if check else []

    @staticmethod
    def make_dataset(  # type: ignore[override]
        directory: str | Path,
        class_to_idx: dict[str, int],
        extensions: tuple[str, ...] | None = IMG_EXTENSIONS,
        is_valid_file: Any = None,
        allow_empty: bool = False,
    ) -> list[tuple[str, int]]:
        # torchvision walks with followlinks=True and no memory: a symlink loop repeats a class ~40 times
        samples: list[tuple[str, int]] = []
        for name, index in sorted(class_to_idx.items(), key=lambda item: item[1]):
            top = os.path.join(directory, name)
            seen_dirs, seen_files = {os.path.realpath(top)}, set()
            for folder, dirs, files in os.walk(top, followlinks=True):
                keep = []
                for sub in sorted(dirs):
                    real = os.path.realpath(os.path.join(folder, sub))
                    if real not in seen_dirs:
                        seen_dirs.add(real)
                        keep.append(sub)
                dirs[:] = keep
                for file in sorted(files):
                    path = os.path.join(folder, file)
                    real = os.path.realpath(path)
                    if has_file_allowed_extension(path, extensions or IMG_EXTENSIONS) and real not in seen_files:
                        seen_files.add(real)
                        samples.append((path, index))
        if not samples and not allow_empty:
            raise FileNotFoundError(f"no image files in {display_name(str(directory))}")
        return samples

    def set_encoded(self, encoded: bool) -> None:
        """Samples as ``EncodedImage`` for device decoding (True) or as transformed PIL images (False)."""
        from mobilenet_pl.lit.device_decode import read_encoded

        self.loader = read_encoded if encoded else load_rgb
        self.transform = None if encoded else self.pil_transform

    def _check_all(self) -> list[str]:
        """Decode every file once (JPEGs at a reduced size, in threads); drop and return the unreadable ones.
        In a folder this process already checked, with no file added, removed or changed since, only the files
        found unreadable then are read again."""
        paths = [path for path, _ in self.samples]
        digest = _folder_digest(str(self.root), paths)
        known = _CHECKED_FOLDERS.get(digest)
        to_read = set(paths if known is None else known)  # unchanged since its check: the files unreadable then
        todo = [path for path in paths if path in to_read]
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            found = dict(zip(todo, pool.map(_read_error, todo), strict=True))
        errors = [found.get(path) for path in paths]
        _CHECKED_FOLDERS[digest] = [path for path, err in found.items() if err is not None]
        bad = [(path, err) for (path, _), err in zip(self.samples, errors, strict=True) if err is not None]
        for path, err in bad:
            self._report(path, err)
        if bad:
            self.samples = [sample for sample, err in zip(self.samples, errors, strict=True) if err is None]
            self.targets = [target for _, target in self.samples]
            self.imgs = self.samples
            if _is_rank_zero():
                log.warning("left %d unreadable image(s) of %s out of evaluation", len(bad), display_name(self.root))
        return [display_name(path) for path, _ in bad]

    def _report(self, path: str, err: Exception) -> None:
        if self.on_corrupt == "error":
            raise CorruptImageError(
                f"corrupt or unreadable image {display_name(path)} ({err}); data.on_corrupt=skip skips such files"
            ) from err
        if _is_rank_zero():
            log.warning("skipping corrupt image %s (%s)", display_name(path), err)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if not -len(self.samples) <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} images")
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            try:
                return super().__getitem__(i)  # type: ignore[no-any-return]
            except UnreadableImage as err:
                path = self.samples[i][0]
                if self.checked:  # a replacement would count an image twice: evaluation would not be exact
                    raise CorruptImageError(
                        f"image {display_name(path)} became unreadable during the run ({err})"
                    ) from err
                self._report(path, err)
                with self.replaced.get_lock():
                    self.replaced.value += 1
        raise CorruptImageError(f"no readable image at all in {display_name(self.root)}")


class ImageFolderDataModule(ImageDataModule):
    """ImageNet layout: ``root/train/<class>/*`` and ``root/val/<class>/*`` (``root/test`` if present,
    else the val folder is also the test set). Unreadable images are logged and skipped (left out of
    val/test, replaced in training; see ``ImageFolderSplit``), or stop the run with ``on_corrupt="error"``.

    ``decode_on``: ``workers`` decodes and augments with PIL in the DataLoader workers; ``device`` has the
    workers read file bytes only and decodes, crops and normalises the batch on the trainer's device
    (``device_decode.DeviceAugment``, in ``on_after_batch_transfer``); ``auto`` is ``device`` when the
    attached Trainer's root device is CUDA. Decided when a loader is built: without a Trainer (eval,
    quantize) and with RandAugment (a PIL transform) the workers decode.
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        randaugment: str | None = None,
        on_corrupt: str = "skip",
        decode_on: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_corrupt not in ("skip", "error"):
            raise ValueError(f"data.on_corrupt={on_corrupt!r} is not allowed: must be 'skip' or 'error'")
        if decode_on not in ("auto", "workers", "device"):
            raise ValueError(f"data.decode_on={decode_on!r} is not allowed: must be 'auto', 'workers' or 'device'")
        self.decode_on = decode_on
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
        self.folder_names = sorted(p.name for p in (self.root / "train").iterdir() if p.is_dir())
        self.class_names = [display_name(name) for name in self.folder_names]
        if len(set(self.class_names)) < len(self.class_names):
            raise ValueError(f"data.root={str(self.root)!r}: two class folders print the same: {self.class_names}")
        self.num_classes = len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        assert self.root is not None
        train_tf, eval_tf = (
            pil_transforms(self.resolution, True, self.randaugment),
            pil_transforms(self.resolution, False),
        )
        self.train_set = ImageFolderSplit(self.root / "train", train_tf, self.on_corrupt)
        val_set = self._align(ImageFolderSplit(self.root / "val", eval_tf, self.on_corrupt, check=True), "val")
        self.val_set = val_set
        if (self.root / "test").is_dir():
            self.test_set = self._align(
                ImageFolderSplit(self.root / "test", eval_tf, self.on_corrupt, check=True), "test"
            )
        else:
            self.test_set = val_set

    def decodes_on_device(self) -> bool:
        """Whether loaders built now yield file bytes for ``DeviceAugment`` (see the class docstring)."""
        trainer = self.trainer
        if self.decode_on == "workers" or trainer is None:
            return False
        if self.randaugment:
            if self.decode_on == "device" and _is_rank_zero():
                log.warning("data.decode_on=device: RandAugment runs on PIL images, decoding in the workers")
            return False
        return self.decode_on == "device" or trainer.strategy.root_device.type == "cuda"

    def _loader(self, dataset: Dataset[Any] | None, train: bool) -> DataLoader[Any]:
        # decided here, not in setup(): the app calls setup("fit") before the Trainer exists
        encoded = self.decodes_on_device()
        for split in {id(s): s for s in (self.train_set, self.val_set, self.test_set)}.values():
            if isinstance(split, ImageFolderSplit):
                split.set_encoded(encoded)
        if not encoded:
            self.collate_fn, self.device_augment = None, None
        elif self.device_augment is None:  # kept across loaders: the training crops' stream runs on
            from mobilenet_pl.lit.device_decode import DeviceAugment, collate_encoded

            rank = self.trainer.global_rank if self.trainer is not None else 0
            self.collate_fn = collate_encoded
            self.device_augment = {
                True: DeviceAugment(self.resolution, train=True, seed=self.seed + rank),
                False: DeviceAugment(self.resolution, train=False),
            }
        return super()._loader(dataset, train)

    def _align(self, dataset: ImageFolderSplit, split: str) -> ImageFolderSplit:
        """Give ``split`` the training set's class indices (its own folder list may be a subset)."""
        unknown = sorted(display_name(name) for name in set(dataset.classes) - set(self.folder_names))
        if unknown:
            raise ValueError(f"data.root={str(self.root)!r}: {split}/ has classes absent from train/: {unknown[:5]}")
        index = {name: i for i, name in enumerate(self.folder_names)}
        dataset.samples = [(path, index[dataset.classes[target]]) for path, target in dataset.samples]
        dataset.targets = [target for _, target in dataset.samples]
        dataset.imgs = dataset.samples
        dataset.classes = list(self.class_names)
        dataset.class_to_idx = {name: i for i, name in enumerate(self.class_names)}
        return dataset

    def skipped_images(self) -> dict[str, int]:
        """Unreadable images: left out of val and test (each file once), replaced in training (each read, summed
        over this process's workers and, under DDP, over all ranks; every rank must call this then)."""
        train = torch.tensor(0)
        if isinstance(self.train_set, ImageFolderSplit):
            train += int(self.train_set.replaced.value)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(train)
        val, test = (getattr(split, "skipped", []) for split in (self.val_set, self.test_set))
        return {"train": int(train), "val": len(val), "test": len(test)}


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
        val, train = seeded_split(len(full_train), {"CIFAR validation": 0.1}, self.seed)
        self.train_set, self.val_set = Subset(full_train, train), Subset(full_eval, val)
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
