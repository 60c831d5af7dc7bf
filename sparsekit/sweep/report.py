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
import dataclasses
import io
import json
import math
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sparsekit.reporting.columns import EFFICIENCY_COLUMNS, Column, arrow, metric_columns
from sparsekit.sweep.store import RunRow


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


def report_columns(rows: Sequence[ReportRow], primary_only: bool) -> list[Column]:
    """(task, metric, higher is better) of the finished runs, in first-seen order."""
    return metric_columns(
        ((run.metrics or {}, _directions(run)) for row in rows for run in row.finished),
        primary_only,
    )


def _directions(run: RunRow) -> dict[str, dict[str, bool]]:
    """A run's metric directions, higher-is-better where none was stored."""
    stored = run.directions or {}
    return {
        task: {m: bool(stored.get(task, {}).get(m, True)) for m in metrics}
        for task, metrics in (run.metrics or {}).items()
    }


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
    columns = report_columns(rows, primary_only=True)
    best: dict[int, float] = {}
    for i, (task, metric, up) in enumerate(columns):
        means = [
            m for m in (mean_std(r.values(_metric(task, metric)))[0] for r in rows) if m is not None
        ]
        if means:
            best[i] = max(means) if up else min(means)
    header = ["run", *group_by]
    header += [f"{t} {m} {arrow(up)}" for t, m, up in columns]
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
    columns = report_columns(rows, primary_only=False)
    figures: list[tuple[str, Any]] = [(f"{t}.{m}", _metric(t, m)) for t, m, _ in columns]
    figures += [
        ("sparsity.parameter", lambda r: (r.sparsity or {}).get("parameter")),
        ("sparsity.group", lambda r: (r.sparsity or {}).get("group")),
    ]
    figures += [(k, lambda r, k=k: (r.efficiency or {}).get(k)) for k, _ in EFFICIENCY_COLUMNS]
    with io.StringIO(newline="") as handle:
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
        replace_file(path, handle.getvalue().encode())


def replace_file(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file moved into place."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


#: The sweep field that traces a curve: rows differing only in it are drawn as one line.
CURVE_KEY = "lam"


def _series(rows: Sequence[ReportRow]) -> dict[str, list[ReportRow]]:
    """Rows grouped into curves: same label and keys except :data:`CURVE_KEY`.

    A curve is named by its label and the keys on which it departs from the most common value
    of that key among the rows (what every row shares says nothing in a legend).
    """
    keys = sorted({k for row in rows for k in row.keys if k != CURVE_KEY})
    usual = {k: Counter(row.keys.get(k, "—") for row in rows).most_common(1)[0][0] for k in keys}
    series: dict[str, list[ReportRow]] = {}
    for row in rows:
        parts = [f"{k}={row.keys[k]}" for k in keys if row.keys.get(k, "—") not in ("—", usual[k])]
        series.setdefault(" / ".join([row.label, *parts]), []).append(row)
    # A "curve" of one row is a point: its legend names its λ too.
    return {
        (f"{name} / {CURVE_KEY}={members[0].keys[CURVE_KEY]}" if _single_lam(members) else name): (
            members
        )
        for name, members in series.items()
    }


def _single_lam(members: Sequence[ReportRow]) -> bool:
    return len(members) == 1 and members[0].keys.get(CURVE_KEY, "—") != "—"


def _robust_limits(values: Sequence[float]) -> tuple[float, float] | None:
    """y-limits that keep a diverged run (a metric off by orders of magnitude) from flattening
    every other point: the spread of the values between their 10th and 90th percentiles,
    widened five-fold around the median. None when there is nothing to limit."""
    if len(values) < 4:
        return None
    ordered = sorted(values)
    low, mid, high = (ordered[round(q * (len(ordered) - 1))] for q in (0.1, 0.5, 0.9))
    spread = max(high - low, 1e-12)
    lo, hi = max(ordered[0], mid - 5 * spread), min(ordered[-1], mid + 5 * spread)
    if lo == ordered[0] and hi == ordered[-1]:
        return None
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def plot_metrics_vs_sparsity(rows: Sequence[ReportRow], path: Path) -> None:
    """Write :func:`metrics_vs_sparsity_figure` of ``rows`` to ``path`` (PNG, PDF or SVG by its
    suffix); nothing when no row has a metric."""
    fig = metrics_vs_sparsity_figure(rows)
    if fig is not None:
        with io.BytesIO() as buffer:
            fig.savefig(buffer, format=path.suffix.lstrip("."), dpi=110)
            replace_file(path, buffer.getvalue())
        plt.close(fig)


def metrics_vs_sparsity_figure(rows: Sequence[ReportRow]) -> Any:
    """One panel per task's primary metric against % parameter sparsity, and one of the
    measured speed-up, each point the mean over seeds with ± std error bars on both axes.

    Rows that differ only in λ form one curve, drawn through their points in order of sparsity
    and annotated with ``lam=…``; every other row is a single point. The legend names each
    curve by its stage label and the fields that set it apart (``optimizer.name=sgd_prox``).
    """
    columns = report_columns(rows, primary_only=True)
    if not columns:
        return None
    panels = [(f"{task}", metric, up, _metric(task, metric)) for task, metric, up in columns]
    if any(row.values(_speedup) for row in rows):
        panels.append(("measured speed-up", "speed-up ×", True, _speedup))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, metric, up, getter) in zip(axes[0], panels, strict=True):
        means = _plot_series(ax, rows, getter)
        limits = _robust_limits(means)
        if limits is not None:
            ax.set_ylim(*limits)
            off = sum(1 for m in means if not limits[0] <= m <= limits[1])
            ax.set_title(f"{title} ({off} off-scale)", fontsize=10)
        else:
            ax.set_title(title)
        ax.set_xlabel("% parameter sparsity of the backbone")
        ax.set_ylabel(metric if getter is _speedup else f"{metric} {arrow(up)}")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    columns_in_legend = 3 if len(labels) <= 9 else 4
    fig.legend(handles, labels, loc="lower center", ncol=columns_in_legend, fontsize=7)
    rows_in_legend = math.ceil(len(labels) / columns_in_legend)
    fig.tight_layout(rect=(0, min(0.5, 0.06 + 0.035 * rows_in_legend), 1, 1))
    return fig


