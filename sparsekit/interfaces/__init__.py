"""One small abstract base per plugin kind."""

from sparsekit.interfaces.base import Component, ComponentConfig
from sparsekit.interfaces.data import DatasetProvider
from sparsekit.interfaces.learner import Learner, StepInfo, TrainingContext, TrainingHistory
from sparsekit.interfaces.loss_combiner import LossCombiner
from sparsekit.interfaces.model import ModelBuilder
from sparsekit.interfaces.penalty import Penalty
from sparsekit.interfaces.regrowth import RegrowthPolicy

__all__ = [
    "Component",
    "ComponentConfig",
    "DatasetProvider",
    "Learner",
    "LossCombiner",
    "ModelBuilder",
    "Penalty",
    "RegrowthPolicy",
    "StepInfo",
    "TrainingContext",
    "TrainingHistory",
]
