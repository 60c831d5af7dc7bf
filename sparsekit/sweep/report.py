"""The sweep report: runs grouped into rows, mean ± std over seeds, as Markdown, CSV and plots.

Runs that differ only in their seed form one row. A row is named by its stage's label and the
values of the sweep's ``group_by`` fields (default: every field its stages' cases and grid axes
set): a component by its name, None as ``—``. Each metric cell is the mean ± the sample
standard deviation (n − 1 in the denominator) over the row's finished runs; a row with one
finished run shows the mean alone. In the Markdown table every task shows its first (primary)
metric, with ↑ where higher is better and ↓ where lower is, and the best mean of each column is
bold; the CSV has every metric, mean and std in separate columns. Failed runs count in the
``runs`` column (finished / all) and nowhere else.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsekit.sweep.store import RunRow

EFFICIENCY_COLUMNS = (("cr", "CR"), ("sp", "Sp (FLOPs)"), ("speedup", "speed-up"))


@dataclass
class ReportRow:
    """One row of the report: a configuration and its runs over seeds."""

    label: str
    keys: dict[str, str]
    runs: list[RunRow] = field(default_factory=list)

    @property
    def finished(self) -> list[RunRow]:
        return [r for r in self.runs if r.status == "finished"]

    def values(self, getter: Any) -> list[float]:
        """Every finished run's value of ``getter(run)``, where it is a number."""
        out = []
        for run in self.finished:
            value = getter(run)
            if isinstance(value, (int, float)) and math.isfinite(value):
                out.append(float(value))
        return out


def lookup(config: dict[str, Any], key: str) -> Any:
    """The value of a dotted ``key`` in a config dict (None where missing)."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def display(value: Any) -> str:
    """A config value as a report cell: components by name, None as ``—``."""
    if value is None:
        return "—"
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return value["name"]
    if isinstance(value, dict) and "from_run" in value:
        return "from run"
    return str(value)


def default_group_by(stages: Sequence[Any]) -> list[str]:
    """Every field set by a stage's cases or grid axes, in first-seen order."""
    keys: list[str] = []
    for stage in stages:
        for case in stage.cases:
            keys += [k for k in case if k not in keys and k != "seed"]
        keys += [k for k in stage.grid if k not in keys and k != "seed"]
    return keys


def group_rows(
    runs: Sequence[RunRow], group_by: Sequence[str], hidden_stages: set[str] = frozenset()
) -> list[ReportRow]:
    """Runs grouped by stage label and the ``group_by`` values, in first-seen order."""
    rows: dict[tuple[str, ...], ReportRow] = {}
    for run in runs:
        if run.stage in hidden_stages:
            continue
        keys = {k: display(lookup(run.config, k)) for k in group_by}
        ident = (run.label, *keys.values())
        rows.setdefault(ident, ReportRow(run.label, keys)).runs.append(run)
    return list(rows.values())


def metric_columns(rows: Sequence[ReportRow], primary_only: bool) -> list[tuple[str, str, bool]]:
    """(task, metric, higher is better) for the tables, in first-seen order."""
    columns: list[tuple[str, str, bool]] = []
    for row in rows:
        for run in row.finished:
            for task, metrics in (run.metrics or {}).items():
                names = list(metrics)[:1] if primary_only else list(metrics)
                for metric in names:
                    up = bool((run.directions or {}).get(task, {}).get(metric, True))
                    if (task, metric, up) not in columns:
                        columns.append((task, metric, up))
    return columns


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None where undefined)."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else None


def _cell(values: Sequence[float], digits: int, scale: float = 1.0) -> str:
    mean, std = mean_std([v * scale for v in values])
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _metric(task: str, metric: str) -> Any:
    return lambda run: (run.metrics or {}).get(task, {}).get(metric)


