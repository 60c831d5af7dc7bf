"""Sweeps: grids of experiments over seeds, run by an executor, stored in SQLite."""

from sparsekit.sweep.runner import Sweep, SweepInterrupted
from sparsekit.sweep.spec import RunSpec, StageConfig, SweepConfig, load_sweep_config
from sparsekit.sweep.stage import SweepSummary
from sparsekit.sweep.store import ResultStore, RunRow

__all__ = [
    "ResultStore",
    "RunRow",
    "RunSpec",
    "StageConfig",
    "Sweep",
    "SweepConfig",
    "SweepInterrupted",
    "SweepSummary",
    "load_sweep_config",
]
