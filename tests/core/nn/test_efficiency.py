"""Efficiency metrics: compression ratio, FLOPs speed-up, measured speed-up, and their reports."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from torch import Tensor, nn

from sparsekit import Experiment
from sparsekit.cli import main
from sparsekit.nn import MultiTaskNet, efficiency
from sparsekit.nn.efficiency import (
    compression_ratio,
    count_flops,
    efficiency_record,
    measure_efficiency,
    measure_latency,
)
from sparsekit.reporting.tables import results_table
from sparsekit.runs.store import Result

TINY_DATA = {"name": "shapes", "n_train": 16, "n_val": 8, "n_test": 8, "image_size": 16}
TINY_MODEL = {"name": "small_resnet", "widths": [4, 8], "output_stride": 4}


def conv_flops(c_out: int, c_in: int, k: int, h_out: int, w_out: int) -> int:
    """The counter's convention: 2 FLOPs per multiply-accumulate."""
    return 2 * c_out * c_in * k * k * h_out * w_out


def tiny_multitask(conv2_zero_groups: list[int]) -> MultiTaskNet:
    """conv(3→4, 3×3) → BN → ReLU → conv(4→2, 3×3) → BN → ReLU, one 1×1 pixel head."""
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 2, 3, padding=1, bias=False),
        nn.BatchNorm2d(2),
        nn.ReLU(),
    )
    with torch.no_grad():
        backbone[3].weight[:, conv2_zero_groups] = 0
    return MultiTaskNet(backbone, {"t": nn.Conv2d(2, 1, 1)}, {"t"}, 2).eval()


def test_flops_of_a_tiny_conv_net_match_a_hand_count() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(5, 4, 3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 7),
    )
    batch = 2
    expected = batch * (conv_flops(5, 3, 3, 8, 8) + conv_flops(4, 5, 3, 4, 4) + 2 * 64 * 7)
    assert count_flops(net, torch.randn(batch, 3, 8, 8)) == expected


def test_sp_is_the_ratio_of_hand_counted_flops() -> None:
    model = tiny_multitask(conv2_zero_groups=[1, 3])
    record = measure_efficiency(model, (3, 8, 8), batch_sizes=(1,), repeats=1, warmup=0)
    dense = conv_flops(4, 3, 3, 8, 8) + conv_flops(2, 4, 3, 8, 8) + conv_flops(1, 2, 1, 8, 8)
    # The zeroed groups leave conv2's input and, being conv1's only reader, conv1's output.
    sparse = conv_flops(2, 3, 3, 8, 8) + conv_flops(2, 2, 3, 8, 8) + conv_flops(1, 2, 1, 8, 8)
    assert record["flops_dense"] == dense and record["flops_compact"] == sparse
    assert record["sp"] == pytest.approx(dense / sparse)
    backbone_dense = dense - conv_flops(1, 2, 1, 8, 8)
    backbone_sparse = sparse - conv_flops(1, 2, 1, 8, 8)
    assert record["sp_backbone"] == pytest.approx(backbone_dense / backbone_sparse)


def test_compression_ratio_counts_backbone_conv_weights_only() -> None:
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    model = MultiTaskNet(backbone, {"t": nn.Conv2d(2, 1, 1)}, {"t"}, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)  # biases, BN and head are non-zero: they must not count
        backbone[0].weight[:, 1] = 0  # one group of 4·3·3 = 36 weights
        backbone[0].weight[0, 0, 0, 0] = 0  # one more weight
        backbone[2].weight[:, [0, 2]] = 0  # two groups of 2·1·1 = 2 weights
    total = 4 * 3 * 3 * 3 + 2 * 4
    nonzero = total - 36 - 1 - 4
    assert compression_ratio(model) == pytest.approx(total / nonzero)
    with torch.no_grad():
        for conv in (backbone[0], backbone[2]):
            conv.weight.zero_()
    assert compression_ratio(model) == math.inf


