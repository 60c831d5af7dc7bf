"""``proxssi``: an Adam step, then the prox in Adam's metric D = √v̂ + ε."""

from __future__ import annotations

from typing import ClassVar

from sparsekit.interfaces import ComponentConfig
from sparsekit_plugins.optimizers.adam_prox import AdamProx


class ProxSSI(AdamProx):
    """Adam, then the preconditioned prox in the metric D of Adam's bias-corrected second moment.

    A group is zeroed when ‖D⊙w_g‖ ≤ lr·λ·√n_g, so λ is on a different scale from the plain
    prox's; a weight that has not been stepped yet has no second moment and is left alone.

    References:
        Deleu & Bengio 2021, "Structured sparsity inducing adaptive optimizers for deep
        learning" (ProxSSI).
    """

    name: ClassVar[str] = "proxssi"
    is_default: ClassVar[bool] = False
    prox_in_metric: ClassVar[bool] = True

    class Config(ComponentConfig):
        """No parameters of its own: the step's settings are the experiment's ``optimizer``."""
