"""The main job: the accuracy-sparsity frontier and meta-sparsity on the built-in ``shapes`` data.

Run with ``make demo`` (or ``python -m sparsekit_plugins.demo``). It names the built-in plugins it
runs, so it lives with them. On the four ``shapes`` tasks it trains
the dense multi-task model (λ = 0) and group-lasso models at fixed λ with the default recipe
(proxssi, then the masked debiasing stage; "Less is More"), which trace the frontier of accuracy
against sparsity. Then it meta-trains a group-lasso model with MAML and a learned λ on three of
the tasks ("Meta-Sparsity") and meta-tests it with the fourth, unseen task added: the new head
alone on the frozen sparse backbone, and all four tasks with the backbone's zeros kept; beside
them, a multi-task model trained from scratch on all four tasks to the same parameter sparsity
(progressive magnitude pruning to the meta-sparse run's sparsity). It prints
one table of test metrics of each final model, with λ and the backbone's sparsity, and writes
``frontier.png``: each task's primary metric against % parameter sparsity, the fixed-λ runs as a
curve and the meta-sparse models as points. Runs are written under ``runs/demo/``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from sparsekit import Experiment, Result, finetune
from sparsekit.reporting.plots import plot_frontier
from sparsekit.reporting.tables import results_table

#: The fixed λ of the frontier runs; λ = 0 is the dense model (same total number of steps).
FRONTIER_LAMS = (0.0, 0.004, 0.007, 0.015)

#: The tasks meta-training sees, and the task meta-testing adds.
META_TASKS = ("segmentation", "depth", "normals")
UNSEEN_TASK = "edges"

#: The meta-learner of the demo, with its defaults.
META_LEARNER: dict[str, Any] = {"name": "maml"}


def frontier_label(lam: float) -> str:
    """The table label of a fixed-λ run."""
    return "dense (λ=0)" if lam == 0 else f"group lasso λ={lam:g}"


def main(argv: list[str] | None = None) -> None:
    """Train the demo's runs, print their table and write the frontier plot."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=600, help="(meta-)training steps per run")
    parser.add_argument(
        "--finetune-steps", type=int, default=None, help="meta-testing steps (default: --steps)"
    )
    parser.add_argument("--out", default="runs/demo")
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()
    curve = frontier_runs(args.steps, out)
    points = meta_sparsity_runs(args.steps, args.finetune_steps or args.steps, out)
    print()
    print(results_table([*curve, *points]))
    plot_frontier(curve, points, out / "frontier.png")
    print(f"\nfrontier plot: {out / 'frontier.png'}; runs in {out}/")
    print(f"total {time.perf_counter() - started:.0f} s")


def frontier_runs(steps: int, out: Path) -> list[tuple[str, Result]]:
    """The dense model and the fixed-λ group-lasso runs, labelled."""
    curve: list[tuple[str, Result]] = []
    for lam in FRONTIER_LAMS:
        slug = "dense" if lam == 0 else f"group_lasso_lam{lam:g}"
        result = Experiment(
            dataset="shapes",
            penalty="group_lasso",
            lam=lam,
            steps=steps,
            seed=0,
            run_dir=out / slug,
            overwrite=True,  # the demo runs afresh every time
        ).run()
        label = frontier_label(lam)
        print(f"{label}: trained and debiased in {result.timings['train_s']:.0f} s", flush=True)
        curve.append((label, result))
    return curve


def meta_sparsity_runs(steps: int, finetune_steps: int, out: Path) -> list[tuple[str, Result]]:
    """Meta-training, both meta-tests with the unseen task, and MTL at the same sparsity."""
    meta = Experiment(
        dataset="shapes",
        tasks=list(META_TASKS),
        penalty="group_lasso",
        learner=META_LEARNER,
        lam="learned",
        steps=steps,
        seed=0,
        run_dir=out / "meta_sparsity",
        overwrite=True,
    ).run()
    print(f"meta-sparsity (maml, λ learned): meta-trained in {meta.timings['train_s']:.0f} s")
    points: list[tuple[str, Result]] = [("meta-sparsity, 3 tasks", meta)]
    for mode, label in (("head", "+ edges, new head only"), ("all", "+ edges, all fine-tuned")):
        tuned = finetune(
            meta,
            add_tasks=[UNSEEN_TASK],
            mode=mode,
            steps=finetune_steps,
            run_dir=out / f"meta_sparsity_{UNSEEN_TASK}_{mode}",
            overwrite=True,
        )
        print(f"meta-testing, {label}: fine-tuned in {tuned.timings['train_s']:.0f} s", flush=True)
        points.append((f"meta-sparsity {label}", tuned))
    matched = Experiment(
        dataset="shapes",
        penalty=None,
        scheduler="progressive",
        mask="magnitude",
        target={"from_run": out / "meta_sparsity"},
        steps=steps + steps // 3,  # the frontier runs' total, debiasing included
        seed=0,
        run_dir=out / "mtl_matched_sparsity",
        overwrite=True,
    ).run()
    print(f"MTL from scratch at the same sparsity: trained in {matched.timings['train_s']:.0f} s")
    points.append(("MTL from scratch, same sparsity", matched))
    return points


if __name__ == "__main__":
    main()
