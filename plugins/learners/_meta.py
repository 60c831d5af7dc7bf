"""The meta-training loop shared by the meta-sparsity learners (``maml``, ``fomaml``, ``anil``).

One meta-step (Meta-Sparsity, Algorithm 3) does, in this order:

1. zero the gradients of Θ_meta (model and loss combiner) and of ρ (λ = softplus_β(ρ));
2. for each of ``episodes_per_batch`` episodes: sample a task subset uniformly and disjoint
   support and query batches from the training split; clone Θ_meta keeping the graph; regrow
   zeroed groups of the clone's backbone; adapt the clone on the support batch (the learner's
   :meth:`MetaLearner.adapt`, whose inner loop applies the differentiable prox with λ to the
   backbone conv weights); score the adapted clone on the query batch with BatchNorm on batch
   statistics; back-propagate ``query_loss / episodes_per_batch`` to Θ_meta and ρ;
3. one step of the outer optimiser (the experiment's ``optimizer``) on Θ_meta and ρ together;
4. the outer proximal step ``prox(w, lr, λ)`` on Θ_meta's backbone conv weights, with λ computed
   from the updated ρ.

This is the default λ rule, ``MetaConfig.lam_update``; :mod:`._lam_update` has all. The loop
itself is :class:`._meta_trainer.MetaTrainer`.

BatchNorm: running statistics are updated by the support passes of the inner loop only; the query
pass normalises with the query batch's own statistics and updates nothing; evaluation runs in
eval mode with the running statistics. No query, validation or test example enters a buffer.

References:
    Upadhyay et al., "Meta-Sparsity: Learning Optimal Sparse Structures in Multi-task Networks
    through Meta-learning" (Algorithm 3); Finn et al. 2017, "Model-Agnostic Meta-Learning".
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
from pydantic import ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

from sparsekit.errors import MissingDependency
from sparsekit.interfaces import (
    ComponentConfig,
    Penalty,
    RegrowthPolicy,
)
from sparsekit.nn import MultiTaskNet, backbone_conv_weights
from sparsekit.tasks import Task, task_losses
from sparsekit_plugins.learners._episodes import Episode
from sparsekit_plugins.learners._lam_update import LamUpdate, in_metric, layer_lambda
from sparsekit_plugins.learners._learned_lambda import LearnedLambda

Batch = tuple[Tensor, dict[str, Tensor]]


def import_learn2learn() -> ModuleType:
    """``learn2learn``, imported on first use.

    Importing it pulls in ``gym``, which prints an unmaintained-package notice on stderr and may
    warn; both are about gym, which sparsekit never uses, so they are swallowed.

    Raises:
        MissingDependency: learn2learn is not installed (with the command that installs it).
    """
    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import learn2learn
    except ImportError as exc:
        raise MissingDependency(
            "the meta-learners need learn2learn 0.2.0, which does not build from PyPI on "
            "Python ≥ 3.11; install it with: python -m sparsekit.install_learn2learn"
        ) from exc
    return learn2learn


#: λ₀'s range under the plain-prox rules: the paper's U(0.1, 1).
PLAIN_LAM_INIT = (0.1, 1.0)
#: λ₀'s range on the proxssi scale (``preconditioned``, ``tolerance``): as tenfold a range, where
#: fixed λ spans the mtl frontier's sparse half (docs/penalties.md).
METRIC_LAM_INIT = (0.001, 0.01)


class MetaConfig(ComponentConfig):
    """Options shared by the meta-learners.

    Attributes:
        lam_init: a learned λ starts at λ₀ ~ U(low, high), drawn with the run's seeded generator.
            Unset, it is the paper's U(0.1, 1) under the plain-prox rules and the tenfold range
            U(0.001, 0.01) on the proxssi scale under ``preconditioned`` and ``tolerance``.
        lam_beta: β of a learned λ = softplus_β(ρ).
        lam_per_layer: one learned λ per backbone conv layer (all start at λ₀) instead of one.
        inner_steps: κ, adaptation steps per episode.
        inner_lr: α_in, the step size of the inner SGD step and of the inner prox.
        lam_lr: the outer learning rate of ρ (the experiment's outer optimiser, in its own
            parameter group); None uses the optimiser's ``lr`` (α_out), as Algorithm 3 does.
            The default is fifty times the default α_out: each meta-step the outer prox removes
            up to α_out·λ·√n_g of a group's norm while Adam moves ρ by about its
            learning rate, so with a shared α_out λ cannot react before the backbone is zeroed
            (see docs/meta_learning.md).
        episodes_per_batch: episodes whose query gradients are averaged per meta-step.
        batch_size: examples in each support batch and again in each query batch; None uses
            the experiment's ``batch_size``.
        min_tasks: the fewest tasks per episode (2 keeps only multi-task episodes).
        episodes: an explicit list of task subsets instead of the power set.
        regrowth: the regrowth policy applied to each episode's clone: a name or a
            ``{"name": ..., **params}`` dict of kind ``regrowth``.
        log_every: meta-steps between sparsity readings in the progress callback.
        lam_update: how λ is meta-learned (:mod:`sparsekit_plugins.learners._lam_update`).
            The default ``"tolerance"`` is the only rule that sparsifies in every seed
            (docs/science.md). ``"inner_prox"``: a differentiable inner prox ``prox(w, α_in, λ)``
            carries the query loss's meta-gradient to ρ. ``"outer_penalty"``: Algorithm 3 as
            printed: a plain inner loop, outer objective ``query_loss + λ·R(θ_b adapted)``; its ∂/∂λ
            = R > 0, so λ can only shrink (the literal baseline); ρ's gradient step then needs no
            prox for λ ≥ 0, which the softplus guarantees. ``"preconditioned"``: both proxes in the
            metric D = √v̂ + ε of the outer Adam (ProxSSI), scale-equivariant under BatchNorm; an
            Adam-based outer optimiser and λ on the proxssi scale (for ``mtl`` on shapes, λ ≈
            0.001–0.04 spans 0–90 % sparsity). ``"relative"``: the proxes of ``inner_prox`` with
            each layer's λ in units of its RMS weight (scale-free). ``"tolerance"``: λ is not
            differentiated; it is the multiplier of the constraint "every task's primary metric
            after adaptation within ``lam_tolerance`` of its best", moved by multiplicative dual
            ascent (:mod:`sparsekit_plugins.learners._tolerance`), with both proxes in the outer
            optimiser's metric where it has one, as under ``preconditioned``.
        lam_holdout: the fraction of the training split held out for λ's meta-gradient (0: none).
            ρ is then differentiated through the adapted clone's loss on a held-out batch, which
            Θ_meta never trains on; Θ_meta keeps the query gradient. Needs a learned λ.
        lam_tolerance: ``tolerance`` only: ε, the relative shortfall of each task's averaged
            query metric from its best that the constraint allows.
        lam_rate: ``tolerance`` only: η, the largest change of log λ in one meta-step.
        lam_window: ``tolerance`` only: the metric averages' time constant in meta-steps; λ
            is held for the first ``lam_window`` meta-steps.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    lam_init: tuple[float, float] = PLAIN_LAM_INIT
    lam_beta: float = Field(1.0, gt=0)
    lam_per_layer: bool = False
    inner_steps: int = Field(1, ge=1)
    inner_lr: float = Field(0.05, gt=0)
    lam_lr: float | None = Field(0.05, gt=0)
    episodes_per_batch: int = Field(2, ge=1)
    batch_size: int | None = Field(16, ge=1)
    min_tasks: int = Field(1, ge=1)
    episodes: tuple[tuple[str, ...], ...] | None = None
    regrowth: Any = "none"
    log_every: int = Field(10, ge=1)
    lam_update: LamUpdate = "tolerance"
    lam_holdout: float = Field(0.0, ge=0, lt=0.5)
    lam_tolerance: float = Field(0.02, gt=0)
    lam_rate: float = Field(0.005, gt=0)
    lam_window: int = Field(50, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _rule_lam_init(cls, data: Any) -> Any:
        """An unset ``lam_init`` on the scale of the rule's λ."""
        if isinstance(data, dict) and data.get("lam_init") is None:
            rule = data.get("lam_update", cls.model_fields["lam_update"].default)
            data = {**data, "lam_init": METRIC_LAM_INIT if in_metric(rule) else PLAIN_LAM_INIT}
        return data

    @field_validator("lam_init")
    @classmethod
    def _lam_init(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high or high == float("inf"):
            raise ValueError(f"lam_init must be (low, high) with 0 < low ≤ high, got {value!r}")
        return value

    @field_validator("regrowth", mode="before")
    @classmethod
    def _regrowth_spec(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            return dict(value)
        if isinstance(value, RegrowthPolicy):
            return value
        raise ValueError(f"regrowth is a name or a {{'name': ...}} dict, got {value!r}")


@dataclass
class MetaState:
    """What an episode's adaptation reads: the meta-model, λ, the penalty and the options.

    Attributes:
        model: Θ_meta, the network trained in place.
        combiner: the loss combiner (outer parameters, never adapted in the inner loop).
        tasks: every trained task by name.
        penalty: the sparsity penalty, or None.
        lam: λ, learned or fixed.
        inner_lr: α_in.
        inner_steps: κ.
        regrowth: the regrowth policy.
        generator: the seeded source of randomness.
        wrapper: the learner's wrapper of ``model`` (a ``learn2learn`` MAML), if it uses one.
        last_grads: the previous meta-gradient of each backbone conv weight, for regrowth
            policies that rank groups by it (None before the first meta-step).
        lam_update: the λ update rule (``MetaConfig.lam_update``).
        precond: ``preconditioned`` and ``tolerance``: D by backbone conv weight name, from the
            outer Adam's state (detached); a weight without one (not stepped yet) gets the plain
            prox.
        query_scores: ``tolerance`` only: each task's primary metric on the query batches of
            the current meta-step's episodes, after adaptation (None: not recorded).
    """

    model: MultiTaskNet
    combiner: nn.Module
    tasks: Mapping[str, Task]
    penalty: Penalty | None
    lam: LearnedLambda
    inner_lr: float
    inner_steps: int
    regrowth: RegrowthPolicy
    generator: torch.Generator
    wrapper: Any = None
    last_grads: dict[str, Tensor] | None = field(default=None)
    lam_update: LamUpdate = "inner_prox"
    precond: dict[str, Tensor] | None = field(default=None)
    query_scores: dict[str, list[float]] | None = field(default=None)

    @property
    def prox_active(self) -> bool:
        """Whether the prox runs at all (a penalty and a λ that is not fixed at 0)."""
        return self.penalty is not None and not self.lam.is_zero


def episode_loss(
    state: MetaState, outputs: dict[str, Tensor], targets: dict[str, Tensor], episode: Episode
) -> Tensor:
    """The loss combiner over the episode's own tasks only."""
    tasks = [state.tasks[name] for name in episode]
    return state.combiner(task_losses(outputs, targets, tasks))


def set_parameter(module: nn.Module, qualified_name: str, value: Tensor) -> None:
    """Replace parameter ``qualified_name`` of a clone by a tensor that keeps its graph.

    This is learn2learn's ``update_module`` pattern: the module's ``_parameters`` entry is swapped,
    so later forwards use ``value`` and gradients flow back through it.
    """
    owner_name, _, key = qualified_name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    owner._parameters[key] = value


def prox_backbone(clone: MultiTaskNet, state: MetaState, lam: Tensor) -> None:
    """Apply ``penalty.prox(w, α_in, λ_l, precond=D)`` to every backbone conv weight of ``clone``.

    Differentiable in the weights and in λ, so the query loss carries a meta-gradient to ρ. D is
    the weight's ``state.precond`` entry (None: the plain prox); under ``relative`` λ_l is scaled
    by the weight's RMS (a constant); ``outer_penalty`` skips it all.
    """
    if not state.prox_active or state.lam_update == "outer_penalty":
        return
    assert state.penalty is not None
    precond = state.precond or {}
    for index, (name, weight) in enumerate(backbone_conv_weights(clone).items()):
        lam_l = layer_lambda(state.lam_update, state.lam.for_layer(lam, index), weight)
        new = state.penalty.prox(weight, state.inner_lr, lam_l, precond=precond.get(name))
        set_parameter(clone, name, new)


def regrow_clone(clone: MultiTaskNet, state: MetaState) -> None:
    """Let the regrowth policy re-initialise zeroed groups of the clone's backbone (in place).

    The regrown values are constants added to the clone, so Θ_meta's zero groups receive the
    query gradient at the regrown point. Policies that rank groups get the previous meta-step's
    meta-gradient; before the first meta-step there is none and they get zeros (a dense initial
    backbone has no zeroed group to regrow then anyway).
    """
    weights = backbone_conv_weights(clone)
    grads = state.last_grads
    if grads is None:
        grads = {name: torch.zeros_like(w.detach()) for name, w in weights.items()}
    with torch.no_grad():
        state.regrowth.regrow(weights, grads, state.generator)


def use_batch_statistics(module: nn.Module) -> None:
    """Make the BatchNorm layers of a clone normalise with batch statistics and update nothing.

    A clone shares its running-statistics buffers with Θ_meta; dropping them from the clone's own
    buffer dicts (copies, so Θ_meta keeps its buffers) makes BatchNorm use the batch's statistics
    even in train mode and leaves the shared buffers untouched.
    """
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                sub._buffers[key] = None


class MetaProgress:
    """What a checkpoint keeps of meta-training besides modules and streams: the last
    meta-gradients (regrowth reads them) and how often each episode was drawn."""

    def __init__(self, state: MetaState, counts: Counter[str]) -> None:
        self.state, self.counts = state, counts

    def state_dict(self) -> dict[str, Any]:
        return {"last_grads": self.state.last_grads, "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state.last_grads = state["last_grads"]
        self.counts.clear()
        self.counts.update(state["counts"])
