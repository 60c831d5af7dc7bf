"""Channel-group math, in one place: groups, their sizes, zero groups, and exact-budget masks.

A channel group of a weight ``[C_out, C_in, ...]`` is ``weight[:, c]``, everything that reads
input channel ``c`` (``C_out·k_h·k_w`` parameters for a conv): the groups of the channel-wise
group lasso, and what structured pruning removes. At element granularity every parameter is its
own group.

:func:`select_keep` turns scores into keep masks that zero a given fraction of the parameters:
exactly ``round(target · N)`` at element granularity, and at channel granularity the prefix of
lowest-scored groups whose total size is nearest to it (so within half of one group). Groups are
ordered by score, ties by position (weights in the given order, then channel or flat index).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

Granularity = Literal["channel", "element"]
GRANULARITIES: tuple[str, ...] = ("channel", "element")


def check_granularity(granularity: str) -> None:
    """Raises ValueError for anything but ``"channel"`` or ``"element"``."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be 'channel' or 'element', got {granularity!r}")


def group_rows(weight: Tensor) -> Tensor:
    """``weight`` as ``[C_in, group size]``: row ``c`` is channel group ``weight[:, c]``.

    Raises:
        ValueError: the weight has fewer than two dimensions (no input-channel axis).
    """
    if weight.dim() < 2:
        raise ValueError(
            f"channel groups need a weight with an input-channel dimension (≥ 2-D), got shape "
            f"{tuple(weight.shape)}"
        )
    return weight.transpose(0, 1).reshape(weight.shape[1], -1)


def zero_channel_groups(weight: Tensor) -> Tensor:
    """Which channel groups ``weight[:, c]`` are entirely zero, a bool ``[C_in]``."""
    return ~group_rows(weight.detach()).ne(0).any(dim=1)


def channel_view(mask: Tensor, weight: Tensor) -> Tensor:
    """A ``[C_in]`` mask reshaped to broadcast over ``weight`` (``[1, C_in, 1, ...]``)."""
    return mask.reshape(1, -1, *([1] * (weight.dim() - 2)))


def group_sizes(weights: Mapping[str, Tensor], granularity: Granularity) -> dict[str, Tensor]:
    """Parameters per group (``C_out·k_h·k_w``, ``[C_in]``) or per element (all ones)."""
    check_granularity(granularity)
    if granularity == "element":
        return {n: torch.ones(w.numel(), dtype=torch.int64) for n, w in weights.items()}
    return {
        n: torch.full((w.shape[1],), w.numel() // w.shape[1], dtype=torch.int64)
        for n, w in weights.items()
    }


def _flat(
    masks: Mapping[str, Tensor] | None, weights: Mapping[str, Tensor], granularity: str
) -> Tensor | None:
    """Per-group or per-element flags of ``masks`` (element or ``[C_in]`` shaped), concatenated.

    At channel granularity an element-shaped mask flags a group when it flags all its entries.
    """
    if masks is None:
        return None
    parts = []
    for name, weight in weights.items():
        mask = masks.get(name)
        if mask is None:
            count = weight.numel() if granularity == "element" else weight.shape[1]
            parts.append(torch.zeros(count, dtype=torch.bool))
            continue
        mask = mask.detach().bool().cpu()
        if granularity == "element":
            if mask.shape == (weight.shape[1],):
                mask = channel_view(mask, weight).expand(weight.shape)
            parts.append(mask.reshape(-1))
        else:
            parts.append(mask if mask.dim() == 1 else mask.transpose(0, 1).flatten(1).all(dim=1))
    return torch.cat(parts)


def select_keep(
    weights: Mapping[str, Tensor],
    scores: Mapping[str, Tensor],
    target: float,
    granularity: Granularity,
    frozen: Mapping[str, Tensor] | None = None,
    protected: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Keep masks zeroing the lowest-scored groups or elements to ``round(target · N)`` params.

    Args:
        weights: conv weights by name (their sizes define the budget).
        scores: per weight, ``[C_in]`` (channel) or weight-shaped (element) scores; lower is
            zeroed first.
        target: the fraction of all parameters of ``weights`` to zero, in ``[0, 1]``.
        granularity: ``"channel"`` or ``"element"``.
        frozen: entries (True) ranked before every other, whatever their score.
        protected: entries (True) ranked after every other, whatever their score.

    Returns:
        A bool keep mask per weight, ``[C_in]`` or weight-shaped, on the weight's device.

    Raises:
        ValueError: a target outside ``[0, 1]`` or an unknown granularity.
    """
    check_granularity(granularity)
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be in [0, 1], got {target}")
    sizes = torch.cat(list(group_sizes(weights, granularity).values()))
    flat = torch.cat([scores[n].detach().to("cpu", torch.float64).reshape(-1) for n in weights])
    ranked_frozen = _flat(frozen, weights, granularity)
    ranked_protected = _flat(protected, weights, granularity)
    if ranked_frozen is not None:
        flat = flat.masked_fill(ranked_frozen, -math.inf)
    if ranked_protected is not None:
        flat = flat.masked_fill(ranked_protected, math.inf)
    budget = round(target * int(sizes.sum()))
    order = torch.sort(flat, stable=True).indices
    cumulative = torch.cumsum(sizes[order], dim=0)
    # The largest prefix not above the budget, or one group more if that lands nearer to it.
    count = int(torch.searchsorted(cumulative, budget, right=True))
    below = int(cumulative[count - 1]) if count > 0 else 0
    if count < len(order) and int(cumulative[count]) - budget < budget - below:
        count += 1
    zeroed = torch.zeros(len(flat), dtype=torch.bool)
    zeroed[order[:count]] = True
    keep, offset = {}, 0
    for name, weight in weights.items():
        shape = weight.shape if granularity == "element" else (weight.shape[1],)
        size = math.prod(shape)
        keep[name] = (~zeroed[offset : offset + size]).reshape(shape).to(weight.device)
        offset += size
    return keep


def zeroed_parameters(weights: Mapping[str, Tensor], keep: Mapping[str, Tensor]) -> int:
    """How many parameters of ``weights`` the keep masks zero."""
    total = 0
    for name, weight in weights.items():
        mask = keep[name]
        if mask.shape != weight.shape:
            mask = channel_view(mask, weight).expand(weight.shape)
        total += int((~mask).sum())
    return total
