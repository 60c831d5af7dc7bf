"""``anil``: meta-sparsity whose inner loop adapts only the task heads (Almost No Inner Loop)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsekit.nn import MultiTaskNet
from sparsekit_plugins.learners._episodes import Episode
from sparsekit_plugins.learners._meta import (
    Batch,
    MetaState,
    episode_loss,
    import_learn2learn,
    prox_backbone,
    regrow_clone,
    set_parameter,
)
from sparsekit_plugins.learners._meta_learner import MetaLearner


def head_outputs(
    model: MultiTaskNet, features: Tensor, tasks: Sequence[str], size: torch.Size
) -> dict[str, Tensor]:
    """The heads of ``tasks`` on precomputed backbone features, as ``MultiTaskNet.forward`` does.

    Pixel-level outputs are upsampled bilinearly to ``size``, the input's spatial size.
    """
    out: dict[str, Tensor] = {}
    for name in tasks:
        y = model.heads[name](features)
        if name in model.pixel_tasks and y.shape[-2:] != size:
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        out[name] = y
    return out


class ANILLearner(MetaLearner):
    """Meta-sparsity with ANIL: the backbone is shared and learned in the outer loop only.

    Per episode the clone's backbone conv weights get one differentiable prox with λ (step α_in),
    the backbone runs once on the support batch, and the episode's heads take κ second-order SGD
    steps on those features. The query loss reaches the backbone and λ through the proxed weights
    and through the heads' adaptation.

    References:
        Raghu et al. 2020, "Rapid Learning or Feature Reuse? Towards Understanding the
        Effectiveness of MAML"; Upadhyay et al., "Meta-Sparsity" (Algorithm 3).
    """

    name: ClassVar[str] = "anil"

    def adapt(self, state: MetaState, episode: Episode, support: Batch) -> tuple[nn.Module, Tensor]:
        """Prox the clone's backbone once, then κ head-only steps on the support features."""
        clone = import_learn2learn().clone_module(state.model)
        regrow_clone(clone, state)
        prox_backbone(clone, state, state.lam())
        images, targets = support
        features = clone.backbone(images)
        first: Tensor | None = None
        for _ in range(state.inner_steps):
            outputs = head_outputs(clone, features, episode, images.shape[-2:])
            loss = episode_loss(state, outputs, targets, episode)
            first = loss if first is None else first
            named = [
                (f"heads.{task}.{key}", param)
                for task in episode
                for key, param in clone.heads[task].named_parameters()
            ]
            grads = torch.autograd.grad(loss, [p for _, p in named], create_graph=True)
            for (name, param), grad in zip(named, grads, strict=True):
                set_parameter(clone, name, param - state.inner_lr * grad)
        assert first is not None
        return clone, first
