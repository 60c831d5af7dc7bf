"""The ``sparsekit`` argument parser: every command, its options and its examples."""

from __future__ import annotations

import argparse
from typing import Any

from sparsekit._version import __version__
from sparsekit.cli import commands

#: Plot file types the commands that draw accept.
PLOT_FORMATS = ("png", "pdf", "svg")
#: Export formats (:func:`sparsekit.engine.export.export`).
EXPORT_FORMATS = ("onnx", "torchscript", "exported-program")

DESCRIPTION = """\
sparsekit: sparse multi-task networks whose sparsity is learned.

Run `sparsekit COMMAND --help` for a command's options and examples."""

EPILOG = """\
examples:
  sparsekit run configs/default.yaml                  train one experiment
  sparsekit run configs/default.yaml --set lam=0.02 --set steps=300
  sparsekit report runs/default runs/other            compare run directories
  sparsekit compact runs/default                      remove zeroed channels
  sparsekit export runs/default --format onnx         a model that loads without sparsekit
  sparsekit sweep configs/frontier_shapes.yaml        a grid over seeds
  sparsekit config fields                             every experiment field
  sparsekit plugins --kind logger                     the loggers there are
  sparsekit plugins --params NAME                     a plugin's parameters"""

RUN_EPILOG = """\
examples:
  sparsekit run configs/default.yaml
  sparsekit run configs/default.yaml --set lam=0.02 --set optimizer.lr=0.003
  sparsekit run configs/default.yaml --set 'loggers=[csv, tensorboard]' --threads 1
  sparsekit run my.yaml --run-dir runs/try2
  sparsekit run my.yaml --run-dir runs/try2 --resume       after Ctrl-C or a crash
  sparsekit run my.yaml --run-dir runs/try2 --overwrite    start that run again

Fields: `sparsekit config fields`; a component's parameters: `sparsekit plugins --params NAME`."""

FINETUNE_EPILOG = """\
examples:
  sparsekit finetune runs/meta                          every trained task, whole network
  sparsekit finetune runs/meta --add-task normals --mode head
  sparsekit finetune runs/meta --steps 300 --set optimizer.lr=0.0005"""

SWEEP_USAGE = """\
sparsekit sweep SWEEP.yaml [--set KEY=VALUE]... [--format {png,pdf,svg}] [--quiet]
       sparsekit sweep report SWEEP_DIR [--split {test,val}] [--format {png,pdf,svg}]"""

SWEEP_EPILOG = """\
examples:
  sparsekit sweep configs/frontier_shapes.yaml
  sparsekit sweep configs/frontier_shapes.yaml --set 'seeds=[0,1]' --set base.steps=100
  sparsekit sweep report sweeps/frontier_shapes --split val

A sweep resumes where it stopped: run the same command again."""


def _subparser(sub: Any, name: str, help_text: str, epilog: str | None = None, **kw: Any) -> Any:
    return sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kw,
    )


def _add_set_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help=help_text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="torch intra-op threads (on a machine shared with other jobs, 1 is often fastest)",
    )


def _add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_run_parser(sub: Any) -> None:
    run = _subparser(sub, "run", "run an experiment from a YAML config", RUN_EPILOG)
    run.add_argument("config", help="YAML file of ExperimentConfig fields")
    _add_set_option(run, "override a config field (dotted keys for nested fields); repeatable")
    run.add_argument("--run-dir", help="where to write the run (default runs/<config name>)")
    again = run.add_mutually_exclusive_group()
    again.add_argument(
        "--overwrite", action="store_true", help="clear a run directory that holds a run first"
    )
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the run directory from its last checkpoint",
    )
    _add_threads_option(run)
    _add_quiet_option(run)
    run.set_defaults(func=commands.cmd_run)


