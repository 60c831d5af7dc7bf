"""Does compaction turn FLOPs into time? Measured speed-up over FLOPs speed-up Sp.

A randomly initialised ``resnet50_deeplab`` multi-task model (segmentation with a DeepLabv3 head,
one attribute with a small image head) has half of the input-channel groups of every backbone conv
zeroed at random, as group lasso would, and is compacted with :func:`sparsekit.compact`. Two
networks are measured: the backbone alone and the whole multi-task model. For each, on 128×128
images on the CPU with one intra-op thread:

- ``sp``: FLOPs of the masked network over FLOPs of the compact one (``FlopCounterMode``);
- ``speedup_b<B>``: median latency of the masked network over the compact one's at batch B
  (1 and 8), timed interleaved after a warm-up;
- ``ratio_b<B>`` = ``speedup_b<B>`` / ``sp``, whose target is ≥ 0.8: how much of the saving in
  FLOPs shows up in wall-clock time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsekit import compact
from sparsekit.nn.efficiency import count_flops, measure_latency
from sparsekit.registry import create
from sparsekit.tasks import AttributeTask, SegmentationTask

THREADS = 1
REPEATS = 7
WARMUP = 1
BATCH_SIZES = (1, 8)
IMAGE_SIZE = 128
ZERO_FRACTION = 0.5


def masked_model() -> nn.Module:
    """The multi-task model with a random half of every backbone conv's input groups zeroed."""
    torch.manual_seed(0)
    builder = create("model", "resnet50_deeplab")
    model = builder.build([SegmentationTask("seg", 13), AttributeTask("attr")], 3).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for conv in model.backbone.modules():
            if isinstance(conv, nn.Conv2d):
                zero = torch.rand(conv.in_channels, generator=gen) < ZERO_FRACTION
                conv.weight[:, zero] = 0
    return model


def _measure(dense: nn.Module, small: nn.Module, label: str) -> dict[str, float]:
    one = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    flops_dense, flops_small = count_flops(dense, one), count_flops(small, one)
    sp = flops_dense / flops_small
    result = {
        f"{label}_gflops_dense": flops_dense / 1e9,
        f"{label}_gflops_compact": flops_small / 1e9,
        f"{label}_sp": sp,
    }
    for batch in BATCH_SIZES:
        x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE)
        medians = measure_latency({"dense": dense, "compact": small}, x, REPEATS, WARMUP, THREADS)
        speedup = medians["dense"] / medians["compact"]
        result[f"{label}_dense_ms_b{batch}"] = 1e3 * medians["dense"]
        result[f"{label}_compact_ms_b{batch}"] = 1e3 * medians["compact"]
        result[f"{label}_speedup_b{batch}"] = speedup
        result[f"{label}_ratio_b{batch}"] = speedup / sp
    return result


def run() -> dict[str, Any]:
    """Sp, measured speed-ups and their ratios for the backbone and the whole model."""
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        dense = masked_model()
        small = compact(dense, torch.randn(1, 3, 64, 64))
        groups = [c.weight.shape[1] for c in dense.backbone.modules() if isinstance(c, nn.Conv2d)]
        result: dict[str, Any] = {
            "image_size": IMAGE_SIZE,
            "threads": THREADS,
            "repeats": REPEATS,
            "zeroed_group_fraction": 1
            - sum(
                int(c.weight.ne(0).any(dim=(0, 2, 3)).sum())
                for c in dense.backbone.modules()
                if isinstance(c, nn.Conv2d)
            )
            / sum(groups),
        }
        result.update(_measure(dense.backbone, small.backbone, "backbone"))
        result.update(_measure(dense, small, "model"))
        return result
    finally:
        torch.set_num_threads(previous)
