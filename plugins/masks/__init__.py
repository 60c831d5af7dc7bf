"""Built-in mask criteria: ``magnitude``, ``random`` and ``meta``."""

from __future__ import annotations

from sparsekit.hookspecs import Register, hookimpl
from sparsekit_plugins.masks.magnitude import MagnitudeMask
from sparsekit_plugins.masks.meta import MetaMask
from sparsekit_plugins.masks.random import RandomMask

__all__ = ["MagnitudeMask", "MetaMask", "RandomMask", "sparsekit_register_masks"]


@hookimpl
def sparsekit_register_masks(register: Register) -> None:
    """Register the three mask criteria of the paper's Table 5."""
    register(MagnitudeMask)
    register(RandomMask)
    register(MetaMask)
