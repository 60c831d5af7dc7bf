"""Hook specifications: one hook per plugin kind, each naming its components' interface.

The engine calls every hook with a ``register`` callable; the plugin calls ``register(cls)`` once
per component class it provides. The interface's docstring is the kind's contract
(``docs/plugins.md`` is checked against them). Plugins are found only through the entry-point
group ``sparsekit``; the module an entry point names implements some of these hooks with
``@sparsekit.hookimpl``.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT_NAME = "sparsekit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[[type], None]


@hookspec
def sparsekit_register_penalties(register: Register) -> None:
    """Register :class:`sparsekit.interfaces.Penalty` classes (kind ``penalty``)."""


@hookspec
def sparsekit_register_learners(register: Register) -> None:
    """Register :class:`sparsekit.interfaces.Learner` classes (kind ``learner``)."""


@hookspec
def sparsekit_register_loss_combiners(register: Register) -> None:
    """Register :class:`sparsekit.interfaces.LossCombiner` classes (kind ``loss_combiner``)."""


@hookspec
def sparsekit_register_datasets(register: Register) -> None:
    """Register :class:`sparsekit.interfaces.DatasetProvider` classes (kind ``dataset``)."""


@hookspec
def sparsekit_register_models(register: Register) -> None:
    """Register :class:`sparsekit.interfaces.ModelBuilder` classes (kind ``model``)."""


@hookspec
def sparsekit_register_regrowth_policies(register: Register) -> None:
    """Register :class:`sparsekit.interfaces.RegrowthPolicy` classes (kind ``regrowth``)."""


@hookspec
def sparsekit_register_schedulers(register: Register) -> None:
    """Register :class:`sparsekit.interfaces.SparsityScheduler` classes (kind ``scheduler``)."""


@hookspec
def sparsekit_register_masks(register: Register) -> None:
    """Register :class:`sparsekit.interfaces.MaskCriterion` classes (kind ``mask``)."""


@hookspec
def sparsekit_register_executors(register: Register) -> None:
    """Register :class:`sparsekit.interfaces.Executor` classes (kind ``executor``)."""


@hookspec
def sparsekit_register_optimizers(register: Register) -> None:
    """Register :class:`sparsekit.interfaces.OptimizerKind` classes (kind ``optimizer``)."""


@hookspec
def sparsekit_register_loggers(register: Register) -> None:
    """Register :class:`sparsekit.interfaces.Logger` classes (kind ``logger``)."""
