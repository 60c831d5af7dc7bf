"""``csv``: every scalar of the run, one row each, appended to ``RUN_DIR/metrics.csv``."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from sparsekit.interfaces import ComponentConfig, Logger, RunInfo

#: The columns of ``metrics.csv``.
COLUMNS = ("step", "name", "value")


class CsvLogger(Logger):
    """Appends ``step,name,value`` rows to a CSV file: each step's scalars, then the summary.

    The file is long-format (one scalar per row), so scalars that appear only at evaluation
    steps (``val/...``) need no empty cells; ``pandas.read_csv(path).pivot_table(index="step",
    columns="name", values="value")`` gives one column per scalar. The final figures are rows at
    the last step. Rows are flushed at every evaluation step and at the end, so a run that
    stops loses at most the rows since its last evaluation. A run without a run directory and
    without ``path`` writes nothing.
    """

    name: ClassVar[str] = "csv"
    is_default: ClassVar[bool] = True

    class Config(ComponentConfig):
        """Configuration of :class:`CsvLogger`.

        Attributes:
            path: the CSV file; None writes ``metrics.csv`` in the run directory. A relative
                path is relative to the run directory.
        """

        path: Path | None = None

    config: Config

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._file: io.TextIOWrapper | None = None
        self._writer: Any = None

    def start(self, run: RunInfo) -> None:
        """Create the file (replacing one of an earlier run) with its header row."""
        path = self.config.path
        if path is None or not path.is_absolute():
            if run.run_dir is None:
                if path is None:
                    return
            else:
                path = run.run_dir / (path or "metrics.csv")
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(COLUMNS)

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """One row per scalar; flushed when the step was evaluated."""
        if self._writer is None:
            return
        self._writer.writerows((step, name, repr(float(v))) for name, v in scalars.items())
        if "val/loss" in scalars:
            self._file.flush()  # type: ignore[union-attr]

    def log_summary(
        self, step: int, summary: Mapping[str, float], hparams: Mapping[str, Any]
    ) -> None:
        """The final figures as rows at the last step (the config is in ``config.yaml``)."""
        if self._writer is None:
            return
        rows = ((step, name, repr(float(v))) for name, v in summary.items() if math.isfinite(v))
        self._writer.writerows(rows)

    def close(self, status: str) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file, self._writer = None, None
