"""``fomaml``: meta-sparsity with first-order MAML (learn2learn's ``first_order=True``)."""

from __future__ import annotations

from typing import ClassVar

from sparsekit_plugins.learners.maml import MAMLLearner


class FOMAMLLearner(MAMLLearner):
    """Meta-sparsity with the first-order MAML approximation.

    The inner gradients are constants, so the meta-gradient skips second derivatives of the
    support loss. The inner prox stays differentiable: the query gradient reaches Θ_meta through
    the prox's Jacobian and reaches λ through the prox, exactly so for one inner step (κ = 1),
    where the support gradient does not depend on λ.

    References:
        Finn et al. 2017, "Model-Agnostic Meta-Learning" (§5.2, first-order approximation);
        Upadhyay et al., "Meta-Sparsity" (Algorithm 3).
    """

    name: ClassVar[str] = "fomaml"
    first_order: ClassVar[bool] = True
