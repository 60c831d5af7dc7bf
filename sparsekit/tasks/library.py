"""The built-in tasks, re-exported from the pixel-level and image-level modules."""

from sparsekit.tasks.dense import DepthTask, EdgeTask, NormalsTask, SegmentationTask
from sparsekit.tasks.image import AttributeTask, ClassificationTask

__all__ = [
    "AttributeTask",
    "ClassificationTask",
    "DepthTask",
    "EdgeTask",
    "NormalsTask",
    "SegmentationTask",
]
