"""Built-in loggers: ``csv`` (the default), ``tensorboard`` and ``mlflow``."""

from __future__ import annotations

from sparsekit.hookspecs import Register, hookimpl
from sparsekit_plugins.loggers.csv_file import CsvLogger
from sparsekit_plugins.loggers.mlflow_tracking import MlflowLogger
from sparsekit_plugins.loggers.tensorboard import TensorBoardLogger

__all__ = ["CsvLogger", "MlflowLogger", "TensorBoardLogger", "sparsekit_register_loggers"]


@hookimpl
def sparsekit_register_loggers(register: Register) -> None:
    """Register the built-in loggers."""
    register(CsvLogger)
    register(TensorBoardLogger)
    register(MlflowLogger)
