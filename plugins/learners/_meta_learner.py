"""The meta-learner base (:class:`MetaLearner`): what ``maml``, ``fomaml`` and ``anil`` share.

The learners differ only in :meth:`MetaLearner.adapt`; the meta-training loop is
:class:`._meta_trainer.MetaTrainer`, the order of one meta-step is in :mod:`._meta`'s docstring
and in docs/meta_learning.md.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, cast

from torch import Tensor, nn

from sparsekit.interfaces import (
    Learner,
    TrainingContext,
    TrainingHistory,
)
from sparsekit.nn import MultiTaskNet, backbone_conv_weights
from sparsekit_plugins.learners._episodes import (
    Episode,
    EpisodeBatch,
)
from sparsekit_plugins.learners._lam_update import (
    penalty_term,
)
from sparsekit_plugins.learners._meta import (
    Batch,
    MetaConfig,
    MetaState,
    episode_loss,
    import_learn2learn,
    use_batch_statistics,
)
from sparsekit_plugins.learners._meta_trainer import MetaTrainer
from sparsekit_plugins.learners._tolerance import record_scores


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

        images, targets = batch.query
        outputs = adapted(images, list(batch.tasks))
        query_loss = episode_loss(state, outputs, targets, batch.tasks)
        if state.query_scores is not None:
            record_scores(
                state.query_scores, outputs, targets, [state.tasks[t] for t in batch.tasks]
            )
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
