"""Efficiency of a sparse multi-task model: compression ratio, FLOPs speed-up, measured speed-up.

Definitions (used in every :class:`~sparsekit.Result` as ``result.efficiency``):

- ``cr``, the compression ratio (Meta-Sparsity, footnote 5): total / non-zero parameters, where
  the parameters counted are exactly those the sparsity statistics count: every element of the
  shared backbone's conv weights (BatchNorm parameters, biases and task heads are not counted).
- ``sp``, the FLOPs speed-up (footnote 6): FLOPs of the dense (masked) model over FLOPs of its
  compact version (:func:`~sparsekit.nn.compaction.compact`), both counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of the whole multi-task model
  (backbone and every head) on one input image. The counter's convention is 2 FLOPs per
  multiply-accumulate; BatchNorm, activations and channel selection count nothing.
- ``speedup``, the measured speed-up: median latency of the dense model over that of the compact
  model on this machine, at the largest batch size measured, with a fixed thread count; the
  latencies at every batch size are in ``latency_ms`` and ``speedup_by_batch``.

References:
    Upadhyay et al., "Meta-Sparsity: Learning Optimal Sparse Structures in Multi-task Networks
    through Meta-learning" (footnotes 5 and 6); Blalock et al., "What is the State of Neural
    Network Pruning?", MLSys 2020.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from torch.utils.flop_counter import FlopCounterMode

from sparsekit.nn.compaction import compact
from sparsekit.nn.multitask import backbone_conv_weights

logger = logging.getLogger(__name__)

#: Batch sizes, repeats, warm-up passes and threads of the measurement made for every result:
#: cheap enough to add seconds, not minutes, to a run (the benchmarks measure more carefully).
BATCH_SIZES = (1, 8)
REPEATS = 5
WARMUP = 1
THREADS = 1
#: Least duration of one timed sample: faster models are timed over several passes per sample.
MIN_SAMPLE_S = 0.02
#: Largest image side traced to find the channel dependencies when compacting.
TRACE_SIZE = 64


@torch.no_grad()
def backbone_parameter_counts(model: nn.Module) -> tuple[int, int]:
    """``(total, non-zero)`` elements of the backbone's conv weights."""
    weights = list(backbone_conv_weights(model).values())  # type: ignore[arg-type]
    total = sum(w.numel() for w in weights)
    nonzero = sum(int(w.count_nonzero()) for w in weights)
    return total, nonzero


def compression_ratio(model: nn.Module) -> float:
    """Total over non-zero backbone conv-weight parameters (``inf`` when all are zero)."""
    total, nonzero = backbone_parameter_counts(model)
    return total / nonzero if nonzero else float("inf")


