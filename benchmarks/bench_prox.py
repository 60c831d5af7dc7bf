"""Cost of the group-lasso proximal step on the conv weights of a dilated ResNet-50.

Three passes over the same tensors, timed interleaved (a, b, c, a, b, c, ...) after a warm-up,
with the median taken per pass:

- ``prox``: :meth:`GroupLassoPenalty.prox_` on every conv weight, with a λ that zeroes some groups;
- ``mul``: one element-wise ``mul_`` pass over the same tensors, the floor any in-place update pays;
- ``colsum``: a plain sum over dim 0 of each weight's 2-D view ``[C_out, C_in·k_h·k_w]``, the
  cheapest read-only column reduction eager PyTorch offers; the group norms the prox needs are
  such a reduction (of squares), so this is a floor for the prox's first pass;
- ``loop``: the naive per-input-channel Python loop computing the same prox.

Every timed pass starts from the same weights (restored outside the timed region), so repeated
shrinking never changes the work. The ratio prox/mul says how close the prox is to a single
memory pass; loop/prox what vectorising buys.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from sparsekit_plugins.penalties.group_lasso import GroupLassoPenalty

THREADS = 1
REPEATS = 7
WARMUP = 1
STEP = 1e-3


def conv_weights() -> list[Tensor]:
    """The 4-D conv weights of a randomly initialised dilated ResNet-50 (output stride 8)."""
    from torchvision.models import resnet50

    torch.manual_seed(0)
    model = resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
    return [p.detach().clone() for p in model.parameters() if p.dim() == 4]


def zeroing_lam(weights: list[Tensor], step: float) -> float:
    """A λ whose threshold step·λ·√n_g equals the median of ‖w_g‖/√n_g: about half the groups."""
    dims = (0, 2, 3)
    ratios = torch.cat(
        [
            torch.linalg.vector_norm(w, dim=dims) / math.sqrt(w.numel() // w.shape[1])
            for w in weights
        ]
    )
    return float(ratios.median()) / step


def loop_prox_(weights: list[Tensor], step: float, lam: float) -> None:
    """The naive prox: one Python iteration, one norm and one branch per input channel."""
    for w in weights:
        tau = step * lam * math.sqrt(w.numel() // w.shape[1])
        for c in range(w.shape[1]):
            group = w[:, c]
            norm = group.norm()
            if norm <= tau:
                group.zero_()
            else:
                group.mul_(1 - tau / norm)


def _timed(fn: Callable[[], None], restore: Callable[[], None]) -> float:
    restore()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run() -> dict[str, Any]:
    """Time prox_, mul_ and the per-channel loop; return medians, ratios and settings."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        pristine = conv_weights()
        work = [w.clone() for w in pristine]
        penalty = GroupLassoPenalty()
        lam = zeroing_lam(pristine, STEP)

        def restore() -> None:
            for w, p in zip(work, pristine, strict=True):
                w.copy_(p)

        def prox() -> None:
            for w in work:
                penalty.prox_(w, STEP, lam)

        def mul() -> None:
            for w in work:
                w.mul_(0.5)

        def colsum() -> None:
            for w in work:
                w.view(w.shape[0], -1).sum(dim=0)

        def loop() -> None:
            loop_prox_(work, STEP, lam)

        passes: dict[str, Callable[[], None]] = {
            "prox": prox,
            "mul": mul,
            "colsum": colsum,
            "loop": loop,
        }
        times: dict[str, list[float]] = {name: [] for name in passes}
        for i in range(WARMUP + REPEATS):
            for name, fn in passes.items():
                elapsed = _timed(fn, restore)
                if i >= WARMUP:
                    times[name].append(elapsed)

        restore()
        for w in work:
            penalty.prox_(w, STEP, lam)
        groups = sum(w.shape[1] for w in work)
        zero_groups = sum(int((~penalty.active_mask(w)).sum()) for w in work)
        median = {name: statistics.median(ts) for name, ts in times.items()}
        return {
            "layers": len(work),
            "parameters": sum(w.numel() for w in work),
            "groups": groups,
            "zeroed_group_fraction": zero_groups / groups,
            "threads": THREADS,
            "repeats": REPEATS,
            "prox_ms": 1e3 * median["prox"],
            "mul_ms": 1e3 * median["mul"],
            "colsum_ms": 1e3 * median["colsum"],
            "loop_ms": 1e3 * median["loop"],
            "prox_over_mul": median["prox"] / median["mul"],
            "colsum_over_mul": median["colsum"] / median["mul"],
            "loop_over_prox": median["loop"] / median["prox"],
        }
    finally:
        torch.set_num_threads(previous_threads)
