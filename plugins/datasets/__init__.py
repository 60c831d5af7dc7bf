"""Built-in data sets: ``shapes``, ``digits`` (generated), ``nyuv2``, ``celeba_mask_hq``, and
``import``: a data set made by the user's own code."""

from __future__ import annotations

from sparsekit.hookspecs import Register, hookimpl
from sparsekit_plugins.datasets.celeba import CelebAMaskHQProvider
from sparsekit_plugins.datasets.digits import DigitsProvider
from sparsekit_plugins.datasets.import_data import ImportedData
from sparsekit_plugins.datasets.nyuv2 import NYUv2Provider
from sparsekit_plugins.datasets.shapes import ShapesProvider

__all__ = [
    "CelebAMaskHQProvider",
    "DigitsProvider",
    "ImportedData",
    "NYUv2Provider",
    "ShapesProvider",
    "sparsekit_register_datasets",
]


@hookimpl
def sparsekit_register_datasets(register: Register) -> None:
    """Register the built-in data set providers."""
    register(ShapesProvider)
    register(DigitsProvider)
    register(NYUv2Provider)
    register(CelebAMaskHQProvider)
    register(ImportedData)
