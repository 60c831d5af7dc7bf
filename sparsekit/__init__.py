"""sparsekit: sparse multi-task networks whose sparsity is learned.

The public API: build experiments, list and create plugin components.
"""

from sparsekit.config import (
    ConfigError,
    ExperimentConfig,
    FinetuneConfig,
    OptimizerConfig,
    load_config,
)
from sparsekit.engine.compaction import compact
from sparsekit.engine.experiment import Experiment
from sparsekit.hookspecs import hookimpl
from sparsekit.plugins import PluginError, PluginLoadWarning, create, list_plugins, reload_plugins
from sparsekit.reporting.result import Result

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Experiment",
    "ExperimentConfig",
    "FinetuneConfig",
    "OptimizerConfig",
    "PluginError",
    "PluginLoadWarning",
    "Result",
    "__version__",
    "compact",
    "create",
    "hookimpl",
    "list_plugins",
    "load_config",
    "reload_plugins",
]
