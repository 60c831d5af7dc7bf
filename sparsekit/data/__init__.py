"""Data sets: in-memory tensors, procedural scenes, and real data sets read from disk.

Modules: :mod:`~sparsekit.data.tensor_dataset` (``MultiTaskTensorDataset``),
:mod:`~sparsekit.data.shapes` (procedural scenes), :mod:`~sparsekit.data.common` (helpers for
file-based data sets), :mod:`~sparsekit.data.nyuv2` and :mod:`~sparsekit.data.celeba`.
"""

from sparsekit.data.celeba import CelebAMaskHQDataset, load_celeba_mask_hq
from sparsekit.data.common import FileDataset
from sparsekit.data.nyuv2 import NYUv2Dataset, load_nyuv2
from sparsekit.data.tensor_dataset import MultiTaskTensorDataset

__all__ = [
    "CelebAMaskHQDataset",
    "FileDataset",
    "MultiTaskTensorDataset",
    "NYUv2Dataset",
    "load_celeba_mask_hq",
    "load_nyuv2",
]
