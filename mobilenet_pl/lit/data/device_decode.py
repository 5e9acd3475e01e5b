"""JPEG decoding and ImageNet augmentation on the training device (``data.decode_on=device``).

DataLoader workers only read file bytes: ``folder.ImageFolderSplit`` with ``set_encoded(True)`` returns
``(EncodedImage, label)`` (:func:`read_encoded`), and :func:`collate_encoded` stacks a batch into an
:class:`EncodedBatch` (a list of variable-length byte tensors, because JPEGs differ in length, plus a label
tensor). After Lightning moves the batch, :class:`DeviceAugment` decodes all JPEGs in one
``torchvision.io.decode_jpeg(list, device=...)`` call (nvJPEG on CUDA, libjpeg-turbo on CPU), crops and
resizes the whole batch (one ``torchvision.ops.roi_align`` on a GPU, torchvision's uint8 resize per image on
a CPU), flips and normalises, giving what ``pil_transforms`` gives, channels_last. See
docs/device_decode.md.

Files the device decoder cannot take (PNG and other formats, grayscale or CMYK JPEGs, 12-bit, lossless or
arithmetic-coded JPEGs, files without an end marker) are decoded in the worker with PIL, as
``data=imagefolder`` always did (``images.load_rgb``), and travel as uint8 CHW images in the same list; they
get the same crop on the device. Unreadable files follow ``ImageFolderSplit``'s rules (left out of val/test
at setup, replaced in training, or stop the run with ``on_corrupt="error"``); a file that passes the
worker's header check but still fails to decode on the device is named and its batch slot labelled
``IGNORE_INDEX``, which the loss and all metrics skip.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as TF

from mobilenet_pl.lit.data.images import (
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CorruptImageError,
    UnreadableImage,
    display_name,
    load_rgb,
)

# JPEG start-of-frame markers nvJPEG and libjpeg-turbo both decode: baseline, extended, progressive Huffman
_DEVICE_SOF = {0xC0, 0xC1, 0xC2}
_OTHER_SOF = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # lossless, hierarchical, arithmetic

log = logging.getLogger(__name__)


class EncodedImage(NamedTuple):
    """One sample's pixels: JPEG bytes (1-D uint8) to decode on the device, or a decoded uint8 CHW image."""

    data: Tensor
    path: str


def device_decodable(data: bytes) -> bool:
    """Whether ``data`` is an 8-bit, 3-component baseline/progressive JPEG that ends with its EOI marker.

    Reads only the marker headers up to the frame header (no entropy data), so it costs microseconds.
    """
    if len(data) < 4 or data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
        return False
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _DEVICE_SOF:
            frame = data[pos + 4 : pos + 10]
            return len(frame) == 6 and frame[0] == 8 and frame[5] == 3  # precision 8 bits, 3 components
        if marker in _OTHER_SOF or marker == 0xDA:  # unsupported coding, or scan data before any frame
            return False
        pos += 2 + length
    return False


