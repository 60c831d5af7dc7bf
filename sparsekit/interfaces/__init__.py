"""One small abstract base per plugin kind."""

from sparsekit.interfaces.base import Component, ComponentConfig
from sparsekit.interfaces.data import DatasetProvider
from sparsekit.interfaces.executor import Executor, ExecutorUnavailable, TaskOutcome
from sparsekit.interfaces.learner import Learner, StepInfo, TrainingContext, TrainingHistory
from sparsekit.interfaces.loss_combiner import LossCombiner
from sparsekit.interfaces.mask import MaskCriterion
from sparsekit.interfaces.model import ModelBuilder
from sparsekit.interfaces.penalty import Penalty
from sparsekit.interfaces.regrowth import RegrowthPolicy
from sparsekit.interfaces.scheduler import SparsitySchedule, SparsityScheduler

__all__ = [
    "Component",
    "ComponentConfig",
    "DatasetProvider",
    "Executor",
    "ExecutorUnavailable",
    "Learner",
    "LossCombiner",
    "MaskCriterion",
    "ModelBuilder",
    "Penalty",
    "RegrowthPolicy",
    "SparsitySchedule",
    "SparsityScheduler",
    "StepInfo",
    "TaskOutcome",
    "TrainingContext",
    "TrainingHistory",
]
