"""``tensorboard``: a TensorBoard event file under ``RUN_DIR/tensorboard/``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from sparsekit.errors import ConfigError, MissingDependency
from sparsekit.interfaces import ComponentConfig, Logger, RunInfo


class TensorBoardLogger(Logger):
    """Writes scalars, hyper-parameters and plots with ``torch.utils.tensorboard.SummaryWriter``.

    Every step's scalars are ``add_scalar(name, value, step)``; the final figures are scalars at
    the last step and, with the resolved config, one ``add_hparams`` record (TensorBoard's
    HPARAMS tab compares runs by them); the run's plots are images under ``plots/``.
    ``tensorboard --logdir RUN_DIR/tensorboard`` (or the parent of many run directories) shows
    them. Needs the ``tensorboard`` package (``pip install 'sparsekit[logging]'``).
    """

    name: ClassVar[str] = "tensorboard"

    class Config(ComponentConfig):
        """Configuration of :class:`TensorBoardLogger`.

        Attributes:
            log_dir: the event directory; None is ``RUN_DIR/tensorboard``.
            flush_secs: seconds between flushes of the event file.
        """

        log_dir: Path | None = None
        flush_secs: int = 30

    config: Config

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._writer: Any = None

    def start(self, run: RunInfo) -> None:
        """Open a ``SummaryWriter`` in the log directory.

        Raises:
            ConfigError: neither a run directory nor ``log_dir``.
            MissingDependency: tensorboard is not installed.
        """
        log_dir = self.config.log_dir
        if log_dir is None:
            if run.run_dir is None:
                raise ConfigError(
                    "logger tensorboard writes under the run directory: set run_dir, or give "
                    "the logger a log_dir"
                )
            log_dir = run.run_dir / "tensorboard"
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise MissingDependency(
                "logger tensorboard needs the tensorboard package: pip install 'sparsekit[logging]'"
            ) from exc
        self._writer = SummaryWriter(str(log_dir), flush_secs=self.config.flush_secs)
        if run.tags:
            self._writer.add_text("tags", ", ".join(f"{k}={v}" for k, v in run.tags.items()))

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """``add_scalar`` for every scalar."""
        for name, value in scalars.items():
            self._writer.add_scalar(name, value, step)

    def log_summary(
        self, step: int, summary: Mapping[str, float], hparams: Mapping[str, Any]
    ) -> None:
        """The final figures as scalars at ``step``, and one hyper-parameter record."""
        for name, value in summary.items():
            self._writer.add_scalar(name, value, step)
        # TensorBoard's hparams accept numbers, strings and booleans; None becomes "None".
        values = {
            k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()
        }
        self._writer.add_hparams(values, dict(summary), run_name=".", global_step=step)

    def log_files(self, paths: Sequence[Path]) -> None:
        """Each PNG plot as an image ``plots/<file stem>``."""
        import numpy as np
        from PIL import Image

        for path in paths:
            if path.suffix.lower() == ".png":
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
                self._writer.add_image(f"plots/{path.stem}", pixels, dataformats="HWC")

    def close(self, status: str) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.add_text("status", status)
            self._writer.close()
            self._writer = None