def read_encoded(path: str) -> EncodedImage:
    """The file's bytes when the device can decode them, else the image decoded here by ``images.load_rgb``.

    Raises:
        UnreadableImage: the file cannot be read, or PIL cannot decode it (``ImageFolderSplit`` skips it).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UnreadableImage(f"{err.__class__.__name__}: {err}") from err
    if device_decodable(data):
        return EncodedImage(torch.frombuffer(bytearray(data), dtype=torch.uint8), path)
    rgb = np.asarray(load_rgb(path))
    return EncodedImage(torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous(), path)


@dataclass
class EncodedBatch:
    """A batch from :func:`collate_encoded`. ``images[i]`` is 1-D JPEG bytes or a 3-D uint8 CHW image.

    ``to()`` moves only the labels: ``decode_jpeg`` takes its input on the CPU even when it decodes on
    the GPU, so the bytes stay where the (pinned) loader left them. Lightning's batch transfer calls it.
    """

    images: list[Tensor]
    labels: Tensor
    paths: list[str]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> EncodedBatch:
        return EncodedBatch(self.images, self.labels.to(device, non_blocking=non_blocking), self.paths)

    def pin_memory(self) -> EncodedBatch:
        return EncodedBatch([image.pin_memory() for image in self.images], self.labels.pin_memory(), self.paths)

    def __len__(self) -> int:
        return len(self.images)


def collate_encoded(samples: list[tuple[EncodedImage, Any]]) -> EncodedBatch:
    """DataLoader ``collate_fn`` for encoded ``ImageFolderSplit`` samples (also behind ``EvalShard``)."""
    return EncodedBatch(
        [image.data for image, _ in samples],
        torch.tensor([int(label) for _, label in samples], dtype=torch.long),
        [image.path for image, _ in samples],
    )


def random_resized_boxes(
    sizes: Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> Tensor:
    """Crop boxes ``(x0, y0, x1, y1)`` in pixels, one per ``(height, width)`` row of ``sizes``, drawn as
    torchvision's ``RandomResizedCrop.get_params`` draws them (and timm's), for the whole batch at once:
    up to ``attempts`` tries of area fraction ~ U(scale) and log aspect ~ U(log ratio), the first that
    fits wins, else the centre crop clamped to ``ratio``."""
    n = len(sizes)
    height, width = sizes[:, 0:1].double(), sizes[:, 1:2].double()
    area = height * width
    target = area * torch.empty(n, attempts, dtype=torch.float64).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(n, attempts, dtype=torch.float64).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.double().argmax(dim=1, keepdim=True)  # index of the first fitting attempt (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    found = fits.any(dim=1)
    height, width = height.squeeze(1), width.squeeze(1)
    # offsets uniform over the integers 0..H-h, like torch.randint(0, H - h + 1)
    u = torch.rand(n, 2, dtype=torch.float64, generator=generator)
    top = torch.floor(u[:, 0] * (height - h + 1)).clamp(max=height - h)
    left = torch.floor(u[:, 1] * (width - w + 1)).clamp(max=width - w)
    # fallback: the whole image, cut to the nearest allowed aspect ratio, centred
    in_ratio = width / height
    too_tall, too_wide = in_ratio < ratio[0], in_ratio > ratio[1]
    fb_w = torch.where(too_wide, torch.round(height * ratio[1]), width)
    fb_h = torch.where(too_tall, torch.round(width / ratio[0]), height)
    fb_top, fb_left = torch.floor((height - fb_h) / 2), torch.floor((width - fb_w) / 2)
    w, h = torch.where(found, w, fb_w), torch.where(found, h, fb_h)
    top, left = torch.where(found, top, fb_top), torch.where(found, left, fb_left)
    return torch.stack([left, top, left + w, top + h], dim=1)


def center_crop_boxes(sizes: Tensor, resolution: int, resize_to: int) -> Tensor:
    """Boxes in source pixels equal to ``Resize(resize_to)`` (shorter side) then ``CenterCrop(resolution)``,
    with torchvision's integer rounding of the resized size and of the crop offset."""
    height, width = sizes[:, 0].double(), sizes[:, 1].double()
    short, long = torch.minimum(height, width), torch.maximum(height, width)
    new_long = torch.floor(resize_to * long / short)  # torchvision: int(size * long / short)
    new_h = torch.where(height <= width, torch.full_like(height, resize_to), new_long)
    new_w = torch.where(height <= width, new_long, torch.full_like(width, resize_to))
    top = torch.round((new_h - resolution) / 2)  # torchvision: int(round((h - crop) / 2))
    left = torch.round((new_w - resolution) / 2)
    sy, sx = height / new_h, width / new_w
    return torch.stack([left * sx, top * sy, (left + resolution) * sx, (top + resolution) * sy], dim=1)


def pad_to_batch(images: list[Tensor]) -> Tensor:
    """One ``(N, C, Hmax, Wmax)`` tensor from images of different sizes. Each image's last column and row
    are repeated once into its padding: ``roi_align`` samples up to half a pixel beyond the last pixel
    centre, and must blend with the image's own edge there (as a resize does), not with zeros."""
    heights = [image.shape[-2] for image in images]
    widths = [image.shape[-1] for image in images]
    hmax, wmax = max(heights), max(widths)
    padded = images[0].new_zeros(len(images), images[0].shape[0], hmax + 1, wmax + 1)
    for i, image in enumerate(images):
        padded[i, :, : heights[i], : widths[i]] = image
    # the edge copies for the whole batch as two indexed copies (no per-image kernel launches)
    device = padded.device
    n = torch.arange(len(images), device=device)
    h, w = torch.tensor(heights, device=device), torch.tensor(widths, device=device)
    rows = torch.arange(hmax + 1, device=device).clamp(max=h[:, None] - 1)  # (N, Hmax+1): row y or the last
    padded[n[:, None], :, rows, w[:, None]] = padded[n[:, None], :, rows, w[:, None] - 1]
    cols = torch.arange(wmax + 1, device=device).clamp(max=w[:, None])  # (N, Wmax+1), incl. the new column
    padded[n[:, None], :, h[:, None], cols] = padded[n[:, None], :, h[:, None] - 1, cols]
    return padded


