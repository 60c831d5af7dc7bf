"""The UCI handwritten digits shipped with scikit-learn, turned into a multi-task data set.

The 1797 greyscale 8×8 images (intensities 0..16) are upsampled bilinearly; every target is a
deterministic function of the upsampled image or of the digit label.

References:
    Alpaydin, Kaynak. Optical Recognition of Handwritten Digits. UCI Machine Learning
    Repository, 1998.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from sparsekit.data.common import SPLITS
from sparsekit.data.tensor_dataset import MultiTaskTensorDataset
from sparsekit.interfaces import ComponentConfig, DatasetProvider
from sparsekit.tasks import AttributeTask, ClassificationTask, SegmentationTask, Task

#: Largest intensity in the raw images.
MAX_INTENSITY = 16.0
#: Digits whose usual shape encloses a region. A 4 is written open in this data set.
CLOSED_LOOP_DIGITS: tuple[int, ...] = (0, 6, 8, 9)
#: Binary attributes derived from the digit label, in order.
ATTRIBUTES: tuple[str, ...] = ("parity", "ge5", "closed_loop")


@dataclass(frozen=True)
class Digits:
    """Every image of the data set.

    Attributes:
        intensity: ``[N, 1, S, S]`` float32 upsampled intensities scaled to [0, 1].
        labels: ``[N]`` int64 digits 0..9.
    """

    intensity: Tensor
    labels: Tensor


def load_upsampled_digits(image_size: int) -> Digits:
    """All 1797 digits, upsampled bilinearly (half-pixel centres) to ``image_size`` squared."""
    from sklearn.datasets import load_digits  # scikit-learn is imported only when digits are used

    raw = load_digits()
    images = torch.from_numpy(raw.images.astype(np.float32) / MAX_INTENSITY)[:, None]
    if image_size != images.shape[-1]:
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    return Digits(images.contiguous(), torch.from_numpy(raw.target.astype(np.int64)))


def foreground(intensity: Tensor, threshold: float) -> Tensor:
    """Segmentation labels: 1 where the intensity exceeds ``threshold``, else 0.

    Args:
        intensity: ``[N, 1, S, S]`` intensities in [0, 1].
        threshold: the foreground threshold in the same units.

    Returns:
        ``[N, S, S]`` int64 labels.
    """
    return (intensity[:, 0] > threshold).long()


def digit_attributes(labels: Tensor) -> dict[str, Tensor]:
    """The binary attributes of each digit as float32 in {0, 1}.

    ``parity`` is 1 for an even digit, ``ge5`` for a digit of at least 5 and ``closed_loop`` for
    the digits in :data:`CLOSED_LOOP_DIGITS`.
    """
    closed = torch.isin(labels, torch.tensor(CLOSED_LOOP_DIGITS, device=labels.device))
    return {
        "parity": (labels % 2 == 0).float(),
        "ge5": (labels >= 5).float(),
        "closed_loop": closed.float(),
    }


def stratified_split(labels: Tensor, seed: int) -> dict[str, Tensor]:
    """Disjoint train/val/test indices covering every image, 60/20/20 in each class.

    The split is drawn with scikit-learn's stratified shuffle (40% held out, then halved), so
    each split holds the classes in their overall proportions up to rounding.

    Args:
        labels: ``[N]`` class labels to stratify by.
        seed: the random state of the shuffles.

    Returns:
        Sorted int64 index tensors keyed ``train``, ``val`` and ``test``.
    """
    from sklearn.model_selection import train_test_split  # imported only when digits are used

    y = labels.cpu().numpy()
    everything = np.arange(len(y))
    train, rest = train_test_split(everything, test_size=0.4, stratify=y, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=seed)
    return {
        name: torch.from_numpy(np.sort(idx)).long()
        for name, idx in (("train", train), ("val", val), ("test", test))
    }


class DigitsProvider(DatasetProvider):
    """1797 greyscale digits upsampled to ``image_size``, with pixel- and image-level tasks.

    Tasks: ``segmentation`` (2 classes: background, foreground where the upsampled intensity on a
    [0, 1] scale exceeds ``foreground_threshold``), ``digit`` (10 classes) and the binary
    attributes ``parity`` (1 = even), ``ge5`` (digit ≥ 5) and ``closed_loop`` (0, 6, 8, 9).
    The split is stratified by digit, 60/20/20, and images are standardised with the training
    split's mean and standard deviation.
    """

    name = "digits"
    in_channels = 1

    class Config(ComponentConfig):
        """Options of the ``digits`` data set.

        Attributes:
            image_size: side of the square images after bilinear upsampling from 8×8.
            split_seed: random state of the stratified 60/20/20 split.
            foreground_threshold: intensity (on [0, 1]) above which a pixel is foreground.
        """

        image_size: int = Field(32, ge=8, le=256)
        split_seed: int = Field(0, ge=0)
        foreground_threshold: float = Field(0.5, gt=0.0, lt=1.0)

    config: Config

    def __init__(self, config: ComponentConfig | None = None, **params: object) -> None:
        super().__init__(config, **params)
        self._data: Digits | None = None
        self._splits: dict[str, Tensor] = {}
        self._standardised: Tensor | None = None

    def tasks(self) -> list[Task]:
        return [
            SegmentationTask("segmentation", num_classes=2),
            ClassificationTask("digit", num_classes=10),
            *(AttributeTask(name) for name in ATTRIBUTES),
        ]

    def split_indices(self, split: str) -> Tensor:
        """Indices into scikit-learn's ``load_digits()`` of the images in ``split``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if not self._splits:
            self._splits = stratified_split(self._digits().labels, self.config.split_seed)
        return self._splits[split]

    def _digits(self) -> Digits:
        if self._data is None:
            self._data = load_upsampled_digits(self.config.image_size)
        return self._data

    def load(self, split: str, tasks: Sequence[str]) -> MultiTaskTensorDataset:
        selected = [t.name for t in self.select_tasks(tasks)]
        index = self.split_indices(split)
        data = self._digits()
        if self._standardised is None:
            train = data.intensity[self.split_indices("train")]
            self._standardised = (data.intensity - train.mean()) / train.std()
        labels = data.labels[index]
        intensity = data.intensity[index]
        targets = {
            "segmentation": foreground(intensity, self.config.foreground_threshold),
            "digit": labels,
            **digit_attributes(labels),
        }
        return MultiTaskTensorDataset(
            self._standardised[index], {name: targets[name] for name in selected}
        )
