"""Contract checks of the kinds around training: executors, optimisers and loggers."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsekit.config import OptimizerConfig
from sparsekit.errors import ConfigError
from sparsekit.interfaces import Component, RunInfo
from sparsekit.testing.doubles import ContractPenalty, make_instance


def contract_call(value: int) -> int:
    """The function the executor contract runs: doubles ``value``; raises for a negative one."""
    if value < 0:
        raise ValueError(f"contract_call got {value}")
    return 2 * value


def contract_crash(value: int) -> int:
    """Doubles ``value``; for a negative one, kills the process it runs in (a dying worker)."""
    if value < 0:
        os._exit(3)
    time.sleep(0.2 * value)
    return 2 * value


def check_executor(cls: type[Component], workdir: Path) -> None:
    """Every call is started once and reported once with its value, or with the error it raised;
    a failing call, or one whose worker dies, does not fail the others."""
    executor = make_instance(cls, workdir)
    assert executor.threads_per_call(3) >= 1
    items = [3, -1, 5]
    started: list[int] = []
    outcomes: dict[int, Any] = {}

    def on_done(outcome: Any) -> None:
        assert outcome.index not in outcomes, "an outcome must be reported once"
        outcomes[outcome.index] = outcome

    executor.map_unordered(contract_call, items, started.append, on_done)
    assert sorted(started) == [0, 1, 2]
    assert sorted(outcomes) == [0, 1, 2]
    assert outcomes[0].ok and outcomes[0].value == 6
    assert outcomes[2].ok and outcomes[2].value == 10
    assert not outcomes[1].ok and "contract_call got -1" in outcomes[1].error
    crashed: dict[int, Any] = {}
    executor.map_unordered(
        contract_crash, [1, -1, 2, 3], lambda i: None, lambda o: crashed.setdefault(o.index, o)
    )
    assert sorted(crashed) == [0, 1, 2, 3]
    assert not crashed[1].ok and crashed[1].error
    assert [crashed[i].value for i in (0, 2, 3)] == [2, 4, 6], "only the dying call may fail"


def check_optimizer(cls: type[Component], workdir: Path) -> None:
    """Steps every parameter it is given, proxes the penalised ones, and is deterministic."""
    kind = make_instance(cls, workdir)
    outcomes = []
    for _ in range(2):
        torch.manual_seed(0)
        weight = nn.Parameter(torch.randn(4, 3, 3, 3, dtype=torch.float64))
        other = nn.Parameter(torch.randn(5, dtype=torch.float64))
        optimizer = kind.build(
            [weight, other], [weight], ContractPenalty(), 1e3, OptimizerConfig(lr=0.01)
        )
        (weight.square().sum() + other.square().sum()).backward()
        optimizer.step()
        assert not torch.equal(other.detach(), torch.zeros(5, dtype=torch.float64))
        if not kind.prox_in_metric:
            assert not weight.detach().any(), "a huge λ must zero the penalised weight"
        outcomes.append((weight.detach().clone(), other.detach().clone()))
    assert all(torch.equal(a, b) for a, b in zip(outcomes[0], outcomes[1], strict=True))


def check_logger(cls: type[Component], workdir: Path) -> None:
    """Takes a run's scalars, summary and files in the engine's order, closes after a failure
    too, and without a run directory either logs nothing or refuses with a ConfigError."""
    run_dir = workdir / "contract-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    plot = run_dir / "plot.png"
    plot.write_bytes(_TINY_PNG)
    run = RunInfo(name="contract", run_dir=run_dir, config={"seed": 0}, tags={"stage": "main"})
    logger = make_instance(cls, workdir)
    logger.start(run)
    for step in (1, 2):
        logger.log_scalars(step, {"train/loss": 1.0 / step, "lam": 0.1, "val/seg/miou": 0.5})
    hparams = {"seed": 0, "optimizer.lr": 0.01, "tasks": None, "model.name": "contract_model"}
    logger.log_summary(2, {"test/seg/miou": 0.5, "final/sparsity/group": 0.25}, hparams)
    logger.log_files([plot])
    logger.close("finished")
    failed = make_instance(cls, workdir)
    failed.start(run)
    failed.log_scalars(1, {"train/loss": 1.0})
    failed.close("failed")
    detached = make_instance(cls, workdir)
    try:
        detached.start(RunInfo(name="contract", run_dir=None, config={}))
    except ConfigError:
        return
    detached.log_scalars(1, {"train/loss": 1.0})
    detached.close("finished")


#: A 1×1 RGB PNG, the plot a logger is handed in :func:`check_logger`.
_TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8ffff3f0005fe02fea7d605a40000000049454e44ae426082"
)
