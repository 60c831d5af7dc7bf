"""The ``sparsekit`` command line: parses, calls the API, prints."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sparsekit.config import FinetuneConfig, parse_overrides
from sparsekit.engine.experiment import Experiment
from sparsekit.engine.finetune import finetune
from sparsekit.errors import ConfigError, MissingDependency, PluginError
from sparsekit.nn.efficiency import backbone_parameter_counts
from sparsekit.registry import list_plugins
from sparsekit.reporting.plots import plot_metrics_vs_efficiency
from sparsekit.reporting.tables import kinds_markdown, results_table
from sparsekit.runs.store import CHECKPOINT_FILE, Result, compact_run
from sparsekit.sweep import Sweep, SweepInterrupted


def _progress_bar(total: int):  # noqa: ANN202 - returns (callback, bar)
    bar = tqdm(total=total, unit="step", dynamic_ncols=True)

    def on_step(info) -> None:  # noqa: ANN001
        postfix = {"loss": f"{info.loss:.3f}", "λ": f"{info.lam:.3g}"}
        if info.group_sparsity is not None:
            postfix["group sp."] = f"{100 * info.group_sparsity:.1f}%"
            postfix["param sp."] = f"{100 * info.parameter_sparsity:.1f}%"
        bar.set_postfix(postfix, refresh=False)
        bar.update(info.step - bar.n)

    return on_step, bar


def cmd_run(args: argparse.Namespace) -> int:

    overrides = list(args.set or [])
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    experiment = Experiment.from_yaml(args.config, overrides)
    if experiment.config.run_dir is None:
        experiment = Experiment(experiment.config, run_dir=Path("runs") / Path(args.config).stem)
    on_step, bar = _progress_bar(experiment.total_steps)
    try:
        result = experiment.run(on_step=on_step)
    finally:
        bar.close()
    print(results_table([(Path(args.config).stem, result)]))
    print(f"run directory: {experiment.config.run_dir}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:

    parent = Result.load(args.run_dir)
    if parent.model is None:
        raise FileNotFoundError(f"{args.run_dir!r} holds no {CHECKPOINT_FILE} to fine-tune")
    fields = parse_overrides(list(args.set or []))
    fields.update(tasks=args.task, add_tasks=args.add_task or [], mode=args.mode)
    if args.steps is not None:
        fields["steps"] = args.steps
    out = Path(args.out) if args.out else Path(args.run_dir) / "finetune"
    on_step, bar = _progress_bar(fields.get("steps", FinetuneConfig().steps))
    try:
        result = finetune(parent, run_dir=out, on_step=on_step, **fields)
    finally:
        bar.close()
    print(results_table([(Path(args.run_dir).name, parent), (f"finetune ({args.mode})", result)]))
    print(f"run directory: {out}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    if args.markdown:
        print(kinds_markdown())
        return 0

    rows = list_plugins(args.kind)
    width = max((len(r.kind) for r in rows), default=4)
    for row in rows:
        print(f"{row.kind:<{width}}  {row.name:<20}  {row.distribution} {row.version}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:

    rows = [(Path(d).name, Result.load(d, with_model=False)) for d in args.run_dirs]
    print(results_table(rows))
    if args.plot:
        plot_metrics_vs_efficiency(rows, Path(args.plot))
        print(f"plot written to {args.plot}")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:

    dense, small, path = compact_run(args.run_dir)
    for label, model in (("masked", dense), ("compact", small)):
        total = sum(p.numel() for p in model.parameters())
        backbone, nonzero = backbone_parameter_counts(model)
        print(
            f"{label:<8} parameters: {total:>12,}  backbone conv weights: {backbone:>12,} "
            f"({nonzero:,} non-zero)"
        )
    print(f"compact model written to {path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:

    if args.target[0] == "report":
        if len(args.target) != 2:
            raise ConfigError("usage: sparsekit sweep report SWEEP_DIR")
        sweep = Sweep.from_directory(args.target[1])
        print(sweep.report(args.split))
        print(f"report, CSV and plot written to {sweep.directory}/")
        return 0
    if len(args.target) != 1:
        raise ConfigError("usage: sparsekit sweep SWEEP.yaml  |  sparsekit sweep report SWEEP_DIR")
    sweep = Sweep.from_yaml(args.target[0], parse_overrides(list(args.set or [])))
    specs = sweep.runs()
    bar = tqdm(total=len(specs), unit="run", dynamic_ncols=True)
    counts = {"failed": 0}

    def on_done(spec, outcome) -> None:  # noqa: ANN001
        if not outcome.ok:
            counts["failed"] += 1
            bar.write(f"failed: {spec.stage} {spec.overrides} seed {spec.seed} ({spec.run_id})")
        bar.set_postfix({"failed": counts["failed"], "last": spec.stage}, refresh=False)
        bar.update(1)

    try:
        summary = sweep.run(on_done=on_done)
    except SweepInterrupted as stop:
        bar.close()
        done = len(stop.summary.finished)
        print(
            f"sparsekit: interrupted; {done} run(s) finished in this call are recorded in "
            f"{sweep.directory}/sweep.db; run the sweep again to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        bar.close()
    print(sweep.report())
    print(
        f"{len(summary.finished)} finished, {len(summary.failed)} failed, "
        f"{len(summary.skipped)} already done; {summary.wall_s:.0f} s; results in "
        f"{sweep.directory}/ (sweep.db, report.md, report.csv, metrics_vs_sparsity.png)"
    )
    return 1 if summary.failed else 0


def _add_set_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help=help_text)


def _add_finetune_parser(sub: Any) -> None:
    finetuning = sub.add_parser(
        "finetune", help="fine-tune a trained run (meta-testing), optionally on unseen tasks"
    )
    finetuning.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with a model.pt")
    finetuning.add_argument(
        "--add-task",
        action="append",
        metavar="TASK",
        help="an unseen task of the data set to add with a new head; repeatable",
    )
    finetuning.add_argument(
        "--task",
        action="append",
        metavar="TASK",
        help="a trained task to fine-tune (default: see docs); repeatable",
    )
    finetuning.add_argument(
        "--mode",
        choices=("head", "all"),
        default="all",
        help="head: train only the fine-tuned heads; all: the backbone too",
    )
    finetuning.add_argument("--steps", type=int, help="fine-tuning steps")
    _add_set_option(finetuning, "a FinetuneConfig field (e.g. optimizer.lr=0.01); repeatable")
    finetuning.add_argument(
        "--run-dir", dest="out", help="where to write the fine-tuned run (default RUN_DIR/finetune)"
    )
    finetuning.set_defaults(func=cmd_finetune)


def _add_sweep_parser(sub: Any) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="run a sweep (sparsekit sweep SWEEP.yaml) or report one (sweep report SWEEP_DIR)",
    )
    sweep.add_argument("target", nargs="+", metavar="SWEEP.yaml | report SWEEP_DIR")
    _add_set_option(sweep, "override a sweep field (e.g. seeds=[0,1], base.steps=100); repeatable")
    sweep.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="sweep report: the split whose metrics are reported (val: for choosing settings)",
    )
    sweep.set_defaults(func=cmd_sweep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsekit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment from a YAML config")
    run.add_argument("config", help="YAML file of ExperimentConfig fields")
    _add_set_option(run, "override a config field (dotted keys for nested fields); repeatable")
    run.add_argument("--run-dir", help="where to write the run (default runs/<config name>)")
    run.set_defaults(func=cmd_run)
    _add_finetune_parser(sub)
    plugins = sub.add_parser("plugins", help="list the registered plugins")
    plugins.add_argument("--kind", help="only this kind (penalty, learner, ...)")
    plugins.add_argument(
        "--markdown",
        action="store_true",
        help="print every kind's contract as Markdown (the generated part of docs/plugins.md)",
    )
    plugins.set_defaults(func=cmd_plugins)
    report = sub.add_parser("report", help="metrics table of one or more run directories")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument(
        "--plot",
        metavar="OUT.png",
        help="also plot every task metric against CR and measured speed-up",
    )
    report.set_defaults(func=cmd_report)
    compact = sub.add_parser(
        "compact", help="remove a run's zeroed channels; writes RUN_DIR/compact.pt"
    )
    compact.add_argument("run_dir", metavar="RUN_DIR")
    compact.set_defaults(func=cmd_compact)
    _add_sweep_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, PluginError, MissingDependency, FileNotFoundError) as exc:
        print(f"sparsekit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
