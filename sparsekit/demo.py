"""The main job: dense, fixed-λ and meta-sparse multi-task models on the built-in ``shapes`` data.

Run with ``make demo`` (or ``python -m sparsekit.demo``). On the four ``shapes`` tasks it trains
a dense model (λ = 0) and group-lasso models at two fixed λ values ("Less is More"). Then it
meta-trains a group-lasso model with MAML and a learned λ on three of the tasks ("Meta-Sparsity")
and meta-tests it with the fourth, unseen task added: the new head alone on the frozen sparse
backbone, and all four tasks with the backbone's zeros kept. It prints one table of test metrics
of each final model, with λ and the backbone's sparsity. Runs are written under ``runs/demo/``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sparsekit.engine.experiment import Experiment
from sparsekit.reporting.result import Result
from sparsekit.reporting.tables import results_table

#: (label, λ) of the demo's fixed-λ multi-task runs; λ = 0 is the dense baseline.
DEMO_RUNS = (("dense (λ=0)", 0.0), ("group lasso λ=0.3", 0.3), ("group lasso λ=0.5", 0.5))

#: The tasks meta-training sees, and the task meta-testing adds.
META_TASKS = ("segmentation", "depth", "normals")
UNSEEN_TASK = "edges"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=600, help="(meta-)training steps per run")
    parser.add_argument("--finetune-steps", type=int, default=300, help="meta-testing steps")
    parser.add_argument("--out", default="runs/demo")
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()
    rows: list[tuple[str, Result]] = []
    for label, lam in DEMO_RUNS:
        slug = "dense" if lam == 0 else f"group_lasso_lam{lam:g}"
        result = Experiment(
            dataset="shapes",
            penalty="group_lasso",
            lam=lam,
            steps=args.steps,
            seed=0,
            run_dir=out / slug,
        ).run()
        print(f"{label}: trained in {result.timings['train_s']:.0f} s", flush=True)
        rows.append((label, result))

    meta = Experiment(
        dataset="shapes",
        tasks=list(META_TASKS),
        penalty="group_lasso",
        learner="maml",
        lam="learned",
        steps=args.steps,
        seed=0,
        run_dir=out / "meta_sparsity",
    ).run()
    print(f"meta-sparsity (maml, λ learned): meta-trained in {meta.timings['train_s']:.0f} s")
    rows.append(("meta-sparsity, 3 tasks", meta))
    for mode, label in (("head", "+ edges, new head only"), ("all", "+ edges, all fine-tuned")):
        tuned = meta.finetune(
            add_tasks=[UNSEEN_TASK],
            mode=mode,
            steps=args.finetune_steps,
            run_dir=out / f"meta_sparsity_{UNSEEN_TASK}_{mode}",
        )
        print(f"meta-testing, {label}: fine-tuned in {tuned.timings['train_s']:.0f} s", flush=True)
        rows.append((f"meta-sparsity {label}", tuned))
    print()
    print(results_table(rows))
    print(f"\nruns in {out}/; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
