"""One small abstract base per plugin kind; each base's docstring is its kind's contract."""

from sparsekit.interfaces.base import Component, ComponentConfig
from sparsekit.interfaces.data import DatasetProvider
from sparsekit.interfaces.executor import Executor, TaskOutcome
from sparsekit.interfaces.learner import (
    Checkpoint,
    Learner,
    Pruner,
    StepInfo,
    TrainingContext,
    TrainingHistory,
    TrainSettings,
)
from sparsekit.interfaces.logger import Logger, RunInfo
from sparsekit.interfaces.loss_combiner import CombinerModule, LossCombiner
from sparsekit.interfaces.mask import MaskCriterion
from sparsekit.interfaces.model import (
    BackboneBuilder,
    BackboneConfig,
    GivenBackbone,
    ModelBuilder,
)
from sparsekit.interfaces.optimizer import OptimizerKind
from sparsekit.interfaces.penalty import Penalty
from sparsekit.interfaces.regrowth import RegrowthPolicy
from sparsekit.interfaces.scheduler import SparsitySchedule, SparsityScheduler

__all__ = [
    "Checkpoint",
    "BackboneBuilder",
    "BackboneConfig",
    "CombinerModule",
    "Component",
    "ComponentConfig",
    "DatasetProvider",
    "Executor",
    "GivenBackbone",
    "Learner",
    "Logger",
    "LossCombiner",
    "MaskCriterion",
    "ModelBuilder",
    "OptimizerKind",
    "Penalty",
    "Pruner",
    "RegrowthPolicy",
    "RunInfo",
    "SparsitySchedule",
    "SparsityScheduler",
    "StepInfo",
    "TaskOutcome",
    "TrainSettings",
    "TrainingContext",
    "TrainingHistory",
]
