"""Toolkit overhead: a training step through sparsekit against a hand-written loop.

Case ``mtl``: the ``mtl`` learner, set up as :class:`sparsekit.Experiment` sets it up (default
``small_resnet`` on 32×32 ``shapes`` images, four tasks, batch 32, uncertainty weighting, Adam with
the group-lasso prox, λ = 0.05), against a minimal loop doing the same math on a copy of the same
model: forward, the uncertainty-combined loss Σ exp(−s_t)·L_t + s_t, backward, an Adam step, the
group-lasso prox on the backbone conv weights. The loop reuses one fixed batch of the same size;
the learner draws its batches from its DataLoader, so loading, progress reports and its periodic
sparsity statistics are part of the overhead measured.

Case ``maml``: one meta-step of the ``maml`` learner with a learned λ (same model, data and
combiner; every episode holds all four tasks, the learner's default two episodes per meta-step,
support and query batches of 16, one inner step), against a minimal loop written directly on
``learn2learn.algorithms.MAML`` doing the same math on a copy of the same model: per episode a
clone, the support loss, ``clone.adapt``, the differentiable group-lasso prox with λ = softplus(ρ)
on the clone's backbone conv weights, BatchNorm on batch statistics, the query loss backward
(averaged over episodes); then Adam on Θ, the log-variances and ρ, and the in-place prox on Θ's
backbone convs with step α_out. The loop reuses one fixed support and one fixed query batch; the
learner draws episodes and batches from its episode stream, keeps the previous meta-gradient for
regrowth policies and logs sparsity, all of which count as overhead.

A repeat times ``steps`` steps of each, interleaved (learner, loop, learner, loop, ...), with one
intra-op thread. The learner's step time is the interval between its consecutive ``on_step``
reports, excluding the first step (set-up) and the last (which evaluates on the validation
split); the loop's is timed the same way. The result is the median over repeats of the mean step
time, and ``<case>_ratio`` = learner / loop, whose target is ≤ 1.10.

Each case is one entry of :data:`CASES` returning its own figures.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsekit import Experiment
from sparsekit.data.loading import make_loader
from sparsekit.engine.experiment import build
from sparsekit.engine.resolve import resolve
from sparsekit.interfaces import StepInfo, TrainingContext
from sparsekit.nn import backbone_conv_weights
from sparsekit_plugins.learners._learned_lambda import inverse_softplus
from sparsekit_plugins.learners._meta import import_learn2learn

THREADS = 1
REPEATS = 5
STEPS = 12
#: A maml meta-step costs several mtl steps, so fewer are timed per repeat.
MAML_STEPS = 8
BATCH = 32
LAM = 0.05
#: The learned λ's starting value in the ``maml`` case (one value, so both loops start there).
LAM0 = 0.5
LR = 1e-3
DATASET = {"name": "shapes", "n_train": 256, "n_val": 32, "n_test": 32, "image_size": 32}


def _context(experiment: Experiment) -> tuple[Any, TrainingContext]:
    """The learner and its inputs, built exactly as :class:`Experiment` builds them."""
    resolved = resolve(experiment.config)
    return resolved.learner, build(resolved, lambda info: None).context


def _learner_step_seconds(learner: Any, context: TrainingContext) -> float:
    stamps: list[float] = []

    def on_step(info: StepInfo) -> None:
        stamps.append(time.perf_counter())

    context.on_step = on_step
    learner.fit(context)
    return _step_seconds(stamps)


def _hand_prox_(weights: list[Tensor], step: float, lam: float | Tensor) -> None:
    """Group lasso prox: w_g ← max(0, 1 − step·λ·√n_g / ‖w_g‖) · w_g per input channel."""
    with torch.no_grad():
        for w in weights:
            norms = w.square().sum(dim=(0, 2, 3)).sqrt()
            tau = step * lam * math.sqrt(w.numel() // w.shape[1])
            scale = (1 - tau / norms.clamp_min(1e-30)).clamp_min(0)
            w.mul_(scale.view(1, -1, 1, 1))


def _step_seconds(stamps: list[float]) -> float:
    """Mean interval between step-end stamps, without the first step and the last."""
    intervals = [b - a for a, b in zip(stamps[:-2], stamps[1:-1], strict=True)]
    return statistics.fmean(intervals)


def _uncertainty_loss(
    outputs: dict[str, Tensor], targets: dict[str, Tensor], tasks: list[Any], log_vars: Tensor
) -> Tensor:
    loss = log_vars.new_zeros(())
    for i, task in enumerate(tasks):
        task_loss = task.loss(outputs[task.name], targets[task.name])
        loss = loss + torch.exp(-log_vars[i]) * task_loss + log_vars[i]
    return loss


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
        loss = _uncertainty_loss(model(images), targets, context.tasks, log_vars)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _hand_prox_(weights, LR, LAM)
        stamps.append(time.perf_counter())
    return _step_seconds(stamps)


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
    learner, context = _context(experiment)
    hand_model = copy.deepcopy(context.model)
    loader = make_loader(context.train, BATCH, shuffle=True, generator=torch.Generator())
    batch = next(iter(loader))
    toolkit, hand = [], []
    for _ in range(REPEATS):
        toolkit.append(_learner_step_seconds(learner, context))
        hand.append(_hand_loop_step_seconds(hand_model, context, batch))
    toolkit_s, hand_s = statistics.median(toolkit), statistics.median(hand)
    return {"toolkit_ms": 1e3 * toolkit_s, "hand_ms": 1e3 * hand_s, "ratio": toolkit_s / hand_s}


def _hand_group_prox(weight: Tensor, step: float, lam: Tensor) -> Tensor:
    """Differentiable group lasso prox, zero groups without 1/0 in the backward pass."""
    sq = weight.square().sum(dim=(0, 2, 3), keepdim=True)
    tau = step * lam * math.sqrt(weight.numel() // weight.shape[1])
    active = sq > tau * tau
    norm = torch.where(active, sq, torch.ones_like(sq)).sqrt()
    return weight * torch.where(active, 1 - tau / norm, torch.zeros_like(sq))


def hand_maml_step(
    model: nn.Module,
    context: TrainingContext,
    options: Any,
    support: tuple[Tensor, dict[str, Tensor]],
    query: tuple[Tensor, dict[str, Tensor]],
) -> Callable[[], None]:
    """A closure taking one hand-written MAML meta-step on ``model`` (the module docstring)."""
    l2l = import_learn2learn()
    tasks = list(context.tasks)
    log_vars = torch.zeros(len(tasks), requires_grad=True)
    low, high = options.lam_init
    assert low == high, "the hand loop starts from the one λ₀ that lam_init allows"
    rho = torch.tensor(inverse_softplus(low), requires_grad=True)
    optimizer = torch.optim.Adam(
        [
            {"params": [*model.parameters(), log_vars]},
            {"params": [rho], "lr": options.lam_lr, "weight_decay": 0.0},
        ],
        lr=LR,
    )
    maml = l2l.algorithms.MAML(model, lr=options.inner_lr, first_order=False, allow_unused=True)
    convs = backbone_conv_weights(model)  # type: ignore[arg-type]
    conv_names, weights = list(convs), list(convs.values())
    episodes = options.episodes_per_batch

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        for _ in range(episodes):
            clone = maml.clone()
            lam = F.softplus(rho)
            clone.adapt(_uncertainty_loss(clone(support[0]), support[1], tasks, log_vars))
            for name in conv_names:
                owner, _, key = name.rpartition(".")
                module = clone.module.get_submodule(owner)
                module._parameters[key] = _hand_group_prox(
                    module._parameters[key], options.inner_lr, lam
                )
            for sub in clone.module.modules():  # the query forward uses batch statistics
                if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                    for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                        sub._buffers[buffer] = None
            query_loss = _uncertainty_loss(clone(query[0]), query[1], tasks, log_vars)
            (query_loss / episodes).backward()
        optimizer.step()
        _hand_prox_(weights, LR, F.softplus(rho).detach())

    return step


def _hand_maml_step_seconds(step: Callable[[], None]) -> float:
    stamps = []
    for _ in range(MAML_STEPS):
        step()
        stamps.append(time.perf_counter())
    return _step_seconds(stamps)


def maml_overhead() -> dict[str, float]:
    """The ``maml`` meta-step time over the hand-written loop's (see the module docstring)."""
    names = ["segmentation", "depth", "normals", "edges"]
    experiment = Experiment(
        dataset=DATASET,
        tasks=names,
        learner={
            "name": "maml",
            "episodes": [names],
            "lam_init": (LAM0, LAM0),
            "lam_update": "inner_prox",  # the rule the hand-written loop implements
        },
        penalty="group_lasso",
        lam="learned",
        steps=MAML_STEPS,
        eval_every=10_000,
        optimizer={"lr": LR},
        device="cpu",
    )
    learner, context = _context(experiment)
    options = learner.config
    hand_model = copy.deepcopy(context.model)
    loader = make_loader(
        context.train, options.batch_size, shuffle=True, generator=torch.Generator()
    )
    batches = iter(loader)
    support, query = next(batches), next(batches)
    hand_model.train()
    hand_step = hand_maml_step(hand_model, context, options, support, query)
    toolkit, hand = [], []
    for _ in range(REPEATS):
        toolkit.append(_learner_step_seconds(learner, context))
        hand.append(_hand_maml_step_seconds(hand_step))
    toolkit_s, hand_s = statistics.median(toolkit), statistics.median(hand)
    return {"toolkit_ms": 1e3 * toolkit_s, "hand_ms": 1e3 * hand_s, "ratio": toolkit_s / hand_s}


#: The cases measured, by name; each returns figures reported as ``<name>_<figure>``.
CASES: dict[str, Callable[[], dict[str, float]]] = {"mtl": mtl_overhead, "maml": maml_overhead}


def run() -> dict[str, Any]:
    """Every case's step times and toolkit/hand ratio, with the settings."""
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        result: dict[str, Any] = {
            "threads": THREADS,
            "repeats": REPEATS,
            "steps": STEPS,
            "maml_steps": MAML_STEPS,
            "batch": BATCH,
        }
        for name, case in CASES.items():
            result.update({f"{name}_{key}": value for key, value in case().items()})
        return result
    finally:
        torch.set_num_threads(previous)
