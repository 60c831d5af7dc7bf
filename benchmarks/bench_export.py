"""Does the compact model's saving survive export? ONNX Runtime latency, masked vs compact.

The default ``small_resnet`` multi-task model with the heads of the default data set's four tasks
(``shapes``: segmentation, depth, normals, edges), randomly initialised, with random BatchNorm
statistics, and with the 60 % of every backbone conv's input-channel groups of smallest L2 norm
zeroed, as a group-lasso prox zeroes the smallest groups first. On a randomly initialised model
the norms are alike, so the pattern is close to a uniformly random one with the same share in
every layer: the hard case for compaction (a learned pattern concentrates on some layers and
frees more whole channels). The masked model and its compact version
(:func:`sparsekit.compact`) are exported with :func:`sparsekit.export` to ONNX (dynamic batch)
and run in ONNX Runtime's CPU provider with one intra-op thread; the same two networks in eager
PyTorch (one thread) are timed in the same interleaved rounds, for reference.

For each image size (32, the data set's default, and 128) and batch size (1 and 8): the median
latency of every network over ``REPEATS`` rounds after ``WARMUP`` untimed ones, all four timed
in turn within each round (:func:`sparsekit.nn.efficiency.measure_latency`; a sample averages
enough back-to-back passes to last ``MIN_SAMPLE_S``, 50 ms). Ratios:

- ``ort_speedup``: ONNX Runtime, masked over compact latency;
- ``torch_speedup``: eager PyTorch, masked over compact;
- ``ort_vs_torch``: eager PyTorch compact over ONNX Runtime compact latency;
- ``sp``: FLOPs of the masked model over the compact one's (``FlopCounterMode``), the saving
  available.

Before timing, ONNX Runtime's outputs are checked against PyTorch's (within 1e-4).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from sparsekit import compact, export
from sparsekit.nn.efficiency import count_flops, measure_latency
from sparsekit.registry import create

THREADS = 1
REPEATS = 21
WARMUP = 1
#: Least duration of one timed sample: sub-millisecond passes are averaged over many calls.
MIN_SAMPLE_S = 0.05
BATCH_SIZES = (1, 8)
IMAGE_SIZES = (32, 128)
ZERO_FRACTION = 0.6
TOL = 1e-4


class OnnxRuntimeModule(nn.Module):
    """An ONNX Runtime session called like a module, so that ``measure_latency`` can time it."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: Tensor) -> list[np.ndarray]:
        return self.session.run(None, {"images": x.numpy()})


def masked_model() -> nn.Module:
    """The default model with the smallest-norm 60 % of every backbone conv's groups zeroed."""
    torch.manual_seed(0)
    provider = create("dataset", "shapes")
    model = create("model", "small_resnet").build(provider.tasks(), provider.in_channels)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))
        for conv in model.backbone.modules():
            if isinstance(conv, nn.Conv2d):
                norms = conv.weight.square().sum(dim=(0, 2, 3))
                conv.weight[:, norms.argsort()[: int(ZERO_FRACTION * len(norms))]] = 0
    return model.eval()


def _zeroed_group_fraction(model: nn.Module) -> float:
    convs = [c for c in model.backbone.modules() if isinstance(c, nn.Conv2d)]
    zero = sum(int(c.weight.eq(0).all(dim=(0, 2, 3)).sum()) for c in convs)
    return zero / sum(c.in_channels for c in convs)


def _check(session: OnnxRuntimeModule, model: nn.Module, x: Tensor) -> None:
    with torch.no_grad():
        expected = list(model(x).values())
    for got, ref in zip(session(x), expected, strict=True):
        np.testing.assert_allclose(got, ref.numpy(), atol=TOL, rtol=TOL)


def _measure_size(dense: nn.Module, small: nn.Module, size: int, folder: Path) -> dict[str, float]:
    example = torch.randn(1, 3, size, size)
    sessions = {
        label: OnnxRuntimeModule(export(net, folder / f"{label}_{size}.onnx", "onnx", example))
        for label, net in (("dense", dense), ("compact", small))
    }
    _check(sessions["dense"], dense, example)
    _check(sessions["compact"], small, example)
    sp = count_flops(dense, example) / count_flops(small, example)
    result: dict[str, float] = {f"s{size}_sp": sp}
    contenders = {
        "ort_dense": sessions["dense"],
        "ort_compact": sessions["compact"],
        "torch_dense": dense,
        "torch_compact": small,
    }
    for batch in BATCH_SIZES:
        x = torch.randn(batch, 3, size, size)
        ms = {
            label: 1e3 * seconds
            for label, seconds in measure_latency(
                contenders, x, REPEATS, WARMUP, THREADS, MIN_SAMPLE_S
            ).items()
        }
        key = f"s{size}_b{batch}"
        result.update({f"{key}_{label}_ms": value for label, value in ms.items()})
        result[f"{key}_ort_speedup"] = ms["ort_dense"] / ms["ort_compact"]
        result[f"{key}_torch_speedup"] = ms["torch_dense"] / ms["torch_compact"]
        result[f"{key}_ort_vs_torch"] = ms["torch_compact"] / ms["ort_compact"]
    return result


def _initialiser_elements(path: Path) -> int:
    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def run() -> dict[str, Any]:
    """ONNX Runtime and eager latencies of the masked and compact model, and their ratios."""
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        dense = masked_model()
        small = compact(dense)
        result: dict[str, Any] = {
            "threads": THREADS,
            "repeats": REPEATS,
            "warmup": WARMUP,
            "min_sample_s": MIN_SAMPLE_S,
            "zeroed_group_fraction": _zeroed_group_fraction(dense),
            "params_dense": sum(p.numel() for p in dense.parameters()),
            "params_compact": sum(p.numel() for p in small.parameters()),
        }
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for size in IMAGE_SIZES:
                result.update(_measure_size(dense, small, size, folder))
            for label in ("dense", "compact"):
                path = folder / f"{label}_{IMAGE_SIZES[0]}.onnx"
                result[f"onnx_initialiser_elements_{label}"] = _initialiser_elements(path)
                result[f"onnx_bytes_{label}"] = path.stat().st_size
        return result
    finally:
        torch.set_num_threads(previous)
