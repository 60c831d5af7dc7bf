"""Built-in sparsity penalties: channel-wise group lasso and element-wise l1."""

from __future__ import annotations

from sparsekit.hookspecs import Register, hookimpl
from sparsekit_plugins.penalties.group_lasso import GroupLassoPenalty
from sparsekit_plugins.penalties.l1 import L1Penalty

__all__ = ["GroupLassoPenalty", "L1Penalty", "sparsekit_register_penalties"]


@hookimpl
def sparsekit_register_penalties(register: Register) -> None:
    """Register :class:`GroupLassoPenalty` (``group_lasso``) and :class:`L1Penalty` (``l1``)."""
    register(GroupLassoPenalty)
    register(L1Penalty)
