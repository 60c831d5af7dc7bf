"""Turning component specs (names, dicts, instances) into configured components."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from sparsekit.config import ConfigError, describe_validation_error
from sparsekit.interfaces import (
    DatasetProvider,
    Executor,
    Learner,
    LossCombiner,
    MaskCriterion,
    ModelBuilder,
    Penalty,
    RegrowthPolicy,
    SparsityScheduler,
)
from sparsekit.plugins import get_registry

INTERFACES: dict[str, type] = {
    "penalty": Penalty,
    "learner": Learner,
    "loss_combiner": LossCombiner,
    "dataset": DatasetProvider,
    "model": ModelBuilder,
    "regrowth": RegrowthPolicy,
    "scheduler": SparsityScheduler,
    "mask": MaskCriterion,
    "executor": Executor,
}


def resolve_component(kind: str, spec: Any) -> Any:
    """The component for ``spec``: an instance is checked and returned, a dict is created.

    Raises:
        ConfigError: the parameters do not fit the component's Config, or an instance is of the
            wrong kind.
        PluginError: no component of that kind has that name.
    """
    interface = INTERFACES.get(kind)
    if interface is not None and isinstance(spec, interface):
        return spec
    if hasattr(spec, "spec"):
        raise ConfigError(
            f"{kind} must be a {interface.__name__ if interface else kind}, "
            f"got {type(spec).__name__}"
        )
    params = dict(spec)
    name = params.pop("name")
    cls = get_registry().get(kind, name)
    try:
        return cls(cls.Config(**params))
    except ValidationError as exc:
        raise ConfigError(
            f"{kind} {name!r}: {describe_validation_error(exc, cls.Config)}"
        ) from None
