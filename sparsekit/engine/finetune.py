"""Fine-tuning, the meta-testing stage: adapt a trained multi-task model, possibly to new tasks.

Starting from any trained :class:`~sparsekit.runs.store.Result` (whatever learner produced
it), three uses cover the papers' meta-testing stage:

(i) fine-tune on the same tasks: ``mode="all"`` and no added task;
(ii) add an unseen task and train only its new head: ``add_tasks=[...]``, ``mode="head"``;
(iii) add an unseen task and fine-tune everything: ``add_tasks=[...]``, ``mode="all"``.

A new task gets a fresh head from the model builder's ``build_head`` and a new entry in the loss
combiner (its ``add_task``). No penalty acts while fine-tuning; instead every backbone conv
weight that is zero at the start is held at exactly ``0.0`` by a
:class:`~sparsekit.nn.masking.MaskSet` hooked into the optimiser, so the sparsity pattern is
kept whatever the optimiser's momentum or weight decay. Frozen modules (the backbone in mode
``head``, and the heads of tasks not fine-tuned) get no gradient and stay in eval mode, so their
BatchNorm running statistics do not move either. The validation split serves early stopping only;
the metrics are those of the final model on the test split, for every task of the model.

References:
    Upadhyay et al., "Meta-Sparsity: Learning Optimal Sparse Structures in Multi-task Networks
    through Meta-learning" (§3.4 meta-testing; §5, adding unseen tasks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ValidationError
from torch.utils.data import Dataset

from sparsekit.config import (
    DEFAULT_COMPONENT,
    ExperimentConfig,
    FinetuneConfig,
    describe_validation_error,
)
from sparsekit.data.loading import ResumableBatches, make_loader, to_device
from sparsekit.engine.finetune_plan import FinetunePlan, plan_finetune
from sparsekit.engine.loop import Monitor
from sparsekit.engine.outcome import final_metrics, layer_rows, timings
from sparsekit.engine.progress import PhaseReport, Progress, no_phase
from sparsekit.engine.runtime import resolve_device, seed_everything
from sparsekit.errors import ConfigError, TrainingDiverged
from sparsekit.interfaces import (
    Checkpoint,
    DatasetProvider,
    ModelBuilder,
    StepInfo,
    TrainingHistory,
    TrainSettings,
)
from sparsekit.nn.efficiency import efficiency_record
from sparsekit.nn.masking import MaskSet, freeze_zeros
from sparsekit.nn.sparsity import layer_channels, sparsity
from sparsekit.registry import create
from sparsekit.runs.directory import prepare_run_dir
from sparsekit.runs.store import Result, make_provider
from sparsekit.tasks import task_losses


def _optimizer(plan: FinetunePlan, settings: TrainSettings) -> Any:
    """The stage's optimiser over the trainable parameters, without a penalty."""
    groups: list[dict[str, Any]] = [{"params": plan.trainable()}]
    combiner_params = list(plan.combiner.parameters())
    if combiner_params:
        # Decaying log-variances towards 0 has no meaning; they are loss weights, not weights.
        groups.append({"params": combiner_params, "weight_decay": 0.0})
    kind = create("optimizer", settings.optimizer.name or DEFAULT_COMPONENT)
    return kind.build(groups, [], None, 0.0, settings.optimizer)


def _batches(train: Dataset, stage: StageSettings) -> ResumableBatches:
    """The stage's endless, seeded, checkpointable training batches."""
    settings = stage.train
    loader = make_loader(
        train,
        settings.batch_size,
        shuffle=True,
        generator=stage.generator,
        pin_memory=settings.pin_memory,
        num_workers=settings.num_workers,
        drop_last=True,
    )
    return ResumableBatches(loader, stage.generator)


#: What a fine-tuning stage's checkpoint holds besides the monitor.
_TRACKED = ("model", "combiner", "optimizer", "batches")


