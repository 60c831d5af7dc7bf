"""The peer benchmark's pipelines at tiny size: Torch-Pruning really prunes to the target."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks import bench_peer
from sparsekit.registry import create

IMAGE_SIZE = 32
TINY = {
    "dataset": {
        "name": "shapes",
        "n_train": 64,
        "n_val": 16,
        "n_test": 16,
        "image_size": IMAGE_SIZE,
    },
}


def _dense_model() -> torch.nn.Module:
    """The model the peer starts from, freshly built from the same config."""
    cfg = bench_peer.experiment_config(0, TINY)
    provider = create("dataset", cfg.dataset)
    builder = create("model", cfg.model)
    return builder.build(provider.select_tasks(cfg.tasks), provider.in_channels).eval()


@pytest.fixture(scope="module")
def peer() -> bench_peer.PipelineResult:
    return bench_peer.peer_pipeline(0, 0.5, steps=8, finetune_steps=4, overrides=TINY)


def test_peer_reaches_the_target_sparsity_by_removing_conv_weights(
    peer: bench_peer.PipelineResult,
) -> None:
    dense = _dense_model()
    convs = [m for m in peer.model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    remaining = sum(conv.weight.numel() for conv in convs)
    original = sum(
        m.weight.numel() for m in dense.backbone.modules() if isinstance(m, torch.nn.Conv2d)
    )
    assert remaining < original
    assert peer.sparsity == pytest.approx(1 - remaining / original)
    assert abs(peer.sparsity - 0.5) <= 0.02
    assert peer.pruning_ratio is not None and 0 < peer.pruning_ratio < 1


def test_pruned_model_outputs_every_task_at_the_dense_shapes(
    peer: bench_peer.PipelineResult,
) -> None:
    x = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        expected = {name: out.shape for name, out in _dense_model()(x).items()}
        got = {name: out.shape for name, out in peer.model.eval()(x).items()}
    assert set(expected) == set(bench_peer.TASKS)
    assert got == expected


def test_peer_metrics_are_finite_for_every_task(peer: bench_peer.PipelineResult) -> None:
    assert set(peer.metrics) == set(bench_peer.TASKS)
    assert all(math.isfinite(value) for value in peer.metrics.values())


def test_sparsekit_pipeline_records_metrics_and_sparsity() -> None:
    result = bench_peer.sparsekit_pipeline(0, 0.3, {**TINY, "steps": 4})
    assert set(result.metrics) == set(bench_peer.TASKS)
    assert all(math.isfinite(value) for value in result.metrics.values())
    assert 0.0 <= result.sparsity <= 1.0


def test_planned_steps_follow_the_config() -> None:
    assert bench_peer.planned_steps({"steps": 7, "finetune": {"steps": 3}}) == (7, 3)
    assert bench_peer.planned_steps({"steps": 7, "finetune": None}) == (7, 2)  # debias 7 // 3
    assert bench_peer.planned_steps({"steps": 7, "debias_steps": 0}) == (7, 0)


def _result(value: float, sparsity: float, wall_s: float) -> bench_peer.PipelineResult:
    metrics = {task: value for task in bench_peer.TASKS}
    return bench_peer.PipelineResult(metrics, sparsity, wall_s, torch.nn.Identity())


def test_summary_compares_in_each_metrics_direction() -> None:
    runs = {
        "sparsekit": [_result(0.5, 0.4, 1.0), _result(0.7, 0.6, 3.0)],
        "peer": [_result(0.4, 0.5, 4.0), _result(0.4, 0.5, 4.0)],
    }
    summary = bench_peer.summarise(0.1, runs)
    assert summary["lam0.1_sparsekit_segmentation_miou_mean"] == pytest.approx(0.6)
    assert summary["lam0.1_sparsekit_segmentation_miou_std"] == pytest.approx(math.sqrt(0.02))
    assert summary["lam0.1_peer_sparsity_std"] == 0.0
    assert summary["lam0.1_sparsekit_sparsity_mean"] == pytest.approx(0.5)
    assert summary["lam0.1_wall_time_ratio_peer_over_sparsekit"] == pytest.approx(2.0)
    # Higher means 0.6 vs 0.4: better for mIoU and cosine, worse for the two MAEs.
    assert summary["lam0.1_segmentation_sparsekit_at_or_above_peer"] is True
    assert summary["lam0.1_normals_sparsekit_at_or_above_peer"] is True
    assert summary["lam0.1_depth_sparsekit_at_or_above_peer"] is False
    assert summary["lam0.1_edges_sparsekit_at_or_above_peer"] is False


def test_peer_regulariser_acts_on_backbone_gradients_not_on_head_outputs() -> None:
    torch.manual_seed(0)
    model = _dense_model()
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    pruner = bench_peer.make_peer_pruner(model, x, 0.0)
    model.train()
    sum(out.square().mean() for out in model(x).values()).backward()
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    pruner.regularize(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.grad, before[n])}
    assert any(n.startswith("backbone.") and n.endswith("conv1.weight") for n in changed)
    # The heads' own channels are ignored; their last (output) layers are left alone.
    assert not any(n.startswith("heads.") and n.split(".")[2] == "3" for n in changed)
