"""The benchmarks' reference computations do the math of what they are compared with."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from benchmarks import bench_overhead, bench_prox
from sparsekit import Experiment
from sparsekit.data.loading import make_loader
from sparsekit_plugins.learners._episodes import EpisodeBatch
from sparsekit_plugins.learners._meta_trainer import MetaTrainer
from sparsekit_plugins.penalties.group_lasso import GroupLassoPenalty

TASKS = ["segmentation", "depth", "normals", "edges"]


@pytest.mark.parametrize(
    "lam0",
    [
        3.0,  # the inner prox (step α_in = 0.05) zeroes some groups of the clone, not all
        150.0,  # the outer prox (step α_out = 1e-3) zeroes groups of Θ_meta
    ],
)
def test_hand_maml_step_matches_the_toolkit_meta_step(lam0: float) -> None:
    experiment = Experiment(
        dataset={"name": "shapes", "n_train": 32, "n_val": 8, "n_test": 8, "image_size": 16},
        model={"name": "small_resnet", "widths": [4, 8], "output_stride": 4},
        tasks=TASKS,
        learner={
            "name": "maml",
            "episodes": [TASKS],
            "batch_size": 4,
            "lam_init": (lam0, lam0),
            "lam_update": "inner_prox",
        },
        penalty="group_lasso",
        lam="learned",
        optimizer={"lr": bench_overhead.LR},
        device="cpu",
    )
    learner, context = bench_overhead._context(experiment)
    options = learner.config
    hand_model = copy.deepcopy(context.model).train()
    batches = iter(make_loader(context.train, 4, shuffle=True, generator=torch.Generator()))
    support, query = next(batches), next(batches)

    context.model.train()
    trainer = MetaTrainer(learner, context)
    empty = torch.empty(0, dtype=torch.long)
    trainer.stream.next = lambda: EpisodeBatch(tuple(TASKS), support, query, empty, empty)
    hand_step = bench_overhead.hand_maml_step(hand_model, context, options, support, query)
    for _ in range(2):  # the second step starts from Adam state and a moved λ
        trainer.meta_step()
        hand_step()

    # Parameters, and the BatchNorm running statistics the support forwards update.
    toolkit = {**dict(context.model.named_parameters()), **dict(context.model.named_buffers())}
    hand = {**dict(hand_model.named_parameters()), **dict(hand_model.named_buffers())}
    assert toolkit.keys() == hand.keys()
    for name, value in toolkit.items():
        torch.testing.assert_close(hand[name], value, rtol=1e-4, atol=1e-6, msg=name)
    zero_groups = sum(
        int(m.weight.detach().abs().amax(dim=(0, 2, 3)).eq(0).sum())
        for m in context.model.backbone.modules()
        if isinstance(m, nn.Conv2d)
    )
    assert (zero_groups > 0) == (lam0 > 100)


@pytest.mark.parametrize("lam_scale", [0.5, 1.0, 2.0])
def test_naive_loop_prox_equals_the_vectorised_prox(lam_scale: float) -> None:
    gen = torch.Generator().manual_seed(0)
    weights = [
        torch.randn(6, 5, 3, 3, generator=gen) * torch.rand(1, 5, 1, 1, generator=gen),
        torch.randn(8, 6, 1, 1, generator=gen) * torch.rand(1, 6, 1, 1, generator=gen),
    ]
    step = 1e-3
    lam = lam_scale * bench_prox.zeroing_lam(weights, step)
    looped = [w.clone() for w in weights]
    bench_prox.loop_prox_(looped, step, lam)
    penalty = GroupLassoPenalty()
    for w, got in zip(weights, looped, strict=True):
        expected = penalty.prox_(w.clone(), step, lam)
        torch.testing.assert_close(got, expected)
    zeroed = sum(int(w.abs().amax(dim=(0, 2, 3)).eq(0).sum()) for w in looped)
    assert 0 < zeroed < sum(w.shape[1] for w in weights)


def test_zeroing_lam_zeroes_about_half_the_groups() -> None:
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(16, 40, 3, 3, generator=gen) * torch.rand(1, 40, 1, 1, generator=gen)]
    lam = bench_prox.zeroing_lam(weights, 1e-3)
    norms = weights[0].square().sum(dim=(0, 2, 3)).sqrt()
    tau = 1e-3 * lam * math.sqrt(16 * 9)
    assert int((norms <= tau).sum()) in (20, 21)
