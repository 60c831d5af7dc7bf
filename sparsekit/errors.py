"""Every exception and warning type sparsekit raises, in one leaf module.

The CLI turns :class:`ConfigError` and :class:`PluginError` (and the file errors of run
directories) into one-line messages with exit status 2; the others mean a run failed.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot be read or is invalid; the message names the culprit."""


class PluginError(LookupError):
    """An unknown plugin kind or name, or two plugins claiming the same name."""


class PluginLoadWarning(UserWarning):
    """A plugin could not be imported or registered; the others still work."""


class TrainingDiverged(FloatingPointError):
    """A training, meta-training or fine-tuning loss became NaN or infinite."""


class RunDiverged(RuntimeError):
    """A finished run's metrics or sparsity are NaN or infinite (a sweep records it failed)."""


class CompactionError(RuntimeError):
    """The compacted network does not reproduce the masked network's outputs."""


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message says how to install it."""


class ExecutorUnavailable(MissingDependency):
    """An executor's optional dependency is not installed; the message says how to install it."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped on SIGINT or SIGTERM after finishing its step and writing a checkpoint.

    Attributes:
        signal_number: the signal that stopped it (``signal.SIGINT`` or ``signal.SIGTERM``).
        run_dir: the run directory holding the checkpoint, or None for a run without one.
        step: the last step taken (None when a second Ctrl-C stopped the run mid-step: its
            last checkpoint stands).
    """

    def __init__(self, message: str, signal_number: int, run_dir: object, step: int | None) -> None:
        super().__init__(message)
        self.signal_number, self.run_dir, self.step = signal_number, run_dir, step

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:  # crosses process boundaries whole
        return type(self), (str(self), self.signal_number, self.run_dir, self.step)

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by the signal: 128 + its number."""
        return 128 + int(self.signal_number)
