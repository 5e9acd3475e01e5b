"""Device-side JPEG decoding and augmentation (``mobilenet_pl.lit.data.device_decode``), run on the CPU.

References are independent of the code under test: the PIL path (``pil_transforms``) for pixels,
torchvision's ``RandomResizedCrop.get_params`` for the crop distribution.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from PIL import Image
from scipy.stats import ks_2samp
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T

from mobilenet_pl.lit.data import IGNORE_INDEX, CorruptImageError, EvalShard, ImageFolderSplit, pil_transforms
from mobilenet_pl.lit.data.device_decode import (
    DeviceAugment,
    EncodedBatch,
    collate_encoded,
    device_decodable,
    random_resized_boxes,
    read_encoded,
    size_groups,
)
from mobilenet_pl.lit.data.images import UnreadableImage


def _texture(seed: int, height: int, width: int, cell: int = 8) -> Image.Image:
    """A smooth random texture like the benchmark's JPEG folders (``cell=1``: pure noise, the worst case)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height // cell + 1, width // cell + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((width, height), Image.BILINEAR)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder: 8 RGB JPEGs of 300-500 px in two classes, plus one file of each special kind."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(8):
        (root / f"c{i % 2}").mkdir(exist_ok=True)
        height, width = (int(v) for v in rng.integers(300, 500, 2))
        _texture(i, height, width).save(root / f"c{i % 2}" / f"{i}.jpg", quality=90)
    special = root / "c2"
    special.mkdir()
    _texture(10, 320, 410).save(special / "png.png")
    _texture(11, 350, 300).convert("L").save(special / "gray.jpg", quality=90)
    _texture(12, 330, 450).convert("CMYK").save(special / "cmyk.jpg", quality=90)
    _texture(13, 333, 471, cell=1).save(special / "noise.jpg", quality=95)
    return root


def _batch(paths: list[Path]) -> EncodedBatch:
    return collate_encoded([(read_encoded(str(p)), i) for i, p in enumerate(paths)])


def _rgb_jpegs(folder: Path) -> list[Path]:
    return sorted(folder.glob("c[01]/*.jpg"))


