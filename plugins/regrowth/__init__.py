"""Built-in regrowth policies: ``none``, ``random`` (the paper's r_p) and ``gradient`` (RigL)."""

from __future__ import annotations

from sparsekit.hookspecs import Register, hookimpl
from sparsekit_plugins.regrowth.gradient import GradientRegrowth
from sparsekit_plugins.regrowth.none import NoRegrowth
from sparsekit_plugins.regrowth.random import RandomRegrowth

__all__ = [
    "GradientRegrowth",
    "NoRegrowth",
    "RandomRegrowth",
    "sparsekit_register_regrowth_policies",
]


@hookimpl
def sparsekit_register_regrowth_policies(register: Register) -> None:
    """Register :class:`NoRegrowth`, :class:`RandomRegrowth` and :class:`GradientRegrowth`."""
    register(NoRegrowth)
    register(RandomRegrowth)
    register(GradientRegrowth)
