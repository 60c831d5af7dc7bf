"""Resolving an experiment: every component made, every default named, before any data loads.

A bad name or parameter therefore fails at once, and the config a run records names every
component it used: ``"default"`` becomes the name of the kind's default component, and an unset
optimiser kind becomes the learner's default one (or the registry's). A backbone given as an
``nn.Module`` becomes a :class:`~sparsekit.interfaces.GivenBackbone`; a config that only records
one (``model: {name: module, ...}``) or data given in memory (``dataset: {name: in_memory,
...}``) cannot run again, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparsekit.config import GIVEN_MODULE, ExperimentConfig, OptimizerConfig
from sparsekit.errors import ConfigError
from sparsekit.interfaces import (
    DatasetProvider,
    Learner,
    LossCombiner,
    ModelBuilder,
    Penalty,
    TrainSettings,
)
from sparsekit.interfaces.model import cannot_rebuild_message
from sparsekit.registry import create, get_registry
from sparsekit.runs.store import make_builder, make_provider

#: The experiment's component fields and their plugin kinds.
COMPONENT_KINDS = {
    "dataset": "dataset",
    "model": "model",
    "penalty": "penalty",
    "learner": "learner",
    "loss_combiner": "loss_combiner",
    "scheduler": "scheduler",
    "mask": "mask",
}


@dataclass
class Resolved:
    """The components of an experiment and its config with every default named.

    Attributes:
        config: the experiment config whose component fields name concrete components and whose
            optimiser names its kind.
        learner: the learner.
        provider: the data set.
        builder: the model builder.
        combiner: the loss-combiner factory.
        penalty: the penalty, or None.
    """

    config: ExperimentConfig
    learner: Learner
    provider: DatasetProvider
    builder: ModelBuilder
    combiner: LossCombiner
    penalty: Penalty | None


def named_defaults(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with every ``"default"`` component name replaced by the kind's default."""
    registry = get_registry()
    update = {
        field: registry.spec(kind, getattr(config, field))
        for field, kind in COMPONENT_KINDS.items()
        if getattr(config, field) is not None
    }
    return config.model_copy(update=update)


def optimizer_for(config: OptimizerConfig, learner: Learner) -> OptimizerConfig:
    """``config`` with an unset kind replaced by the learner's default (or the registry's)."""
    if config.name is not None:
        return config
    name = learner.default_optimizer or get_registry().default("optimizer")
    return config.model_copy(update={"name": name})


def check_lambda(config: ExperimentConfig, learner: Learner) -> None:
    """A learned λ needs a learner that learns it and a penalty whose λ it is.

    Raises:
        ConfigError: otherwise, naming the learners that can.
    """
    if config.lam != "learned":
        return
    if not learner.learns_lambda:
        able = [
            name
            for name in get_registry().names("learner")
            if get_registry().get("learner", name).learns_lambda
        ]
        raise ConfigError(
            f"lam='learned' needs a learner that meta-learns λ ({', '.join(able) or 'none'}); "
            f"learner {learner.name!r} trains with a fixed λ, so give lam a number"
        )
    if config.penalty is None:
        raise ConfigError("lam='learned' needs a penalty whose λ can be learned")


def resolve(config: ExperimentConfig) -> Resolved:
    """Create every component of ``config`` and name its defaults.

    Raises:
        ConfigError: invalid component parameters, or a learned λ the learner cannot learn.
        PluginError: an unknown component name.
    """
    config = named_defaults(config)
    learner = create("learner", config.learner)
    check_lambda(config, learner)
    config = config.model_copy(update={"optimizer": optimizer_for(config.optimizer, learner)})
    create("optimizer", config.optimizer.name)  # an unknown kind fails before any data loads
    resolved = Resolved(
        config=config,
        learner=learner,
        provider=make_provider(config.dataset),
        builder=model_builder(config.model),
        combiner=create("loss_combiner", config.loss_combiner),
        penalty=create("penalty", config.penalty) if config.penalty is not None else None,
    )
    # The run records every parameter of the components it used, defaults included.
    resolved.config = config.model_copy(
        update={
            "learner": learner.spec(),
            "dataset": resolved.provider.spec(),
            "model": resolved.builder.spec(),
            "loss_combiner": resolved.combiner.spec(),
            "penalty": resolved.penalty.spec() if resolved.penalty is not None else None,
        }
    )
    return resolved


def model_builder(spec: Any) -> ModelBuilder:
    """The builder of the ``model`` field: a given backbone wrapped, a named one created.

    Raises:
        ConfigError: a record of a backbone given as an instance, which no config can rebuild.
    """
    if isinstance(spec, dict) and spec.get("name") == GIVEN_MODULE:
        raise ConfigError(cannot_rebuild_message(str(spec.get("class", ""))))
    return make_builder(spec)


def train_settings(config: ExperimentConfig, pin_memory: bool = False) -> TrainSettings:
    """The settings a learner trains with, from a resolved config."""
    return TrainSettings(
        steps=config.steps,
        batch_size=config.batch_size,
        eval_every=config.eval_every,
        patience=config.patience,
        optimizer=config.optimizer,
        amp=config.amp,
        pin_memory=pin_memory,
        num_workers=config.num_workers,
        lam_warmup=config.lam_warmup,
    )