class Sleeper(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        time.sleep(self.seconds)
        return x


def test_latency_is_a_median_of_interleaved_runs_and_threads_are_restored() -> None:
    threads = torch.get_num_threads()
    medians = measure_latency(
        {"slow": Sleeper(0.02), "fast": Sleeper(0.0)}, torch.zeros(1), repeats=3, threads=1
    )
    assert medians["slow"] >= 0.02 > medians["fast"]
    assert torch.get_num_threads() == threads


def test_fast_models_are_timed_over_several_passes_per_sample() -> None:
    model = Sleeper(0.002)
    median = measure_latency({"m": model}, torch.zeros(1), repeats=3, warmup=1, min_sample_s=0.1)
    # One sizing pass, then 4 samples of at least 0.1 s made of ~2 ms passes: many per sample.
    assert model.calls > 1 + 4 * 2
    assert 0.002 <= median["m"] < 0.1


def test_measured_speedup_is_the_latency_ratio_at_the_largest_batch() -> None:
    model = tiny_multitask(conv2_zero_groups=[0, 1, 2])
    record = measure_efficiency(model, (3, 8, 8), batch_sizes=(1, 8), repeats=2, warmup=1)
    latency = record["latency_ms"]
    assert set(latency["dense"]) == set(latency["compact"]) == {"1", "8"}
    assert record["speedup"] == pytest.approx(latency["dense"]["8"] / latency["compact"]["8"])
    assert record["speedup_by_batch"]["1"] == pytest.approx(
        latency["dense"]["1"] / latency["compact"]["1"]
    )
    assert record["params_compact"] < record["params_dense"]
    json.dumps(record)  # stored in result.json


def test_a_failed_measurement_keeps_the_compression_ratio(monkeypatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cannot trace")

    monkeypatch.setattr(efficiency, "compact", broken)
    model = tiny_multitask(conv2_zero_groups=[1])
    record = efficiency_record(model, [(torch.zeros(3, 8, 8), {})])
    assert record["sp"] is None and record["speedup"] is None and "cannot trace" in record["error"]
    assert record["cr"] == pytest.approx(compression_ratio(model))


def test_every_result_carries_efficiency_in_tables_files_and_plots(tmp_path, capsys) -> None:
    dirs = []
    for lam in (0.0, 5.0):
        run_dir = tmp_path / f"lam{lam}"
        result = Experiment(
            dataset=TINY_DATA,
            model=TINY_MODEL,
            steps=5,
            batch_size=8,
            lam=lam,
            optimizer={"lr": 0.05},
            device="cpu",
            run_dir=run_dir,
        ).run()
        eff = result.efficiency
        assert {"cr", "sp", "speedup", "latency_ms"} <= set(eff)
        # CR and parameter sparsity are two views of the same count.
        density = 1.0 - result.sparsity["parameter"]
        assert eff["cr"] == (pytest.approx(1.0 / density) if density else math.inf)
        assert eff["sp"] >= 1.0 and eff["speedup"] > 0
        assert Result.load(run_dir, with_model=False).efficiency == eff
        dirs.append(run_dir)
    assert Result.load(dirs[1]).efficiency["sp"] > 1.0  # λ = 5 zeroes groups
    table = results_table([(d.name, Result.load(d, with_model=False)) for d in dirs])
    assert "CR" in table and "Sp (FLOPs)" in table and "speed-up" in table
    plot = tmp_path / "fig5.png"
    assert main(["report", *map(str, dirs), "--plot", str(plot)]) == 0
    assert "CR" in capsys.readouterr().out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_measuring_leaves_the_global_random_state_alone() -> None:
    model = tiny_multitask(conv2_zero_groups=[1])
    state = torch.get_rng_state()
    measure_efficiency(model, (3, 8, 8), batch_sizes=(1,), repeats=1, warmup=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_fig5_plots_each_task_metric_against_cr_and_measured_speedup() -> None:
    from types import SimpleNamespace

    import matplotlib.pyplot as plt

    from sparsekit.reporting.plots import metrics_vs_efficiency_figure

    def run(cr: float, speedup: float | None, miou: float, rmse: float) -> SimpleNamespace:
        return SimpleNamespace(
            metrics={"seg": {"miou": miou}, "depth": {"rmse": rmse}},
            metric_directions={"seg": {"miou": True}, "depth": {"rmse": False}},
            efficiency={"cr": cr, "sp": 2.0, "speedup": speedup},
        )

    rows = [
        ("dense", run(1.0, 1.0, 0.6, 0.30)),
        ("sparse", run(4.0, 1.8, 0.5, 0.35)),
        ("all zero", run(math.inf, None, 0.1, 0.90)),  # no finite CR, no speed-up: left out
    ]
    fig = metrics_vs_efficiency_figure(rows)
    axes = [ax for ax in fig.axes if ax.collections]
    grid = {(ax.get_xlabel(), ax.get_ylabel()): ax for ax in axes}
    assert set(grid) == {
        (x, y)
        for x in ("compression ratio CR", "measured speed-up")
        for y in ("seg/miou ↑", "depth/rmse ↓")
    }

    def points(ax) -> list[tuple[float, float]]:
        return sorted(tuple(map(float, c.get_offsets()[0])) for c in ax.collections)

    assert points(grid["compression ratio CR", "seg/miou ↑"]) == [(1.0, 0.6), (4.0, 0.5)]
    assert points(grid["measured speed-up", "depth/rmse ↓"]) == [(1.0, 0.30), (1.8, 0.35)]
    labels = sorted(t.get_text() for t in grid["measured speed-up", "seg/miou ↑"].texts)
    assert labels == ["dense", "sparse"]
    plt.close(fig)
