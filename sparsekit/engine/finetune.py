"""Fine-tuning, the meta-testing stage: adapt a trained multi-task model, possibly to new tasks.

Starting from any trained :class:`~sparsekit.reporting.result.Result` (whatever learner produced
it), three uses cover the papers' meta-testing stage:

(i) fine-tune on the same tasks: ``mode="all"`` and no added task;
(ii) add an unseen task and train only its new head: ``add_tasks=[...]``, ``mode="head"``;
(iii) add an unseen task and fine-tune everything: ``add_tasks=[...]``, ``mode="all"``.

A new task gets a fresh head from the model builder's ``build_head`` and a new entry in the loss
combiner (its ``add_task``). No penalty acts while fine-tuning; instead every backbone conv
weight that is zero at the start is held at exactly ``0.0`` by a
:class:`~sparsekit.engine.masking.MaskSet` hooked into the optimiser, so the sparsity pattern is
kept whatever the optimiser's momentum or weight decay. Frozen modules (the backbone in mode
``head``, and the heads of tasks not fine-tuned) get no gradient and stay in eval mode, so their
BatchNorm running statistics do not move either. The validation split serves early stopping only;
the metrics are those of the final model on the test split, for every task of the model.

References:
    Upadhyay et al., "Meta-Sparsity: Learning Optimal Sparse Structures in Multi-task Networks
    through Meta-learning" (§3.4 meta-testing; §5, adding unseen tasks).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from sparsekit.config import ConfigError, FinetuneConfig
from sparsekit.engine.components import resolve_component
from sparsekit.engine.efficiency import run_efficiency
from sparsekit.engine.masking import MaskSet, freeze_zeros
from sparsekit.engine.optim import build_optimizer
from sparsekit.engine.sparsity import layer_channels, sparsity
from sparsekit.engine.training import (
    EarlyStopping,
    cycle,
    evaluate,
    make_loader,
    resolve_device,
    seed_everything,
    task_losses,
    to_device,
)
from sparsekit.interfaces import DatasetProvider, StepInfo, TrainingHistory
from sparsekit.models import MultiTaskNet

if TYPE_CHECKING:
    from sparsekit.reporting.result import Result
    from sparsekit.tasks import Task


@dataclass
class FinetunePlan:
    """What a fine-tuning stage trains and what it leaves alone.

    Attributes:
        model: a copy of the trained network, with the added tasks' heads.
        combiner: a copy of the trained loss combiner, extended to the added tasks.
        tasks: every task of ``model``, in head order (all are evaluated).
        trained: the fine-tuned tasks, whose losses are optimised.
        added: names of the added tasks.
        frozen: modules without gradients, kept in eval mode (BatchNorm statistics fixed).
    """

    model: MultiTaskNet
    combiner: nn.Module
    tasks: list[Task]
    trained: list[Task]
    added: list[str]
    frozen: list[nn.Module]

    def trainable(self) -> list[nn.Parameter]:
        """The model's parameters outside the frozen modules."""
        frozen = {id(p) for module in self.frozen for p in module.parameters()}
        return [p for p in self.model.parameters() if id(p) not in frozen]

    @contextlib.contextmanager
    def frozen_without_grads(self) -> Iterator[None]:
        """Turn off the frozen parameters' gradients for the duration, then restore the flags."""
        params = [p for module in self.frozen for p in module.parameters()]
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)

    def set_modes(self) -> None:
        """Training mode for the trained parts, eval mode for the frozen ones."""
        self.model.train()
        for module in self.frozen:
            module.eval()


def extend_combiner(parent: Result, added: list[str]) -> nn.Module:
    """A copy of ``parent``'s loss combiner that also weights the ``added`` tasks.

    The copy keeps the learned weights of the trained tasks. A combiner with an
    ``add_task(name)`` method takes each new task through it; one without parameters is rebuilt
    for the longer task list.

    Raises:
        ConfigError: the combiner has parameters but no ``add_task``.
    """
    spec = parent.config["loss_combiner"]
    names = [*parent.tasks, *added]
    if parent.combiner is None:
        return resolve_component("loss_combiner", spec).build(names)
    combiner = copy.deepcopy(parent.combiner)
    if not added:
        return combiner
    if hasattr(combiner, "add_task"):
        for name in added:
            combiner.add_task(name)
        return combiner
    if any(True for _ in combiner.parameters()):
        raise ConfigError(
            f"the loss combiner {type(combiner).__name__} has learned parameters but no "
            f"add_task(name) method, so it cannot take the new tasks {added}"
        )
    return resolve_component("loss_combiner", spec).build(names)


