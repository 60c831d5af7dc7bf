"""Plots of a run (matplotlib; PNG in a run directory, or PNG, PDF or SVG by file name)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sparsekit.reporting.columns import arrow, record_columns  # noqa: E402

#: Curves with at most this many points get a marker on each.
MARKER_POINTS = 30


def _marker(count: int) -> str:
    return "o" if count <= MARKER_POINTS else ""


def sparsity_limit(percentages: Sequence[float]) -> float:
    """The top of a % sparsity axis: 100, or less so that small sparsities stay visible."""
    top = max(percentages, default=0.0)
    if top >= 50:
        return 100.0
    return max(1.0, min(100.0, 1.25 * top))


def lambda_title(lams: Sequence[float | None]) -> str:
    """``λ = 0.05`` for a fixed λ, ``λ 0.1 → 0.3`` for one that changed, ``no penalty``."""
    values = [lam for lam in lams if lam is not None]
    if not values:
        return "no penalty"
    if len(set(values)) == 1:
        return f"λ = {values[0]:.3g}"
    penalised = [lam for lam in values if lam != 0]
    if values[-1] == 0 and len(set(penalised)) == 1 and values.index(0) == len(penalised):
        return f"λ = {penalised[0]:.3g}, then 0 while debiasing"
    return f"λ {values[0]:.3g} → {values[-1]:.3g}"


def plot_sparsity_profile(profile: Sequence[dict[str, float]], path: Path) -> None:
    """The training profile: backbone sparsity (%) and λ beside the training and validation
    loss, at every evaluation; λ in the title."""
    steps = [row["step"] for row in profile]
    marker = _marker(len(steps))
    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    group = [100 * row["group"] for row in profile]
    parameter = [100 * row["parameter"] for row in profile]
    ax.plot(steps, group, marker=marker, markersize=3, label="group sparsity")
    ax.plot(steps, parameter, marker=marker, markersize=3, label="parameter sparsity")
    ax.set_xlabel("step")
    ax.set_ylabel("% of backbone")
    ax.set_ylim(0, sparsity_limit(group + parameter))
    ax.grid(alpha=0.3)
    lams = [row.get("lam") for row in profile]
    if len({lam for lam in lams if lam is not None}) > 1:
        twin = ax.twinx()
        twin.plot(steps, lams, color="tab:red", linestyle="--", marker=marker, markersize=2)
        twin.set_ylabel("λ (dashed)", color="tab:red")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Backbone sparsity")
    for key, label in (("train_loss", "training loss"), ("val_loss", "validation loss")):
        values = [row.get(key) for row in profile]
        if any(v is not None for v in values):
            ax_loss.plot(steps, values, marker=marker, markersize=3, label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("combined loss")
    ax_loss.set_title("Loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"Training profile ({lambda_title(lams)})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_layer_channels(layers: Sequence[dict[str, Any]], path: Path) -> None:
    """Active input channels per backbone conv layer, before and after training."""
    names = [row["name"].removeprefix("backbone.").removesuffix(".weight") for row in layers]
    x = range(len(layers))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(layers) + 2), 4))
    ax.bar(
        [i - 0.2 for i in x],
        [row["active_before"] for row in layers],
        width=0.4,
        label="before",
        color="tab:gray",
    )
    ax.bar(
        [i + 0.2 for i in x],
        [row["active_after"] for row in layers],
        width=0.4,
        label="after",
        color="tab:blue",
    )
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_ylabel("active input channels")
    kept = sum(row["active_after"] for row in layers)
    total = sum(row["active_before"] for row in layers)
    ax.set_title(f"Active input channels per backbone conv ({kept} of {total} kept)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_metrics_vs_efficiency(rows: Sequence[tuple[str, Any]], path: Path) -> None:
    """Write :func:`metrics_vs_efficiency_figure` of ``rows`` to the PNG ``path``."""
    fig = metrics_vs_efficiency_figure(rows)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def metrics_vs_efficiency_figure(rows: Sequence[tuple[str, Any]]) -> Figure:
    """Every task metric against the compression ratio (top) and measured speed-up (bottom).

    One column per task metric and one labelled point per run, as in Meta-Sparsity's Fig. 5;
    runs without a finite CR or speed-up are left out of that row.

    References:
        Upadhyay et al., "Meta-Sparsity: Learning Optimal Sparse Structures in Multi-task
        Networks through Meta-learning" (Fig. 5).

    Args:
        rows: ``(label, Result)`` pairs.

    Returns:
        The figure, axes ``[row][column]`` (row 0: CR, row 1: measured speed-up).
    """
    columns = record_columns(result for _, result in rows)
    axes_x = (("cr", "compression ratio CR"), ("speedup", "measured speed-up"))
    fig, axes = plt.subplots(
        2, max(len(columns), 1), figsize=(3.2 * max(len(columns), 1), 6), squeeze=False
    )
    for col, (task, metric, higher) in enumerate(columns):
        for row, (key, xlabel) in enumerate(axes_x):
            ax = axes[row][col]
            for label, result in rows:
                x = result.efficiency.get(key)
                y = result.metrics.get(task, {}).get(metric)
                if x is None or y is None or not math.isfinite(x):
                    continue
                ax.scatter([x], [y], color="tab:blue")
                ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{task}/{metric} {arrow(higher)}")
            ax.grid(alpha=0.3)
    fig.suptitle("Task metrics against compression and speed-up")
    fig.tight_layout()
    return fig


def plot_lambda_and_sparsity(
    lam_history: Sequence[float | Sequence[float]],
    profile: Sequence[dict[str, float]],
    path: Path,
) -> None:
    """λ over meta-training beside the backbone's sparsity profile (Meta-Sparsity, Fig. 6c).

    Args:
        lam_history: λ after every meta-step: a float, or one value per backbone layer (drawn as
            thin lines around their mean).
        profile: the evaluation rows (step, group and parameter sparsity).
        path: the PNG to write.
    """
    fig, (ax_lam, ax_sparsity) = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = list(range(1, len(lam_history) + 1))
    per_layer = bool(lam_history) and not isinstance(lam_history[0], int | float)
    if per_layer:
        layers = list(zip(*lam_history, strict=True))  # type: ignore[misc]
        for values in layers:
            ax_lam.plot(steps, values, color="tab:red", alpha=0.25, linewidth=0.8)
        means = [sum(v) / len(v) for v in lam_history]  # type: ignore[arg-type]
        ax_lam.plot(steps, means, color="tab:red", label="mean over layers")
        ax_lam.legend(loc="best")
    else:
        ax_lam.plot(steps, lam_history, color="tab:red")
    ax_lam.set_xlabel("meta-step")
    ax_lam.set_ylabel("λ")
    ax_lam.set_title("λ over meta-training")
    ax_lam.grid(alpha=0.3)
    rows = [row["step"] for row in profile]
    group = [100 * row["group"] for row in profile]
    parameter = [100 * row["parameter"] for row in profile]
    marker = _marker(len(rows))
    ax_sparsity.plot(rows, group, marker=marker, markersize=3, label="group sparsity")
    ax_sparsity.plot(rows, parameter, marker=marker, markersize=3, label="parameter sparsity")
    ax_sparsity.set_xlabel("meta-step")
    ax_sparsity.set_ylabel("% of backbone")
    ax_sparsity.set_ylim(0, sparsity_limit(group + parameter))
    ax_sparsity.set_title("Backbone sparsity")
    ax_sparsity.grid(alpha=0.3)
    ax_sparsity.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_meta_losses(support: Sequence[float], query: Sequence[float], path: Path) -> None:
    """Meta-train (support, before adaptation) and query (after adaptation) loss per meta-step."""
    steps = list(range(1, len(query) + 1))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    style = {"marker": _marker(len(steps)), "markersize": 3, "alpha": 0.8}
    ax.plot(steps, support, label="support, before adaptation", **style)
    ax.plot(steps, query, label="query, after adaptation", **style)
    ax.set_xlabel("meta-step")
    ax.set_ylabel("episode loss")
    ax.set_title("Meta-training losses")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_frontier(
    curve: Sequence[tuple[str, Any]], points: Sequence[tuple[str, Any]], path: Path
) -> None:
    """Each task's primary metric against % parameter sparsity: a fixed-λ curve and single runs.

    ``curve`` (e.g. the dense model and fixed-λ group-lasso runs) is drawn as one line through
    its runs in order of sparsity; every run of ``points`` (e.g. meta-sparsity before and after
    meta-testing) is a labelled marker of its own. A task's primary metric is the first of its
    metrics in ``Result.metrics``.

    Args:
        curve: ``(label, Result)`` pairs joined into the frontier.
        points: ``(label, Result)`` pairs drawn as separate markers.
        path: the PNG to write.
    """
    columns = record_columns((result for _, result in [*curve, *points]), primary_only=True)
    width = max(len(columns), 1)
    fig, grid = plt.subplots(1, width, figsize=(3.4 * width, 3.6), squeeze=False)
    axes = list(grid[0])
    markers = "sD^v<>pPX*h"
    for ax, (task, metric, higher) in zip(axes, columns, strict=False):
        line = sorted(
            (100 * result.sparsity["parameter"], result.metrics[task][metric], label)
            for label, result in curve
            if task in result.metrics
        )
        if line:
            ax.plot(
                [p[0] for p in line],
                [p[1] for p in line],
                "o-",
                color="tab:blue",
                label="fixed λ (frontier)",
            )
            for x, y, label in line:
                ax.annotate(label, (x, y), fontsize=6, xytext=(2, 3), textcoords="offset points")
        for index, (label, result) in enumerate(points):
            if task not in result.metrics:
                continue
            ax.plot(
                [100 * result.sparsity["parameter"]],
                [result.metrics[task][metric]],
                markers[index % len(markers)],
                color=f"C{index + 1}",
                label=label,
            )
        ax.set_xlabel("% parameter sparsity of the backbone")
        ax.set_ylabel(f"{metric} {arrow(higher)}")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    fig.legend(
        list(seen.values()), list(seen), loc="lower center", ncol=min(4, len(seen)), fontsize=7
    )
    fig.tight_layout(rect=(0, 0.08 + 0.04 * math.ceil(len(seen) / 4), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: Meta-steps per window of the λ meta-gradient's sign fraction.
SIGN_WINDOW = 25


def plot_lambda_diagnostics(
    lam_history: Sequence[float | Sequence[float]],
    extra: dict[str, Any],
    profile: Sequence[dict[str, float]],
    path: Path,
) -> None:
    """Why λ goes where it goes: four panels over meta-training.

    λ (the mean over layers when per layer); its meta-gradient d(objective)/dλ per meta-step with
    the fraction of positive gradients (which push λ down) in windows of :data:`SIGN_WINDOW`
    meta-steps; the outer prox threshold α_out·λ against the 10/50/90 % quantiles of the non-zero
    groups' root-mean-square weight ‖w_g‖/√n_g (a group dies when its norm falls under the
    threshold times √n_g, so the curves show how close the backbone is to being zeroed); and the
    parameter sparsity.

    Args:
        lam_history: λ after every meta-step.
        extra: the run's ``Result.extra`` with ``lam_grad``, ``group_norm_quantiles`` and
            ``outer_threshold`` (as the meta-learners record them).
        profile: the evaluation rows (step, parameter sparsity), one per diagnostics entry.
        path: the PNG to write.
    """
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.5))
    lam = [v if isinstance(v, int | float) else sum(v) / len(v) for v in lam_history]
    axes[0].plot(range(1, len(lam) + 1), lam, color="tab:red")
    axes[0].set_title("λ")
    _plot_lam_gradients(axes[1], extra.get("lam_grad", []))
    steps = [row["step"] for row in profile]
    _plot_thresholds(
        axes[2], steps, extra.get("group_norm_quantiles", []), extra.get("outer_threshold", [])
    )
    parameter = [100 * row["parameter"] for row in profile]
    axes[3].plot(steps, parameter, color="tab:green", marker=_marker(len(steps)), markersize=3)
    axes[3].set_ylim(0, sparsity_limit(parameter))
    axes[3].set_title("% parameter sparsity")
    for ax in axes:
        ax.set_xlabel("meta-step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_lam_gradients(ax: Any, lam_grad: Sequence[float | None]) -> None:
    """λ's meta-gradient per meta-step and the windowed fraction of positive ones."""
    grads = [(i + 1, g) for i, g in enumerate(lam_grad) if g is not None]
    if grads:
        ax.plot([s for s, _ in grads], [g for _, g in grads], color="tab:gray", lw=0.6)
        ax.set_yscale("symlog", linthresh=max(1e-6, min(abs(g) for _, g in grads) or 1e-6))
        twin = ax.twinx()
        windows = range(0, len(grads), SIGN_WINDOW)
        fractions = [
            sum(1 for _, g in grads[w : w + SIGN_WINDOW] if g > 0) / len(grads[w : w + SIGN_WINDOW])
            for w in windows
        ]
        twin.step([grads[w][0] for w in windows], fractions, where="post", color="tab:blue")
        twin.set_ylim(0, 1)
        twin.set_ylabel("fraction > 0", color="tab:blue")
    ax.set_title("meta-gradient dL/dλ")


