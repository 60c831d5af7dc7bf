"""What a trained model is recorded with, for training and fine-tuning alike: its metrics on the
held-out splits, its layers' channels, its efficiency and the run's timings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from sparsekit.engine.loop import evaluate
from sparsekit.nn.sparsity import LayerChannels, layer_channels
from sparsekit.tasks import Task


@dataclass
class Outcome:
    """The final model's validation and test metrics."""

    val_metrics: dict[str, dict[str, float]]
    metrics: dict[str, dict[str, float]]


def final_metrics(
    model: nn.Module,
    tasks: Sequence[Task],
    combiner: nn.Module,
    val: Dataset,
    test: Dataset,
    device: torch.device,
) -> Outcome:
    """Validation and test metrics of the one final model (eval mode, running statistics)."""
    _, val_metrics = evaluate(model, val, tasks, combiner, device)
    _, metrics = evaluate(model, test, tasks, combiner, device)
    return Outcome(val_metrics, metrics)


def layer_rows(
    before: Sequence[LayerChannels] | dict[str, int], model: nn.Module
) -> list[dict[str, Any]]:
    """Per backbone conv layer: name, input channels, active channels before and after."""
    active_before = before if isinstance(before, dict) else {row.name: row.active for row in before}
    return [
        {
            "name": row.name,
            "total": row.total,
            "active_before": active_before[row.name],
            "active_after": row.active,
        }
        for row in layer_channels(model)  # type: ignore[arg-type]
    ]


def timings(started: float, ready: float, trained: float, finished: float) -> dict[str, float]:
    """Seconds of set-up, training, testing and in total."""
    return {
        "setup_s": ready - started,
        "train_s": trained - ready,
        "test_s": finished - trained,
        "total_s": finished - started,
    }