def _check_task_names(
    parent: Result, stage: FinetuneConfig, provider: DatasetProvider
) -> list[str]:
    """The trained tasks to fine-tune, after checking every name of the stage."""
    available = [t.name for t in provider.tasks()]
    missing = [n for n in stage.add_tasks if n not in available]
    if missing:
        raise ConfigError(
            f"add_tasks {missing} are not tasks of data set {provider.name!r}; it has {available}"
        )
    clash = [n for n in stage.add_tasks if n in parent.tasks]
    if clash:
        raise ConfigError(
            f"add_tasks {clash} are already trained tasks of this run; list them in tasks instead"
        )
    unknown = [n for n in stage.tasks or [] if n not in parent.tasks]
    if unknown:
        raise ConfigError(f"tasks {unknown} are not tasks of this run; it has {parent.tasks}")
    if stage.tasks is not None:
        kept = list(stage.tasks)
    else:
        kept = [] if stage.mode == "head" and stage.add_tasks else list(parent.tasks)
    if not kept and not stage.add_tasks:
        raise ConfigError("nothing to fine-tune: tasks is empty and no task is added")
    return kept


def plan_finetune(
    parent: Result, stage: FinetuneConfig, provider: DatasetProvider, device: torch.device
) -> FinetunePlan:
    """Copy the trained model, add the new heads and decide what trains.

    Raises:
        ValueError: ``parent`` holds no model.
        ConfigError: a stage's task lists do not fit the run or the data set.
    """
    if parent.model is None:
        raise ValueError(
            "this result holds no model to fine-tune; load it with Result.load(dir) "
            "(with_model=True) from a run directory that has a model.pt"
        )
    kept = _check_task_names(parent, stage, provider)
    added = list(stage.add_tasks)
    by_name = {t.name: t for t in provider.select_tasks([*parent.tasks, *added])}
    model: MultiTaskNet = copy.deepcopy(parent.model).to(device)
    builder = resolve_component("model", parent.config["model"])
    for name in added:
        task = by_name[name]
        head = builder.build_head(task, model.backbone_channels).to(device)
        model.add_head(name, head, pixel=task.level == "pixel")
    trained = [by_name[n] for n in [*kept, *added]]
    frozen = [model.heads[n] for n in model.task_names if n not in kept and n not in added]
    if stage.mode == "head":
        frozen.insert(0, model.backbone)
    return FinetunePlan(
        model=model,
        combiner=extend_combiner(parent, added).to(device),
        tasks=[by_name[n] for n in model.task_names],
        trained=trained,
        added=added,
        frozen=frozen,
    )


def _optimizer(plan: FinetunePlan, stage: FinetuneConfig) -> Any:
    """The stage's optimiser over the trainable parameters, without a penalty."""
    groups: list[dict[str, Any]] = [{"params": plan.trainable()}]
    combiner_params = list(plan.combiner.parameters())
    if combiner_params:
        # Decaying log-variances towards 0 has no meaning; they are loss weights, not weights.
        groups.append({"params": combiner_params, "weight_decay": 0.0})
    return build_optimizer(groups, [], None, 0.0, stage.optimizer)


def _validate(
    plan: FinetunePlan, val: Dataset, info: StepInfo, device: torch.device, pin: bool
) -> dict[str, float]:
    """Validation loss of the trained tasks and sparsity, as a profile row; fills ``info``."""
    val_loss, _ = evaluate(plan.model, val, plan.trained, plan.combiner, device, non_blocking=pin)
    stats = sparsity(plan.model)
    info.val_loss = val_loss
    info.group_sparsity, info.parameter_sparsity = stats["group"], stats["parameter"]
    return {
        "step": info.step,
        "train_loss": info.loss,
        "val_loss": val_loss,
        "lam": 0.0,
        "group": stats["group"],
        "parameter": stats["parameter"],
    }