def _plot_thresholds(
    ax: Any, steps: Sequence[float], quantiles: Sequence[Any], thresholds: Sequence[Any]
) -> None:
    """The outer prox threshold against the group-norm quantiles at every evaluation."""
    if quantiles and len(quantiles) == len(steps):
        for index, label in enumerate(("10 %", "50 %", "90 %")):
            ax.plot(
                steps, [q[index] if q else math.nan for q in quantiles], label=f"‖w_g‖/√n_g {label}"
            )
    if thresholds and len(thresholds) == len(steps):
        values = [t if isinstance(t, int | float) else sum(t) / len(t) for t in thresholds]
        ax.plot(steps, values, "k--", label="α_out·λ")
    ax.set_yscale("log")
    ax.set_title("outer threshold and group norms")
    ax.legend(fontsize=7)


def plot_run(record: Any, directory: Path) -> None:
    """Every plot a run directory holds, from what the run recorded.

    The sparsity profile and the active channels per layer; with a λ history, λ beside the
    sparsity and, when λ was learned, its diagnostics; with meta-training losses, those.
    """
    if record.profile:
        plot_sparsity_profile(record.profile, directory / "sparsity_profile.png")
    if record.layers:
        plot_layer_channels(record.layers, directory / "active_channels.png")
    if record.lam_history:
        plot_lambda_and_sparsity(
            record.lam_history, record.profile, directory / "lambda_sparsity.png"
        )
    if record.lam_history and any(g is not None for g in record.extra.get("lam_grad", [])):
        plot_lambda_diagnostics(
            record.lam_history, record.extra, record.profile, directory / "lambda_diagnostics.png"
        )
    if "query_loss" in record.extra and "support_loss" in record.extra:
        plot_meta_losses(
            record.extra["support_loss"], record.extra["query_loss"], directory / "meta_losses.png"
        )
