"""Run loggers: where a run's scalars, summary, config and plots are written as it goes."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsekit.interfaces.base import Component

__all__ = ["Logger", "RunInfo"]


@dataclass(frozen=True)
class RunInfo:
    """What a logger is told when its run starts.

    Attributes:
        name: a short name of the run (its directory's name, or ``"sparsekit"``).
        run_dir: the run directory, or None for a run that saves nothing.
        config: the resolved experiment config as plain data (every default named).
        tags: string tags of the run (a sweep sets ``sweep``, ``stage``, ``seed`` and ``run_id``).
    """

    name: str
    run_dir: Path | None
    config: Mapping[str, Any]
    tags: Mapping[str, str] = field(default_factory=dict)


class Logger(Component):
    """Receives a run's scalars while it trains, then its final figures, config and plots.

    The engine calls ``start(run)`` once before training; ``log_scalars(step, scalars)`` after
    every training step (a flat ``{name: value}`` mapping, names such as ``train/loss``,
    ``train/<task>/loss``, ``val/loss``, ``val/<task>/<metric>``, ``lam``, ``lam_layer/<index>``,
    ``sparsity/group``, ``sparsity/parameter``, ``lr``, ``time/step_s``; docs/logging.md lists
    them all); ``log_summary(step, summary, hparams)`` once with the final figures (test and
    validation metrics, sparsity, efficiency, timings) and the resolved config flattened to
    ``{dotted.name: value}``; ``log_files(paths)`` with the run's plots; and ``close(status)``
    last, with ``"finished"``, ``"interrupted"`` or ``"failed"``, whatever happened before. A
    logger that needs a directory and has none (a run without ``run_dir``) raises
    :class:`sparsekit.errors.ConfigError` from ``start``, or, if it can do without, logs nothing.

    Kind ``logger`` (hook ``sparsekit_register_loggers``).
    """

    @abstractmethod
    def start(self, run: RunInfo) -> None:
        """Open the logger's destination for ``run``."""

    @abstractmethod
    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record one training step's scalars."""

    @abstractmethod
    def log_summary(
        self, step: int, summary: Mapping[str, float], hparams: Mapping[str, Any]
    ) -> None:
        """Record the final figures of the run and its hyper-parameters."""

    def log_files(self, paths: Sequence[Path]) -> None:  # noqa: B027 - optional
        """Record files the run wrote (its plots); the default records nothing."""

    @abstractmethod
    def close(self, status: str) -> None:
        """Flush and release the destination; ``status`` is ``"finished"``, ``"interrupted"``
        or ``"failed"``."""
