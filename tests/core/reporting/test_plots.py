"""The meta-sparsity plots draw the λ trajectory, the sparsity profile and the meta losses."""

from __future__ import annotations

import pytest

from sparsekit.reporting import plots

PROFILE = [
    {"step": 2, "group": 0.1, "parameter": 0.25},
    {"step": 4, "group": 0.3, "parameter": 0.5},
]


@pytest.fixture
def figures(monkeypatch):
    """Every figure the plotting functions close, kept for inspection."""
    closed = []
    real_close = plots.plt.close

    def keep(fig):
        closed.append(fig)
        real_close(fig)

    monkeypatch.setattr(plots.plt, "close", keep)
    return closed


def lines(ax):
    return [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()]


def test_lambda_plot_draws_the_trajectory_and_the_sparsity_profile(tmp_path, figures):
    plots.plot_lambda_and_sparsity([0.9, 0.7, 0.5, 0.4], PROFILE, tmp_path / "lam.png")
    assert (tmp_path / "lam.png").stat().st_size > 0
    ax_lam, ax_sparsity = figures[-1].axes
    assert lines(ax_lam) == [([1, 2, 3, 4], [0.9, 0.7, 0.5, 0.4])]
    assert lines(ax_sparsity) == [
        ([2, 4], [pytest.approx(10.0), pytest.approx(30.0)]),
        ([2, 4], [pytest.approx(25.0), pytest.approx(50.0)]),
    ]


def test_per_layer_lambda_plot_draws_each_layer_and_the_mean(tmp_path, figures):
    history = [[0.2, 0.6], [0.1, 0.5], [0.3, 0.3]]
    plots.plot_lambda_and_sparsity(history, PROFILE, tmp_path / "lam.png")
    drawn = lines(figures[-1].axes[0])
    assert drawn[0] == ([1, 2, 3], [0.2, 0.1, 0.3])
    assert drawn[1] == ([1, 2, 3], [0.6, 0.5, 0.3])
    assert drawn[2][1] == [pytest.approx(0.4), pytest.approx(0.3), pytest.approx(0.3)]


def test_meta_loss_plot_draws_support_and_query_losses(tmp_path, figures):
    plots.plot_meta_losses([3.0, 2.0], [2.5, 1.5], tmp_path / "losses.png")
    assert lines(figures[-1].axes[0]) == [([1, 2], [3.0, 2.0]), ([1, 2], [2.5, 1.5])]


def test_lambda_diagnostics_draw_the_gradient_its_sign_fraction_threshold_and_norms(
    tmp_path, figures
):
    grads = [0.5, -0.25, 0.125, 2.0] * 13  # 52 meta-steps: 3 of every 4 are positive
    extra = {
        "lam_grad": grads,
        "group_norm_quantiles": [[0.01, 0.02, 0.04], [0.005, 0.01, 0.03]],
        "outer_threshold": [1e-3, 8e-4],
    }
    plots.plot_lambda_diagnostics([0.9] * 52, extra, PROFILE, tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 0
    ax_lam, ax_grad, ax_norms, ax_sparsity, twin = figures[-1].axes
    assert lines(ax_grad) == [(list(range(1, 53)), grads)]
    ((_, fractions),) = lines(twin)
    # Windows of 25 meta-steps; the negatives are the steps 4k + 2: six of them in steps 1-25,
    # seven in 26-50 and none in 51-52.
    expected = [19 / 25, 18 / 25, 1.0]
    assert fractions[: len(expected)] == pytest.approx(expected)
    drawn = lines(ax_norms)
    assert [y for _, y in drawn] == [[0.01, 0.005], [0.02, 0.01], [0.04, 0.03], [1e-3, 8e-4]]
    assert lines(ax_sparsity) == [([2, 4], [pytest.approx(25.0), pytest.approx(50.0)])]


def test_training_profile_shows_loss_beside_sparsity_markers_lambda_and_small_sparsity(
    tmp_path, figures
):
    profile = [
        {
            "step": 10,
            "train_loss": 2.0,
            "val_loss": 2.5,
            "lam": 0.05,
            "group": 0.0,
            "parameter": 0.01,
        },
        {
            "step": 20,
            "train_loss": 1.5,
            "val_loss": 2.0,
            "lam": 0.05,
            "group": 0.02,
            "parameter": 0.03,
        },
        {
            "step": 25,
            "train_loss": 1.2,
            "val_loss": 1.8,
            "lam": 0.0,
            "group": 0.02,
            "parameter": 0.03,
        },
    ]
    plots.plot_sparsity_profile(profile, tmp_path / "profile.png")
    fig = figures[-1]
    ax_sparsity, ax_loss = fig.axes[:2]
    assert fig._suptitle.get_text() == "Training profile (λ = 0.05, then 0 while debiasing)"
    assert [line.get_marker() for line in ax_sparsity.get_lines()[:2]] == ["o", "o"]
    assert ax_sparsity.get_ylim()[1] == pytest.approx(3.75)  # 3 % stays visible, not 0–100
    assert lines(ax_loss) == [([10, 20, 25], [2.0, 1.5, 1.2]), ([10, 20, 25], [2.5, 2.0, 1.8])]
    long = [{**profile[0], "step": s} for s in range(1, 200)]
    plots.plot_sparsity_profile(long, tmp_path / "long.png")
    assert figures[-1].axes[0].get_lines()[0].get_marker() in ("None", "", None)
    assert plots.sparsity_limit([10.0, 80.0]) == 100.0
    assert plots.lambda_title([0.1, 0.2, 0.3]) == "λ 0.1 → 0.3"
    assert plots.lambda_title([None, None]) == "no penalty"


def test_report_plots_take_the_file_type_from_the_name(tmp_path):
    from sparsekit.runs.record import RunRecord

    record = RunRecord(
        config={},
        tasks=["seg"],
        metrics={"seg": {"miou": 0.5}},
        metric_directions={"seg": {"miou": True}},
        sparsity={"group": 0.1, "parameter": 0.2},
        layers=[],
        profile=[],
        timings={},
        efficiency={"cr": 1.25, "speedup": 1.1},
    )
    for suffix, magic in ((".pdf", b"%PDF"), (".svg", b"<?xml"), (".png", b"\x89PNG")):
        path = tmp_path / f"plot{suffix}"
        plots.plot_metrics_vs_efficiency([("run", record)], path)
        assert path.read_bytes().startswith(magic)
