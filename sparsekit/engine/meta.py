"""The meta-training loop shared by the meta-sparsity learners (``maml``, ``fomaml``, ``anil``).

One meta-step (Meta-Sparsity, Algorithm 3) does, in this order:

1. zero the gradients of Θ_meta (model and loss combiner) and of ρ (λ = softplus_β(ρ));
2. for each of ``episodes_per_batch`` episodes: sample a task subset uniformly and disjoint
   support and query batches from the training split; clone Θ_meta keeping the graph; regrow
   zeroed groups of the clone's backbone; adapt the clone on the support batch (the learner's
   :meth:`MetaLearner.adapt`, whose inner loop applies the differentiable prox with λ to the
   backbone conv weights); score the adapted clone on the query batch with BatchNorm on batch
   statistics; back-propagate ``query_loss / episodes_per_batch`` to Θ_meta and ρ;
3. one step of the outer optimiser (``config.optimizer``: Adam for ``adam_prox``, SGD with
   momentum for ``sgd_prox``) on Θ_meta and ρ together;
4. the outer proximal step ``prox(w, lr, λ)`` on Θ_meta's backbone conv weights, with λ computed
   from the updated ρ.

This is the default λ rule, ``MetaConfig.lam_update``; :mod:`sparsekit.engine.lam_update` has all.

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
import math
from abc import abstractmethod
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, cast

import torch
from pydantic import ConfigDict, Field, field_validator
from torch import Tensor, nn

from sparsekit.config import ConfigError
from sparsekit.engine.components import resolve_component
from sparsekit.engine.episodes import (
    Episode,
    EpisodeBatch,
    EpisodeStream,
    HeldOutBatches,
    resolve_episodes,
    split_holdout,
)
from sparsekit.engine.lam_update import (
    DIAGNOSTICS,
    LamUpdate,
    adam_preconditioners,
    check_outer_optimizer,
    lam_meta_gradient,
    layer_lambda,
    outer_prox_,
    penalty_term,
    record_diagnostics,
)
from sparsekit.engine.learned_lambda import LearnedLambda
from sparsekit.engine.optim import ProximalOptimizer
from sparsekit.engine.sparsity import sparsity
from sparsekit.engine.training import EarlyStopping, evaluate, task_losses
from sparsekit.interfaces import (
    ComponentConfig,
    Learner,
    Penalty,
    RegrowthPolicy,
    StepInfo,
    TrainingContext,
    TrainingHistory,
)
from sparsekit.models import MultiTaskNet, backbone_conv_weights
from sparsekit.tasks import Task

Batch = tuple[Tensor, dict[str, Tensor]]


def import_learn2learn() -> ModuleType:
    """``learn2learn``, imported on first use.

    Importing it pulls in ``gym``, which prints an unmaintained-package notice on stderr; the
    notice is about gym, which sparsekit never uses, so it is swallowed.
    """
    with contextlib.redirect_stderr(io.StringIO()):
        import learn2learn
    return learn2learn


class MetaConfig(ComponentConfig):
    """Options shared by the meta-learners.

    Attributes:
        inner_steps: κ, adaptation steps per episode.
        inner_lr: α_in, the step size of the inner SGD step and of the inner prox.
        lam_lr: the outer learning rate of ρ (the outer optimiser of ``config.optimizer``, in its
            own parameter group); None uses ``config.optimizer.lr`` (α_out), as Algorithm 3
            does. The default is fifty times the default α_out: each meta-step the outer prox
            removes up to α_out·λ·√n_g of a group's norm while Adam moves ρ by about its
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
        lam_update: how λ is meta-learned (:mod:`sparsekit.engine.lam_update`).
            ``"inner_prox"``: a differentiable inner prox ``prox(w, α_in, λ)`` carries the query
            loss's meta-gradient to ρ. ``"outer_penalty"``: Algorithm 3 as printed: a plain inner
            loop, outer objective ``query_loss + λ·R(θ_b adapted)``; its ∂/∂λ = R > 0, so λ can
            only shrink (the literal baseline); ρ's gradient step then needs no prox for λ ≥ 0,
            which the softplus guarantees. ``"preconditioned"``: both proxes in the metric
            D = √v̂ + ε of the outer Adam (ProxSSI), scale-equivariant under BatchNorm; an
            Adam-based outer optimiser and λ on the proxssi scale (for ``mtl`` on shapes,
            λ ≈ 0.001–0.04 spans 0–90 % sparsity). ``"relative"``: the proxes of
            ``inner_prox`` with each layer's λ in units of its RMS weight (scale-free).
        lam_holdout: the fraction of the training split held out for λ's meta-gradient (0: none).
            ρ is then differentiated through the adapted clone's loss on a held-out batch, which
            Θ_meta never trains on; Θ_meta keeps the query gradient. Needs a learned λ.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    inner_steps: int = Field(1, ge=1)
    inner_lr: float = Field(0.05, gt=0)
    lam_lr: float | None = Field(0.05, gt=0)
    episodes_per_batch: int = Field(2, ge=1)
    batch_size: int | None = Field(16, ge=1)
    min_tasks: int = Field(1, ge=1)
    episodes: tuple[tuple[str, ...], ...] | None = None
    regrowth: Any = "none"
    log_every: int = Field(10, ge=1)
    lam_update: LamUpdate = "inner_prox"
    lam_holdout: float = Field(0.0, ge=0, lt=0.5)

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
        precond: ``preconditioned`` only: D by backbone conv weight name, from the outer Adam's
            state (detached); a weight without one (not stepped yet) gets the plain prox.
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


