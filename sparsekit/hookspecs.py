"""Hook specifications: the contract between the sparsekit engine and its plugins.

Every plugin kind has exactly one hook, in callback style. The engine calls the hook with a
``register`` callable; the plugin calls ``register(ComponentClass)`` once for every component it
provides. A component class declares ``name: ClassVar[str]`` (lower_snake, unique within its kind)
and ``Config: ClassVar[type[pydantic.BaseModel]]`` (``extra="forbid"``), and implements the small
interface of its kind in :mod:`sparsekit.interfaces`.

Plugins are found only through the Python entry-point group ``sparsekit``: the built-ins declare
theirs in sparsekit's ``pyproject.toml`` exactly as a third-party distribution would::

    [project.entry-points.sparsekit]
    my_penalties = "my_package.penalties"

The module an entry point names implements one or more of the hooks below with
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
    """Register sparsity penalties (kind ``penalty``).

    Each class subclasses :class:`sparsekit.interfaces.Penalty`: ``value(weight)`` is the penalty
    without λ, ``prox(weight, step, lam)`` its proximal operator (functional and differentiable with
    respect to ``weight`` and ``lam`` wherever the result is non-zero), ``prox_`` the in-place form
    used in training, and ``active_mask(weight)`` which groups are non-zero.
    """


@hookspec
def sparsekit_register_learners(register: Register) -> None:
    """Register learners (kind ``learner``): the training procedures.

    Each class subclasses :class:`sparsekit.interfaces.Learner` and implements
    ``fit(context) -> TrainingHistory``, training ``context.model`` in place on the training split,
    with early stopping on the validation split only.
    """


@hookspec
def sparsekit_register_loss_combiners(register: Register) -> None:
    """Register multi-task loss combiners (kind ``loss_combiner``).

    Each class subclasses :class:`sparsekit.interfaces.LossCombiner`: ``build(task_names)`` returns
    an ``nn.Module`` whose ``forward(losses: dict[str, Tensor])`` combines the losses of any subset
    of those tasks into one scalar. Its parameters, if any, are trained with the model.
    """


@hookspec
def sparsekit_register_datasets(register: Register) -> None:
    """Register multi-task data sets (kind ``dataset``).

    Each class subclasses :class:`sparsekit.interfaces.DatasetProvider`: ``tasks()`` lists the
    :class:`sparsekit.tasks.Task` objects it provides; ``load(split, tasks)`` returns a
    ``torch.utils.data.Dataset`` of ``(image, {task: target})`` pairs for ``train``, ``val`` or
    ``test``. The three splits are disjoint.
    """


@hookspec
def sparsekit_register_models(register: Register) -> None:
    """Register multi-task architectures (kind ``model``).

    Each class subclasses :class:`sparsekit.interfaces.ModelBuilder`: ``build(tasks, in_channels)``
    returns a :class:`sparsekit.models.MultiTaskNet` (one shared ``backbone`` plus one head per
    task). Sparsity is applied to the backbone only.
    """


@hookspec
def sparsekit_register_regrowth_policies(register: Register) -> None:
    """Register regrowth policies for zeroed channel groups (kind ``regrowth``).

    Each class subclasses :class:`sparsekit.interfaces.RegrowthPolicy`:
    ``regrow(weights, grads, generator)`` re-initialises some entirely-zero input-channel groups of
    the backbone conv weights in place and returns, per weight, the mask of groups regrown.
    """


@hookspec
def sparsekit_register_schedulers(register: Register) -> None:
    """Register sparsity schedulers (kind ``scheduler``): when, and how far, to sparsify.

    Each class subclasses :class:`sparsekit.interfaces.SparsityScheduler`: ``sparsity_at(step)``
    is the target fraction in ``[0, target]`` at a training step (monotone for dense-to-sparse
    schedules) and ``is_update_step(step)`` says whether the mask is recomputed at that step.
    """


@hookspec
def sparsekit_register_masks(register: Register) -> None:
    """Register mask criteria (kind ``mask``): which channel groups or elements to zero.

    Each class subclasses :class:`sparsekit.interfaces.MaskCriterion` and returns, for the backbone
    conv weights and a target fraction of backbone parameters, a keep-mask that zeroes exactly that
    many parameters (to one group at channel granularity, to one element at element granularity).
    """


@hookspec
def sparsekit_register_executors(register: Register) -> None:
    """Register sweep executors (kind ``executor``): where the runs of a sweep execute.

    Each class subclasses :class:`sparsekit.interfaces.Executor`: it runs a batch of independent
    run specifications, reports every finished run as soon as it finishes, and stops cleanly on
    interruption without losing finished runs.
    """


#: Hook name for every plugin kind, keyed by the kind's singular API name.
HOOKS_BY_KIND: dict[str, str] = {
    "penalty": "sparsekit_register_penalties",
    "learner": "sparsekit_register_learners",
    "loss_combiner": "sparsekit_register_loss_combiners",
    "dataset": "sparsekit_register_datasets",
    "model": "sparsekit_register_models",
    "regrowth": "sparsekit_register_regrowth_policies",
    "scheduler": "sparsekit_register_schedulers",
    "mask": "sparsekit_register_masks",
    "executor": "sparsekit_register_executors",
}
