"""Built-in sparsity schedulers: one_shot, iterative, progressive and sparse_training."""

from __future__ import annotations

from sparsekit.hookspecs import Register, hookimpl
from sparsekit_plugins.schedulers.iterative import IterativeScheduler
from sparsekit_plugins.schedulers.one_shot import OneShotScheduler
from sparsekit_plugins.schedulers.progressive import ProgressiveScheduler
from sparsekit_plugins.schedulers.sparse_training import SparseTrainingScheduler

__all__ = [
    "IterativeScheduler",
    "OneShotScheduler",
    "ProgressiveScheduler",
    "SparseTrainingScheduler",
    "sparsekit_register_schedulers",
]


@hookimpl
def sparsekit_register_schedulers(register: Register) -> None:
    """Register the four schedulers of the paper's Table 5."""
    register(OneShotScheduler)
    register(IterativeScheduler)
    register(ProgressiveScheduler)
    register(SparseTrainingScheduler)