class MetaLearner(Learner):
    """Base of the meta-sparsity learners: the meta-training loop around an adaptation rule.

    Subclasses implement :meth:`adapt`. ``lam="learned"`` in the experiment config makes λ a
    meta-learned parameter; a numeric ``lam`` keeps it fixed (0 gives meta-learning without
    sparsity: no prox anywhere).

    References:
        Upadhyay et al., "Meta-Sparsity" (Algorithm 3).
    """

    #: Meta-learners can learn λ; the experiment rejects ``lam="learned"`` for other learners.
    learns_lambda: ClassVar[bool] = True

    Config = MetaConfig
    config: MetaConfig

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        """Support and query batches of 4, so the contract suite's 24 training images suffice."""
        return {"batch_size": 4}

    def wrap(self, model: MultiTaskNet) -> Any:
        """The object :meth:`adapt` clones from (``MetaState.wrapper``); None by default."""
        return None

    @abstractmethod
    def adapt(self, state: MetaState, episode: Episode, support: Batch) -> tuple[nn.Module, Tensor]:
        """Adapt a graph-connected clone of Θ_meta to ``support``.

        Returns:
            The adapted clone (callable as ``clone(images, tasks)``) and the support loss of the
            first inner step (the loss of Θ_meta itself, for the meta-train record).
        """

    def episode_losses(self, state: MetaState, batch: EpisodeBatch) -> tuple[Tensor, Tensor]:
        """Support loss before adaptation (detached) and query loss after it (with its graph)."""
        support_loss, query_loss, _ = self.episode_objective(state, batch)
        return support_loss, query_loss

    def episode_objective(
        self, state: MetaState, batch: EpisodeBatch
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`episode_losses` and the episode's outer objective (with its graph).

        The objective is the query loss itself, plus ``λ·R(θ_b adapted)`` with the adapted
        weights detached under ``lam_update="outer_penalty"`` (Eq. 10).
        """
        support_loss, query_loss, objective, _ = self.episode_objectives(state, batch)
        return support_loss, query_loss, objective

    def episode_objectives(
        self, state: MetaState, batch: EpisodeBatch, held_out: Batch | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """:meth:`episode_objective`, and the same objective on ``held_out`` data.

        The held-out objective scores the same adapted clone on ``held_out`` (None without it);
        it is what λ is differentiated through under ``MetaConfig.lam_holdout``.
        """
        adapted, support_loss = self.adapt(state, batch.tasks, batch.support)
        use_batch_statistics(adapted)
        penalty = None
        if state.lam_update == "outer_penalty" and state.prox_active:
            assert state.penalty is not None
            weights = backbone_conv_weights(cast(MultiTaskNet, adapted))
            penalty = penalty_term(weights, state.penalty, state.lam, state.lam())

        def scored(data: Batch) -> Tensor:
            images, targets = data
            return episode_loss(state, adapted(images, list(batch.tasks)), targets, batch.tasks)

        query_loss = scored(batch.query)
        objective = query_loss if penalty is None else query_loss + penalty
        held: Tensor | None = None
        if held_out is not None:
            held = scored(held_out)
            held = held if penalty is None else held + penalty
        return support_loss.detach(), query_loss, objective, held

    def fit(self, context: TrainingContext) -> TrainingHistory:
        """Meta-train ``context.model`` in place; see the module docstring for one meta-step."""
        return MetaTrainer(self, context).run()


class MetaTrainer:
    """Runs :class:`MetaLearner` meta-steps with evaluation, early stopping and records.

    Args:
        learner: the adaptation rule and its options.
        context: the model, data, penalty, initial λ (``context.lam``; learned when
            ``config.lam == "learned"``) and configuration.

    Raises:
        ConfigError: a learned λ without a penalty, the ``proxssi`` outer optimiser under a
            plain-prox ``lam_update`` (its λ is on another scale than the inner prox's), an outer
            optimiser that is not Adam-based under ``preconditioned``, mixed precision, a
            regrowth policy that regrows to zero, episodes that do not fit the tasks, a
            training split too small for disjoint support and query batches, or ``lam_holdout``
            with a fixed λ or with too few examples held out.
    """

    def __init__(self, learner: MetaLearner, context: TrainingContext) -> None:
        cfg, options = context.config, learner.config
        learned = cfg.lam == "learned"
        if learned and context.penalty is None:
            raise ConfigError("lam='learned' needs a penalty whose λ can be learned")
        check_outer_optimizer(options.lam_update, cfg.optimizer.name, learner.name)
        if cfg.amp:
            raise ConfigError(f"learner {learner.name!r} runs in full precision; set amp: false")
        if cfg.lam_warmup:
            raise ConfigError(
                f"learner {learner.name!r}: lam_warmup ramps the fixed λ of an mtl run; a "
                "meta-learner's λ starts at lam (or λ₀ when learned), so set lam_warmup: 0"
            )
        if options.lam_holdout and not learned:
            raise ConfigError(
                f"learner {learner.name!r}: lam_holdout holds out data for the meta-gradient of "
                "a learned λ; with a fixed lam set lam_holdout: 0"
            )
        regrowth = resolve_component("regrowth", options.regrowth)
        if regrowth.regrows_to_zero:
            raise ConfigError(
                f"learner {learner.name!r}: regrowth {regrowth.name!r} leaves regrown groups at 0, "
                "which changes nothing in meta-training (no mask holds zeroed groups there); "
                "give it a non-zero initialisation, e.g. init: xavier"
            )
        self.learner, self.context = learner, context
        model = context.model
        convs = backbone_conv_weights(model)
        self.lam = LearnedLambda(
            float(context.lam),
            cfg.lam_beta,
            len(convs) if cfg.lam_per_layer else None,
            learnable=learned,
            dtype=next(iter(convs.values())).dtype,
        ).to(context.device)
        self.state = MetaState(
            model=model,
            combiner=context.combiner,
            tasks={t.name: t for t in context.tasks},
            penalty=context.penalty,
            lam=self.lam,
            inner_lr=options.inner_lr,
            inner_steps=options.inner_steps,
            regrowth=regrowth,
            generator=context.generator,
            wrapper=learner.wrap(model),
            lam_update=options.lam_update,
        )
        try:
            episodes = resolve_episodes(
                [t.name for t in context.tasks], options.episodes, options.min_tasks
            )
            batch_size = options.batch_size or cfg.batch_size
            pool: Tensor | None = None
            #: Held-out training batches for λ's meta-gradient (``lam_holdout``), or None.
            self.held_out: HeldOutBatches | None = None
            if options.lam_holdout:
                pool, held = split_holdout(
                    len(context.train),  # type: ignore[arg-type]
                    options.lam_holdout,
                    context.generator,
                )
                self.held_out = HeldOutBatches(context.train, held, batch_size, context.generator)
            self.stream = EpisodeStream(
                context.train, episodes, batch_size, context.generator, pool=pool
            )
        except ValueError as exc:
            raise ConfigError(f"learner {learner.name!r}: {exc}") from None
        self.optimizer = self._outer_optimizer()
        #: d(objective)/dλ of the last meta-step (None for a fixed λ), for ``history.extra``.
        self.last_lam_grad: float | None = None
        #: The mean held-out objective of the last meta-step (None without ``lam_holdout``).
        self.last_held_out_loss: float | None = None

    def _outer_optimizer(self) -> ProximalOptimizer:
        """``config.optimizer``'s gradient step over Θ_meta and ρ; the prox is applied after it."""
        cfg = self.context.config
        groups: list[dict[str, Any]] = [
            {
                "params": list(self.context.model.parameters())
                + list(self.context.combiner.parameters()),
            }
        ]
        if self.lam.learnable:
            lam_lr = self.learner.config.lam_lr or cfg.optimizer.lr
            groups.append({"params": [self.lam.rho], "lr": lam_lr, "weight_decay": 0.0})
        return ProximalOptimizer(groups, [], None, 0.0, cfg.optimizer)

    def meta_step(self) -> tuple[float, float, list[Episode]]:
        """One meta-step; returns the mean support and query losses and the episodes drawn."""
        episodes_per_batch = self.learner.config.episodes_per_batch
        device = self.context.device
        convs = backbone_conv_weights(self.context.model)
        preconditioned = self.state.lam_update == "preconditioned"
        if preconditioned:  # the inner prox's D: the outer Adam state before this step
            self.state.precond = adam_preconditioners(self.optimizer, convs)
        self.optimizer.zero_grad(set_to_none=True)
        support_total = query_total = 0.0
        drawn = []
        held_total = 0.0
        for _ in range(episodes_per_batch):
            batch = self.stream.next().to(device)
            held_out = None
            if self.held_out is not None:
                (images, targets), _ = self.held_out.next(batch.tasks)
                held_out = images.to(device), {k: v.to(device) for k, v in targets.items()}
            support_loss, query_loss, objective, held = self.learner.episode_objectives(
                self.state, batch, held_out
            )
            value = float(query_loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"the query loss of episode {batch.tasks} is {value}")
            if held is None:
                (objective / episodes_per_batch).backward()
            else:
                # Θ_meta and the combiner learn from the query batch, ρ from the held-out one.
                theta = [p for g in self.optimizer.param_groups[:1] for p in g["params"]]
                (objective / episodes_per_batch).backward(inputs=theta, retain_graph=True)
                (held / episodes_per_batch).backward(inputs=[self.lam.rho])
                held_total += float(held.detach())
            support_total += float(support_loss)
            query_total += value
            drawn.append(batch.tasks)
        self.last_held_out_loss = (
            held_total / episodes_per_batch if self.held_out is not None else None
        )
        self.last_lam_grad = lam_meta_gradient(self.lam)
        self.state.last_grads = {
            name: w.grad.detach().clone() for name, w in convs.items() if w.grad is not None
        }
        self.optimizer.step()
        if self.state.prox_active:
            assert self.state.penalty is not None
            # D includes this step's second moment, as proxssi's prox after its Adam step does.
            precond = adam_preconditioners(self.optimizer, convs) if preconditioned else {}
            lr = self.optimizer.param_groups[0]["lr"]
            outer_prox_(convs, self.state.penalty, self.lam, lr, precond, self.state.lam_update)
        return support_total / episodes_per_batch, query_total / episodes_per_batch, drawn

    def run(self) -> TrainingHistory:
        """All meta-steps, with validation every ``eval_every`` and early stopping."""
        cfg, context = self.context.config, self.context
        model, combiner = context.model, context.combiner
        stopper = EarlyStopping(cfg.patience, [model, combiner, self.lam])
        history = TrainingHistory()
        keys = ("support_loss", "query_loss", *DIAGNOSTICS)
        if self.held_out is not None:
            keys = (*keys, "held_out_loss")
        history.extra = {key: [] for key in keys}
        counts: Counter[str] = Counter()
        model.train()
        step = 0
        for step in range(1, cfg.steps + 1):
            support_loss, query_loss, drawn = self.meta_step()
            counts.update("+".join(episode) for episode in drawn)
            history.lam_history.append(self.lam.values())
            history.extra["support_loss"].append(support_loss)
            history.extra["query_loss"].append(query_loss)
            info = StepInfo(step, cfg.steps, query_loss, self.lam.mean())
            evaluated = step % cfg.eval_every == 0 or step == cfg.steps
            lr = self.optimizer.param_groups[0]["lr"]
            convs = backbone_conv_weights(model)
            record_diagnostics(
                history.extra,
                self.last_lam_grad,
                convs,
                self.lam,
                lr,
                evaluated,
                self.state.lam_update,
            )
            if self.held_out is not None:
                history.extra["held_out_loss"].append(self.last_held_out_loss)
            if evaluated:
                val_loss, _ = evaluate(model, context.val, context.tasks, combiner, context.device)
                stats = sparsity(model)
                history.profile.append(
                    {
                        "step": step,
                        "train_loss": query_loss,
                        "support_loss": support_loss,
                        "val_loss": val_loss,
                        "lam": self.lam.mean(),
                        "group": stats["group"],
                        "parameter": stats["parameter"],
                    }
                )
                stopper.update(step, val_loss)
                info.val_loss = val_loss
                info.group_sparsity, info.parameter_sparsity = stats["group"], stats["parameter"]
            elif step % self.learner.config.log_every == 0:
                stats = sparsity(model)
                info.group_sparsity, info.parameter_sparsity = stats["group"], stats["parameter"]
            context.on_step(info)
            if stopper.should_stop:
                history.stopped_early = True
                break
        history.extra["episode_counts"] = dict(sorted(counts.items()))
        if cfg.patience is not None:
            stopper.restore_best()
            history.best_step = stopper.best_step
        else:
            history.best_step = step
        history.extra["final_lam"] = self.lam.values()
        return history
