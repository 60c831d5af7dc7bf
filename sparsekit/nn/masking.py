"""Keeping chosen weights exactly zero while training with any torch optimiser.

A :class:`MaskSet` holds, for some parameters, a boolean *keep* mask: ``True`` where the weight may
train, ``False`` where it must stay exactly ``0.0``. Masking the gradient alone is not enough:
SGD's momentum buffer and Adam's ``exp_avg`` keep pushing a weight for many steps after its
gradient stops, and a coupled weight decay moves any weight that is not already zero. So the mask
acts at three points of every step:

1. before the step, the gradients of masked entries are set to zero;
2. after the step, the masked weights are set to ``0.0`` again;
3. after the step, the same entries of every parameter-shaped optimiser state tensor (SGD's
   ``momentum_buffer``, Adam/AdamW's ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, RMSprop's
   ``square_avg``, ...) are set to zero, so nothing remembered can revive them.

:meth:`MaskSet.attach` installs 1–3 as optimiser step hooks; :meth:`MaskSet.mask_grads_` and
:meth:`MaskSet.apply_` do the same by hand. Masks are per element (``"element"``, the mask has the
weight's shape) or per input channel (``"channel"``, a ``[C_in]`` mask over ``weight[:, c]``), the
groups of the channel-wise group lasso.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from sparsekit.nn.groups import Granularity, channel_view, zero_channel_groups
from sparsekit.nn.multitask import MultiTaskNet, backbone_conv_weights


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimiser holding the state: ``optimizer`` or, for a wrapper, its ``inner``."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    inner = getattr(optimizer, "inner", None)
    if isinstance(inner, torch.optim.Optimizer):
        return inner
    raise TypeError(
        f"expected a torch optimiser or a wrapper with an `inner` torch optimiser, got "
        f"{type(optimizer).__name__}"
    )


class _Handles:
    """Removable pair of optimiser hook handles."""

    def __init__(self, *handles: Any) -> None:
        self._handles = handles

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class MaskSet:
    """Keep masks of some parameters, enforced after every optimiser step.

    Args:
        params: the parameters to mask, by name.
        keep: for every name in ``params``, a bool mask: the parameter's shape for element
            granularity, or ``[C_in]`` (dimension 1 of the parameter) for channel granularity.
            ``True`` entries train, ``False`` entries are held at exactly ``0.0``.

    Raises:
        ValueError: a mask is missing, not boolean, or of a shape fitting neither granularity.
    """

    def __init__(self, params: Mapping[str, Tensor], keep: Mapping[str, Tensor]) -> None:
        missing = sorted(set(params) - set(keep))
        if missing:
            raise ValueError(f"no keep mask for {', '.join(missing)}")
        self.params: dict[str, Tensor] = dict(params)
        self._keep: dict[str, Tensor] = {}
        for name, param in self.params.items():
            self._keep[name] = self._broadcastable(name, param, keep[name])

    @staticmethod
    def _broadcastable(name: str, param: Tensor, mask: Tensor) -> Tensor:
        if mask.dtype != torch.bool:
            raise ValueError(f"the keep mask of {name} must be bool, got {mask.dtype}")
        mask = mask.to(param.device)
        if mask.shape == param.shape:
            return mask.clone()
        if param.dim() >= 2 and mask.shape == (param.shape[1],):
            return channel_view(mask.clone(), param)
        raise ValueError(
            f"the keep mask of {name} has shape {tuple(mask.shape)}; expected the parameter's "
            f"shape {tuple(param.shape)} or its input channels ({param.shape[1:2]})"
        )

    def keep(self, name: str) -> Tensor:
        """The keep mask of ``name``, expanded to the parameter's shape."""
        return self._keep[name].expand_as(self.params[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def num_frozen(self) -> int:
        """How many entries are held at zero, over every masked parameter."""
        return sum(int((~self.keep(name)).sum()) for name in self.params)

    @torch.no_grad()
    def mask_grads_(self) -> None:
        """Zero the gradients of the masked entries (call between backward and step)."""
        for name, param in self.params.items():
            if param.grad is not None:
                param.grad.masked_fill_(~self._keep[name], 0.0)

    @torch.no_grad()
    def apply_(self, optimizer: Any | None = None) -> None:
        """Set the masked weights, and their entries of ``optimizer``'s state, to ``0.0``.

        Args:
            optimizer: a torch optimiser (or a wrapper exposing one as ``inner``, such as
                :class:`sparsekit.nn.optim.ProximalOptimizer`) whose state to clean, or None
                to zero the weights only.
        """
        state = _torch_optimizer(optimizer).state if optimizer is not None else {}
        for name, param in self.params.items():
            frozen = ~self._keep[name]
            # masked_fill_ writes +0.0; multiplying by the mask would leave −0.0 behind.
            param.masked_fill_(frozen, 0.0)
            for key, value in state.get(param, {}).items():
                # "step" is a counter, never per-entry, even for a 0-d parameter.
                if key != "step" and isinstance(value, Tensor) and value.shape == param.shape:
                    value.masked_fill_(frozen, 0.0)

    def attach(self, optimizer: Any) -> _Handles:
        """Enforce the masks at every ``optimizer.step()`` through step hooks.

        The pre-step hook masks the gradients; the post-step hook re-zeroes weights and state.
        For a wrapper with an ``inner`` torch optimiser the hooks go on the inner optimiser, so
        anything the wrapper does after the inner step (a proximal step) runs after them.

        Returns:
            A handle whose ``remove()`` detaches both hooks.
        """
        inner = _torch_optimizer(optimizer)
        pre = inner.register_step_pre_hook(lambda opt, args, kwargs: self.mask_grads_())
        post = inner.register_step_post_hook(lambda opt, args, kwargs: self.apply_(opt))
        return _Handles(pre, post)

    def unfreeze(self, groups: Mapping[str, Tensor]) -> None:
        """Let some masked entries train again (e.g. groups a regrowth policy brought back).

        Args:
            groups: by parameter name, a bool mask (element or ``[C_in]`` channel shaped) of the
                entries to release; names not in the set are ignored.
        """
        for name, mask in groups.items():
            if name in self.params:
                released = self._broadcastable(name, self.params[name], mask)
                self._keep[name] = self._keep[name] | released


def freeze_zeros(
    target: MultiTaskNet | Mapping[str, Tensor], granularity: Granularity = "element"
) -> MaskSet:
    """A :class:`MaskSet` holding at zero what is zero now.

    Args:
        target: a multi-task network (its backbone conv weights are masked) or parameters by name.
        granularity: ``"element"`` freezes every zero weight (so element-wise and channel-wise
            sparsity are both kept); ``"channel"`` freezes only entirely-zero input-channel groups.

    Returns:
        The mask set; call :meth:`MaskSet.attach` with the optimiser, or :meth:`MaskSet.apply_`
        after every step.

    Raises:
        ValueError: an unknown granularity.
    """
    params = backbone_conv_weights(target) if isinstance(target, MultiTaskNet) else dict(target)
    if granularity == "element":
        keep = {name: p.detach().ne(0) for name, p in params.items()}
    elif granularity == "channel":
        keep = {name: ~zero_channel_groups(p) for name, p in params.items()}
    else:
        raise ValueError(f"granularity must be 'element' or 'channel', got {granularity!r}")
    return MaskSet(params, keep)
