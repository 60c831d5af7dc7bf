"""Typed configuration: experiments, component specs and optimisers (pydantic v2).

Component fields take a registry name, a ``{"name": ..., **params}`` dict or an instance; the
name ``"default"`` (:data:`DEFAULT_COMPONENT`) stands for the component of that kind which
declares itself the default, resolved by the registry when the experiment runs. ``settings``
holds the optimiser, fine-tuning and target configs, ``experiment`` the experiment config,
``loading`` YAML files and overrides.
"""

from sparsekit.config.experiment import (
    COMPONENT_FIELDS,
    ComponentSpec,
    ExperimentConfig,
    scheduled_run_problems,
)
from sparsekit.config.loading import (
    build_config,
    deep_merge,
    describe_validation_error,
    load_config,
    load_yaml,
    merge_overrides,
    parse_overrides,
    read_yaml,
)
from sparsekit.config.settings import (
    DEFAULT_COMPONENT,
    GIVEN_MODULE,
    FinetuneConfig,
    OptimizerConfig,
    StrictModel,
    TargetFromRun,
    directory_path,
)
from sparsekit.errors import ConfigError

__all__ = [
    "COMPONENT_FIELDS",
    "DEFAULT_COMPONENT",
    "GIVEN_MODULE",
    "ComponentSpec",
    "ConfigError",
    "ExperimentConfig",
    "FinetuneConfig",
    "OptimizerConfig",
    "StrictModel",
    "TargetFromRun",
    "build_config",
    "deep_merge",
    "describe_validation_error",
    "directory_path",
    "load_config",
    "load_yaml",
    "merge_overrides",
    "parse_overrides",
    "read_yaml",
    "scheduled_run_problems",
]
