"""Sweep throughput: runs per second with two local workers over runs per second with one.

The same sweep — six runs of the default ``small_resnet`` on ``shapes`` (four tasks, 32×32
images, 256 training scenes, 120 steps, group lasso), seeds 0–5 — is run twice from an empty
directory with the ``local`` executor, each run with one torch thread: once with one worker and
once with two, the two arrangements interleaved and repeated ``REPEATS`` times. The ratio of the
median wall-clock times (1 worker ÷ 2 workers) is the throughput gain; its target on this
two-core machine is ≥ 1.7. The times include everything a user waits for: worker
start-up (``spawn``), data generation in each run, training, testing, efficiency measurement and
the database writes.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sparsekit.sweep import Sweep

RUNS = 6
REPEATS = 2
BASE = {
    "dataset": {"name": "shapes", "n_train": 256, "n_val": 64, "n_test": 64},
    "steps": 120,
    "eval_every": 60,
    "penalty": "group_lasso",
    "lam": 0.3,
    "device": "cpu",
}


def timed_sweep(directory: Path, workers: int) -> float:
    """Wall-clock seconds of the whole sweep with ``workers`` local workers."""
    sweep = Sweep(
        base=BASE,
        seeds=list(range(RUNS)),
        directory=directory,
        executor={"name": "local", "workers": workers, "threads": 1},
    )
    started = time.perf_counter()
    summary = sweep.run()
    elapsed = time.perf_counter() - started
    if len(summary.finished) != RUNS:
        errors = [row.error for row in sweep.store.rows() if row.error]
        raise RuntimeError(f"the benchmark sweep did not finish: {errors}")
    return elapsed


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="sparsekit-bench-sweep-"))
    times: dict[int, list[float]] = {1: [], 2: []}
    try:
        for repeat in range(REPEATS):
            for workers in (1, 2):
                times[workers].append(timed_sweep(root / f"{workers}-{repeat}", workers))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    return {
        "runs": RUNS,
        "repeats": REPEATS,
        "threads_per_run": 1,
        "one_worker_s": one,
        "two_workers_s": two,
        "one_worker_all_s": times[1],
        "two_workers_all_s": times[2],
        "throughput_ratio": one / two,
    }


if __name__ == "__main__":
    print(run())
