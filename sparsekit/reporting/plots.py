"""Plots of a run (matplotlib, written as PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
    ax.bar([i - 0.2 for i in x], [row["active_before"] for row in layers], width=0.4,
           label="before", color="tab:gray")
    ax.bar([i + 0.2 for i in x], [row["active_after"] for row in layers], width=0.4,
           label="after", color="tab:blue")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_ylabel("active input channels")
    ax.set_title("Active channels per backbone layer")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
