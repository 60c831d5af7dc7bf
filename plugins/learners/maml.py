"""``maml``: meta-sparsity with second-order MAML (learn2learn) over power-set episodes."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from sparsekit.nn import MultiTaskNet
from sparsekit_plugins.learners._episodes import Episode
from sparsekit_plugins.learners._meta import (
    Batch,
    MetaState,
    episode_loss,
    import_learn2learn,
    prox_backbone,
    regrow_clone,
)
from sparsekit_plugins.learners._meta_learner import MetaLearner


class MAMLLearner(MetaLearner):
    """Meta-sparsity (Algorithm 3) with MAML's second-order meta-gradient.

    Each episode adapts a ``learn2learn`` clone of the whole network (backbone and the episode's
    heads) with κ SGD steps on the support loss, each followed by the differentiable group prox
    with λ on the clone's backbone conv weights. The query loss is differentiated through the
    whole adaptation, second derivatives included, so Θ_meta and λ both get exact meta-gradients.

    References:
        Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks";
        Upadhyay et al., "Meta-Sparsity" (Algorithm 3); Arnold et al. 2020, "learn2learn".
    """

    name: ClassVar[str] = "maml"
    #: Whether the inner gradients are treated as constants (FOMAML).
    first_order: ClassVar[bool] = False

    def wrap(self, model: MultiTaskNet) -> Any:
        """A ``learn2learn.algorithms.MAML`` around ``model`` with step size α_in.

        Heads of tasks outside an episode get no gradient, hence ``allow_unused``.
        """
        l2l = import_learn2learn()
        return l2l.algorithms.MAML(
            model, lr=self.config.inner_lr, first_order=self.first_order, allow_unused=True
        )

    def adapt(self, state: MetaState, episode: Episode, support: Batch) -> tuple[nn.Module, Tensor]:
        """κ steps of ``clone.adapt`` on the support loss, each followed by the backbone prox."""
        clone = state.wrapper.clone()
        regrow_clone(clone.module, state)
        lam = state.lam()
        images, targets = support
        first: Tensor | None = None
        for _ in range(state.inner_steps):
            loss = episode_loss(state, clone(images, list(episode)), targets, episode)
            first = loss if first is None else first
            clone.adapt(loss)
            prox_backbone(clone.module, state, lam)
        assert first is not None
        return clone.module, first