def size_groups(sizes: list[tuple[int, int]], max_padded_pixels: int) -> list[list[int]]:
    """Indices of ``sizes`` (height, width) in groups whose padded batch ``len x Hmax x Wmax`` stays within
    ``max_padded_pixels`` (a group of one may exceed it). Small images are grouped first, so a few very
    large photos (ImageNet has some of 4000 px) get groups of their own instead of inflating the padding
    of the whole batch: 256 x 3 x 4000 x 3000 floats would be 37 GB."""
    groups: list[list[int]] = []
    hmax = wmax = 0
    for i in sorted(range(len(sizes)), key=lambda i: sizes[i][0] * sizes[i][1]):
        h, w = max(hmax, sizes[i][0]), max(wmax, sizes[i][1])
        if groups and (len(groups[-1]) + 1) * h * w <= max_padded_pixels:
            groups[-1].append(i)
            hmax, wmax = h, w
        else:
            groups.append([i])
            hmax, wmax = sizes[i]
    return groups


class DeviceAugment:
    """Decode an :class:`EncodedBatch` on the batch's device and crop, flip and normalise it, batched.

    Training: random-resized crop (:func:`random_resized_boxes`) and horizontal flip with probability
    1/2; evaluation: resize the shorter side to ``int(resolution * 256 / 224)`` and centre-crop, as
    ``pil_transforms``. Crop boxes and flips are drawn on the CPU from a generator seeded with ``seed``.

    ``resample="batched"`` (``"auto"`` on CUDA) resamples all crops with one ``roi_align(aligned=True)``
    (pixel centres at +0.5, like ``align_corners=False``) over the batch padded into one tensor, with an
    adaptive number of bilinear samples per output pixel (``ceil(box size / resolution)`` per axis): it
    averages over the source pixels a downscale covers, antialiasing close to PIL's. Batches whose padding
    would exceed ``max_padded_pixels`` (default 2**26: 768 MB as float32) are split by :func:`size_groups`. ``"per_image"``
    (``"auto"`` on CPU) loops torchvision's antialiased uint8 ``resized_crop`` / ``resize`` + ``center_crop``,
    which is about 10x faster than ``roi_align`` on a CPU, where a loop costs no kernel launches.

    Returns ``(images, labels)``: ``(N, 3, resolution, resolution)`` in ``dtype``, channels_last.
    """

    def __init__(
        self,
        resolution: int,
        train: bool,
        *,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        resample: str = "auto",
        max_padded_pixels: int = 2**26,
    ) -> None:
        if resample not in ("auto", "batched", "per_image"):
            raise ValueError(f"resample must be 'auto', 'batched' or 'per_image', got {resample!r}")
        self.resolution, self.train, self.dtype, self.resample = resolution, train, dtype, resample
        self.max_padded_pixels = max_padded_pixels
        self.scale, self.ratio = scale, ratio
        self.seed, self.generator = seed, torch.Generator()
        self.decoded = 0  # images decoded so far; files that failed, by stage (train, validate, test, ...)
        self.failed: dict[str, int] = {}
        self.first_failure: str | None = None
        self.set_epoch(0)
        # (x / 255 - mean) / std as one multiply-add
        self.gain = torch.tensor([1 / (255 * s) for s in std]).view(1, -1, 1, 1)
        self.bias = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, -1, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        """Restart the crop/flip stream at a function of (seed, epoch), as ``DistributedSampler.set_epoch``
        does for the order: a run resumed at an epoch boundary draws the crops an uninterrupted run draws."""
        self.epoch = epoch
        # the CPU generator keeps only 32 bits of its seed: hash (seed, epoch) into them
        digest = hashlib.blake2b(f"{self.seed},{epoch}".encode(), digest_size=4).digest()
        self.generator.manual_seed(int.from_bytes(digest, "big"))

    def decode(self, batch: EncodedBatch, device: torch.device, stage: str = "train") -> tuple[list[Tensor], Tensor]:
        """uint8 CHW images on ``device`` and the labels, with undecodable files' labels set to IGNORE_INDEX.

        An undecodable file is logged by name (as the workers path does) and counted in ``failed[stage]``
        (the run's ``skipped_images``); a batch with no decodable image while nothing was decoded yet stops the
        run with `CorruptImageError` (every image so far is broken: a data error, not a NaN loss)."""
        images: list[Tensor | None] = [None] * len(batch)
        jpegs = [i for i, data in enumerate(batch.images) if data.dim() == 1]
        labels = batch.labels.to(device)
        if jpegs:
            decode_device = device if device.type == "cuda" else "cpu"
            try:
                decoded = decode_jpeg([batch.images[i] for i in jpegs], mode=ImageReadMode.RGB, device=decode_device)
            except RuntimeError:  # one bad file fails the whole call: decode one by one to find it
                decoded = [self._decode_one(batch, i, decode_device, stage) for i in jpegs]
            for i, image in zip(jpegs, decoded, strict=True):
                images[i] = image
        for i, data in enumerate(batch.images):
            if data.dim() == 3:
                images[i] = data
        bad = [i for i, image in enumerate(images) if image is None]
        self.decoded += len(images) - len(bad)
        if bad and len(bad) == len(images) and self.decoded == 0:
            raise CorruptImageError(
                f"no image could be decoded: all {self.failed_total()} read so far are corrupt (first: "
                f"{self.first_failure}); check the data, or decode with PIL (data.decode_on=workers)"
            )
        if bad:
            labels = labels.clone()
            labels[bad] = IGNORE_INDEX
        filler = torch.zeros(3, 1, 1, dtype=torch.uint8)
        return [(filler if image is None else image).to(device, non_blocking=True) for image in images], labels

    def failed_total(self) -> int:
        return sum(self.failed.values())

    def _decode_one(self, batch: EncodedBatch, i: int, device: str | torch.device, stage: str) -> Tensor | None:
        try:
            return decode_jpeg(batch.images[i], mode=ImageReadMode.RGB, device=device)
        except RuntimeError as err:
            reason = str(err).splitlines()[-1].split(", ")[-1][:120]  # drop the C++ source location
            name = display_name(batch.paths[i])
            # logging, not warnings: named once per file and read, as the workers path does (-W ignore cannot hide it)
            log.warning(
                "skipping corrupt image %s (decode_jpeg: %s); its label is set to %d so loss and metrics ignore it",
                name,
                reason,
                IGNORE_INDEX,
            )
            self.failed[stage] = self.failed.get(stage, 0) + 1
            if self.first_failure is None:
                self.first_failure = f"{name}: {reason}"
            return None

    def boxes(self, sizes: Tensor) -> tuple[Tensor, Tensor]:
        """Crop boxes ``(x0, y0, x1, y1)`` and flip flags for images of ``sizes`` (rows of height, width)."""
        if self.train:
            boxes = random_resized_boxes(sizes, self.generator, self.scale, self.ratio)
            flips = torch.rand(len(sizes), generator=self.generator) < 0.5
        else:
            boxes = center_crop_boxes(sizes, self.resolution, int(self.resolution * 256 / 224))
            flips = torch.zeros(len(sizes), dtype=torch.bool)
        return boxes, flips

    def __call__(self, batch: EncodedBatch, stage: str = "train") -> tuple[Tensor, Tensor]:
        device = batch.labels.device
        images, labels = self.decode(batch, device, stage)
        sizes = torch.tensor([tuple(image.shape[-2:]) for image in images])
        boxes, flips = self.boxes(sizes)
        batched = self.resample == "batched" or (self.resample == "auto" and device.type == "cuda")
        out = self._roi_align(images, boxes) if batched else self._per_image(images, boxes)
        out = torch.where(flips.to(device)[:, None, None, None], out.flip(-1), out)
        out = out.float() * self.gain.to(device) + self.bias.to(device)
        return out.to(self.dtype).contiguous(memory_format=torch.channels_last), labels

    def _roi_align(self, images: list[Tensor], boxes: Tensor) -> Tensor:
        out = images[0].new_empty(len(images), images[0].shape[0], self.resolution, self.resolution, dtype=torch.float)
        for group in size_groups([(image.shape[-2], image.shape[-1]) for image in images], self.max_padded_pixels):
            padded = pad_to_batch([images[i] for i in group]).float()
            rois = torch.cat([torch.arange(len(group), dtype=torch.float64)[:, None], boxes[group]], dim=1)
            rois = rois.to(padded.device, torch.float32)
            out[group] = roi_align(padded, rois, self.resolution, sampling_ratio=-1, aligned=True)
        return out

    def _per_image(self, images: list[Tensor], boxes: Tensor) -> Tensor:
        size = [self.resolution, self.resolution]
        if self.train:  # integer boxes: exactly torchvision's resized_crop on uint8 tensors
            crops = [
                TF.resized_crop(image, int(y0), int(x0), int(y1 - y0), int(x1 - x0), size, antialias=True)
                for image, (x0, y0, x1, y1) in zip(images, boxes.tolist(), strict=True)
            ]
        else:
            resize_to = int(self.resolution * 256 / 224)
            crops = [TF.center_crop(TF.resize(image, resize_to, antialias=True), size) for image in images]
        return torch.stack(crops)
