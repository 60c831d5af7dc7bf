"""A run's loggers: created from its config, fed every step's scalars, then its final figures.

:class:`RunLoggers` sits between the training loops and the ``logger`` plugins: it turns each
:class:`~sparsekit.interfaces.StepInfo` into one flat ``{name: value}`` mapping (the names are
listed in docs/logging.md), times the steps, and at the end hands every logger the run's summary,
its resolved config as hyper-parameters and its plots. A logger that fails while the run trains
stops the run, as any other error does; every logger is closed whatever happened.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sparsekit.config import ExperimentConfig
from sparsekit.interfaces import Logger, RunInfo, StepInfo
from sparsekit.registry import create, get_registry
from sparsekit.runs.record import RunRecord

#: The run name of a run without a run directory.
DEFAULT_RUN_NAME = "sparsekit"


def resolve_loggers(config: ExperimentConfig) -> tuple[ExperimentConfig, list[Logger]]:
    """The loggers of ``config``, created, and the config recording their full specs.

    Raises:
        ConfigError: a logger's parameters are invalid.
        PluginError: an unknown logger name.
    """
    registry = get_registry()
    loggers = [create("logger", registry.spec("logger", spec)) for spec in config.loggers]
    return config.model_copy(update={"loggers": [lg.spec() for lg in loggers]}), loggers


def step_scalars(info: StepInfo) -> dict[str, float]:
    """One step's report as flat scalars (``train/loss``, ``val/<task>/<metric>``, ...).

    No name is a path prefix of another (``lam`` and ``lam_layer/00``, not ``lam/00``), since
    file-based stores such as MLflow's keep each name as a file path.
    """
    scalars = {"train/loss": info.loss, "lam": info.lam}
    for task, value in (info.task_losses or {}).items():
        scalars[f"train/{task}/loss"] = value
    if info.lr is not None:
        scalars["lr"] = info.lr
    for index, value in enumerate(info.lam_layers or []):
        scalars[f"lam_layer/{index:02d}"] = value
    if info.group_sparsity is not None:
        scalars["sparsity/group"] = info.group_sparsity
    if info.parameter_sparsity is not None:
        scalars["sparsity/parameter"] = info.parameter_sparsity
    if info.val_loss is not None:
        scalars["val/loss"] = info.val_loss
    for task, metrics in (info.val_metrics or {}).items():
        scalars.update({f"val/{task}/{name}": value for name, value in metrics.items()})
    return scalars


def summary_scalars(record: RunRecord) -> dict[str, float]:
    """The final figures of a run as flat scalars: test and validation metrics of the final
    model, its sparsity, efficiency figures, timings and the final λ when it was learned."""
    summary: dict[str, float] = {}
    for prefix, metrics in (("test", record.metrics), ("final/val", record.val_metrics)):
        for task, values in metrics.items():
            summary.update({f"{prefix}/{task}/{name}": v for name, v in values.items()})
    summary.update({f"final/sparsity/{k}": v for k, v in record.sparsity.items()})
    summary.update(
        {f"efficiency/{k}": v for k, v in (record.efficiency or {}).items() if _is_number(v)}
    )
    summary.update({f"time/{k}": v for k, v in record.timings.items() if _is_number(v)})
    lam = record.final_lam
    if _is_number(lam):
        summary["final/lam"] = float(lam)
    return summary


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{dotted.name: value}``; lists become JSON text, None stays None."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value, default=str)
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class RunLoggers:
    """The loggers of one run, used by the experiment around its training.

    Args:
        loggers: the created loggers (possibly none).
        config: the run's resolved config as plain data.
        run_dir: the run directory, or None.
    """

    def __init__(
        self, loggers: list[Logger], config: Mapping[str, Any], run_dir: Path | None
    ) -> None:
        self.loggers, self.config, self.run_dir = loggers, dict(config), run_dir
        self._started: list[Logger] = []
        self._last_time = time.perf_counter()
        self._last_step = 0

    def start(self) -> None:
        """Open every logger (a logger that cannot start fails the run before it trains)."""
        tags = {str(k): str(v) for k, v in (self.config.get("tags") or {}).items()}
        name = self.run_dir.name if self.run_dir is not None else DEFAULT_RUN_NAME
        info = RunInfo(name=name, run_dir=self.run_dir, config=self.config, tags=tags)
        for logger in self.loggers:
            logger.start(info)
            self._started.append(logger)
        self._last_time = time.perf_counter()

    def wrap(self, on_step: Callable[[StepInfo], None]) -> Callable[[StepInfo], None]:
        """``on_step`` that also logs each step's scalars and its wall-clock time."""
        if not self.loggers:
            return on_step

        def report(info: StepInfo) -> None:
            now = time.perf_counter()
            scalars = step_scalars(info)
            scalars["time/step_s"] = now - self._last_time
            self._last_time, self._last_step = now, info.step
            for logger in self._started:
                logger.log_scalars(info.step, scalars)
            on_step(info)

        return report

    def finish(self, record: RunRecord) -> None:
        """Hand every logger the final figures, the hyper-parameters and the run's plots."""
        step = int(record.profile[-1]["step"]) if record.profile else self._last_step
        summary, hparams = summary_scalars(record), flat_hparams(record.config)
        plots = sorted(self.run_dir.glob("*.png")) if self.run_dir is not None else []
        for logger in self._started:
            logger.log_summary(step, summary, hparams)
            logger.log_files(plots)

    def close(self, status: str) -> None:
        """Close every started logger; the first error of a close is raised after all closed."""
        errors = []
        for logger in self._started:
            try:
                logger.close(status)
            except Exception as exc:  # noqa: BLE001 - every logger gets closed
                errors.append(exc)
        self._started = []
        if errors:
            raise errors[0]
