"""What a fine-tuning stage trains: the copied model with its new heads, and what stays frozen."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from sparsekit.config import FinetuneConfig
from sparsekit.errors import ConfigError
from sparsekit.interfaces import CombinerModule, DatasetProvider, ModelBuilder
from sparsekit.nn import MultiTaskNet
from sparsekit.registry import create
from sparsekit.runs.store import Result, make_builder
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
        device: where the model is.
    """

    model: MultiTaskNet
    combiner: nn.Module
    tasks: list[Task]
    trained: list[Task]
    added: list[str]
    frozen: list[nn.Module]
    device: torch.device

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


def extend_combiner(parent: Result, added: list[str]) -> CombinerModule:
    """A copy of ``parent``'s loss combiner that also weights the ``added`` tasks.

    The copy keeps the learned weights of the trained tasks and takes each new task through its
    ``add_task``; a result loaded without its combiner gets a fresh one for every task.
    """
    if parent.combiner is None:
        return create("loss_combiner", parent.config["loss_combiner"]).build(
            [*parent.tasks, *added]
        )
    combiner = copy.deepcopy(parent.combiner)
    for name in added:
        combiner.add_task(name)
    return combiner


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
    parent: Result,
    stage: FinetuneConfig,
    provider: DatasetProvider,
    device: torch.device,
    builder: ModelBuilder | None = None,
) -> FinetunePlan:
    """Copy the trained model, add the new heads and decide what trains.

    The new heads come from ``builder``, by default the one the run's config records.

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
    if builder is None:
        builder = make_builder(parent.config["model"])
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
        device=device,
    )
