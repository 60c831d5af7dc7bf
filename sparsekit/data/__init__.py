"""Shared data-set code: file data sets and image I/O, in-memory tensors, loaders.

:mod:`~sparsekit.data.common` (helpers for file-based data sets: layout checks, image and map
readers, :class:`FileDataset`), :mod:`~sparsekit.data.tensor_dataset` (in-memory tensors) and
:mod:`~sparsekit.data.loading` (seeded loaders). The data sets themselves are plugins.
"""

from sparsekit.data.common import SPLITS, FileDataset
from sparsekit.data.tensor_dataset import MultiTaskTensorDataset

__all__ = ["SPLITS", "FileDataset", "MultiTaskTensorDataset"]