def markdown_table(rows: Sequence[ReportRow], group_by: Sequence[str]) -> str:
    """The Table-5-style Markdown table; see the module doc."""
    columns = metric_columns(rows, primary_only=True)
    best: dict[int, float] = {}
    for i, (task, metric, up) in enumerate(columns):
        means = [
            m for m in (mean_std(r.values(_metric(task, metric)))[0] for r in rows) if m is not None
        ]
        if means:
            best[i] = max(means) if up else min(means)
    header = ["run", *group_by]
    header += [f"{t} {m} {'↑' if up else '↓'}" for t, m, up in columns]
    header += ["param. sp. %", *(name for _, name in EFFICIENCY_COLUMNS), "runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [row.label, *row.keys.values()]
        for i, (task, metric, _) in enumerate(columns):
            values = row.values(_metric(task, metric))
            text = _cell(values, 4)
            mean = mean_std(values)[0]
            if mean is not None and i in best and math.isclose(mean, best[i], rel_tol=1e-12):
                text = f"**{text}**"
            cells.append(text)
        cells.append(_cell(row.values(lambda r: (r.sparsity or {}).get("parameter")), 1, 100.0))
        for key, _ in EFFICIENCY_COLUMNS:
            cells.append(_cell(row.values(lambda r, k=key: (r.efficiency or {}).get(k)), 2))
        cells.append(f"{len(row.finished)}/{len(row.runs)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: Sequence[ReportRow], group_by: Sequence[str], path: Path) -> None:
    """Every metric, sparsity and efficiency figure of every row: mean and std columns."""
    columns = metric_columns(rows, primary_only=False)
    figures: list[tuple[str, Any]] = [(f"{t}.{m}", _metric(t, m)) for t, m, _ in columns]
    figures += [
        ("sparsity.parameter", lambda r: (r.sparsity or {}).get("parameter")),
        ("sparsity.group", lambda r: (r.sparsity or {}).get("group")),
    ]
    figures += [(k, lambda r, k=k: (r.efficiency or {}).get(k)) for k, _ in EFFICIENCY_COLUMNS]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["run", *group_by, "finished", "runs"]
        for name, _ in figures:
            header += [f"{name}.mean", f"{name}.std"]
        writer.writerow(header)
        for row in rows:
            line: list[Any] = [row.label, *row.keys.values(), len(row.finished), len(row.runs)]
            for _, getter in figures:
                mean, std = mean_std(row.values(getter))
                line += ["" if mean is None else mean, "" if std is None else std]
            writer.writerow(line)


def plot_metrics_vs_sparsity(rows: Sequence[ReportRow], path: Path) -> None:
    """One panel per task metric: its mean ± std against % parameter sparsity, a point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = metric_columns(rows, primary_only=True)
    if not columns:
        return
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.8), squeeze=False)
    colours = plt.get_cmap("tab20")
    markers = "osD^v<>pPX*h"
    for ax, (task, metric, up) in zip(axes[0], columns, strict=True):
        for index, row in enumerate(rows):
            xs = row.values(lambda r: (r.sparsity or {}).get("parameter"))
            ys = row.values(_metric(task, metric))
            (x, xerr), (y, yerr) = mean_std([100 * v for v in xs]), mean_std(ys)
            if x is None or y is None:
                continue
            name = " / ".join([row.label, *(v for v in row.keys.values() if v != "—")])
            style = {"fmt": markers[index % len(markers)], "color": colours(index % 20)}
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, capsize=3, label=name, **style)
        ax.set_xlabel("% parameter sparsity of the backbone")
        ax.set_ylabel(f"{metric} {'↑' if up else '↓'}")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * math.ceil(len(labels) / 4), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    runs: Sequence[RunRow],
    directory: Path,
    group_by: Sequence[str],
    hidden_stages: set[str] = frozenset(),
) -> str:
    """Write ``report.md``, ``report.csv`` and ``metrics_vs_sparsity.png``; return the table."""
    rows = group_rows(runs, group_by, hidden_stages)
    table = markdown_table(rows, group_by)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.md").write_text(table + "\n")
    write_csv(rows, group_by, directory / "report.csv")
    plot_metrics_vs_sparsity(rows, directory / "metrics_vs_sparsity.png")
    return table