def _train(
    plan: FinetunePlan,
    masks: MaskSet,
    data: dict[str, Dataset],
    settings: dict[str, Any],
    stage: FinetuneConfig,
    on_step: Callable[[StepInfo], None],
) -> TrainingHistory:
    """The fine-tuning loop: combined loss of the trained tasks, no penalty, masks enforced."""
    device, pin = settings["device"], settings["pin_memory"]
    optimizer = _optimizer(plan, stage)
    loader = make_loader(
        data["train"],
        settings["batch_size"],
        shuffle=True,
        generator=settings["generator"],
        pin_memory=pin,
        num_workers=settings["num_workers"],
        drop_last=True,
    )
    batches, names = cycle(loader), [t.name for t in plan.trained]
    stopper = EarlyStopping(stage.patience, [plan.model, plan.combiner])
    history = TrainingHistory()
    handles = masks.attach(optimizer)
    try:
        for step in range(1, stage.steps + 1):
            plan.set_modes()  # evaluate() puts every module back in training mode
            images, targets = to_device(next(batches), device, non_blocking=pin)
            loss = plan.combiner(task_losses(plan.model(images, names), targets, plan.trained))
            info = StepInfo(step, stage.steps, float(loss.detach()), 0.0)
            if not math.isfinite(info.loss):
                raise FloatingPointError(f"the fine-tuning loss is {info.loss} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % settings["eval_every"] == 0 or step == stage.steps:
                history.profile.append(_validate(plan, data["val"], info, device, pin))
                stopper.update(step, history.profile[-1]["val_loss"])
            on_step(info)
            if stopper.should_stop:
                history.stopped_early = True
                break
    finally:
        handles.remove()
    history.best_step = stopper.best_step if stage.patience is not None else step
    if stage.patience is not None:
        stopper.restore_best()
    return history


def _settings(parent: Result, stage: FinetuneConfig) -> dict[str, Any]:
    """The stage's run settings, each taken from the parent's config unless the stage sets it."""
    base = parent.config
    device = resolve_device(stage.device or base.get("device", "auto"))
    pin = base.get("pin_memory", "auto")
    return {
        "device": device,
        "pin_memory": device.type == "cuda" if pin == "auto" else bool(pin),
        "batch_size": stage.batch_size or base.get("batch_size", 32),
        "eval_every": stage.eval_every or base.get("eval_every", 50),
        "num_workers": base.get("num_workers", 0),
        "seed": stage.seed if stage.seed is not None else base.get("seed", 0),
    }


def finetune(
    parent: Result,
    stage: FinetuneConfig,
    run_dir: str | Path | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
) -> Result:
    """Fine-tune a trained run; ``parent`` is left unchanged.

    Args:
        parent: a trained result holding its model (from a run, or ``Result.load(dir)``).
        stage: what to fine-tune and how.
        run_dir: where to save the fine-tuned result, or None.
        on_step: called with a :class:`StepInfo` after every fine-tuning step.

    Returns:
        A new result: the fine-tuned model, its test metrics for every task of the model, and a
        config that is the parent's with ``finetune`` set to ``stage``; ``extra["finetune"]``
        names the parent run and keeps its metrics and sparsity for comparison.

    Raises:
        ValueError: ``parent`` holds no model.
        ConfigError: the stage's task lists do not fit the run or the data set.
        FloatingPointError: the fine-tuning loss became NaN or infinite.
    """
    started = time.perf_counter()
    settings = _settings(parent, stage)
    settings["generator"] = seed_everything(settings["seed"])  # also fixes the new heads' init
    provider = resolve_component("dataset", parent.config["dataset"])
    plan = plan_finetune(parent, stage, provider, settings["device"])
    trained, everything = [t.name for t in plan.trained], [t.name for t in plan.tasks]
    data = {
        "train": provider.load("train", trained),
        "val": provider.load("val", trained),
        "test": provider.load("test", everything),
    }
    masks = freeze_zeros(plan.model, stage.mask)
    active_before = {row.name: row.active for row in layer_channels(plan.model)}
    ready = time.perf_counter()
    with plan.frozen_without_grads():
        history = _train(plan, masks, data, settings, stage, on_step or (lambda info: None))
    plan.model.train()
    trained_at = time.perf_counter()
    device = settings["device"]
    val_all = provider.load("val", everything) if everything != trained else data["val"]
    _, val_metrics = evaluate(plan.model, val_all, plan.tasks, plan.combiner, device)
    _, metrics = evaluate(plan.model, data["test"], plan.tasks, plan.combiner, device)
    finished = time.perf_counter()
    result = _result(parent, stage, plan, run_dir, metrics, history, masks)
    result.val_metrics = val_metrics
    result.efficiency = run_efficiency(plan.model, data["test"])
    result.layers = [
        {
            "name": row.name,
            "total": row.total,
            "active_before": active_before[row.name],
            "active_after": row.active,
        }
        for row in layer_channels(plan.model)
    ]
    result.timings = {
        "setup_s": ready - started,
        "train_s": trained_at - ready,
        "test_s": finished - trained_at,
        "total_s": finished - started,
    }
    if run_dir is not None:
        result.save(run_dir)
    return result


def _result(
    parent: Result,
    stage: FinetuneConfig,
    plan: FinetunePlan,
    run_dir: str | Path | None,
    metrics: dict[str, dict[str, float]],
    history: TrainingHistory,
    masks: MaskSet,
) -> Result:
    """The fine-tuned result, without layers and timings."""
    from sparsekit.reporting.result import Result
    from sparsekit.reporting.tables import final_lam

    config = {
        **parent.config,
        "finetune": stage.model_dump(mode="json"),
        "run_dir": str(run_dir) if run_dir is not None else None,
    }
    record: dict[str, Any] = {
        "parent_run_dir": parent.config.get("run_dir"),
        "parent_tasks": list(parent.tasks),
        "parent_metrics": parent.metrics,
        "parent_sparsity": parent.sparsity,
        "parent_lam": final_lam(parent),
        "mode": stage.mode,
        "trained_tasks": [t.name for t in plan.trained],
        "added_tasks": plan.added,
        "frozen_weights": masks.num_frozen(),
    }
    if parent.config.get("finetune") is not None:
        record["parent_finetune"] = parent.config["finetune"]
    return Result(
        config=config,
        tasks=[t.name for t in plan.tasks],
        metrics=metrics,
        metric_directions={t.name: dict(t.metrics) for t in plan.tasks},
        sparsity=sparsity(plan.model),
        layers=[],
        profile=history.profile,
        timings={},
        best_step=history.best_step,
        stopped_early=history.stopped_early,
        extra={"finetune": record},
        model=plan.model,
        combiner=plan.combiner,
    )
