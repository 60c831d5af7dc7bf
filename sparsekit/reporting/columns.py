"""The metric columns every table and plot shows, collected one way.

A column is ``(task, metric, higher_is_better)``; columns come in the order they are first seen
over the results, and a task's primary metric is the first of its metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Column = tuple[str, str, bool]

#: The efficiency figures of a result, as (key in ``result.efficiency``, column title).
EFFICIENCY_COLUMNS = (("cr", "CR"), ("sp", "Sp (FLOPs)"), ("speedup", "speed-up"))


def arrow(higher_is_better: bool) -> str:
    """↑ where higher is better, ↓ where lower is."""
    return "↑" if higher_is_better else "↓"


def metric_columns(
    results: Iterable[tuple[Mapping[str, Mapping[str, Any]], Mapping[str, Mapping[str, bool]]]],
    primary_only: bool = False,
) -> list[Column]:
    """The columns of ``(metrics, metric_directions)`` pairs, in first-seen order.

    Args:
        results: each result's ``{task: {metric: value}}`` and ``{task: {metric: higher}}``.
        primary_only: one column per task, its first (primary) metric.
    """
    columns: list[Column] = []
    for metrics, directions in results:
        for task, values in metrics.items():
            names = list(values)[:1] if primary_only else list(values)
            for metric in names:
                key = (task, metric, bool(directions[task][metric]))
                if key not in columns:
                    columns.append(key)
    return columns


def record_columns(records: Iterable[Any], primary_only: bool = False) -> list[Column]:
    """:func:`metric_columns` of run records (anything with ``metrics``, ``metric_directions``)."""
    return metric_columns(((r.metrics, r.metric_directions) for r in records), primary_only)
