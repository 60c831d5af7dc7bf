"""The contract checks, one per plugin kind (see :mod:`sparsekit.testing`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from sparsekit.config import OptimizerConfig
from sparsekit.engine.experiment import Experiment
from sparsekit.interfaces import Component, SparsitySchedule
from sparsekit.nn import backbone_conv_weights
from sparsekit.nn.groups import zero_channel_groups, zeroed_parameters
from sparsekit.nn.sparsity import sparsity
from sparsekit.registry import create
from sparsekit.runs.store import Result
from sparsekit.tasks import AttributeTask, DepthTask, SegmentationTask
from sparsekit.testing.checks_runtime import check_executor, check_logger, check_optimizer
from sparsekit.testing.doubles import (
    ContractCombiner,
    ContractDataset,
    ContractModel,
    ContractPenalty,
    ContractSGD,
    contract_components,
    make_instance,
)


def check_config(cls: type[Component], workdir: Path) -> None:
    """Config is pydantic, rejects unknown keys, is frozen, and round-trips through JSON."""
    assert isinstance(cls.name, str) and cls.name == cls.name.lower() and " " not in cls.name
    assert issubclass(cls.Config, BaseModel)
    params = cls.example_params(workdir)
    config = cls.Config(**params)
    with pytest.raises(ValidationError):
        cls.Config(**params, definitely_not_a_field=1)
    again = cls.Config.model_validate_json(config.model_dump_json())
    assert again == config
    instance = cls(config)
    assert instance.spec()["name"] == cls.name
    with pytest.raises(ValidationError):
        config.__setattr__(next(iter(cls.Config.model_fields), "x"), None)


def _tiny_tasks() -> list[Any]:
    return [SegmentationTask("seg", 3), DepthTask("depth"), AttributeTask("attr")]


def check_penalty(cls: type[Component], workdir: Path) -> None:
    """Non-negative value, identity prox at λ = 0, prox_ ≡ prox, gradients w.r.t. λ exist."""
    penalty = make_instance(cls, workdir)
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 4, 3, 3, generator=generator, dtype=torch.float64)
    weight[:, 1] = 0.0
    assert float(penalty.value(weight)) > 0
    assert float(penalty.value(torch.zeros_like(weight))) == 0.0
    assert torch.equal(penalty.prox(weight, 0.1, 0.0), weight)
    lam = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    out = penalty.prox(weight, 0.1, lam)
    assert out.shape == weight.shape and torch.isfinite(out).all()
    assert float(penalty.value(out.detach())) <= float(penalty.value(weight))
    out.pow(2).sum().backward()
    assert lam.grad is not None and torch.isfinite(lam.grad)
    inplace = weight.clone()
    penalty.prox_(inplace, 0.1, 0.3)
    torch.testing.assert_close(inplace, out.detach())
    huge = penalty.prox(weight, 1.0, 1e6)
    assert not huge.any(), "a large enough λ must zero everything"
    assert penalty.active_mask(huge).sum() == 0
    assert penalty.active_mask(weight).any()


def check_loss_combiner(cls: type[Component], workdir: Path) -> None:
    """Combines any subset of tasks into one finite scalar with gradients to every loss."""
    module = make_instance(cls, workdir).build(["a", "b", "c"])
    assert isinstance(module, nn.Module)
    for subset in (["a"], ["b", "c"], ["a", "b", "c"]):
        losses = {k: torch.tensor(1.5 + i, requires_grad=True) for i, k in enumerate(subset)}
        total = module(losses)
        assert total.ndim == 0 and torch.isfinite(total)
        total.backward()
        assert all(v.grad is not None and float(v.grad) > 0 for v in losses.values())
    module.add_task("d")
    total = module({"a": torch.tensor(1.0), "d": torch.tensor(2.0, requires_grad=True)})
    assert total.ndim == 0 and torch.isfinite(total)


def check_dataset(cls: type[Component], workdir: Path) -> None:
    """Tasks are unique; every split loads with targets of the right kind, deterministically."""
    provider = make_instance(cls, workdir)
    tasks = provider.tasks()
    names = [t.name for t in tasks]
    assert names and len(set(names)) == len(names)
    sizes = {}
    for split in ("train", "val", "test"):
        data = provider.load(split, names)
        sizes[split] = len(data)
        image, targets = data[0]
        assert image.ndim == 3 and image.shape[0] == provider.in_channels
        assert torch.isfinite(image).all() and set(targets) == set(names)
        for task in tasks:
            if task.level == "pixel":
                assert targets[task.name].shape[-2:] == image.shape[-2:]
        again_image, _ = make_instance(cls, workdir).load(split, names)[0]
        assert torch.equal(image, again_image), "loading must be deterministic"
    assert all(sizes.values()), f"every split must be non-empty, got {sizes}"
    with pytest.raises(ValueError):
        provider.select_tasks(["no_such_task"])


def check_model(cls: type[Component], workdir: Path) -> None:
    """Output shapes per task level, gradients reach backbone and heads, seeded determinism."""
    tasks = _tiny_tasks()
    outputs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = make_instance(cls, workdir).build(tasks, 3)
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        model.train()
        out = model(x)
        outputs.append(out)
    assert set(out) == {t.name for t in tasks}
    assert out["seg"].shape == (2, 3, 64, 64) and out["depth"].shape == (2, 1, 64, 64)
    assert out["attr"].shape == (2, 1)
    sum(o.float().pow(2).mean() for o in out.values()).backward()
    convs = backbone_conv_weights(model)
    assert convs and all(w.grad is not None and w.grad.abs().sum() > 0 for w in convs.values())
    for head in model.heads.values():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    for name in out:
        torch.testing.assert_close(outputs[0][name], outputs[1][name])


def check_learner(cls: type[Component], workdir: Path) -> None:
    """Fits a tiny problem on the CPU, returns a history, and is deterministic under a seed."""

    def run() -> Any:
        return Experiment(
            dataset=ContractDataset(),
            model=ContractModel(),
            loss_combiner=ContractCombiner(),
            penalty=ContractPenalty(),
            optimizer=OptimizerConfig(name=ContractSGD.name, lr=0.01),
            learner=make_instance(cls, workdir),
            lam=0.05,
            steps=4,
            batch_size=8,
            eval_every=2,
            device="cpu",
            seed=3,
        ).run()

    with contract_components():
        first, second = run(), run()
    assert first.profile and all(
        torch.isfinite(torch.tensor(list(r.values()))).all() for r in first.profile
    )
    assert first.metrics == second.metrics


def _sparse_conv_weights() -> dict[str, torch.Tensor]:
    """Conv weights with some zero input-channel groups, one dense and one entirely zero."""
    generator = torch.Generator().manual_seed(0)
    weights = {
        "a.weight": torch.randn(6, 8, 3, 3, generator=generator, dtype=torch.float64),
        "b.weight": torch.randn(4, 6, 1, 1, generator=generator, dtype=torch.float64),
        "dense.weight": torch.randn(5, 3, 3, 3, generator=generator, dtype=torch.float64),
        "empty.weight": torch.zeros(3, 4, 3, 3, dtype=torch.float64),
    }
    weights["a.weight"][:, [1, 4, 5]] = 0.0
    weights["b.weight"][:, [0, 2, 3]] = 0.0
    return weights


def check_regrowth(cls: type[Component], workdir: Path) -> None:
    """Only entirely-zero groups change, masks report them, and regrowth is seeded-deterministic.

    A policy may refuse ``grads=None`` with a ValueError; if it accepts it, the same holds.
    """
    policy = make_instance(cls, workdir)
    grads = {
        n: torch.randn(w.shape, generator=torch.Generator().manual_seed(2), dtype=w.dtype)
        for n, w in _sparse_conv_weights().items()
    }
    runs = []
    for grads_given in (grads, grads, None):
        before, weights = _sparse_conv_weights(), _sparse_conv_weights()
        try:
            masks = policy.regrow(weights, grads_given, torch.Generator().manual_seed(1))
        except ValueError:
            assert grads_given is None, "only a missing gradient may be refused"
            continue
        assert set(masks) == set(weights)
        for name, weight in weights.items():
            mask, old = masks[name], before[name]
            assert mask.dtype == torch.bool and mask.shape == (old.shape[1],)
            zero = zero_channel_groups(old)
            assert not (mask & ~zero).any(), f"{name}: a non-zero group was regrown"
            assert weight.shape == old.shape and weight.dtype == old.dtype
            assert torch.equal(weight[:, ~mask], old[:, ~mask]), f"{name}: a kept group changed"
        runs.append((masks, weights))
    (masks1, weights1), (masks2, weights2) = runs[0], runs[1]
    for name in weights1:
        assert torch.equal(masks1[name], masks2[name]), "regrowth must be deterministic"
        assert torch.equal(weights1[name], weights2[name]), "regrowth must be deterministic"


def contract_model() -> Any:
    """The mask contract's network (the doubles' model), initialised from seed 0 (the global RNG
    is left alone)."""
    provider = ContractDataset()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return ContractModel().build(provider.tasks(), provider.in_channels)


def save_contract_run(directory: Path) -> Path:
    """Save a run of :func:`contract_model` with some zero groups and elements in ``directory``.

    Components that read a sparsity pattern from a run directory point their ``example_params``
    here; the run names the doubles, so it reloads only inside :func:`contract_components`, which
    every check enters.
    """
    model = contract_model()
    with torch.no_grad():
        for weight in backbone_conv_weights(model).values():
            weight[:, ::3] = 0.0
            weight[weight.abs() < weight.abs().median()] = 0.0
    tasks = [t.name for t in ContractDataset().tasks()]
    Result(
        config={
            "dataset": ContractDataset().spec(),
            "model": ContractModel().spec(),
            "loss_combiner": ContractCombiner().spec(),
            "tasks": tasks,
        },
        tasks=tasks,
        metrics={},
        metric_directions={},
        sparsity=sparsity(model),
        layers=[],
        profile=[],
        timings={},
        model=model,
    ).save(directory)
    return directory


def check_scheduler(cls: type[Component], workdir: Path) -> None:
    """Schedules stay in [0, target], end at the target, are monotone when dense-to-sparse, and
    their update steps are exactly where ``is_update_step`` holds."""
    scheduler = make_instance(cls, workdir)
    for target in (0.0, 0.3, 0.9):
        for total in (1, 7, 120):
            schedule = scheduler.schedule(target, total)
            assert isinstance(schedule, SparsitySchedule)
            assert schedule == scheduler.schedule(target, total), "schedules must be deterministic"
            assert schedule.target == target and schedule.total_steps == total
            levels = [schedule.sparsity_at(step) for step in range(total + 1)]
            assert all(0.0 <= level <= target for level in levels)
            assert levels[-1] == target, "the schedule must end at the target"
            if schedule.dense_to_sparse:
                assert all(b >= a for a, b in zip(levels, levels[1:], strict=False))
            updates = [step for step in range(total + 1) if schedule.is_update_step(step)]
            assert updates == list(schedule.update_steps)
    regrowth = scheduler.regrowth()
    if regrowth is not None:
        create("regrowth", regrowth)


def check_mask(cls: type[Component], workdir: Path) -> None:
    """Keep masks have the right shapes, zero the target to one group (channel) or exactly
    (element), and are deterministic under a seeded generator."""
    criterion = make_instance(cls, workdir)
    weights = {n: w.detach() for n, w in backbone_conv_weights(contract_model()).items()}
    total = sum(w.numel() for w in weights.values())
    largest_group = max(w.numel() // w.shape[1] for w in weights.values())
    for granularity in ("channel", "element"):
        for target in (0.0, 0.25, 0.6):
            keep = criterion.keep_mask(
                weights, target, granularity, torch.Generator().manual_seed(0)
            )
            again = criterion.keep_mask(
                weights, target, granularity, torch.Generator().manual_seed(0)
            )
            assert set(keep) == set(weights)
            for name, weight in weights.items():
                shape = weight.shape if granularity == "element" else (weight.shape[1],)
                assert keep[name].dtype == torch.bool and keep[name].shape == shape
                assert torch.equal(keep[name], again[name]), "masks must be deterministic"
            zeroed, budget = zeroed_parameters(weights, keep), round(target * total)
            if granularity == "element":
                assert zeroed == budget, f"{zeroed} zeroed, the target is {budget}"
            else:
                assert abs(zeroed - budget) <= largest_group, f"{zeroed} zeroed, target {budget}"


CHECKS: dict[str, Callable[[type[Component], Path], None]] = {
    "penalty": check_penalty,
    "loss_combiner": check_loss_combiner,
    "dataset": check_dataset,
    "model": check_model,
    "learner": check_learner,
    "regrowth": check_regrowth,
    "scheduler": check_scheduler,
    "mask": check_mask,
    "executor": check_executor,
    "optimizer": check_optimizer,
    "logger": check_logger,
}
