"""The ``digits`` data set: splits, labels and segmentation against scikit-learn's raw data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.datasets import load_digits

from sparsekit.tasks import AttributeTask, ClassificationTask, SegmentationTask
from sparsekit_plugins.datasets.digits import DigitsProvider

ALL_TASKS = ["segmentation", "digit", "parity", "ge5", "closed_loop"]


@pytest.fixture(scope="module")
def raw() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    return digits.images, digits.target


@pytest.fixture(scope="module")
def provider() -> DigitsProvider:
    return DigitsProvider(image_size=16)


def test_tasks(provider: DigitsProvider) -> None:
    tasks = provider.tasks()
    assert [t.name for t in tasks] == ALL_TASKS
    assert isinstance(tasks[0], SegmentationTask) and tasks[0].num_classes == 2
    assert isinstance(tasks[1], ClassificationTask) and tasks[1].num_classes == 10
    assert all(isinstance(t, AttributeTask) for t in tasks[2:])
    assert DigitsProvider.in_channels == 1


def test_splits_are_60_20_20_disjoint_and_cover_everything(provider: DigitsProvider, raw) -> None:
    sizes = {s: len(provider.split_indices(s)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    for split, fraction in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        assert abs(sizes[split] - fraction * 1797) <= 1
    union = torch.cat([provider.split_indices(s) for s in ("train", "val", "test")])
    assert sorted(union.tolist()) == list(range(1797))
    # Stratified: each class's share of the training split is within one image of 60%.
    _, target = raw
    train = provider.split_indices("train").numpy()
    per_class = np.bincount(target[train], minlength=10)
    assert (np.abs(per_class - 0.6 * np.bincount(target)) <= 1).all()


def test_split_depends_on_seed_only(provider: DigitsProvider) -> None:
    again = DigitsProvider(image_size=16)
    other = DigitsProvider(image_size=16, split_seed=1)
    assert torch.equal(provider.split_indices("val"), again.split_indices("val"))
    assert not torch.equal(provider.split_indices("val"), other.split_indices("val"))


@pytest.mark.parametrize("split", ["train", "test"])
def test_labels_match_raw_targets(provider: DigitsProvider, raw, split: str) -> None:
    _, target = raw
    ds = provider.load(split, ALL_TASKS)
    digits = target[provider.split_indices(split).numpy()]
    np.testing.assert_array_equal(ds.targets["digit"].numpy(), digits)
    np.testing.assert_array_equal(ds.targets["parity"].numpy(), [d % 2 == 0 for d in digits])
    np.testing.assert_array_equal(ds.targets["ge5"].numpy(), [d >= 5 for d in digits])
    closed = [d in (0, 6, 8, 9) for d in digits]
    np.testing.assert_array_equal(ds.targets["closed_loop"].numpy(), closed)
    _, targets = ds[0]
    assert targets["digit"].shape == () and targets["digit"].dtype == torch.int64
    for name in ("parity", "ge5", "closed_loop"):
        assert targets[name].shape == () and targets[name].dtype == torch.float32


def bilinear_half_pixel(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling with half-pixel centres and edge clamping, written out per pixel."""
    n = image.shape[0]
    out = np.empty((size, size))
    scale = n / size
    for i in range(size):
        for j in range(size):
            y = min(max((i + 0.5) * scale - 0.5, 0.0), n - 1)
            x = min(max((j + 0.5) * scale - 0.5, 0.0), n - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, n - 1), min(x0 + 1, n - 1)
            wy, wx = y - y0, x - x0
            top = (1 - wx) * image[y0, x0] + wx * image[y0, x1]
            bottom = (1 - wx) * image[y1, x0] + wx * image[y1, x1]
            out[i, j] = (1 - wy) * top + wy * bottom
    return out


def test_segmentation_is_thresholded_upsampled_intensity(provider: DigitsProvider, raw) -> None:
    images, _ = raw
    ds = provider.load("val", ["segmentation"])
    index = provider.split_indices("val").numpy()
    for k in range(0, len(index), 60):
        upsampled = bilinear_half_pixel(images[index[k]] / 16.0, 16)
        expected = (upsampled > 0.5).astype(np.int64)
        # Pixels within rounding of the threshold could go either way in float32.
        decided = np.abs(upsampled - 0.5) > 1e-5
        seg = ds.targets["segmentation"][k].numpy()
        np.testing.assert_array_equal(seg[decided], expected[decided])
    assert ds.targets["segmentation"].dtype == torch.int64
    assert ds.targets["segmentation"].shape == (len(index), 16, 16)


def test_images_are_standardised_with_training_statistics(provider: DigitsProvider, raw) -> None:
    images, _ = raw
    train = provider.load("train", ["digit"])
    assert train.images.shape == (1078, 1, 16, 16) and train.images.dtype == torch.float32
    assert float(train.images.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(train.images.std()) == pytest.approx(1.0, abs=1e-4)
    # An image's standardised pixels are an affine function of its upsampled raw intensities.
    k = int(provider.split_indices("test")[0])
    test_image = provider.load("test", ["digit"]).images[0, 0].numpy()
    upsampled = bilinear_half_pixel(images[k] / 16.0, 16)
    slope, intercept = np.polyfit(upsampled.ravel(), test_image.ravel(), 1)
    np.testing.assert_allclose(slope * upsampled + intercept, test_image, atol=1e-4)
    assert slope > 0


def test_foreground_threshold_is_configurable(raw) -> None:
    low = DigitsProvider(image_size=8, foreground_threshold=0.1).load("train", ["segmentation"])
    high = DigitsProvider(image_size=8, foreground_threshold=0.9).load("train", ["segmentation"])
    images, _ = raw
    index = DigitsProvider(image_size=8).split_indices("train").numpy()
    # At the native 8×8 size no interpolation happens: the masks are plain thresholds.
    np.testing.assert_array_equal(low.targets["segmentation"].numpy(), images[index] / 16 > 0.1)
    np.testing.assert_array_equal(high.targets["segmentation"].numpy(), images[index] / 16 > 0.9)


def test_task_selection_and_config_errors(provider: DigitsProvider) -> None:
    ds = provider.load("test", ["ge5", "segmentation"])
    assert ds.task_names == ["ge5", "segmentation"]
    with pytest.raises(ValueError, match="no task 'even'"):
        provider.load("test", ["even"])
    with pytest.raises(ValueError, match="unknown split"):
        provider.load("dev", ["digit"])
    with pytest.raises(ValidationError):
        DigitsProvider(threshold=0.3)
    with pytest.raises(ValidationError):
        DigitsProvider(foreground_threshold=1.5)