def test_only_plain_rgb_jpegs_go_to_the_device(folder: Path, tmp_path: Path) -> None:
    rgb = _rgb_jpegs(folder)[0].read_bytes()
    assert device_decodable(rgb)
    for name in ("png.png", "gray.jpg", "cmyk.jpg"):
        path = folder / "c2" / name
        assert not device_decodable(path.read_bytes()), name
        image = read_encoded(str(path)).data  # decoded in the worker with PIL, as the PIL path does
        reference = np.array(Image.open(path).convert("RGB"))
        assert image.dtype == torch.uint8 and torch.equal(image.permute(1, 2, 0), torch.from_numpy(reference))
    assert read_encoded(str(_rgb_jpegs(folder)[0])).data.dim() == 1
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(rgb[: len(rgb) // 2])  # no end marker: PIL's verdict decides, and PIL refuses it
    assert not device_decodable(truncated.read_bytes())
    with pytest.raises(UnreadableImage):
        read_encoded(str(truncated))


def _encoded_split(root: Path, **kwargs: object) -> ImageFolderSplit:
    split = ImageFolderSplit(root, pil_transforms(32, train=False), **kwargs)  # type: ignore[arg-type]
    split.set_encoded(True)
    return split


def test_encoded_split_keeps_the_corrupt_image_rules(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0_bad.jpg").write_bytes(b"not an image")
    _texture(0, 300, 320).save(tmp_path / "a" / "1_good.jpg")
    training = _encoded_split(tmp_path)  # training: a bad read is replaced by the next image, and counted
    image, label = training[0]
    assert image.path.endswith("1_good.jpg") and image.data.dim() == 1 and label == 0
    assert training.replaced.value == 1
    evaluation = _encoded_split(tmp_path, check=True)  # evaluation: left out at setup, named
    assert len(evaluation) == 1 and evaluation.skipped[0].endswith("0_bad.jpg")
    with pytest.raises(CorruptImageError, match=r"0_bad\.jpg.*on_corrupt=skip"):
        _encoded_split(tmp_path, on_corrupt="error")[0]
    evaluation.set_encoded(False)  # back to the PIL path: the same split yields transformed tensors
    assert evaluation[0][0].shape == (3, 32, 32)


# measured: smooth textures 0.0096 (224) / 0.013 (160) batched; pure noise 0.032 / 0.052 (roi_align's box-averaged
# bilinear samples vs PIL's triangle filter); the per-image path is torchvision's uint8 resize, which differs
# from PIL's by rounding only (<= 0.0014, a grey level is 0.017): 0.005 allows a quarter grey level on average
@pytest.mark.parametrize(("resample", "smooth_tol", "noise_tol"), [("batched", 0.02, 0.07), ("per_image", 5e-3, 5e-3)])
@pytest.mark.parametrize("resolution", [224, 160])
def test_eval_crop_matches_the_pil_path(
    folder: Path, resample: str, smooth_tol: float, noise_tol: float, resolution: int
) -> None:
    paths = [*_rgb_jpegs(folder), *sorted((folder / "c2").iterdir())]  # incl. PNG, gray, CMYK, noise
    out, labels = DeviceAugment(resolution, train=False, resample=resample)(_batch(paths))
    reference = pil_transforms(resolution, train=False)
    for image, path in zip(out, paths, strict=True):
        expected = reference(Image.open(path).convert("RGB"))
        tol = noise_tol if path.name == "noise.jpg" else smooth_tol
        assert (image - expected).abs().mean() < tol, path.name
    assert torch.equal(labels, torch.arange(len(paths)))


def _get_params_boxes(sizes: list[tuple[int, int]], seed: int, scale: tuple[float, float]) -> torch.Tensor:
    torch.manual_seed(seed)
    boxes = []
    for height, width in sizes:
        top, left, h, w = T.RandomResizedCrop.get_params(torch.empty(1, height, width), scale, [3 / 4, 4 / 3])
        boxes.append((left, top, left + w, top + h))
    return torch.tensor(boxes, dtype=torch.float64)


def _area_and_log_aspect(boxes: torch.Tensor, sizes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return (w * h / (sizes[:, 0] * sizes[:, 1])).numpy(), torch.log(w / h).numpy()


def test_training_crops_follow_torchvisions_random_resized_crop() -> None:
    rng = np.random.default_rng(1)
    # mostly ImageNet-like sizes, plus thin images where many of the 10 attempts fail
    sizes_list = [(int(h), int(w)) for h, w in rng.integers(300, 500, (3000, 2))]
    sizes_list += [(int(h), 3 * int(h)) for h in rng.integers(60, 200, 1000)]
    sizes = torch.tensor(sizes_list, dtype=torch.float64)
    ours = random_resized_boxes(sizes, torch.Generator().manual_seed(0))
    assert (ours[:, :2] >= 0).all() and (ours[:, 2] <= sizes[:, 1]).all() and (ours[:, 3] <= sizes[:, 0]).all()
    assert torch.equal(ours, ours.round())  # integer pixel boxes, as get_params gives
    theirs = _get_params_boxes(sizes_list, 0, (0.08, 1.0))
    pairs = zip(_area_and_log_aspect(ours, sizes), _area_and_log_aspect(theirs, sizes), strict=True)
    for name, (a, b) in zip(("area", "log aspect"), pairs, strict=True):
        assert ks_2samp(a, b).pvalue > 1e-3, name  # seeded: deterministic; 4000 draws each
    # the check has power: a sampler with a different scale range is rejected
    shifted = _get_params_boxes(sizes_list, 0, (0.15, 1.0))
    assert ks_2samp(_area_and_log_aspect(ours, sizes)[0], _area_and_log_aspect(shifted, sizes)[0]).pvalue < 1e-6
    # offsets uniform over the free room: mean relative offset 1/2
    room = sizes[:, 1] - (ours[:, 2] - ours[:, 0])
    rel = (ours[:, 0] / room)[room > 50]
    assert abs(float(rel.mean()) - 0.5) < 0.03


def test_fallback_is_torchvisions_centre_crop() -> None:
    # no attempt can fit into 20 x 1000 or 1000 x 20: the centre crop clamped to the ratio range is used
    for height, width in [(20, 1000), (1000, 20), (20, 21)]:
        ours = random_resized_boxes(torch.tensor([[height, width]]), torch.Generator().manual_seed(0))
        top, left, h, w = T.RandomResizedCrop.get_params(torch.empty(1, height, width), [0.08, 1.0], [3 / 4, 4 / 3])
        if (height, width) != (20, 21):
            assert ours[0].tolist() == [left, top, left + w, top + h]
        else:  # attempts can fit here: just a valid box
            assert 0 <= ours[0, 0] < ours[0, 2] <= width and 0 <= ours[0, 1] < ours[0, 3] <= height


@pytest.mark.parametrize("resample", ["batched", "per_image"])
def test_training_flips_about_half_and_keeps_shape(tmp_path: Path, resample: str) -> None:
    ramp = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))  # brighter to the right
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(tmp_path / "ramp.jpg", quality=95)
    augment = DeviceAugment(32, train=True, resample=resample, seed=3)
    batch = _batch([tmp_path / "ramp.jpg"] * 100)
    flipped = 0
    for _ in range(4):
        out, _ = augment(batch)
        flipped += int((out[:, :, :, :8].mean((1, 2, 3)) > out[:, :, :, -8:].mean((1, 2, 3))).sum())
    assert abs(flipped / 400 - 0.5) < 0.1  # 4 standard deviations of a fair coin over 400 draws
    out, _ = DeviceAugment(32, train=False, resample=resample)(batch)
    assert (out[:, :, :, :8].mean((1, 2, 3)) < out[:, :, :, -8:].mean((1, 2, 3))).all()  # never flipped


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("train", [True, False])
def test_output_shape_dtype_and_memory_format(folder: Path, dtype: torch.dtype, train: bool) -> None:
    paths = _rgb_jpegs(folder)[:4]
    out, labels = DeviceAugment(64, train=train, dtype=dtype)(_batch(paths))
    assert out.shape == (4, 3, 64, 64) and out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert labels.dtype == torch.long and labels.tolist() == [0, 1, 2, 3]
    assert float(out.float().min()) > -2.2 and float(out.float().max()) < 2.7  # ImageNet-normalised range


def test_batched_and_per_image_training_crops_agree(folder: Path) -> None:
    batch = _batch(_rgb_jpegs(folder))
    batched, _ = DeviceAugment(96, train=True, resample="batched", seed=5)(batch)
    looped, _ = DeviceAugment(96, train=True, resample="per_image", seed=5)(batch)
    assert (batched - looped).abs().mean() < 0.03  # same boxes and flips; only the resampling differs


def test_large_images_get_groups_of_their_own_with_identical_crops(folder: Path) -> None:
    sizes = [(300, 400), (4000, 3000), (310, 420), (480, 360), (3000, 4000)]
    groups = size_groups(sizes, 3 * 480 * 420)
    assert sorted(i for group in groups for i in group) == [0, 1, 2, 3, 4]
    assert [0, 2, 3] in groups and [1] in groups and [4] in groups  # the two giants don't pad the others
    batch = _batch([*_rgb_jpegs(folder), *sorted((folder / "c2").iterdir())])
    for train in (True, False):
        whole, _ = DeviceAugment(64, train=train, resample="batched", seed=2)(batch)
        split, _ = DeviceAugment(64, train=train, resample="batched", seed=2, max_padded_pixels=2 * 500 * 500)(batch)
        assert torch.equal(whole, split)  # padding never reaches a crop: grouping changes nothing


def test_deterministic_under_a_seed(folder: Path) -> None:
    batch = _batch(_rgb_jpegs(folder))
    first = [DeviceAugment(64, train=True, seed=7)(batch)[0] for _ in range(2)]
    assert torch.equal(first[0], first[1])
    other, _ = DeviceAugment(64, train=True, seed=8)(batch)
    assert not torch.equal(first[0], other)
    # resuming at an epoch boundary: set_epoch restarts the stream the uninterrupted run has there
    running = DeviceAugment(64, train=True, seed=7)
    running.set_epoch(0)
    running(batch)
    running.set_epoch(1)
    resumed = DeviceAugment(64, train=True, seed=7)
    resumed.set_epoch(1)
    epoch1 = running(batch)[0]
    assert torch.equal(epoch1, resumed(batch)[0]) and not torch.equal(epoch1, first[0])


def test_undecodable_jpeg_is_named_and_ignored(folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = _rgb_jpegs(folder)[0]
    data = good.read_bytes()
    broken = tmp_path / "no_scan.jpg"
    broken.write_bytes(data[: data.index(b"\xff\xda")] + b"\xff\xd9")  # headers fine, no image data
    assert device_decodable(broken.read_bytes())
    with caplog.at_level(logging.WARNING):  # logged by name, as the workers path does (not a UserWarning)
        augment = DeviceAugment(32, train=False)
        out, labels = augment(_batch([good, broken]), "validate")
    assert labels.tolist() == [0, IGNORE_INDEX]
    assert any("no_scan.jpg" in record.getMessage() for record in caplog.records)
    assert augment.failed == {"validate": 1}  # counted in the run's skipped_images
    expected = pil_transforms(32, train=False)(Image.open(good).convert("RGB"))
    assert (out[0] - expected).abs().mean() < 0.02  # the good image of the batch is untouched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvJPEG)")
@pytest.mark.parametrize("train", [True, False])
def test_cuda_path_matches_the_cpu_path(folder: Path, train: bool) -> None:
    # nvJPEG and libjpeg-turbo may differ in IDCT and chroma upsampling by a grey level or two (0.017 each);
    # this bound is a reasoned guess: no GPU was available to measure it when the test was written
    paths = [*_rgb_jpegs(folder), *sorted((folder / "c2").iterdir())]
    batch = _batch(paths)
    on_cpu, _ = DeviceAugment(96, train=train, resample="batched", seed=4)(batch)
    on_gpu, labels = DeviceAugment(96, train=train, resample="batched", seed=4)(batch.to("cuda"))
    assert on_gpu.device.type == "cuda" and labels.device.type == "cuda"
    assert (on_gpu.cpu() - on_cpu).abs().mean() < 0.05


def test_loader_eval_shard_and_lightning_transfer(folder: Path) -> None:
    dataset = _encoded_split(folder)
    shard = EvalShard(dataset, rank=2, world=5)  # 12 samples over 5 ranks: rank 2 gets 2 + 1 padding
    batch = next(iter(DataLoader(shard, batch_size=8, collate_fn=collate_encoded)))
    assert len(batch) == 3 and batch.labels[-1] == IGNORE_INDEX
    assert batch.paths[:2] == [dataset.samples[2][0], dataset.samples[7][0]]
    moved = move_data_to_device(batch, torch.device("cpu"))  # what Lightning does before on_after_batch_transfer
    assert isinstance(moved, EncodedBatch) and moved.images[0] is batch.images[0]
    out, labels = DeviceAugment(32, train=False)(moved)
    assert out.shape == (3, 3, 32, 32) and labels[-1] == IGNORE_INDEX
    assert math.isfinite(float(out.sum()))


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_backbone_sees_the_memory_format_the_run_asked_for(channels_last: bool) -> None:
    """Device decoding hands over channels_last batches; ``channels_last=false`` must still run contiguous
    convolutions (a benchmark of the device path once ran channels_last while asked not to)."""
    from mobilenet_pl.lit.classifier import MobileNetClassifier

    module = MobileNetClassifier(model={"name": "v2", "width": 0.25}, num_classes=4, channels_last=channels_last)
    module.configure_model()
    seen: list[bool] = []
    module.backbone.stem.register_forward_pre_hook(
        lambda _, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    batch = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    module(batch)
    module(batch.contiguous())
    assert seen == [channels_last, channels_last]
