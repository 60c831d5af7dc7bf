"""The meta-learner base and its meta-training loop (:class:`MetaTrainer`).

The learners ``maml``, ``fomaml`` and ``anil`` differ only in :meth:`MetaLearner.adapt`; the
order of one meta-step is in :mod:`._meta`'s docstring and in docs/meta_learning.md.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, cast

from torch import Tensor, nn

from sparsekit.config import DEFAULT_COMPONENT
from sparsekit.engine.loop import Monitor
from sparsekit.errors import ConfigError, TrainingDiverged
from sparsekit.interfaces import (
    Checkpoint,
    Learner,
    OptimizerKind,
    StepInfo,
    TrainingContext,
    TrainingHistory,
)
from sparsekit.nn import MultiTaskNet, backbone_conv_weights
from sparsekit.nn.optim import ProximalOptimizer
from sparsekit.registry import create
from sparsekit_plugins.learners._episodes import (
    Episode,
    EpisodeBatch,
    EpisodeStream,
    HeldOutBatches,
    resolve_episodes,
    split_holdout,
)
from sparsekit_plugins.learners._lam_update import (
    DIAGNOSTICS,
    adam_preconditioners,
    check_outer_optimizer,
    lam_meta_gradient,
    outer_prox_,
    penalty_term,
    record_diagnostics,
)
from sparsekit_plugins.learners._learned_lambda import LearnedLambda, draw_initial_lambda
from sparsekit_plugins.learners._meta import (
    Batch,
    MetaConfig,
    MetaProgress,
    MetaState,
    episode_loss,
    import_learn2learn,
    use_batch_statistics,
)


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

    def check_available(self) -> None:
        """The meta-learners clone networks with learn2learn.

        Raises:
            MissingDependency: learn2learn is not installed (naming the command that builds it).
        """
        import_learn2learn()

    def fit(self, context: TrainingContext) -> TrainingHistory:
        """Meta-train ``context.model`` in place; see the module docstring for one meta-step."""
        return MetaTrainer(self, context).run()


class MetaTrainer:
    """Runs :class:`MetaLearner` meta-steps with evaluation, early stopping and records.

    Args:
        learner: the adaptation rule and its options.
        context: the model, data, penalty, λ (a number, or ``"learned"``: λ₀ is then drawn from
            ``lam_init`` with the run's generator) and run settings.

    Raises:
        ConfigError: an outer optimiser that does not fit the λ rule, mixed precision, a λ
            warm-up, a regrowth policy that regrows to zero, episodes that do not fit the tasks,
            a training split too small for disjoint support and query batches, or
            ``lam_holdout`` with a fixed λ or with too few examples held out.
    """

    def __init__(self, learner: MetaLearner, context: TrainingContext) -> None:
        settings, options = context.settings, learner.config
        learned = context.lam == "learned"
        # λ₀ is the first draw of the run's generator, before any episode is drawn.
        lam0 = draw_initial_lambda(options.lam_init, context.generator) if learned else context.lam
        kind: OptimizerKind = create("optimizer", settings.optimizer.name or DEFAULT_COMPONENT)
        check_outer_optimizer(options.lam_update, kind, learner.name)
        self._check_settings(learner, context, learned)
        regrowth = create("regrowth", options.regrowth)
        if regrowth.regrows_to_zero:
            raise ConfigError(
                f"learner {learner.name!r}: regrowth {regrowth.name!r} leaves regrown groups at 0, "
                "which changes nothing in meta-training (no mask holds zeroed groups there); "
                "give it a non-zero initialisation, e.g. init: xavier"
            )
        self.learner, self.context = learner, context
        convs = backbone_conv_weights(context.model)
        self.lam = LearnedLambda(
            float(lam0),
            options.lam_beta,
            len(convs) if options.lam_per_layer else None,
            learnable=learned,
            dtype=next(iter(convs.values())).dtype,
        ).to(context.device)
        self.state = MetaState(
            model=context.model,
            combiner=context.combiner,
            tasks={t.name: t for t in context.tasks},
            penalty=context.penalty,
            lam=self.lam,
            inner_lr=options.inner_lr,
            inner_steps=options.inner_steps,
            regrowth=regrowth,
            generator=context.generator,
            wrapper=learner.wrap(context.model),
            lam_update=options.lam_update,
        )
        self._streams(learner, context)
        self.optimizer = self._outer_optimizer(kind)
        #: d(objective)/dλ of the last meta-step (None for a fixed λ), for ``history.extra``.
        self.last_lam_grad: float | None = None
        #: The mean held-out objective of the last meta-step (None without ``lam_holdout``).
        self.last_held_out_loss: float | None = None

    @staticmethod
    def _check_settings(learner: MetaLearner, context: TrainingContext, learned: bool) -> None:
        settings = context.settings
        if settings.amp:
            raise ConfigError(f"learner {learner.name!r} runs in full precision; set amp: false")
        if settings.lam_warmup:
            raise ConfigError(
                f"learner {learner.name!r}: lam_warmup ramps a fixed λ; a meta-learner's λ "
                "starts at lam (or λ₀ when learned), so set lam_warmup: 0"
            )
        if learner.config.lam_holdout and not learned:
            raise ConfigError(
                f"learner {learner.name!r}: lam_holdout holds out data for the meta-gradient of "
                "a learned λ; with a fixed lam set lam_holdout: 0"
            )

    def _streams(self, learner: MetaLearner, context: TrainingContext) -> None:
        """The episode stream and, with ``lam_holdout``, the held-out batches for λ."""
        options = learner.config
        try:
            episodes = resolve_episodes(
                [t.name for t in context.tasks], options.episodes, options.min_tasks
            )
            batch_size = options.batch_size or context.settings.batch_size
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

    def _outer_optimizer(self, kind: OptimizerKind) -> ProximalOptimizer:
        """The outer optimiser's gradient step over Θ_meta and ρ; the prox is applied after it."""
        settings = self.context.settings
        groups: list[dict[str, Any]] = [
            {
                "params": list(self.context.model.parameters())
                + list(self.context.combiner.parameters()),
            }
        ]
        if self.lam.learnable:
            lam_lr = self.learner.config.lam_lr or settings.optimizer.lr
            groups.append({"params": [self.lam.rho], "lr": lam_lr, "weight_decay": 0.0})
        return kind.build(groups, [], None, 0.0, settings.optimizer)

    def _episode(self, episodes_per_batch: int) -> tuple[float, float, float, Episode]:
        """One episode's gradients accumulated; its support, query and held-out losses."""
        device = self.context.device
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
            raise TrainingDiverged(f"the query loss of episode {batch.tasks} is {value}")
        if held is None:
            (objective / episodes_per_batch).backward()
            return float(support_loss), value, 0.0, batch.tasks
        # Θ_meta and the combiner learn from the query batch, ρ from the held-out one.
        theta = [p for g in self.optimizer.param_groups[:1] for p in g["params"]]
        (objective / episodes_per_batch).backward(inputs=theta, retain_graph=True)
        (held / episodes_per_batch).backward(inputs=[self.lam.rho])
        return float(support_loss), value, float(held.detach()), batch.tasks

    def meta_step(self) -> tuple[float, float, list[Episode]]:
        """One meta-step; returns the mean support and query losses and the episodes drawn."""
        episodes_per_batch = self.learner.config.episodes_per_batch
        convs = backbone_conv_weights(self.context.model)
        preconditioned = self.state.lam_update == "preconditioned"
        if preconditioned:  # the inner prox's D: the outer Adam state before this step
            self.state.precond = adam_preconditioners(self.optimizer, convs)
        self.optimizer.zero_grad(set_to_none=True)
        totals = [0.0, 0.0, 0.0]
        drawn = []
        for _ in range(episodes_per_batch):
            *losses, tasks = self._episode(episodes_per_batch)
            totals = [t + v for t, v in zip(totals, losses, strict=True)]
            drawn.append(tasks)
        self.last_held_out_loss = (
            totals[2] / episodes_per_batch if self.held_out is not None else None
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
        return totals[0] / episodes_per_batch, totals[1] / episodes_per_batch, drawn

    def run(self) -> TrainingHistory:
        """All meta-steps, with validation every ``eval_every`` and early stopping."""
        settings, context = self.context.settings, self.context
        monitor = Monitor.for_context(
            context,
            [context.model, context.combiner, self.lam],
            log_every=self.learner.config.log_every,
        )
        keys = ["support_loss", "query_loss", *DIAGNOSTICS]
        if self.held_out is not None:
            keys.append("held_out_loss")
        monitor.history.extra.update({key: [] for key in keys})
        counts: Counter[str] = Counter()
        start = self._restore(context.checkpoint, counts)
        extra = monitor.history.extra  # the restored history's, on resume
        context.model.train()
        for step in range(start + 1, settings.steps + 1):
            support_loss, query_loss, drawn = self.meta_step()
            counts.update("+".join(episode) for episode in drawn)
            self._record(monitor, step, support_loss, query_loss)
            info = StepInfo(
                step,
                settings.steps,
                query_loss,
                self.lam.mean(),
                lr=self.optimizer.param_groups[0]["lr"],
                lam_layers=self.lam.values() if self.lam.per_layer else None,
            )
            if monitor.after_step(info, row={"support_loss": support_loss}):
                break
        extra["episode_counts"] = dict(sorted(counts.items()))
        history = monitor.finish()
        history.extra["final_lam"] = self.lam.values()
        return history

    def _restore(self, checkpoint: Checkpoint, counts: Counter[str]) -> int:
        """Track everything a meta-step changes; restore it on resume; the last step taken."""
        context = self.context
        tracked: list[tuple[str, Any]] = [
            ("model", context.model),
            ("combiner", context.combiner),
            ("lam", self.lam),
            ("optimizer", self.optimizer),
            ("episodes", self.stream),
            ("meta", MetaProgress(self.state, counts)),
        ]
        if self.held_out is not None:
            tracked.append(("held_out", self.held_out))
        for name, obj in tracked:
            checkpoint.track(name, obj)
        return checkpoint.restore()

    def _record(self, monitor: Monitor, step: int, support_loss: float, query_loss: float) -> None:
        """The meta-step's λ, losses and λ diagnostics in the history."""
        history = monitor.history
        history.lam_history.append(self.lam.values())
        history.extra["support_loss"].append(support_loss)
        history.extra["query_loss"].append(query_loss)
        record_diagnostics(
            history.extra,
            self.last_lam_grad,
            backbone_conv_weights(self.context.model),
            self.lam,
            self.optimizer.param_groups[0]["lr"],
            monitor.is_eval_step(step),
            self.state.lam_update,
        )
        if self.held_out is not None:
            history.extra["held_out_loss"].append(self.last_held_out_loss)
