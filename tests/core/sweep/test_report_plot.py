"""The sweep plot: curves over λ, legends naming the fields, 12+ distinct series, error bars."""

from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer

from sparsekit.sweep.report import (
    ReportRow,
    group_rows,
    metrics_vs_sparsity_figure,
    series_colours,
    write_report,
)
from sparsekit.sweep.spec import RunSpec
from sparsekit.sweep.store import ResultStore


def _store(tmp_path, optimisers, lams, seeds=(0, 1)):
    store = ResultStore(tmp_path / "sweep.db")
    for opt in optimisers:
        for lam in lams:
            for seed in seeds:
                keys = {"optimizer.name": opt, "lam": lam}
                config = {"optimizer": {"name": opt}, "lam": lam}
                spec = RunSpec(f"{opt}-{lam}-{seed}", "main", "main", seed, keys, config)
                store.register(spec)
                store.mark_finished(
                    spec.run_id,
                    {
                        "metrics": {"seg": {"miou": 0.5 - lam / 10 + seed / 100}},
                        "directions": {"seg": {"miou": True}},
                        "sparsity": {"parameter": min(0.9, lam / 2 + seed / 50), "group": 0.0},
                        "efficiency": {"speedup": 1.0 + lam + seed / 10},
                    },
                )
    return store


def test_legends_name_the_field_error_bars_everywhere_and_a_speedup_panel(tmp_path):
    store = _store(tmp_path, ["adam_prox", "sgd_prox"], [0.2])
    rows = group_rows(store.rows(), ["optimizer.name", "lam"])
    fig = metrics_vs_sparsity_figure(rows)
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert labels == ["main / lam=0.2", "main / optimizer.name=sgd_prox / lam=0.2"]
    assert [ax.get_title() for ax in fig.axes] == ["seg", "measured speed-up"]
    for ax in fig.axes:  # every mean over seeds has its spread drawn, on both axes
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == 2 and all(c.has_xerr and c.has_yerr for c in bars)


def test_twelve_and_more_series_get_distinct_colours_and_markers(tmp_path):
    assert len({to_hex(c) for c in series_colours(20)}) == 20
    neighbours = series_colours(14)
    assert all(to_hex(a) != to_hex(b) for a, b in zip(neighbours, neighbours[1:], strict=False))
    optimisers = [f"opt{i}" for i in range(13)]
    store = _store(tmp_path, optimisers, [0.1, 0.4])
    write_report(store.rows(), tmp_path, ["optimizer.name", "lam"], plot_format="svg")
    assert (tmp_path / "metrics_vs_sparsity.svg").read_text().startswith("<?xml")
    fig = metrics_vs_sparsity_figure(group_rows(store.rows(), ["optimizer.name", "lam"]))
    colours = [to_hex(c.lines[0].get_color()) for c in fig.axes[0].containers]
    assert len(colours) == 13 and len(set(colours)) == 13
    annotations = {t.get_text() for t in fig.axes[0].texts}
    assert annotations == {"lam=0.1", "lam=0.4"}


def test_report_row_is_importable():
    assert ReportRow("main", {}).runs == []
