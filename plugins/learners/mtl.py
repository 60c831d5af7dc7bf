"""Standard joint multi-task training with proximal sparsity updates."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import ClassVar

import torch

from sparsekit.config import DEFAULT_COMPONENT
from sparsekit.data.loading import Batch, ResumableBatches, make_loader, to_device
from sparsekit.engine.loop import Monitor
from sparsekit.engine.runtime import autocast
from sparsekit.errors import TrainingDiverged
from sparsekit.interfaces import (
    ComponentConfig,
    Learner,
    StepInfo,
    TrainingContext,
    TrainingHistory,
)
from sparsekit.nn import backbone_conv_weights
from sparsekit.nn.optim import ProximalOptimizer
from sparsekit.registry import create
from sparsekit.tasks import task_losses


def warmed_up_lambda(lam: float | torch.Tensor, step: int, warmup: int) -> float | torch.Tensor:
    """λ at ``step`` (1-based) of a linear warm-up over ``warmup`` steps: λ·min(1, step/warmup).

    The first steps then train the network towards a useful solution before the penalty reaches
    full strength; ``warmup = 0`` applies the full λ from the first step.
    """
    if warmup <= 0 or step >= warmup:
        return lam
    return lam * (step / warmup)


class MTLLearner(Learner):
    """Joint training of all tasks on one shared backbone (the papers' Algorithm 1).

    Every step runs the backbone once on a batch carrying targets for all tasks, combines the task
    losses with the loss combiner, takes an optimiser step on all parameters (model and combiner),
    then the proximal step of the penalty on the backbone conv weights. In a scheduled run it
    drives the context's pruner: masks are recomputed at the schedule's update steps and held at
    zero after every optimiser step, and early stopping only considers checkpoints taken once the
    sparsity is final.

    References:
        Upadhyay et al., "Less is More – Towards parsimonious multi-task models using structured
        sparsity", CPAL 2024.
    """

    name: ClassVar[str] = "mtl"
    is_default: ClassVar[bool] = True
    supports_schedules: ClassVar[bool] = True
    debiases: ClassVar[bool] = True
    #: Under BatchNorm a conv layer's function does not change with the scale of its weights, so
    #: plain proximal Adam shrinks whole layers towards zero unopposed; the prox in Adam's own
    #: metric is invariant to that scale (docs/penalties.md).
    default_optimizer: ClassVar[str | None] = "proxssi"

    class Config(ComponentConfig):
        log_every: int = 10

    def fit(self, context: TrainingContext) -> TrainingHistory:
        settings, model = context.settings, context.model
        assert context.lam != "learned"  # the experiment rejects a learned λ for this learner
        optimizer = create("optimizer", settings.optimizer.name or DEFAULT_COMPONENT).build(
            list(model.parameters()) + list(context.combiner.parameters()),
            list(backbone_conv_weights(model).values()),
            context.penalty,
            context.lam,
            settings.optimizer,
        )
        loader = make_loader(
            context.train,
            settings.batch_size,
            shuffle=True,
            generator=context.generator,
            pin_memory=settings.pin_memory,
            num_workers=settings.num_workers,
            drop_last=True,
        )
        monitor = Monitor.for_context(
            context, [model, context.combiner], log_every=self.config.log_every
        )
        batches = ResumableBatches(loader, context.generator)
        scaler = torch.amp.GradScaler(
            "cuda", enabled=settings.amp and context.device.type == "cuda"
        )
        checkpoint = context.checkpoint
        for name, obj in (
            ("model", model),
            ("combiner", context.combiner),
            ("optimizer", optimizer),
            ("batches", batches),
            ("scaler", scaler),
        ):
            checkpoint.track(name, obj)
        model.train()
        pruner = context.pruner
        if pruner is not None:
            pruner.start(optimizer)
            checkpoint.track("pruner", pruner)
        try:
            self._loop(context, optimizer, batches, monitor, scaler, checkpoint.restore())
        finally:
            if pruner is not None:
                pruner.stop()
        return monitor.finish()

    def _loop(
        self,
        context: TrainingContext,
        optimizer: ProximalOptimizer,
        batches: Iterator[Batch],
        monitor: Monitor,
        scaler: torch.amp.GradScaler,
        start: int,
    ) -> None:
        """The training steps after step ``start``."""
        settings, model, device, pruner = (
            context.settings,
            context.model,
            context.device,
            context.pruner,
        )
        assert context.lam != "learned"
        for step in range(start + 1, settings.steps + 1):
            lam = warmed_up_lambda(context.lam, step, settings.lam_warmup)
            optimizer.lam = lam
            images, targets = to_device(next(batches), device, non_blocking=settings.pin_memory)
            with autocast(device, settings.amp):
                outputs = model(images)
                losses = task_losses(outputs, targets, context.tasks)
                loss = context.combiner(losses)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise TrainingDiverged(f"the training loss is {loss_value} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if pruner is not None:
                pruner.after_step(step)
            settled = pruner is None or pruner.settled(step)
            info = StepInfo(
                step,
                settings.steps,
                loss_value,
                float(lam),
                task_losses={name: float(value.detach()) for name, value in losses.items()},
                lr=optimizer.param_groups[0]["lr"],
            )
            if monitor.after_step(info, settled=settled):
                break