def _speedup(run: RunRow) -> float | None:
    return (run.efficiency or {}).get("speedup")


def series_colours(count: int) -> list[Any]:
    """``count`` colours that neighbours in a legend can tell apart: tab10, or for more
    series tab20's dark shades first, then its light ones."""
    if count <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(count)]
    tab20 = plt.get_cmap("tab20")
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    return [tab20(order[i % 20]) for i in range(count)]


def _plot_series(ax: Any, rows: Sequence[ReportRow], getter: Any) -> list[float]:
    """Every series of ``rows`` on ``ax`` for one figure of a run; returns the means drawn."""
    series = _series(rows)
    colours = series_colours(len(series))
    markers = "osD^v<>pPX*hH8d"
    means: list[float] = []
    for index, (name, members) in enumerate(series.items()):
        points = []
        for row in members:
            xs = row.values(lambda r: (r.sparsity or {}).get("parameter"))
            (x, xerr), (y, yerr) = mean_std([100 * v for v in xs]), mean_std(row.values(getter))
            if x is not None and y is not None:
                points.append((x, xerr, y, yerr, row.keys.get(CURVE_KEY)))
        if not points:
            continue
        means.extend(p[2] for p in points)
        points.sort(key=lambda p: p[0])
        ax.errorbar(
            [p[0] for p in points],
            [p[2] for p in points],
            xerr=[p[1] or 0.0 for p in points],
            yerr=[p[3] or 0.0 for p in points],
            fmt=markers[index % len(markers)] + ("-" if len(points) > 1 else ""),
            color=colours[index],
            capsize=3,
            markersize=4,
            linewidth=1,
            label=name,
        )
        for x, _, y, _, lam in points if len(points) > 1 else []:
            if lam is not None:
                ax.annotate(
                    f"{CURVE_KEY}={lam}",
                    (x, y),
                    fontsize=6,
                    color=colours[index],
                    xytext=(2, 3),
                    textcoords="offset points",
                )
    return means


def with_split_metrics(runs: Sequence[RunRow], split: str) -> list[RunRow]:
    """The runs with their metrics taken from ``split``: ``test`` as stored, or ``val``.

    Validation metrics are read from each run directory's ``result.json`` (``val_metrics``); a
    run without them keeps no metrics, so it counts in ``runs`` but in no metric cell.
    """
    if split == "test":
        return list(runs)
    if split != "val":
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    out = []
    for row in runs:
        metrics = None
        path = Path(row.run_dir) / "result.json" if row.run_dir else None
        if row.status == "finished" and path is not None and path.is_file():
            metrics = json.loads(path.read_text(encoding="utf-8")).get("val_metrics") or None
        out.append(dataclasses.replace(row, metrics=metrics))
    return out


def write_report(
    runs: Sequence[RunRow],
    directory: Path,
    group_by: Sequence[str],
    hidden_stages: set[str] = frozenset(),
    split: str = "test",
    plot_format: str = "png",
) -> str:
    """Write ``report.md``, ``report.csv`` and ``metrics_vs_sparsity.png`` (each replaced whole,
    never left half-written); return the table.

    With ``split="val"`` the metrics are the validation split's and the files are named
    ``report_val.md``, ``report_val.csv`` and ``metrics_vs_sparsity_val.png``. ``plot_format``
    (``png``, ``pdf`` or ``svg``) is the plot's file type.
    """
    rows = group_rows(with_split_metrics(runs, split), group_by, hidden_stages)
    table = markdown_table(rows, group_by)
    suffix = "" if split == "test" else f"_{split}"
    directory.mkdir(parents=True, exist_ok=True)
    replace_file(directory / f"report{suffix}.md", (table + "\n").encode())
    write_csv(rows, group_by, directory / f"report{suffix}.csv")
    plot_metrics_vs_sparsity(rows, directory / f"metrics_vs_sparsity{suffix}.{plot_format}")
    return table
