"""What a sweep worker runs: one experiment, in whatever process or machine the executor chose."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from sparsekit.config import build_config
from sparsekit.engine.experiment import Experiment
from sparsekit.errors import RunDiverged


@dataclass(frozen=True)
class WorkItem:
    """One run handed to an executor.

    Attributes:
        run_id: the run's id in the sweep database.
        config: the resolved experiment config (a plain dict).
        threads: torch intra-op threads the run may use.
    """

    run_id: str
    config: dict[str, Any]
    threads: int


def _non_finite(outcome: dict[str, Any]) -> list[str]:
    bad = []
    for task, values in outcome["metrics"].items():
        bad += [f"{task}.{k}" for k, v in values.items() if not math.isfinite(v)]
    bad += [f"sparsity.{k}" for k, v in outcome["sparsity"].items() if not math.isfinite(v)]
    return bad


def run_one(item: WorkItem) -> dict[str, Any]:
    """Run one experiment and return its metrics, sparsity, efficiency and timings.

    The run resumes in its run directory: from its last checkpoint if one is there (a run
    interrupted before), as it is if it had finished, and from the start otherwise.

    Raises:
        RunDiverged: a metric or the sparsity is NaN or infinite.
        Exception: whatever the experiment raised (its run directory keeps ``error.txt``).
    """
    torch.set_num_threads(item.threads)
    # A run stopped before (interrupted, its sweep killed) continues from its last checkpoint.
    result = Experiment(build_config(dict(item.config)), resume=True).run()
    outcome = {
        "metrics": result.metrics,
        "directions": result.metric_directions,
        "sparsity": result.sparsity,
        "efficiency": {
            k: v for k, v in (result.efficiency or {}).items() if isinstance(v, (int, float))
        },
        "timings": result.timings,
    }
    bad = _non_finite(outcome)
    if bad:
        raise RunDiverged(f"the run diverged: non-finite {', '.join(bad)}")
    return outcome
