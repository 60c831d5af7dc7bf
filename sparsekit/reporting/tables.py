"""Plain-text tables of results."""

from __future__ import annotations

from collections.abc import Sequence

from sparsekit.reporting.result import Result


def _arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _efficiency_cells(result: Result) -> list[str]:
    eff = result.efficiency
    return [_ratio(eff.get("cr")), _ratio(eff.get("sp")), _ratio(eff.get("speedup"))]


def final_lam(result: Result) -> float | list[float] | None:
    """The λ a result's backbone was trained with: the learned λ after the last meta-step, the
    fixed λ, or, for a fine-tuned result, that of the run it was fine-tuned from; None if unknown
    or if the run had no penalty.
    """
    if result.lam_history:
        return result.lam_history[-1]
    parent_lam = result.extra.get("finetune", {}).get("parent_lam")
    if parent_lam is not None:
        return parent_lam
    if result.config.get("penalty") is None:  # a scheduled or unpenalised run has no λ
        return None
    lam = result.config.get("lam")
    return float(lam) if isinstance(lam, int | float) else None


def _lam_cell(result: Result) -> str:
    lam = final_lam(result)
    if lam is None:
        return "—"
    if isinstance(lam, list):
        return f"{sum(lam) / len(lam):.3g} (mean of {len(lam)})"
    learned = result.config.get("lam") == "learned"
    return f"{lam:.3g}" + (" (learned)" if learned else "")


def results_table(rows: Sequence[tuple[str, Result]]) -> str:
    """One row per labelled result: every task's metrics, λ, % group and % parameter sparsity.

    Columns are the union of the results' task metrics, in first-seen order. When any result
    carries efficiency figures, three columns follow: the compression ratio CR, the FLOPs
    speed-up Sp and the measured speed-up (see :mod:`sparsekit.engine.efficiency`).
    """
    columns: list[tuple[str, str, bool]] = []
    for _, result in rows:
        for task, metrics in result.metrics.items():
            for metric in metrics:
                key = (task, metric, result.metric_directions[task][metric])
                if key not in columns:
                    columns.append(key)
    header = ["run"] + [f"{t}/{m} {_arrow(up)}" for t, m, up in columns]
    header += ["λ", "group sp. %", "param. sp. %"]
    with_efficiency = any(result.efficiency for _, result in rows)
    if with_efficiency:
        header += ["CR", "Sp (FLOPs)", "speed-up"]
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
            cells += _efficiency_cells(result)
        body.append(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *map(line, body)])
