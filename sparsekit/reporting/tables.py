"""Plain-text tables of results."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from sparsekit.registry import KINDS, get_registry
from sparsekit.reporting.columns import EFFICIENCY_COLUMNS, arrow, record_columns
from sparsekit.runs.record import RunRecord


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _lam_cell(result: RunRecord) -> str:
    lam = result.final_lam
    if lam is None:
        return "—"
    if isinstance(lam, list):
        return f"{sum(lam) / len(lam):.3g} (mean of {len(lam)})"
    learned = result.config.get("lam") == "learned"
    return f"{lam:.3g}" + (" (learned)" if learned else "")


def results_table(rows: Sequence[tuple[str, RunRecord]]) -> str:
    """One row per labelled result: every task's metrics, λ, % group and % parameter sparsity.

    Columns are the union of the results' task metrics, in first-seen order. When any result
    carries efficiency figures, three columns follow: the compression ratio CR, the FLOPs
    speed-up Sp and the measured speed-up (see :mod:`sparsekit.nn.efficiency`).
    """
    columns = record_columns(result for _, result in rows)
    header = ["run"] + [f"{t}/{m} {arrow(up)}" for t, m, up in columns]
    header += ["λ", "group sp. %", "param. sp. %"]
    with_efficiency = any(result.efficiency for _, result in rows)
    if with_efficiency:
        header += [title for _, title in EFFICIENCY_COLUMNS]
    body = []
    for label, result in rows:
        cells = [label]
        for task, metric, _ in columns:
            value = result.metrics.get(task, {}).get(metric)
            cells.append("—" if value is None else f"{value:.4f}")
        cells += [
            _lam_cell(result),
            f"{100 * result.sparsity['group']:.1f}",
            f"{100 * result.sparsity['parameter']:.1f}",
        ]
        if with_efficiency:
            cells += [_ratio(result.efficiency.get(key)) for key, _ in EFFICIENCY_COLUMNS]
        body.append(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *map(line, body)])


def kinds_markdown() -> str:
    """The plugin kinds as Markdown: per kind its hook, interface, built-in components and the
    interface's docstring, the kind's contract (``sparsekit plugins --markdown``)."""
    registry = get_registry()
    parts = []
    for kind in KINDS.values():
        rows = [r for r in registry.rows(kind.name) if r.distribution == "sparsekit"]
        default = next((r.name for r in rows if registry.get(kind.name, r.name).is_default), None)
        names = ", ".join(f"`{r.name}`" + (" (default)" if r.name == default else "") for r in rows)
        contract = inspect.cleandoc(kind.interface.__doc__ or "")
        contract = "\n".join(
            line for line in contract.splitlines() if not line.startswith(f"Kind ``{kind.name}``")
        ).strip()
        parts.append(
            f"### `{kind.name}`\n\n"
            f"Hook `{kind.hook}`, interface `sparsekit.interfaces.{kind.interface.__name__}`; "
            f"built-in components: {names or 'none'}.\n\n"
            f"{contract}\n"
        )
    return "\n".join(parts)
