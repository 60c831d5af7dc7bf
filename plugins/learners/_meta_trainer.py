"""The meta-training loop of the meta-learners (:class:`MetaTrainer`).

One meta-step's order is in :mod:`._meta`'s docstring; the λ rules it applies are in
:mod:`._lam_update` and :mod:`._tolerance`.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sparsekit.config import DEFAULT_COMPONENT
from sparsekit.engine.loop import Monitor
from sparsekit.errors import ConfigError, TrainingDiverged
from sparsekit.interfaces import (
    Checkpoint,
    OptimizerKind,
    StepInfo,
    TrainingContext,
    TrainingHistory,
)
from sparsekit.nn import backbone_conv_weights
from sparsekit.nn.optim import ProximalOptimizer
from sparsekit.registry import create
from sparsekit_plugins.learners._episodes import (
    Episode,
    EpisodeStream,
    HeldOutBatches,
    resolve_episodes,
    split_holdout,
)
from sparsekit_plugins.learners._lam_update import (
    DIAGNOSTICS,
    adam_preconditioners,
    check_outer_optimizer,
    in_metric,
    lam_meta_gradient,
    outer_prox_,
    record_diagnostics,
)
from sparsekit_plugins.learners._learned_lambda import (
    LearnedLambda,
    draw_initial_lambda,
    inverse_softplus,
)
from sparsekit_plugins.learners._meta import (
    MetaProgress,
    MetaState,
)
from sparsekit_plugins.learners._tolerance import ToleranceControl

if TYPE_CHECKING:
    from sparsekit_plugins.learners._meta_learner import MetaLearner


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
        #: The ``tolerance`` rule's controller of λ (None under the gradient rules).
        self.control: ToleranceControl | None = None
        if options.lam_update == "tolerance" and learned:
            self.control = ToleranceControl(
                options.lam_tolerance, options.lam_rate, options.lam_window
            )
            # λ moves by the controller alone: no meta-gradient, no optimiser step on ρ.
            self.lam.rho.requires_grad_(False)
            #: Whether higher is better, of each task's primary metric.
            self.higher = {t.name: t.metrics[t.primary_metric] for t in context.tasks}
            self.state.query_scores = {}
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
        if learner.config.lam_holdout and learner.config.lam_update == "tolerance":
            raise ConfigError(
                f"learner {learner.name!r}: lam_update 'tolerance' moves λ by its constraint on "
                "the query losses, not by a meta-gradient; set lam_holdout: 0"
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
        if self.lam.learnable and self.control is None:
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
        preconditioned = in_metric(self.state.lam_update)
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
        if self.control is not None:
            self._control_lambda()
        return totals[0] / episodes_per_batch, totals[1] / episodes_per_batch, drawn

    def _control_lambda(self) -> None:
        """The ``tolerance`` rule's step: λ times the controller's factor, ρ set to match."""
        assert self.control is not None and self.state.query_scores is not None
        try:
            factor = self.control.observe(self.state.query_scores, self.higher)
        except ValueError as exc:
            raise TrainingDiverged(str(exc)) from None
        self.state.query_scores.clear()
        if factor == 1.0:
            return
        with torch.no_grad():
            lam = self.lam().detach().double() * factor
            rho = [inverse_softplus(float(v), self.lam.beta) for v in lam.reshape(-1)]
            self.lam.rho.copy_(torch.tensor(rho, dtype=self.lam.rho.dtype).reshape(lam.shape))

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
        if self.control is not None:
            keys.append("lam_violation")
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
        if self.control is not None:
            tracked.append(("lam_control", self.control))
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
        if self.control is not None:
            history.extra["lam_violation"].append(self.control.violation)
