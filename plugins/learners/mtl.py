"""Standard joint multi-task training with proximal sparsity updates."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from sparsekit.engine.optim import ProximalOptimizer
from sparsekit.engine.sparsity import sparsity
from sparsekit.engine.training import (
    Batch,
    EarlyStopping,
    autocast,
    cycle,
    evaluate,
    make_loader,
    task_losses,
    to_device,
)
from sparsekit.interfaces import (
    ComponentConfig,
    Learner,
    StepInfo,
    TrainingContext,
    TrainingHistory,
)
from sparsekit.models import backbone_conv_weights


def warmed_up_lambda(lam: float | torch.Tensor, step: int, warmup: int) -> float | torch.Tensor:
    """λ at ``step`` (1-based) of a linear warm-up over ``warmup`` steps: λ·min(1, step/warmup).

    The first steps then train the network towards a useful solution before the penalty reaches
    full strength; ``warmup = 0`` applies the full λ from the first step.
    """
    if warmup <= 0 or step >= warmup:
        return lam
    return lam * (step / warmup)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


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

    name = "mtl"
    supports_schedules = True
    debiases = True
    #: Under BatchNorm a conv layer's function does not change with the scale of its weights, so
    #: plain proximal Adam shrinks whole layers towards zero unopposed; the prox in Adam's own
    #: metric is invariant to that scale (docs/penalties.md).
    default_optimizer = "proxssi"

    class Config(ComponentConfig):
        log_every: int = 10

    def fit(self, context: TrainingContext) -> TrainingHistory:
        cfg, model, device = context.config, context.model, context.device
        pin = device.type == "cuda" if cfg.pin_memory == "auto" else bool(cfg.pin_memory)
        optimizer = ProximalOptimizer(
            list(model.parameters()) + list(context.combiner.parameters()),
            list(backbone_conv_weights(model).values()),
            context.penalty,
            context.lam,
            cfg.optimizer,
        )
        scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
        loader = make_loader(
            context.train,
            cfg.batch_size,
            shuffle=True,
            generator=context.generator,
            pin_memory=pin,
            num_workers=cfg.num_workers,
            drop_last=True,
        )
        batches = cycle(loader)
        stopper = EarlyStopping(cfg.patience, [model, context.combiner])
        history = TrainingHistory()
        model.train()
        pruner = context.pruner
        if pruner is not None:
            pruner.start(optimizer)
        try:
            step = self._loop(context, optimizer, scaler, batches, stopper, history)
        finally:
            if pruner is not None:
                pruner.stop()
        if cfg.patience is not None:
            stopper.restore_best()
            history.best_step = stopper.best_step
        else:
            history.best_step = step
        return history

    def _loop(
        self,
        context: TrainingContext,
        optimizer: ProximalOptimizer,
        scaler: torch.amp.GradScaler,
        batches: Iterator[Batch],
        stopper: EarlyStopping,
        history: TrainingHistory,
    ) -> int:
        """The training steps; returns the last step taken."""
        cfg, model, device, pruner = context.config, context.model, context.device, context.pruner
        pin = device.type == "cuda" if cfg.pin_memory == "auto" else bool(cfg.pin_memory)
        step = 0
        for step in range(1, cfg.steps + 1):
            lam = warmed_up_lambda(context.lam, step, cfg.lam_warmup)
            optimizer.lam = lam
            images, targets = to_device(next(batches), device, non_blocking=pin)
            with autocast(device, cfg.amp):
                outputs = model(images)
                loss = context.combiner(task_losses(outputs, targets, context.tasks))
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
            info = StepInfo(step, cfg.steps, loss_value, float(lam))
            if step % cfg.eval_every == 0 or step == cfg.steps:
                val_loss, _ = evaluate(
                    model, context.val, context.tasks, context.combiner, device, non_blocking=pin
                )
                stats = sparsity(model)
                history.profile.append(
                    {
                        "step": step,
                        "train_loss": loss_value,
                        "val_loss": val_loss,
                        "lam": float(lam),
                        "group": stats["group"],
                        "parameter": stats["parameter"],
                    }
                )
                if settled:
                    stopper.update(step, val_loss)
                info.val_loss = val_loss
                info.group_sparsity, info.parameter_sparsity = stats["group"], stats["parameter"]
            elif step % self.config.log_every == 0:
                stats = sparsity(model)
                info.group_sparsity, info.parameter_sparsity = stats["group"], stats["parameter"]
            context.on_step(info)
            if stopper.should_stop:
                history.stopped_early = True
                break
        return step
