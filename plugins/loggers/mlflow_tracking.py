"""``mlflow``: an MLflow run per experiment, in a local ``mlruns`` store or any tracking server."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from sparsekit.errors import MissingDependency
from sparsekit.interfaces import ComponentConfig, Logger, RunInfo

#: MLflow's limit on the entries of one ``log_batch`` call.
_BATCH = 100
#: MLflow's limit on the length of a parameter value.
_PARAM_LENGTH = 6000


class MlflowLogger(Logger):
    """Logs to MLflow through ``mlflow.tracking.MlflowClient``.

    One MLflow run per sparsekit run, in the experiment ``experiment`` (created when missing),
    named after the run directory and tagged with the run's tags (a sweep's ``sweep``,
    ``stage``, ``seed``, ``run_id``). Every step's scalars are metrics at that step; the final
    figures are metrics at the last step; the resolved config is the run's parameters (dotted
    names); the run's plots and ``config.yaml`` are artifacts; the MLflow run ends ``FINISHED``
    or ``FAILED``.

    The default store is a local ``mlruns`` directory (MLflow's file store) in the working
    directory. MLflow 3 keeps that store in maintenance mode behind the switch
    ``MLFLOW_ALLOW_FILE_STORE``, which this logger sets for a ``file:`` URI; a database
    (``sqlite:///mlflow.db``, which needs the full ``mlflow`` package) or a tracking server
    (``http://...``) is given as ``tracking_uri``. Needs ``mlflow-skinny`` or ``mlflow``
    (``pip install 'sparsekit[logging]'``).
    """

    name: ClassVar[str] = "mlflow"

    class Config(ComponentConfig):
        """Configuration of :class:`MlflowLogger`.

        Attributes:
            tracking_uri: where MLflow stores runs; None is ``file:`` + ``./mlruns`` (absolute).
            experiment: the MLflow experiment the runs go to.
        """

        tracking_uri: str | None = None
        experiment: str = "sparsekit"

    config: Config

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._client: Any = None
        self._run_id: str | None = None
        self._run_dir: Path | None = None

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        """A file store under ``workdir`` (never ``./mlruns`` of whoever runs the checks)."""
        return {"tracking_uri": (workdir / "mlruns").as_uri()}

    def start(self, run: RunInfo) -> None:
        """Create the MLflow run (and its experiment when missing).

        Raises:
            MissingDependency: neither mlflow nor mlflow-skinny is installed.
        """
        uri = self.config.tracking_uri or (Path.cwd() / "mlruns").as_uri()
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise MissingDependency(
                "logger mlflow needs mlflow (or mlflow-skinny): pip install 'sparsekit[logging]'"
            ) from exc
        self._client = MlflowClient(tracking_uri=uri)
        experiment = self._client.get_experiment_by_name(self.config.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self._client.create_experiment(self.config.experiment)
        )
        created = self._client.create_run(experiment_id, run_name=run.name, tags=dict(run.tags))
        self._run_id, self._run_dir = created.info.run_id, run.run_dir

    @property
    def run_id(self) -> str | None:
        """The MLflow run's id, once started."""
        return self._run_id

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """The step's scalars as metrics at ``step``."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(name, float(v), stamp, step) for name, v in scalars.items()]
        for start in range(0, len(metrics), _BATCH):
            self._client.log_batch(self._run_id, metrics=metrics[start : start + _BATCH])

    def log_summary(
        self, step: int, summary: Mapping[str, float], hparams: Mapping[str, Any]
    ) -> None:
        """The final figures as metrics at ``step``; the config as parameters."""
        from mlflow.entities import Param

        self.log_scalars(step, summary)
        params = [Param(k, str(v)[:_PARAM_LENGTH]) for k, v in hparams.items()]
        for start in range(0, len(params), _BATCH):
            self._client.log_batch(self._run_id, params=params[start : start + _BATCH])

    def log_files(self, paths: Sequence[Path]) -> None:
        """The plots (and ``config.yaml``) as artifacts."""
        config = self._run_dir / "config.yaml" if self._run_dir is not None else None
        for path in [*paths, *([config] if config is not None and config.is_file() else [])]:
            self._client.log_artifact(self._run_id, str(path))

    def close(self, status: str) -> None:
        """End the MLflow run as ``FINISHED``, ``KILLED`` (interrupted) or ``FAILED``."""
        if self._client is not None and self._run_id is not None:
            ending = {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
            self._client.set_terminated(self._run_id, ending)
            self._client, self._run_id = None, None
