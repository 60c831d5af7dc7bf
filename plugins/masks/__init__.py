"""Built-in mask criteria: ``magnitude``, ``random`` and ``run_pattern`` (alias ``meta``)."""

from __future__ import annotations

from sparsekit.hookspecs import Register, hookimpl
from sparsekit_plugins.masks.magnitude import MagnitudeMask
from sparsekit_plugins.masks.random import RandomMask
from sparsekit_plugins.masks.run_pattern import RunPatternMask

__all__ = ["MagnitudeMask", "RandomMask", "RunPatternMask", "sparsekit_register_masks"]


@hookimpl
def sparsekit_register_masks(register: Register) -> None:
    """Register the three mask criteria of the paper's Table 5."""
    register(MagnitudeMask)
    register(RandomMask)
    register(RunPatternMask)
