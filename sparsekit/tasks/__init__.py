"""Tasks: what a head predicts, its training loss and its evaluation metrics."""

from sparsekit.tasks.base import Meter, Task
from sparsekit.tasks.library import (
    AttributeTask,
    ClassificationTask,
    DepthTask,
    EdgeTask,
    NormalsTask,
    SegmentationTask,
)

__all__ = [
    "AttributeTask",
    "ClassificationTask",
    "DepthTask",
    "EdgeTask",
    "Meter",
    "NormalsTask",
    "SegmentationTask",
    "Task",
]
