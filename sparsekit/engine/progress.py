"""The progress bar of a run: steps with loss, λ and sparsity, then the phase after training.

A run's last minutes are not training: the final model is evaluated on the test split and its
efficiency measured (compaction, FLOPs, latency). The bar names each phase (``training``,
``testing``, ``measuring efficiency``, ``saving``) so it never sits silently at 100 %.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from sparsekit.interfaces import StepInfo

#: The signature of a phase report: called with the phase's name as it begins.
PhaseReport = Callable[[str], None]


def no_phase(name: str) -> None:
    """The default phase report: nothing."""


def interactive() -> bool:
    """Whether standard error is a terminal (progress is then shown by default)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class Progress:
    """A tqdm bar over a run's steps, or nothing when disabled.

    Args:
        total: the run's steps (training plus any second stage).
        enabled: show the bar; None shows it when standard error is a terminal.
        unit: what a step is called on the bar.
    """

    def __init__(self, total: int, enabled: bool | None = None, unit: str = "step") -> None:
        self.enabled = interactive() if enabled is None else enabled
        self._bar: Any = None
        if self.enabled:
            desc = "training" if unit == "step" else None
            self._bar = tqdm(total=total, unit=unit, dynamic_ncols=True, desc=desc)

    def step(self, info: StepInfo) -> None:
        """Advance to ``info.step`` and show its loss, λ and (when known) sparsity."""
        if self._bar is None:
            return
        postfix = {"loss": f"{info.loss:.3f}", "λ": f"{info.lam:.3g}"}
        if info.parameter_sparsity is not None and info.group_sparsity is not None:
            postfix["group sp."] = f"{100 * info.group_sparsity:.1f}%"
            postfix["param sp."] = f"{100 * info.parameter_sparsity:.1f}%"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(info.step - self._bar.n)

    def advance(self, count: int) -> None:
        """Move the bar to ``count`` done (for bars of something other than steps)."""
        if self._bar is not None:
            self._bar.update(count - self._bar.n)

    def phase(self, name: str) -> None:
        """Name the phase that begins (``testing``, ``measuring efficiency``, ...)."""
        if self._bar is not None:
            self._bar.set_description_str(name)

    def write(self, text: str) -> None:
        """Print a line above the bar (or plainly, without one)."""
        if self._bar is not None:
            self._bar.write(text)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def chain(self, on_step: Callable[[StepInfo], None] | None) -> Callable[[StepInfo], None]:
        """A step callback that advances the bar, then calls ``on_step``."""
        if on_step is None:
            return self.step

        def both(info: StepInfo) -> None:
            self.step(info)
            on_step(info)

        return both
