"""The workers' input path made faster computes what it computed before."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from mobilenet_pl.lit.data import ImageFolderSplit, NormalizedTensor, SeededSamples, pil_transforms
from mobilenet_pl.lit.data.images import IMAGENET_MEAN, IMAGENET_STD


def _photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(224, 224), (97, 61)])
def test_normalized_tensor_equals_torchvision_to_image_to_dtype_normalize(size: tuple[int, int]) -> None:
    image = _photo(*size, seed=1)
    reference = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    expected = reference(image)
    ours = NormalizedTensor()(image)
    assert ours.dtype == torch.float32 and ours.shape == (3, size[1], size[0]) and ours.is_contiguous()
    torch.testing.assert_close(ours, expected.as_subclass(torch.Tensor), rtol=0, atol=2e-6)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i in range(6):
        (tmp_path / f"c{i % 2}").mkdir(exist_ok=True)
        _photo(120 + 7 * i, 90 + 5 * i, seed=i).save(tmp_path / f"c{i % 2}" / f"{i}.jpg", quality=90)
    return tmp_path


@pytest.mark.parametrize("randaugment", [None, "rand-m9-mstd0.5"])
def test_seeded_samples_are_a_function_of_seed_epoch_index_and_leave_the_rngs_alone(
    folder: Path, randaugment: str | None
) -> None:
    split = ImageFolderSplit(folder, pil_transforms(64, True, randaugment))
    samples = SeededSamples(split, seed=3, python_rngs=randaugment is not None)
    first = samples[(1, 4)][0]
    torch.rand(7), np.random.rand(3), random.random()  # another history: a worker that drew other samples
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    again = samples[(1, 4)][0]
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), torch_state)  # restored: the caller's stream goes on undisturbed
    assert np.random.get_state()[1].tolist() == np_state[1].tolist() and random.getstate() == py_state
    assert not torch.equal(samples[(2, 4)][0], first)  # another epoch, another crop
    assert not torch.equal(SeededSamples(split, seed=4)[(1, 4)][0], first)  # another seed, another crop


def test_randaugment_needs_python_rngs_seeded_to_repeat(folder: Path) -> None:
    """timm's RandAugment draws from NumPy and ``random``: the DataModule asks for them when it is on."""
    split = ImageFolderSplit(folder, pil_transforms(64, True, "rand-m9-mstd0.5-n3"))
    torch_only = SeededSamples(split, seed=0, python_rngs=False)
    draws = []
    for state in range(4):
        np.random.seed(state), random.seed(state)
        draws.append(torch_only[(0, 2)][0])
    assert any(not torch.equal(draws[0], other) for other in draws[1:])  # so python_rngs=True is needed


@pytest.mark.parametrize("randaugment", [None, "rand-m9-mstd0.5"])
def test_datamodule_seeds_python_rngs_exactly_when_randaugment_draws_from_them(
    folder: Path, tmp_path_factory: pytest.TempPathFactory, randaugment: str | None
) -> None:
    from mobilenet_pl.lit.data import ImageFolderDataModule

    root = tmp_path_factory.mktemp("root")
    (root / "train").symlink_to(folder)
    (root / "val").symlink_to(folder)
    data = ImageFolderDataModule(root=str(root), resolution=64, batch_size=2, randaugment=randaugment)
    data.setup("fit")
    dataset = data.train_dataloader().dataset
    assert isinstance(dataset, SeededSamples) and dataset.python_rngs == (randaugment is not None)
