"""Shared data-set code: file data sets and image I/O, in-memory tensors, loaders, and adapters
that turn any data into a data set.

:mod:`~sparsekit.data.common` (helpers for file-based data sets: layout checks, image and map
readers, :class:`FileDataset`), :mod:`~sparsekit.data.tensor_dataset` (in-memory tensors),
:mod:`~sparsekit.data.loading` (seeded loaders) and :mod:`~sparsekit.data.adapters`
(:func:`from_tensors` and :func:`from_dataset`: a user's tensors or torch ``Dataset`` as an
:class:`~sparsekit.data.in_memory.InMemoryData`). The built-in data sets are plugins.
"""

from sparsekit.data.adapters import from_dataset, from_tensors
from sparsekit.data.common import SPLITS, FileDataset
from sparsekit.data.in_memory import IN_MEMORY, InMemoryData
from sparsekit.data.tensor_dataset import MultiTaskTensorDataset

__all__ = [
    "IN_MEMORY",
    "SPLITS",
    "FileDataset",
    "InMemoryData",
    "MultiTaskTensorDataset",
    "from_dataset",
    "from_tensors",
]
