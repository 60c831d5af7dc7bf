"""Built-in optimiser kinds: ``adam_prox`` (the default), ``proxssi`` and ``sgd_prox``."""

from __future__ import annotations

from sparsekit.hookspecs import Register, hookimpl
from sparsekit_plugins.optimizers.adam_prox import AdamProx
from sparsekit_plugins.optimizers.proxssi import ProxSSI
from sparsekit_plugins.optimizers.sgd_prox import SGDProx

__all__ = ["AdamProx", "ProxSSI", "SGDProx", "sparsekit_register_optimizers"]


@hookimpl
def sparsekit_register_optimizers(register: Register) -> None:
    """Register :class:`AdamProx`, :class:`ProxSSI` and :class:`SGDProx`."""
    register(AdamProx)
    register(ProxSSI)
    register(SGDProx)
