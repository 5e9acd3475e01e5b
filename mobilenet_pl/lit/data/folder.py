"""ImageNet-style image folders: ``ImageFolderSplit`` (one split, with the unreadable-file rules) and
``ImageFolderDataModule`` (train/val/test folders, PIL in the workers or JPEG decoding on the device)."""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from mobilenet_pl.lit.data.base import ImageDataModule
from mobilenet_pl.lit.data.eval_checks import folder_key, remember, unreadable_at_last_check
from mobilenet_pl.lit.data.images import CorruptImageError, UnreadableImage, display_name, load_rgb
from mobilenet_pl.lit.data.transforms import pil_transforms

log = logging.getLogger(__name__)


def _is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0  # set from the launcher's env: log each notice once


def _read_error(path: str) -> UnreadableImage | None:
    try:
        load_rgb(path, max_side=64)
    except UnreadableImage as err:
        return err
    return None


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
        from mobilenet_pl.lit.data.device_decode import read_encoded

        self.loader = read_encoded if encoded else load_rgb
        self.transform = None if encoded else self.pil_transform

    def _check_all(self) -> list[str]:
        """Decode every file once (JPEGs at a reduced size, in threads); drop and return the unreadable ones.
        In a folder this process already checked, with no file added, removed or changed since, only the files
        found unreadable then are read again."""
        paths = [path for path, _ in self.samples]
        key = folder_key(str(self.root), paths)
        known = unreadable_at_last_check(key)
        to_read = set(paths if known is None else known)  # unchanged since its check: the files unreadable then
        todo = [path for path in paths if path in to_read]
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            found = dict(zip(todo, pool.map(_read_error, todo), strict=True))
        errors = [found.get(path) for path in paths]
        remember(key, [path for path, err in found.items() if err is not None])
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

    def partition(self) -> dict[str, Any]:
        """The folders are the split (train/, val/, test/): the seed only orders the samples."""
        root = str(self.root.resolve()) if self.root is not None else None
        return {"data": type(self).__name__, "data.root": root}

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
            from mobilenet_pl.lit.data.device_decode import DeviceAugment, collate_encoded

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
        augment = self.device_augment or {}
        if True in augment:  # JPEGs the device could not decode (their labels were ignored)
            train += int(augment[True].failed.get("train", 0))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(train)
        val, test = (getattr(split, "skipped", []) for split in (self.val_set, self.test_set))
        failed = augment[False].failed if False in augment else {}
        return {
            "train": int(train),
            "val": len(val) + int(failed.get("validate", 0)),
            "test": len(test) + int(failed.get("test", 0)),
        }

    def split_dataloader(self, split: str) -> DataLoader[Any]:
        """As every loader of ``split`` in a fixed order; the training split, evaluated (``eval split=train``),
        is checked as val and test are: its unreadable files are named and left out, never replaced by the
        next image (which counted that image twice, under the wrong label)."""
        dataset = getattr(self, f"{split}_set", None)
        if split == "train" and isinstance(dataset, ImageFolderSplit) and not dataset.checked:
            dataset.skipped = dataset._check_all()
            dataset.checked = True
        return super().split_dataloader(split)
