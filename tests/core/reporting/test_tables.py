"""The results table, its cells computed from the numbers given."""

from sparsekit.reporting.tables import results_table
from sparsekit.runs.store import Result


def _result(metrics, group, parameter, lam):
    return Result(
        config={"lam": lam},
        tasks=list(metrics),
        metrics=metrics,
        metric_directions={"segmentation": {"miou": True}, "depth": {"mae": False}},
        sparsity={"group": group, "parameter": parameter},
        layers=[],
        profile=[],
        timings={},
    )


def test_results_table_prints_metrics_and_sparsity_in_percent():
    rows = [
        ("dense", _result({"segmentation": {"miou": 0.51234}, "depth": {"mae": 0.3}}, 0, 0, 0.0)),
        ("gl", _result({"segmentation": {"miou": 0.4}}, 0.375, 0.612, 0.3)),
    ]
    lines = results_table(rows).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "run",
        "segmentation/miou ↑",
        "depth/mae ↓",
        "λ",
        "group sp. %",
        "param. sp. %",
    ]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0] == ["dense", "0.5123", "0.3000", "0", "0.0", "0.0"]
    assert cells[1] == ["gl", "0.4000", "—", "0.3", "37.5", "61.2"]
