"""The training loop's shared half: evaluation, profile rows, early stopping, the finish.

Every learner and the fine-tuning stage step their own way, then hand each step to one
:class:`Monitor`, which evaluates on the validation split at the cadence of the run, records the
sparsity profile, reports progress, stops early when patience runs out and, at the end, restores
the best checkpoint. The validation split serves model selection only; nothing of it is trained on
(BatchNorm evaluates with its running statistics).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from sparsekit.data.loading import make_loader, to_device
from sparsekit.interfaces import Checkpoint, StepInfo, TrainingContext, TrainingHistory
from sparsekit.nn.sparsity import sparsity
from sparsekit.tasks import Task, task_losses


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    tasks: Sequence[Task],
    combiner: nn.Module,
    device: torch.device,
    batch_size: int = 64,
    non_blocking: bool = False,
) -> tuple[float, dict[str, dict[str, float]]]:
    """Combined loss (mean over the split) and every task's metrics, in eval mode.

    BatchNorm uses its running statistics, so nothing of the evaluated split enters the model.
    """
    was_training = model.training
    model.eval()
    meters = {t.name: t.meter() for t in tasks}
    total_loss, count = 0.0, 0
    for batch in make_loader(dataset, batch_size, shuffle=False):
        images, targets = to_device(batch, device, non_blocking)
        outputs = model(images, [t.name for t in tasks])
        loss = combiner(task_losses(outputs, targets, tasks))
        total_loss += float(loss) * images.shape[0]
        count += images.shape[0]
        for t in tasks:
            meters[t.name].update(outputs[t.name].float(), targets[t.name])
    model.train(was_training)
    metrics = {name: meter.compute() for name, meter in meters.items()}
    return total_loss / max(count, 1), metrics


class EarlyStopping:
    """Keeps the weights with the lowest validation loss and counts evaluations without progress.

    Args:
        patience: evaluations without improvement before ``should_stop``; None never stops.
        modules: the modules whose state is checkpointed together (model and loss combiner).
    """

    def __init__(self, patience: int | None, modules: Sequence[nn.Module]) -> None:
        self.patience = patience
        self.modules = list(modules)
        self.best_loss = float("inf")
        self.best_step = 0
        self.bad_evals = 0
        self._best_state: list[dict[str, Tensor]] | None = None

    def update(self, step: int, val_loss: float) -> bool:
        """Record an evaluation; returns True if it is the best so far."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_step, self.bad_evals = val_loss, step, 0
            self._best_state = [copy.deepcopy(m.state_dict()) for m in self.modules]
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` evaluations in a row brought no improvement."""
        return self.patience is not None and self.bad_evals >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """The best loss and step, the evaluations without progress and the best weights."""
        return {
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "best_state": self._best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back a state from :meth:`state_dict`."""
        self.best_loss, self.best_step = float(state["best_loss"]), int(state["best_step"])
        self.bad_evals, self._best_state = int(state["bad_evals"]), state["best_state"]

    def restore_best(self) -> None:
        """Load the best weights back into the modules (one model for every task)."""
        if self._best_state is not None:
            for module, state in zip(self.modules, self._best_state, strict=True):
                module.load_state_dict(state)


class Monitor:
    """What happens after every step of every training loop, and at its end.

    Args:
        model: the network trained (its backbone's sparsity is recorded).
        val: the validation split.
        tasks: the tasks whose combined validation loss is tracked.
        combiner: the loss combiner.
        device: where the model is.
        total: the loop's number of steps (its last step is always evaluated).
        eval_every: steps between evaluations.
        patience: evaluations without improvement before stopping; None never stops.
        checkpointed: the modules early stopping saves and restores together.
        on_step: called with every step's :class:`StepInfo`.
        log_every: steps between sparsity readings for progress between evaluations (None: none).
        non_blocking: copy batches to the device asynchronously (pinned memory).
        checkpoint: the loop's checkpoint; the monitor tracks itself in it and tells it about
            every step.
    """

    def __init__(
        self,
        model: nn.Module,
        val: Dataset,
        tasks: Sequence[Task],
        combiner: nn.Module,
        device: torch.device,
        *,
        total: int,
        eval_every: int,
        patience: int | None,
        checkpointed: Sequence[nn.Module],
        on_step: Callable[[StepInfo], None],
        log_every: int | None = None,
        non_blocking: bool = False,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.model, self.val, self.tasks, self.combiner = model, val, list(tasks), combiner
        self.device, self.total, self.eval_every = device, total, eval_every
        self.log_every, self.non_blocking, self.on_step = log_every, non_blocking, on_step
        self.stopper = EarlyStopping(patience, checkpointed)
        self.history = TrainingHistory()
        self.last_step = 0
        self.checkpoint = checkpoint if checkpoint is not None else Checkpoint()
        self.checkpoint.track("monitor", self)

    def state_dict(self) -> dict[str, Any]:
        """The history so far, the early-stopping state and the last step."""
        return {
            "history": dataclasses.asdict(self.history),
            "stopper": self.stopper.state_dict(),
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back a state from :meth:`state_dict`."""
        self.history = TrainingHistory(**state["history"])
        self.stopper.load_state_dict(state["stopper"])
        self.last_step = int(state["last_step"])

    @classmethod
    def for_context(
        cls,
        context: TrainingContext,
        checkpointed: Sequence[nn.Module],
        log_every: int | None = None,
    ) -> Monitor:
        """The monitor of a learner's run: its model, validation split, tasks and settings."""
        settings = context.settings
        return cls(
            context.model,
            context.val,
            context.tasks,
            context.combiner,
            context.device,
            total=settings.steps,
            eval_every=settings.eval_every,
            patience=settings.patience,
            checkpointed=checkpointed,
            on_step=context.on_step,
            log_every=log_every,
            non_blocking=settings.pin_memory,
            checkpoint=context.checkpoint,
        )

    def is_eval_step(self, step: int) -> bool:
        """Whether ``step`` is evaluated: every ``eval_every`` steps and the last one."""
        return step % self.eval_every == 0 or step == self.total

    def after_step(
        self, info: StepInfo, row: dict[str, Any] | None = None, settled: bool = True
    ) -> bool:
        """Evaluate if due, record the profile row, report ``info``; True when it is time to stop.

        Args:
            info: the step's report (its ``loss`` and ``lam`` go into the profile row).
            row: extra profile fields, placed after ``train_loss``.
            settled: whether this checkpoint may be kept by early stopping (a scheduled run's
                sparsity is final).
        """
        self.last_step = info.step
        evaluated = self.is_eval_step(info.step)
        if evaluated:
            val_loss, val_metrics = evaluate(
                self.model,
                self.val,
                self.tasks,
                self.combiner,
                self.device,
                non_blocking=self.non_blocking,
            )
            stats = sparsity(self.model)
            self.history.profile.append(
                {
                    "step": info.step,
                    "train_loss": info.loss,
                    **(row or {}),
                    "val_loss": val_loss,
                    "lam": info.lam,
                    "group": stats["group"],
                    "parameter": stats["parameter"],
                }
            )
            if settled:
                self.stopper.update(info.step, val_loss)
            info.val_loss, info.val_metrics = val_loss, val_metrics
            info.group_sparsity, info.parameter_sparsity = stats["group"], stats["parameter"]
        elif self.log_every is not None and info.step % self.log_every == 0:
            stats = sparsity(self.model)
            info.group_sparsity, info.parameter_sparsity = stats["group"], stats["parameter"]
        self.on_step(info)
        stop = self.stopper.should_stop
        if stop:
            self.history.stopped_early = True
        self.checkpoint.after_step(info.step, evaluated, done=stop or info.step == self.total)
        return stop

    def finish(self) -> TrainingHistory:
        """Restore the best checkpoint (with patience) and return the history."""
        if self.stopper.patience is not None:
            self.stopper.restore_best()
            self.history.best_step = self.stopper.best_step
        else:
            self.history.best_step = self.last_step
        return self.history
