"""sparsekit's group lasso against Torch-Pruning's regularise-then-prune, at matched sparsity.

Both pipelines get the same data set (``shapes``), tasks (segmentation, depth, normals, edges),
model, loss combiner, batch size, optimiser settings and seeds (``SEEDS``); everything but λ and
the seed comes from :class:`~sparsekit.config.ExperimentConfig`'s defaults (plus
``SPARSEKIT_OVERRIDES``), read when the benchmark runs, never copied here. For each λ in ``LAMS``
and each seed:

- ``sparsekit``: ``Experiment(dataset="shapes", tasks=TASKS, lam=λ, seed=seed, device="cpu")``
  run end to end: ``steps`` proximal group-lasso steps, then the masked debiasing stage
  (``debias_steps``, or an explicit ``finetune`` stage's steps, with the zeros held). Its
  backbone parameter sparsity is ``result.sparsity["parameter"]``, the fraction of backbone conv
  weights that are 0.
- ``peer``: the same model and data built through sparsekit's registry as
  :class:`~sparsekit.Experiment` builds them, trained with ``torch.optim.Adam`` (the config's lr,
  betas, eps and weight decay; model and loss-combiner parameters) for ``steps`` steps, each
  calling Torch-Pruning's ``GroupNormPruner.regularize`` between ``backward`` and the optimiser
  step (DepGraph's group-norm sparse training, ``reg = PEER_REG``, the class default, with
  ``GroupMagnitudeImportance(p=2)``). Then one ``pruner.step()`` physically removes backbone
  channels (the heads are ``ignored_layers``, so only their input channels that read a removed
  backbone channel go with it), with the pruning ratio found by bisection on deep copies so that
  the backbone parameter sparsity, 1 − remaining / original backbone ``Conv2d`` weight elements,
  is within ``SPARSITY_TOLERANCE`` of the sparsekit run of the same seed and λ. A fresh Adam then
  fine-tunes all parameters for as many steps as sparsekit's debiasing stage, so both pipelines
  take the same number of optimiser steps. ``global_pruning=True``: sparsekit's single λ over all
  layers lets each layer reach its own sparsity, and global ranking of the (mean-normalised)
  group importances is Torch-Pruning's counterpart; local pruning would impose one ratio on every
  layer.

Both are evaluated on the test split with :func:`sparsekit.engine.loop.evaluate`. Each
task's primary metric is recorded (segmentation mIoU ↑, depth MAE ↓, normals cosine ↑, edges
MAE ↓), with the reached sparsity and the wall time of the whole pipeline (data, model, training,
test; sparsekit's also includes its periodic validation and its efficiency record, the peer's its
bisection). The result holds, per λ and method, the mean and sample standard deviation over the
seeds of every metric, of the sparsity and of the wall time; the ratio of mean wall times
peer / sparsekit; and per task ``sparsekit_at_or_above_peer``: whether sparsekit's mean is at
least as good as the peer's in that metric's direction. One intra-op thread throughout.

The peer has no early stopping; with ``patience`` set, sparsekit restores its best checkpoint.
Whatever optimiser the config names, the peer uses Adam, Torch-Pruning's usual setting.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from sparsekit import Experiment
from sparsekit.config import ExperimentConfig, build_config
from sparsekit.data.loading import Batch, cycle, make_loader
from sparsekit.engine.experiment import build
from sparsekit.engine.loop import evaluate
from sparsekit.engine.resolve import resolve
from sparsekit.tasks import Task, task_losses

logger = logging.getLogger(__name__)

THREADS = 1
LAMS = (0.007, 0.015)
SEEDS = [0, 1, 2]
DATASET = "shapes"
TASKS = ["segmentation", "depth", "normals", "edges"]
#: Extra ExperimentConfig fields given to both pipelines (empty: the defaults as they stand).
SPARSEKIT_OVERRIDES: dict[str, Any] = {}
#: Each task's primary metric and whether higher is better.
PRIMARY_METRICS: dict[str, tuple[str, bool]] = {
    "segmentation": ("miou", True),
    "depth": ("mae", False),
    "normals": ("cosine", True),
    "edges": ("mae", False),
}
#: GroupNormPruner's default regularisation coefficient.
PEER_REG = 1e-4
#: Largest distance between the peer's reached backbone sparsity and the target.
SPARSITY_TOLERANCE = 0.015
BISECTION_STEPS = 16
#: Upper end of the bisection over Torch-Pruning's channel pruning ratio.
MAX_PRUNING_RATIO = 0.95
#: Images in the batch traced to build Torch-Pruning's dependency graph.
TRACE_BATCH = 2
DEVICE = torch.device("cpu")


@dataclass
class PipelineResult:
    """One pipeline run at one seed (and λ or target).

    Attributes:
        metrics: each task's primary metric on the test split.
        sparsity: backbone parameter sparsity reached, in [0, 1].
        wall_s: wall-clock seconds of the whole pipeline.
        model: the final model (the peer's is physically pruned).
        pruning_ratio: the peer's Torch-Pruning channel ratio (None for sparsekit).
    """

    metrics: dict[str, float]
    sparsity: float
    wall_s: float
    model: nn.Module
    pruning_ratio: float | None = None


def experiment_config(seed: int, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """ExperimentConfig defaults with the benchmark's data set, tasks, seed and overrides."""
    fields = {"dataset": DATASET, "tasks": TASKS, "device": "cpu", **(overrides or {})}
    return build_config({**fields, "seed": seed})


def planned_steps(overrides: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """``(training steps, fine-tuning steps)`` of the config.

    The fine-tuning steps are those of an explicit ``finetune`` stage, else those of the masked
    debiasing stage that follows a penalised ``mtl`` run (``debias_steps``, default
    ``steps // 3``; see docs/experiments.md).
    """
    cfg = experiment_config(0, overrides)
    if cfg.finetune is not None:
        return cfg.steps, cfg.finetune.steps
    debias = cfg.debias_steps if cfg.debias_steps is not None else cfg.steps // 3
    return cfg.steps, debias


def primary_metrics(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Each task's primary metric out of ``{task: {metric: value}}``."""
    return {task: float(metrics[task][PRIMARY_METRICS[task][0]]) for task in TASKS}


def backbone_conv_elements(model: nn.Module) -> int:
    """Elements of every ``Conv2d`` weight of ``model.backbone`` (physically present ones)."""
    return sum(m.weight.numel() for m in model.backbone.modules() if isinstance(m, nn.Conv2d))


def sparsekit_pipeline(
    seed: int, lam: float, overrides: Mapping[str, Any] | None = None
) -> PipelineResult:
    """sparsekit's experiment at ``lam`` and ``seed``, every other setting from the config."""
    started = time.perf_counter()
    cfg = experiment_config(seed, {**(overrides or {}), "lam": lam})
    result = Experiment(cfg).run()
    return PipelineResult(
        metrics=primary_metrics(result.metrics),
        sparsity=float(result.sparsity["parameter"]),
        wall_s=time.perf_counter() - started,
        model=result.model,
    )


def make_peer_pruner(model: nn.Module, example_inputs: Tensor, ratio: float) -> Any:
    """Torch-Pruning's group-norm pruner of ``model``'s backbone at channel ratio ``ratio``.

    Tracing puts ``model`` in eval mode; it is left there.
    """
    return tp.pruner.GroupNormPruner(
        model,
        example_inputs,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        reg=PEER_REG,
        global_pruning=True,
        pruning_ratio=ratio,
        ignored_layers=[model.heads],
    )


def prune_to_sparsity(
    model: nn.Module, example_inputs: Tensor, target: float
) -> tuple[nn.Module, float, float]:
    """A pruned copy of ``model`` whose backbone parameter sparsity is closest to ``target``.

    Bisection over the channel ratio of :func:`make_peer_pruner`, each trial on a deep copy,
    until the reached sparsity is within ``SPARSITY_TOLERANCE`` of ``target``.

    Returns:
        ``(pruned model, reached sparsity, pruning ratio)``; ``model`` is not modified.
    """
    dense = backbone_conv_elements(model)

    def attempt(ratio: float) -> tuple[nn.Module, float, float]:
        candidate = copy.deepcopy(model)
        if ratio > 0:
            make_peer_pruner(candidate, example_inputs, ratio).step()
        return candidate, 1.0 - backbone_conv_elements(candidate) / dense, ratio

    best = attempt(0.0)
    low, high = 0.0, MAX_PRUNING_RATIO
    for _ in range(BISECTION_STEPS):
        if abs(best[1] - target) <= SPARSITY_TOLERANCE:
            break
        trial = attempt((low + high) / 2)
        if abs(trial[1] - target) < abs(best[1] - target):
            best = trial
        low, high = (trial[2], high) if trial[1] < target else (low, trial[2])
    if abs(best[1] - target) > SPARSITY_TOLERANCE:
        logger.warning("peer sparsity %.4f misses the target %.4f", best[1], target)
    return best


def train_steps(
    model: nn.Module,
    combiner: nn.Module,
    tasks: Sequence[Task],
    batches: Iterator[Batch],
    steps: int,
    cfg: ExperimentConfig,
    pruner: Any = None,
) -> None:
    """``steps`` Adam steps on the combined loss; ``pruner.regularize`` after each backward."""
    opt = cfg.optimizer
    optimizer = torch.optim.Adam(
        [*model.parameters(), *combiner.parameters()],
        lr=opt.lr,
        betas=opt.betas,
        eps=opt.eps,
        weight_decay=opt.weight_decay,
    )
    model.train()
    for _ in range(steps):
        images, targets = next(batches)
        loss = combiner(task_losses(model(images), targets, tasks))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if pruner is not None:
            pruner.regularize(model)
        optimizer.step()


def peer_pipeline(
    seed: int,
    target_sparsity: float,
    steps: int,
    finetune_steps: int,
    overrides: Mapping[str, Any] | None = None,
) -> PipelineResult:
    """Torch-Pruning's regularise, prune to ``target_sparsity``, fine-tune pipeline.

    The data, model and loss combiner are built as :class:`~sparsekit.Experiment` builds them
    from :func:`experiment_config` (``overrides`` as for :func:`sparsekit_pipeline`).
    """
    started = time.perf_counter()
    cfg = experiment_config(seed, overrides)
    built = build(resolve(cfg), lambda info: None)
    context = built.context
    generator, tasks = context.generator, context.tasks
    splits = {"train": context.train, "val": context.val, "test": built.test}
    model, combiner = context.model.to(DEVICE), context.combiner.to(DEVICE)
    example = next(iter(make_loader(splits["train"], TRACE_BATCH, shuffle=False)))[0]
    regulariser = make_peer_pruner(model, example, 0.0)
    loader = make_loader(
        splits["train"], cfg.batch_size, shuffle=True, generator=generator, drop_last=True
    )
    train_steps(model, combiner, tasks, cycle(loader), steps, cfg, regulariser)
    model.zero_grad(set_to_none=True)
    pruned, reached, ratio = prune_to_sparsity(model, example, target_sparsity)
    if finetune_steps:
        stage = cfg.finetune
        batch_size = (stage.batch_size if stage else None) or cfg.batch_size
        stage_cfg = cfg.model_copy(update={"optimizer": stage.optimizer}) if stage else cfg
        loader = make_loader(
            splits["train"], batch_size, shuffle=True, generator=generator, drop_last=True
        )
        train_steps(pruned, combiner, tasks, cycle(loader), finetune_steps, stage_cfg)
    _, metrics = evaluate(pruned, splits["test"], tasks, combiner, DEVICE)
    return PipelineResult(
        metrics=primary_metrics(metrics),
        sparsity=reached,
        wall_s=time.perf_counter() - started,
        model=pruned,
        pruning_ratio=ratio,
    )


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(lam: float, runs: Mapping[str, Sequence[PipelineResult]]) -> dict[str, Any]:
    """The flat result entries of one λ from each method's runs over the seeds.

    Args:
        lam: the λ of the sparsekit runs.
        runs: ``{"sparsekit": [...], "peer": [...]}``, one result per seed.

    Returns:
        ``lam<λ>_<method>_<task>_<metric>_{mean,std}``, ``lam<λ>_<method>_{sparsity,wall_s}_
        {mean,std}``, ``lam<λ>_wall_time_ratio_peer_over_sparsekit`` and
        ``lam<λ>_<task>_sparsekit_at_or_above_peer``.
    """
    prefix, out, means = f"lam{lam:g}", {}, {}
    for method, results in runs.items():
        for task in TASKS:
            metric = PRIMARY_METRICS[task][0]
            mean, std = _mean_std([r.metrics[task] for r in results])
            out[f"{prefix}_{method}_{task}_{metric}_mean"] = mean
            out[f"{prefix}_{method}_{task}_{metric}_std"] = std
            means[method, task] = mean
        for field in ("sparsity", "wall_s"):
            mean, std = _mean_std([getattr(r, field) for r in results])
            out[f"{prefix}_{method}_{field}_mean"], out[f"{prefix}_{method}_{field}_std"] = (
                mean,
                std,
            )
    out[f"{prefix}_wall_time_ratio_peer_over_sparsekit"] = (
        out[f"{prefix}_peer_wall_s_mean"] / out[f"{prefix}_sparsekit_wall_s_mean"]
    )
    for task in TASKS:
        ours, theirs = means["sparsekit", task], means["peer", task]
        higher_is_better = PRIMARY_METRICS[task][1]
        at_or_above = ours >= theirs if higher_is_better else ours <= theirs
        out[f"{prefix}_{task}_sparsekit_at_or_above_peer"] = bool(
            at_or_above and not (math.isnan(ours) or math.isnan(theirs))
        )
    return out


def run() -> dict[str, Any]:
    """Both pipelines for every λ in ``LAMS`` and seed in ``SEEDS``, summarised per λ."""
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        steps, finetune_steps = planned_steps(SPARSEKIT_OVERRIDES)
        result: dict[str, Any] = {
            "threads": THREADS,
            "seeds": list(SEEDS),
            "lams": list(LAMS),
            "steps": steps,
            "finetune_steps": finetune_steps,
            "peer_reg": PEER_REG,
        }
        for lam in LAMS:
            runs: dict[str, list[PipelineResult]] = {"sparsekit": [], "peer": []}
            for seed in SEEDS:
                ours = sparsekit_pipeline(seed, lam, SPARSEKIT_OVERRIDES)
                peer = peer_pipeline(
                    seed, ours.sparsity, steps, finetune_steps, SPARSEKIT_OVERRIDES
                )
                runs["sparsekit"].append(ours)
                runs["peer"].append(peer)
            result.update(summarise(lam, runs))
        return result
    finally:
        torch.set_num_threads(previous)


if __name__ == "__main__":
    print(run())