def flop_counts(
    module: nn.Module, example_input: Tensor, parts: Sequence[str] = ()
) -> dict[str, int]:
    """FLOPs of one forward pass of ``module`` on ``example_input``, by ``FlopCounterMode``.

    Args:
        module: the network (run in eval mode, restored afterwards).
        example_input: its input batch.
        parts: qualified names of submodules (e.g. ``"backbone"``) whose share to report too.

    Returns:
        ``{"": total FLOPs, part: FLOPs inside that submodule, ...}``, from a single pass.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(example_input)
    finally:
        module.train(was_training)
    by_module = counter.get_flop_counts()
    # The counter names submodules by their path under the root module's class name.
    root = type(module).__name__
    counts = {"": int(counter.get_total_flops())}
    for part in parts:
        counts[part] = int(sum(by_module.get(f"{root}.{part}", {}).values()))
    return counts


def count_flops(module: nn.Module, example_input: Tensor) -> int:
    """Total FLOPs of one forward pass of ``module`` on ``example_input``."""
    return flop_counts(module, example_input)[""]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_calls(model: nn.Module, x: Tensor, calls: int) -> float:
    """Seconds per forward pass over ``calls`` back-to-back passes."""
    _synchronize(x.device)
    start = time.perf_counter()
    for _ in range(calls):
        model(x)
    _synchronize(x.device)
    return (time.perf_counter() - start) / calls


def measure_latency(
    models: Mapping[str, nn.Module],
    example_input: Tensor,
    repeats: int = REPEATS,
    warmup: int = WARMUP,
    threads: int | None = THREADS,
    min_sample_s: float = MIN_SAMPLE_S,
) -> dict[str, float]:
    """Median forward latency (seconds) of each model on ``example_input``, timed interleaved.

    The models run in turn (a, b, a, b, ...) so that drifts of the machine's load hit them
    alike; ``warmup`` untimed rounds come first. A first untimed pass per model also sizes its
    samples: each timed sample averages as many back-to-back passes as the model needs to run for
    ``min_sample_s``, so that millisecond-scale models are not timed at the resolution of the
    scheduler's noise.

    Args:
        models: the models by label; each runs in eval mode and is restored afterwards.
        example_input: the input batch.
        repeats: timed rounds.
        warmup: untimed rounds before them.
        threads: intra-op threads during the measurement (restored afterwards); None keeps the
            current setting.
        min_sample_s: least duration of one timed sample.

    Returns:
        ``{label: median seconds per pass}``.
    """
    previous = torch.get_num_threads()
    flags = {label: m.training for label, m in models.items()}
    times: dict[str, list[float]] = {label: [] for label in models}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        for model in models.values():
            model.eval()
        with torch.no_grad():
            calls = {
                label: max(
                    1, math.ceil(min_sample_s / max(_timed_calls(m, example_input, 1), 1e-6))
                )
                for label, m in models.items()
            }
            for round_index in range(warmup + repeats):
                for label, model in models.items():
                    seconds = _timed_calls(model, example_input, calls[label])
                    if round_index >= warmup:
                        times[label].append(seconds)
    finally:
        torch.set_num_threads(previous)
        for label, model in models.items():
            model.train(flags[label])
    return {label: statistics.median(ts) for label, ts in times.items()}


def _random_input(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    # A private generator: measuring must not move the global random state of a run.
    gen = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=gen, dtype=dtype).to(device)


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measure_efficiency(
    model: nn.Module,
    input_shape: Sequence[int],
    compact_model: nn.Module | None = None,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    repeats: int = REPEATS,
    warmup: int = WARMUP,
    threads: int | None = THREADS,
) -> dict[str, Any]:
    """CR, FLOPs speed-up Sp and measured speed-up of a masked multi-task model.

    Args:
        model: the trained (masked) model with a ``backbone``; not modified.
        input_shape: one input image's shape ``(C, H, W)``.
        compact_model: its compact version; made with :func:`compact` when omitted.
        batch_sizes: batch sizes whose latency is measured.
        repeats: timed rounds per batch size.
        warmup: untimed rounds per batch size.
        threads: intra-op threads during the timing; None keeps the current setting.

    Returns:
        ``cr``, ``sp`` and ``speedup`` (see the module docstring) with the counts and latencies
        they come from: ``cr_physical`` (dense over compact backbone conv parameters),
        ``sp_backbone`` (the backbone alone), parameter and FLOPs counts, ``latency_ms`` and
        ``speedup_by_batch`` keyed by batch size, and the measurement settings.
    """
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    if compact_model is None:
        # Channel dependencies do not depend on the image size, so a small image is traced.
        probe_shape = (*input_shape[:-2], *(min(s, TRACE_SIZE) for s in input_shape[-2:]))
        probe = _random_input((1, *probe_shape), device, dtype)
        compact_model = compact(model, probe)
    models = {"dense": model, "compact": compact_model}
    latency: dict[str, dict[str, float]] = {"dense": {}, "compact": {}}
    for batch in batch_sizes:
        x = _random_input((batch, *input_shape), device, dtype)
        for label, seconds in measure_latency(models, x, repeats, warmup, threads).items():
            latency[label][str(batch)] = 1e3 * seconds
    speedups = {b: latency["dense"][b] / latency["compact"][b] for b in latency["dense"]}
    return {
        **_size_figures(model, compact_model, _random_input((1, *input_shape), device, dtype)),
        "speedup": speedups[str(max(batch_sizes))] if speedups else None,
        "input_shape": [int(s) for s in input_shape],
        "latency_ms": latency,
        "speedup_by_batch": speedups,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "repeats": repeats,
        "warmup": warmup,
        "min_sample_s": MIN_SAMPLE_S,
    }


def _size_figures(model: nn.Module, compact_model: nn.Module, one: Tensor) -> dict[str, Any]:
    """CR and Sp with the parameter and FLOPs counts they come from, on one input ``one``."""
    total, nonzero = backbone_parameter_counts(model)
    compact_total, _ = backbone_parameter_counts(compact_model)
    counted = {
        label: flop_counts(net, one, ["backbone"])
        for label, net in (("dense", model), ("compact", compact_model))
    }
    flops = {label: counts[""] for label, counts in counted.items()}
    backbone_flops = {label: counts["backbone"] for label, counts in counted.items()}
    return {
        "cr": total / nonzero if nonzero else float("inf"),
        "sp": flops["dense"] / flops["compact"],
        "cr_physical": total / compact_total,
        "sp_backbone": backbone_flops["dense"] / backbone_flops["compact"],
        "backbone_params": total,
        "backbone_nonzero_params": nonzero,
        "backbone_params_compact": compact_total,
        "params_dense": _parameters(model),
        "params_compact": _parameters(compact_model),
        "flops_dense": flops["dense"],
        "flops_compact": flops["compact"],
        "backbone_flops_dense": backbone_flops["dense"],
        "backbone_flops_compact": backbone_flops["compact"],
    }


def efficiency_record(model: nn.Module, dataset: Dataset) -> dict[str, Any]:
    """The efficiency record of a finished run, on inputs shaped like ``dataset``'s images.

    A model that cannot be compacted still gets its compression ratio; ``sp`` and ``speedup``
    are then None and ``error`` says why (the run's other results are not lost).
    """
    image = dataset[0][0]
    started = time.perf_counter()
    try:
        record = measure_efficiency(model, tuple(image.shape))
        record["measure_s"] = time.perf_counter() - started
        return record
    except Exception as exc:  # a run's results must survive a failed efficiency measurement
        logger.warning("efficiency measurement failed: %s", exc, exc_info=True)
        return {
            "cr": compression_ratio(model),
            "sp": None,
            "speedup": None,
            "error": f"{type(exc).__name__}: {exc}",
        }
