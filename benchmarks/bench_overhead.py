"""Toolkit overhead: a training step through sparsekit against a hand-written loop.

Case ``mtl``: the ``mtl`` learner, set up as :class:`sparsekit.Experiment` sets it up (default
``small_resnet`` on 32×32 ``shapes`` images, four tasks, batch 32, uncertainty weighting, Adam with
the group-lasso prox, λ = 0.05), against a minimal loop doing the same math on a copy of the same
model: forward, the uncertainty-combined loss Σ exp(−s_t)·L_t + s_t, backward, an Adam step, the
group-lasso prox on the backbone conv weights. The loop reuses one fixed batch of the same size;
the learner draws its batches from its DataLoader, so loading, progress reports and its periodic
sparsity statistics are part of the overhead measured.

A repeat times ``STEPS`` steps of each, interleaved (learner, loop, learner, loop, ...), with one
intra-op thread. The learner's step time is the interval between its consecutive ``on_step``
reports, excluding the first step (set-up) and the last (which evaluates on the validation
split); the loop's is timed the same way. The result is the median over repeats of the mean step
time, and ``<case>_ratio`` = learner / loop, whose target is ≤ 1.10.

Each case is one entry of :data:`CASES` returning its own figures, so cases for other learners
can be added beside ``mtl``.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from sparsekit import Experiment
from sparsekit.engine.components import resolve_component
from sparsekit.engine.training import make_loader, seed_everything
from sparsekit.interfaces import StepInfo, TrainingContext
from sparsekit.models import backbone_conv_weights

THREADS = 1
REPEATS = 5
STEPS = 12
BATCH = 32
LAM = 0.05
LR = 1e-3
DATASET = {"name": "shapes", "n_train": 256, "n_val": 32, "n_test": 32, "image_size": 32}


def _context(experiment: Experiment) -> TrainingContext:
    """The learner's inputs, resolved as :class:`Experiment` resolves them."""
    cfg = experiment.config
    generator = seed_everything(cfg.seed)
    provider = resolve_component("dataset", cfg.dataset)
    tasks = provider.select_tasks(cfg.tasks)
    names = [t.name for t in tasks]
    model = resolve_component("model", cfg.model).build(tasks, provider.in_channels)
    return TrainingContext(
        model=model,
        tasks=tasks,
        train=provider.load("train", names),
        val=provider.load("val", names),
        penalty=resolve_component("penalty", cfg.penalty),
        lam=cfg.lam,
        combiner=resolve_component("loss_combiner", cfg.loss_combiner).build(names),
        config=cfg,
        device=torch.device(cfg.device),
        generator=generator,
    )


def _learner_step_seconds(learner: Any, context: TrainingContext) -> float:
    stamps: list[float] = []

    def on_step(info: StepInfo) -> None:
        stamps.append(time.perf_counter())

    context.on_step = on_step
    learner.fit(context)
    intervals = [b - a for a, b in zip(stamps[:-2], stamps[1:-1], strict=True)]
    return statistics.fmean(intervals)


def _hand_prox_(weights: list[Tensor], step: float, lam: float) -> None:
    """Group lasso prox: w_g ← max(0, 1 − step·λ·√n_g / ‖w_g‖) · w_g per input channel."""
    with torch.no_grad():
        for w in weights:
            norms = w.square().sum(dim=(0, 2, 3)).sqrt()
            tau = step * lam * math.sqrt(w.numel() // w.shape[1])
            scale = (1 - tau / norms.clamp_min(1e-30)).clamp_min(0)
            w.mul_(scale.view(1, -1, 1, 1))


def _hand_loop_step_seconds(
    model: nn.Module, context: TrainingContext, batch: tuple[Tensor, dict[str, Tensor]]
) -> float:
    images, targets = batch
    log_vars = torch.zeros(len(context.tasks), requires_grad=True)
    optimizer = torch.optim.Adam([*model.parameters(), log_vars], lr=LR)
    weights = list(backbone_conv_weights(model).values())  # type: ignore[arg-type]
    model.train()
    stamps = []
    for _ in range(STEPS):
        outputs = model(images)
        loss = log_vars.new_zeros(())
        for i, task in enumerate(context.tasks):
            task_loss = task.loss(outputs[task.name], targets[task.name])
            loss = loss + torch.exp(-log_vars[i]) * task_loss + log_vars[i]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _hand_prox_(weights, LR, LAM)
        stamps.append(time.perf_counter())
    intervals = [b - a for a, b in zip(stamps[:-2], stamps[1:-1], strict=True)]
    return statistics.fmean(intervals)


def mtl_overhead() -> dict[str, float]:
    """The ``mtl`` learner's step time over the hand-written loop's (see the module docstring)."""
    experiment = Experiment(
        dataset=DATASET,
        learner="mtl",
        penalty="group_lasso",
        lam=LAM,
        steps=STEPS,
        batch_size=BATCH,
        eval_every=10_000,
        optimizer={"lr": LR},
        device="cpu",
    )
    context = _context(experiment)
    learner = resolve_component("learner", experiment.config.learner)
    hand_model = copy.deepcopy(context.model)
    loader = make_loader(context.train, BATCH, shuffle=True, generator=torch.Generator())
    batch = next(iter(loader))
    toolkit, hand = [], []
    for _ in range(REPEATS):
        toolkit.append(_learner_step_seconds(learner, context))
        hand.append(_hand_loop_step_seconds(hand_model, context, batch))
    toolkit_s, hand_s = statistics.median(toolkit), statistics.median(hand)
    return {"toolkit_ms": 1e3 * toolkit_s, "hand_ms": 1e3 * hand_s, "ratio": toolkit_s / hand_s}


#: The cases measured, by name; each returns figures reported as ``<name>_<figure>``.
CASES: dict[str, Callable[[], dict[str, float]]] = {"mtl": mtl_overhead}


def run() -> dict[str, Any]:
    """Every case's step times and toolkit/hand ratio, with the settings."""
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        result: dict[str, Any] = {
            "threads": THREADS,
            "repeats": REPEATS,
            "steps": STEPS,
            "batch": BATCH,
        }
        for name, case in CASES.items():
            result.update({f"{name}_{key}": value for key, value in case().items()})
        return result
    finally:
        torch.set_num_threads(previous)
