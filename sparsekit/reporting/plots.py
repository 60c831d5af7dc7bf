"""Plots of a run (matplotlib, written as PNG)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def plot_sparsity_profile(profile: Sequence[dict[str, float]], path: Path) -> None:
    """Group and parameter sparsity (%) of the backbone over training, with λ when it varies."""
    steps = [row["step"] for row in profile]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [100 * row["group"] for row in profile], label="group sparsity")
    ax.plot(steps, [100 * row["parameter"] for row in profile], label="parameter sparsity")
    ax.set_xlabel("step")
    ax.set_ylabel("% of backbone")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    lams = [row.get("lam") for row in profile]
    if len({lam for lam in lams if lam is not None}) > 1:
        twin = ax.twinx()
        twin.plot(steps, lams, color="tab:red", linestyle="--", label="λ")
        twin.set_ylabel("λ")
        twin.legend(loc="lower right")
    ax.legend(loc="upper left")
    ax.set_title("Backbone sparsity over training")
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
    ax.set_title("Active channels per backbone layer")
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
    columns: list[tuple[str, str, bool]] = []
    for _, result in rows:
        for task, metrics in result.metrics.items():
            for metric in metrics:
                key = (task, metric, result.metric_directions[task][metric])
                if key not in columns:
                    columns.append(key)
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
            ax.set_ylabel(f"{task}/{metric} {'↑' if higher else '↓'}")
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
    ax_sparsity.plot(rows, [100 * row["group"] for row in profile], label="group sparsity")
    ax_sparsity.plot(rows, [100 * row["parameter"] for row in profile], label="parameter sparsity")
    ax_sparsity.set_xlabel("meta-step")
    ax_sparsity.set_ylabel("% of backbone")
    ax_sparsity.set_ylim(0, 100)
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
    ax.plot(steps, support, label="meta-train loss (support, before adaptation)", alpha=0.8)
    ax.plot(steps, query, label="query loss (after adaptation)", alpha=0.8)
    ax.set_xlabel("meta-step")
    ax.set_ylabel("episode loss")
    ax.set_title("Meta-training losses")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
