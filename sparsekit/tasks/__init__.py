"""Tasks: what a head predicts, its training loss and its evaluation metrics."""

from sparsekit.tasks.base import Meter, Task, task_losses
from sparsekit.tasks.image import AttributeTask, ClassificationTask
from sparsekit.tasks.pixel import DepthTask, EdgeTask, NormalsTask, SegmentationTask

__all__ = [
    "AttributeTask",
    "ClassificationTask",
    "DepthTask",
    "EdgeTask",
    "Meter",
    "NormalsTask",
    "SegmentationTask",
    "Task",
    "task_losses",
]
