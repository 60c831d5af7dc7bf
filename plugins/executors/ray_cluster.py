"""``ray``: every call a Ray task, on a local Ray instance or an existing cluster.

With ``address`` unset a local Ray instance is started for the sweep (``num_cpus`` of this
machine unless given) and shut down after it; with ``address`` (``"auto"``,
``"HOST:PORT"``, ``"ray://HOST:10001"``) the sweep joins that cluster and leaves it running.
Each task reserves ``threads`` CPUs and runs with that many torch threads, so a sweep that
outgrows one machine runs on a cluster unchanged. Outcomes come back to the calling process,
which alone writes the results database. Ray is an optional extra: ``pip install
'sparsekit[ray]'``.

On Ctrl-C (and on SIGTERM, which a sweep turns into the same interruption) the unfinished
tasks are cancelled (force-killed) before the interruption is raised again; outcomes already
reported stand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pydantic import Field

from sparsekit.errors import ExecutorUnavailable
from sparsekit.interfaces import ComponentConfig, Executor, TaskOutcome


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ExecutorUnavailable(
            "the 'ray' executor needs Ray: pip install 'sparsekit[ray]' (or 'ray>=2.9,<3')"
        ) from exc
    return ray


class RayExecutor(Executor):
    """Ray tasks on a local instance or a cluster."""

    name: ClassVar[str] = "ray"

    class Config(ComponentConfig):
        """Configuration of :class:`RayExecutor`.

        Attributes:
            address: the cluster to join, or None to start a local instance.
            num_cpus: CPUs of a local instance (default: all of this machine's).
            threads: CPUs reserved by, and torch threads of, each task.
            max_retries: times Ray re-runs a task whose worker died (not one that raised).
        """

        address: str | None = None
        num_cpus: int | None = Field(None, ge=1)
        threads: int = Field(1, ge=1)
        max_retries: int = Field(0, ge=0)

    config: Config

    def threads_per_call(self, count: int) -> int:
        """``threads``."""
        return self.config.threads

    def describe(self) -> str:
        where = self.config.address or "a local instance"
        return f"ray: {where}, {self.config.threads} CPU(s) per run"

    def map_unordered(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        on_start: Callable[[int], bool | None],
        on_done: Callable[[TaskOutcome], None],
    ) -> None:
        """Submit every call as a task and report each as it finishes."""
        ray = _ray()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(
                address=self.config.address,
                num_cpus=self.config.num_cpus if self.config.address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        remote = ray.remote(num_cpus=self.config.threads, max_retries=self.config.max_retries)(fn)
        refs: dict[Any, int] = {}
        try:
            for index, item in enumerate(items):
                if on_start(index) is not False:  # False: the caller skips it
                    refs[remote.remote(item)] = index
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    on_done(_outcome(ray, refs.pop(ref), ref))
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started_here:  # stops a local instance; only disconnects from a cluster
                ray.shutdown()


def _outcome(ray: Any, index: int, ref: Any) -> TaskOutcome:
    try:
        return TaskOutcome(index, value=ray.get(ref))
    except ray.exceptions.RayTaskError as exc:
        return TaskOutcome(index, error=str(exc))
    except ray.exceptions.RayError as exc:
        return TaskOutcome(index, error=f"the Ray task was lost: {exc}")
