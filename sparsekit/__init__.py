"""sparsekit: sparse multi-task networks whose sparsity is learned.

The public API: build and run experiments, fine-tune, compact and export their models, reload
results, list and create plugin components.
"""

from sparsekit._version import __version__
from sparsekit.config import ExperimentConfig, FinetuneConfig, OptimizerConfig, load_config
from sparsekit.engine.experiment import Experiment
from sparsekit.engine.export import export, export_run
from sparsekit.engine.finetune import finetune
from sparsekit.errors import ConfigError, PluginError, PluginLoadWarning
from sparsekit.hookspecs import hookimpl
from sparsekit.nn.compaction import compact
from sparsekit.registry import create, list_plugins, reload_plugins
from sparsekit.runs.store import Result

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
    "export",
    "export_run",
    "finetune",
    "hookimpl",
    "list_plugins",
    "load_config",
    "reload_plugins",
]
