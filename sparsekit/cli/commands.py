"""What each ``sparsekit`` command does, given its parsed arguments."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from sparsekit.config import ExperimentConfig, FinetuneConfig, directory_path, parse_overrides
from sparsekit.engine.experiment import Experiment
from sparsekit.engine.export import export_run
from sparsekit.engine.finetune import finetune
from sparsekit.engine.progress import Progress
from sparsekit.errors import ConfigError, MissingDependency, PluginError, RunInterrupted
from sparsekit.nn.efficiency import backbone_parameter_counts
from sparsekit.registry import list_plugins
from sparsekit.reporting.plots import plot_metrics_vs_efficiency
from sparsekit.reporting.tables import (
    component_params_text,
    fields_text,
    kinds_markdown,
    results_table,
)
from sparsekit.runs.store import CHECKPOINT_FILE, Result, compact_run
from sparsekit.sweep import Sweep, SweepInterrupted

#: The errors a user causes (a bad config or file, an unknown plugin, a missing package): the
#: command line reports them in one line and exits with status 2.
USER_ERRORS = (ConfigError, PluginError, MissingDependency, OSError)


def error_line(error: BaseException) -> str:
    """``sparsekit: error: MESSAGE``, the message on one line."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"sparsekit: error: {message or type(error).__name__}"


def _output_directory(option: str, path: str) -> Path:
    """A directory the command writes, given as ``option``: ``~`` expanded, never a file."""
    try:
        return Path(directory_path(path))
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def _set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None) is not None:
        torch.set_num_threads(args.threads)


def cmd_run(args: argparse.Namespace) -> int:
    experiment = Experiment.from_yaml(args.config, list(args.set or []))
    fields: dict[str, object] = {}
    if args.run_dir:  # a path as typed, never parsed as YAML
        fields["run_dir"] = Path(args.run_dir)
    elif experiment.config.run_dir is None:
        fields["run_dir"] = Path("runs") / Path(args.config).stem
    if args.threads is not None:
        fields["threads"] = args.threads
    experiment = Experiment(
        experiment.config, overwrite=args.overwrite, resume=args.resume, **fields
    )
    try:
        result = experiment.run(progress=not args.quiet)
    except RunInterrupted as stop:
        sets = [part for pair in args.set or [] for part in ("--set", pair)]
        run_dir = str(experiment.config.run_dir)
        again = ["sparsekit", "run", args.config, *sets, "--run-dir", run_dir, "--resume"]
        print(f"sparsekit: {stop}; resume with: {shlex.join(again)}", file=sys.stderr)
        return stop.exit_status
    print(results_table([(Path(args.config).stem, result)]))
    print(f"run directory: {experiment.config.run_dir}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    _set_threads(args)
    fields = parse_overrides(list(args.set or []))
    unknown = sorted(set(fields) - set(FinetuneConfig.model_fields))
    if unknown:
        valid = ", ".join(FinetuneConfig.model_fields)
        raise ConfigError(f"unknown finetune key {unknown[0]!r} in --set (valid keys: {valid})")
    out = _output_directory("--run-dir", args.out or str(Path(args.run_dir) / "finetune"))
    parent = Result.load(args.run_dir)
    if parent.model is None:
        raise FileNotFoundError(f"{args.run_dir!r} holds no {CHECKPOINT_FILE} to fine-tune")
    # Options given on the command line win over --set; those not given leave --set's values.
    given = {"tasks": args.task, "add_tasks": args.add_task, "mode": args.mode}
    fields.update({key: value for key, value in given.items() if value is not None})
    if args.steps is not None:
        fields["steps"] = args.steps
    result = finetune(
        parent, run_dir=out, progress=not args.quiet, overwrite=args.overwrite, **fields
    )
    mode = fields.get("mode", FinetuneConfig().mode)
    print(results_table([(Path(args.run_dir).name, parent), (f"finetune ({mode})", result)]))
    print(f"run directory: {out}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    if args.markdown:
        print(kinds_markdown())
        return 0
    if args.params:
        print(component_params_text(args.params, args.kind))
        return 0
    rows = list_plugins(args.kind)
    width = max((len(r.kind) for r in rows), default=4)
    for row in rows:
        print(f"{row.kind:<{width}}  {row.name:<20}  {row.distribution} {row.version}")
    return 0


def cmd_config_fields(args: argparse.Namespace) -> int:
    model = FinetuneConfig if args.finetune else ExperimentConfig
    what = "finetune: (FinetuneConfig)" if args.finetune else "experiment (ExperimentConfig)"
    print(f"fields of an {what}; components take a name or {{name: ..., **params}}")
    print("(`sparsekit plugins --params NAME` lists a component's params)\n")
    print(fields_text(model))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The table of every readable run directory; one error line for each other one."""
    rows, bad = [], 0
    for directory in args.run_dirs:
        try:
            rows.append((Path(directory).name, Result.load(directory, with_model=False)))
        except USER_ERRORS as exc:
            bad += 1
            print(error_line(exc), file=sys.stderr)
    if rows:
        print(results_table(rows))
    if rows and args.plot:
        plot_metrics_vs_efficiency(rows, Path(args.plot))
        print(f"plot written to {args.plot}")
    return 2 if bad else 0


def cmd_compact(args: argparse.Namespace) -> int:
    _set_threads(args)
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


def cmd_export(args: argparse.Namespace) -> int:
    _set_threads(args)
    path = export_run(args.run_dir, args.format, args.out)
    print(f"{args.format} model written to {path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.target[0] == "report":
        if len(args.target) != 2:
            raise ConfigError("usage: sparsekit sweep report SWEEP_DIR")
        sweep = Sweep.from_directory(args.target[1])
        print(sweep.report(args.split, plot_format=args.format))
        print(f"report, CSV and plot written to {sweep.directory}/")
        return 0
    if len(args.target) != 1:
        raise ConfigError("usage: sparsekit sweep SWEEP.yaml  |  sparsekit sweep report SWEEP_DIR")
    sweep = Sweep.from_yaml(args.target[0], parse_overrides(list(args.set or [])))
    specs = sweep.runs()
    bar = Progress(len(specs), enabled=not args.quiet, unit="run")
    counts = {"failed": 0, "done": 0}

    def on_done(spec, outcome) -> None:  # noqa: ANN001
        counts["done"] += 1
        if not outcome.ok:
            counts["failed"] += 1
            bar.write(f"failed: {spec.stage} {spec.overrides} seed {spec.seed} ({spec.run_id})")
        bar.phase(f"sweep ({counts['failed']} failed)")
        bar.advance(counts["done"])

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
        return stop.exit_status
    finally:
        bar.close()
    print(sweep.report(plot_format=args.format))
    if summary.reopened:
        print(f"ran again {len(summary.reopened)} run(s) whose run directory was incomplete")
    stopped = f", {len(summary.interrupted)} interrupted" if summary.interrupted else ""
    print(
        f"{len(summary.finished)} finished, {len(summary.failed)} failed{stopped}, "
        f"{len(summary.skipped)} already done; {summary.wall_s:.0f} s; results in "
        f"{sweep.directory}/ (sweep.db, report.md, report.csv, metrics_vs_sparsity.{args.format})"
    )
    return 1 if summary.failed or summary.interrupted else 0
