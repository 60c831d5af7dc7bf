"""Built-in sweep executors: ``local`` (a process pool) and ``ray`` (a Ray instance or cluster)."""

from __future__ import annotations

from sparsekit.hookspecs import Register, hookimpl
from sparsekit_plugins.executors.local import LocalExecutor
from sparsekit_plugins.executors.ray_cluster import RayExecutor

__all__ = ["LocalExecutor", "RayExecutor", "sparsekit_register_executors"]


@hookimpl
def sparsekit_register_executors(register: Register) -> None:
    """Register the built-in executors."""
    register(LocalExecutor)
    register(RayExecutor)