def _add_finetune_parser(sub: Any) -> None:
    finetuning = _subparser(
        sub,
        "finetune",
        "fine-tune a trained run (meta-testing), optionally on unseen tasks",
        FINETUNE_EPILOG,
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
        help="head: train only the fine-tuned heads; all (default): the backbone too",
    )
    finetuning.add_argument("--steps", type=_positive_int, help="fine-tuning steps")
    _add_set_option(finetuning, "a FinetuneConfig field (e.g. optimizer.lr=0.01); repeatable")
    finetuning.add_argument(
        "--run-dir", dest="out", help="where to write the fine-tuned run (default RUN_DIR/finetune)"
    )
    finetuning.add_argument(
        "--overwrite", action="store_true", help="clear that directory if it holds a run first"
    )
    _add_threads_option(finetuning)
    _add_quiet_option(finetuning)
    finetuning.set_defaults(func=commands.cmd_finetune)


def _add_info_parsers(sub: Any) -> None:
    plugins = _subparser(
        sub,
        "plugins",
        "list the registered plugins, or one plugin's parameters",
        "examples:\n  sparsekit plugins\n  sparsekit plugins --kind logger\n"
        "  sparsekit plugins --params tensorboard\n"
        "  sparsekit plugins --params random --kind mask",
    )
    plugins.add_argument("--kind", help="only this kind (penalty, learner, ...)")
    plugins.add_argument(
        "--params", metavar="NAME", help="the parameters (Config fields) of the plugin NAME"
    )
    plugins.add_argument(
        "--markdown",
        action="store_true",
        help="print every kind's contract as Markdown (the generated part of docs/plugins.md)",
    )
    plugins.set_defaults(func=commands.cmd_plugins)
    config = _subparser(
        sub,
        "config",
        "describe the configuration",
        "examples:\n  sparsekit config fields\n  sparsekit config fields --finetune",
    )
    config.add_argument("what", choices=("fields",), help="fields: every field of a config")
    config.add_argument(
        "--finetune", action="store_true", help="the fields of a finetune stage instead"
    )
    config.set_defaults(func=commands.cmd_config_fields)


def _add_run_dir_parsers(sub: Any) -> None:
    report = _subparser(
        sub,
        "report",
        "metrics table of one or more run directories",
        "examples:\n  sparsekit report runs/dense runs/sparse --plot cmp.pdf",
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument(
        "--plot",
        metavar="OUT.png|pdf|svg",
        help="also plot every task metric against CR and measured speed-up",
    )
    report.set_defaults(func=commands.cmd_report)
    compact = _subparser(
        sub,
        "compact",
        "remove a run's zeroed channels; writes RUN_DIR/compact.pt",
        "examples:\n  sparsekit compact runs/default",
    )
    compact.add_argument("run_dir", metavar="RUN_DIR")
    _add_threads_option(compact)
    compact.set_defaults(func=commands.cmd_compact)
    export = _subparser(
        sub,
        "export",
        "export a run's compact model as a file that loads without sparsekit",
        "examples:\n  sparsekit export runs/default --format onnx\n"
        "  sparsekit export runs/default --format torchscript --out model.pt",
    )
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    export.add_argument("--out", metavar="PATH", help="the file to write (default in RUN_DIR)")
    _add_threads_option(export)
    export.set_defaults(func=commands.cmd_export)


def _add_sweep_parser(sub: Any) -> None:
    sweep = _subparser(
        sub,
        "sweep",
        "run a sweep (sparsekit sweep SWEEP.yaml) or report one (sweep report SWEEP_DIR)",
        SWEEP_EPILOG,
        usage=SWEEP_USAGE,
    )
    sweep.add_argument("target", nargs="+", metavar="SWEEP.yaml | report SWEEP_DIR")
    _add_set_option(sweep, "override a sweep field (e.g. seeds=[0,1], base.steps=100); repeatable")
    sweep.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="sweep report: the split whose metrics are reported (val: for choosing settings)",
    )
    sweep.add_argument("--format", choices=PLOT_FORMATS, default="png", help="plot file type")
    _add_quiet_option(sweep)
    sweep.set_defaults(func=commands.cmd_sweep)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``sparsekit`` command."""
    parser = argparse.ArgumentParser(
        prog="sparsekit",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sparsekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_parser(sub)
    _add_finetune_parser(sub)
    _add_run_dir_parsers(sub)
    _add_sweep_parser(sub)
    _add_info_parsers(sub)
    return parser
