"""``digits``: scikit-learn's handwritten digits with a CelebA-like task mix (no download)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field
from torch import Tensor

from sparsekit.data.digits import (
    ATTRIBUTES,
    Digits,
    digit_attributes,
    foreground,
    load_upsampled_digits,
    stratified_split,
)
from sparsekit.data.tensor_dataset import MultiTaskTensorDataset
from sparsekit.interfaces import ComponentConfig, DatasetProvider
from sparsekit.interfaces.data import SPLITS
from sparsekit.tasks import AttributeTask, ClassificationTask, SegmentationTask, Task


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