def _train(
    plan: FinetunePlan,
    masks: MaskSet,
    data: dict[str, Dataset],
    stage: StageSettings,
    on_step: Callable[[StepInfo], None],
) -> TrainingHistory:
    """The fine-tuning loop: combined loss of the trained tasks, no penalty, masks enforced."""
    settings, device, checkpoint = stage.train, stage.device, stage.checkpoint
    optimizer = _optimizer(plan, settings)
    batches, names = _batches(data["train"], stage), [t.name for t in plan.trained]
    monitor = Monitor(
        plan.model,
        data["val"],
        plan.trained,
        plan.combiner,
        device,
        total=settings.steps,
        eval_every=settings.eval_every,
        patience=settings.patience,
        checkpointed=[plan.model, plan.combiner],
        on_step=on_step,
        non_blocking=settings.pin_memory,
        checkpoint=checkpoint,
    )
    handles = masks.attach(optimizer)
    for name, obj in zip(_TRACKED, (plan.model, plan.combiner, optimizer, batches), strict=True):
        checkpoint.track(name, obj)
    try:
        for step in range(checkpoint.restore() + 1, settings.steps + 1):
            plan.set_modes()  # evaluate() puts every module back in training mode
            images, targets = to_device(next(batches), device, non_blocking=settings.pin_memory)
            losses = task_losses(plan.model(images, names), targets, plan.trained)
            loss = plan.combiner(losses)
            info = StepInfo(
                step,
                settings.steps,
                float(loss.detach()),
                0.0,
                task_losses={name: float(value.detach()) for name, value in losses.items()},
                lr=optimizer.param_groups[0]["lr"],
            )
            if not math.isfinite(info.loss):
                raise TrainingDiverged(f"the fine-tuning loss is {info.loss} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if monitor.after_step(info):
                break
    finally:
        handles.remove()
    return monitor.finish()


@dataclass
class StageSettings:
    """A fine-tuning stage's run settings: each the stage's own or, unset, the parent run's.

    Attributes:
        train: the training settings (steps, batch size, cadence, patience, optimiser).
        device: where it runs.
        seed: the seed of the data order and of the new heads' initialisation.
        generator: the seeded data-order generator.
        checkpoint: the stage's checkpoint.
    """

    train: TrainSettings
    device: torch.device
    seed: int
    generator: torch.Generator | None = None
    checkpoint: Checkpoint = field(default_factory=Checkpoint)


def stage_settings(parent: Result, stage: FinetuneConfig) -> StageSettings:
    """The stage's settings, each taken from the parent's config unless the stage sets it."""
    base = {**_experiment_defaults(), **parent.config}
    device = resolve_device(stage.device or base["device"])
    pin = base["pin_memory"]
    train = TrainSettings(
        steps=stage.steps,
        batch_size=stage.batch_size or base["batch_size"],
        eval_every=stage.eval_every or base["eval_every"],
        patience=stage.patience,
        optimizer=stage.optimizer,
        pin_memory=device.type == "cuda" if pin == "auto" else bool(pin),
        num_workers=base["num_workers"],
    )
    return StageSettings(train, device, stage.seed if stage.seed is not None else base["seed"])


def _experiment_defaults() -> dict[str, Any]:
    """The experiment's defaults of the settings a stage inherits."""
    fields = ("device", "pin_memory", "batch_size", "eval_every", "num_workers", "seed")
    return {name: ExperimentConfig.model_fields[name].default for name in fields}


def finetune_stage(
    parent: Result,
    stage: FinetuneConfig,
    run_dir: str | Path | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    phase: PhaseReport = no_phase,
    provider: DatasetProvider | None = None,
    builder: ModelBuilder | None = None,
    checkpoint: Callable[[torch.Generator], Checkpoint] | None = None,
) -> Result:
    """Fine-tune a trained run; ``parent`` is left unchanged.

    Args:
        parent: a trained result holding its model (from a run, or ``Result.load(dir)``).
        stage: what to fine-tune and how.
        run_dir: where to save the fine-tuned result, or None.
        on_step: called with a :class:`StepInfo` after every fine-tuning step.
        phase: called with the name of each phase after training as it begins.
        provider: the data set, by default the one the run's config records (data given in
            memory must be passed again).
        builder: makes the heads of added tasks, by default the run's model builder.
        checkpoint: makes the stage's checkpoint from its data-order generator (the second
            stage of a run with a run directory); None keeps none.

    Returns:
        A new result: the fine-tuned model, its test metrics for every task of the model, and a
        config that is the parent's with ``finetune`` set to ``stage``; ``extra["finetune"]``
        names the parent run and keeps its metrics and sparsity for comparison.

    Raises:
        ValueError: ``parent`` holds no model.
        ConfigError: the stage's task lists do not fit the run or the data set.
        TrainingDiverged: the fine-tuning loss became NaN or infinite.
    """
    clock = {"started": time.perf_counter()}
    settings = stage_settings(parent, stage)
    settings.generator = seed_everything(settings.seed)  # also fixes the new heads' init
    if checkpoint is not None:
        settings.checkpoint = checkpoint(settings.generator)
    if provider is None:
        provider = make_provider(parent.config["dataset"])
    plan = plan_finetune(parent, stage, provider, settings.device, builder)
    data = _stage_data(provider, plan)
    masks = freeze_zeros(plan.model, stage.granularity)
    active_before = {row.name: row.active for row in layer_channels(plan.model)}
    clock["ready"] = time.perf_counter()
    with plan.frozen_without_grads():
        history = _train(plan, masks, data, settings, on_step or (lambda info: None))
    plan.model.train()
    clock["trained"] = time.perf_counter()
    everything = [t.name for t in plan.tasks]
    same = everything == [t.name for t in plan.trained]
    data["val_all"] = data["val"] if same else provider.load("val", everything)
    result = _record(parent, stage, plan, history, masks, data, active_before, clock, phase)
    result.config["run_dir"] = str(run_dir) if run_dir is not None else None
    if run_dir is not None:
        phase("saving")
        result.save(run_dir)
    return result


def _stage_data(provider: DatasetProvider, plan: FinetunePlan) -> dict[str, Dataset]:
    """Training and validation splits of the trained tasks, the test split of all."""
    trained, everything = [t.name for t in plan.trained], [t.name for t in plan.tasks]
    data = {
        "train": provider.load("train", trained),
        "val": provider.load("val", trained),
        "test": provider.load("test", everything),
    }
    return data


def _record(
    parent: Result,
    stage: FinetuneConfig,
    plan: FinetunePlan,
    history: TrainingHistory,
    masks: MaskSet,
    data: dict[str, Dataset],
    active_before: dict[str, int],
    clock: dict[str, float],
    phase: PhaseReport = no_phase,
) -> Result:
    """The fine-tuned result: the final model's validation and test metrics for every task."""
    phase("testing")
    outcome = final_metrics(
        plan.model, plan.tasks, plan.combiner, data["val_all"], data["test"], plan.device
    )
    finished = time.perf_counter()
    phase("measuring efficiency")
    return Result(
        config={**parent.config, "finetune": stage.model_dump(mode="json")},
        tasks=[t.name for t in plan.tasks],
        metrics=outcome.metrics,
        val_metrics=outcome.val_metrics,
        metric_directions={t.name: dict(t.metrics) for t in plan.tasks},
        sparsity=sparsity(plan.model),
        layers=layer_rows(active_before, plan.model),
        profile=history.profile,
        timings=timings(clock["started"], clock["ready"], clock["trained"], finished),
        best_step=history.best_step,
        stopped_early=history.stopped_early,
        extra={"finetune": _lineage(parent, stage, plan, masks)},
        efficiency=efficiency_record(plan.model, data["test"]),
        model=plan.model,
        combiner=plan.combiner,
    )


def finetune(
    result: Result,
    tasks: Sequence[str] | None = None,
    add_tasks: Sequence[str] = (),
    mode: Literal["head", "all"] = "all",
    steps: int | None = None,
    optimizer: Any = None,
    run_dir: str | Path | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    progress: bool | None = None,
    dataset: DatasetProvider | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> Result:
    """Fine-tune a run's model (meta-testing), possibly on added tasks; see finetuning.md.

    Args:
        result: a trained result holding its model.
        tasks: the trained tasks to fine-tune (default: all; none in mode ``head`` when
            tasks are added).
        add_tasks: unseen tasks of the data set, each given a new head.
        mode: ``"head"`` trains only the fine-tuned heads (backbone frozen, BatchNorm
            included); ``"all"`` trains the backbone too.
        steps: fine-tuning steps (default that of :class:`sparsekit.config.FinetuneConfig`).
        optimizer: an :class:`sparsekit.config.OptimizerConfig` or its fields as a dict.
        run_dir: where to save the fine-tuned result, or None.
        on_step: called with a :class:`sparsekit.interfaces.StepInfo` after every step.
        progress: show a progress bar; None shows it when standard error is a terminal.
        overwrite: clear a ``run_dir`` that holds a run first (otherwise it is refused).
        dataset: the data set of a run whose data was given in memory (``from_tensors``).
        **overrides: other :class:`sparsekit.config.FinetuneConfig` fields (``batch_size``,
            ``eval_every``, ``patience``, ``granularity``, ``seed``, ``device``).

    Returns:
        A new result; ``result`` is left unchanged. Its backbone's zero weights are exactly
        those of ``result``'s.

    Raises:
        ConfigError: invalid fields, or task lists that do not fit this run.
        ValueError: the result holds no model (loaded with ``with_model=False``).
    """
    given = {"steps": steps, "optimizer": optimizer, "tasks": tasks}
    fields = {key: value for key, value in given.items() if value is not None}
    stage = finetune_config(add_tasks=list(add_tasks), mode=mode, **fields, **overrides)
    if run_dir is not None:
        prepare_run_dir(Path(run_dir), overwrite=overwrite, resumable=False)
    bar = Progress(stage.steps, progress)
    try:
        return finetune_stage(
            result, stage, run_dir, bar.chain(on_step), bar.phase, provider=dataset
        )
    finally:
        bar.close()


def finetune_config(**fields: Any) -> FinetuneConfig:
    """A :class:`FinetuneConfig` of ``fields``; invalid ones raise a readable ConfigError."""
    if fields.get("tasks") is not None:
        fields["tasks"] = list(fields["tasks"])
    try:
        return FinetuneConfig(**fields)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, FinetuneConfig)) from None


def _lineage(
    parent: Result, stage: FinetuneConfig, plan: FinetunePlan, masks: MaskSet
) -> dict[str, Any]:
    """What a fine-tuned result records of the run it came from and of what the stage did."""
    record: dict[str, Any] = {
        "parent_run_dir": parent.config.get("run_dir"),
        "parent_tasks": list(parent.tasks),
        "parent_metrics": parent.metrics,
        "parent_sparsity": parent.sparsity,
        "parent_lam": parent.final_lam,
        "mode": stage.mode,
        "trained_tasks": [t.name for t in plan.trained],
        "added_tasks": plan.added,
        "frozen_weights": masks.num_frozen(),
    }
    if parent.config.get("finetune") is not None:
        record["parent_finetune"] = parent.config["finetune"]
    return record
