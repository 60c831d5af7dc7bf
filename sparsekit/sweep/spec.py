"""Sweep configuration and its expansion into one run specification per experiment.

A sweep is a base experiment config, one or more stages and a list of seeds. A stage's runs are
the cross product of its ``cases`` (explicit override dicts, for axes that do not combine
freely, like Table 5's approach × mask × init), its ``grid`` (axes over any config field,
dotted keys for nested ones) and the seeds. Stages run in order, so a later stage can use the
runs of an earlier one: an override value ``{run_of: STAGE}`` becomes the run directory of
that stage's run with the same seed (the stage must have exactly one run per seed). That is how
Table 5's baselines start from the dense model and match the sparsity of meta-sparsity::

    target: {from_run: {run_of: meta}}
    init_from: {run_of: dense}

A run's identity is the hash of its resolved experiment config (``run_dir`` excluded), so a
sweep run again finds the runs it has already finished.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from sparsekit.config import (
    DEFAULT_COMPONENT,
    StrictModel,
    build_config,
    deep_merge,
    describe_validation_error,
    read_yaml,
)
from sparsekit.errors import ConfigError


class StageConfig(StrictModel):
    """One stage of a sweep: overrides, cases and grid axes applied to the base config.

    Attributes:
        name: the stage's name (lower_snake), used by ``{run_of: NAME}`` references.
        label: the name its rows carry in reports (default: ``name``).
        set: overrides applied to every run of the stage (dotted or nested keys).
        cases: explicit override dicts, one group of runs each (default: one empty case).
        grid: axes, field → list of values; every combination with every case is run.
        report: whether the stage's runs appear in the sweep report.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    cases: list[dict[str, Any]] = Field(default_factory=lambda: [{}])
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    report: bool = True

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [key for key, values in value.items() if not values]
        if empty:
            raise ValueError(f"grid axes need at least one value: {', '.join(empty)}")
        return value

    @field_validator("cases")
    @classmethod
    def _some_cases(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not value:
            raise ValueError("cases must hold at least one override dict (or be left out)")
        return value


class SweepConfig(StrictModel):
    """A sweep: base experiment, stages (or one grid), seeds, executor and report layout.

    ``grid`` and ``cases`` at the top level are shorthand for a single stage named ``main``.

    Attributes:
        directory: where the database (``sweep.db``), the run directories (``runs/``) and the
            report go.
        base: experiment config fields every run starts from.
        seeds: the seeds every run configuration is repeated with.
        stages: the stages, run in order.
        executor: where runs execute: an executor name or ``{name: ..., **params}``.
        group_by: config fields that name a report row (default: every field set by cases or
            grid axes); runs differing only in the seed form one row.
    """

    directory: Path
    base: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0])
    stages: list[StageConfig] = Field(default_factory=list)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    cases: list[dict[str, Any]] | None = None
    executor: Any = Field(default_factory=lambda: {"name": DEFAULT_COMPONENT})
    group_by: list[str] | None = None

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"seeds must be a non-empty list without repeats, got {value!r}")
        return value

    @field_validator("executor", mode="before")
    @classmethod
    def _executor(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if hasattr(value, "spec"):
            return value
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            return dict(value)
        raise ValueError(f"executor is a name or a {{'name': ...}} dict, got {value!r}")

    @model_validator(mode="after")
    def _one_layout(self) -> SweepConfig:
        if self.stages and (self.grid or self.cases is not None):
            raise ValueError("give either stages or a top-level grid/cases, not both")
        if not self.stages:
            main = {"name": "main", "grid": self.grid}
            if self.cases is not None:
                main["cases"] = self.cases
            self.stages = [StageConfig(**main)]
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        return self


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep.

    Attributes:
        run_id: the hash of the resolved config (without ``run_dir``).
        stage: the stage's name.
        label: the stage's report label.
        seed: the run's seed.
        overrides: the case and grid values that distinguish it from its stage's other runs.
        config: the resolved experiment config as a plain dict (``run_dir`` included).
        depends_on: run ids of earlier runs whose directories this run reads.
    """

    run_id: str
    stage: str
    label: str
    seed: int
    overrides: dict[str, Any]
    config: dict[str, Any]
    depends_on: tuple[str, ...] = field(default=())


#: Config fields that say where and how a run reports, not what it computes: left out of its id.
NOT_IDENTITY = frozenset({"run_dir", "loggers", "tags", "threads"})


def config_hash(config: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of a config dict, :data:`NOT_IDENTITY` fields excluded."""
    data = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def nest(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"optimizer.lr": 0.01}`` → ``{"optimizer": {"lr": 0.01}}`` (nested dicts merge)."""
    result: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = deep_merge(node[leaf], value)
        else:
            node[leaf] = value
    return result


def _resolve_refs(value: Any, refs: dict[str, RunSpec], used: list[str]) -> Any:
    """``value`` with every ``{run_of: STAGE}`` replaced by that stage's run directory."""
    if isinstance(value, dict):
        if set(value) == {"run_of"}:
            stage = value["run_of"]
            if stage not in refs:
                raise ConfigError(
                    f"{{run_of: {stage}}} names no earlier stage with one run per seed "
                    f"(earlier stages with one run per seed: {', '.join(refs) or 'none'})"
                )
            used.append(refs[stage].run_id)
            return refs[stage].config["run_dir"]
        return {k: _resolve_refs(v, refs, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_refs(v, refs, used) for v in value]
    return value


def expand(config: SweepConfig) -> list[RunSpec]:
    """Every run of the sweep, stage by stage, each with a validated, resolved config.

    Raises:
        ConfigError: a run's config is invalid (the message names the stage and overrides), or
            a ``{run_of: ...}`` reference cannot be resolved.
    """
    runs: list[RunSpec] = []
    single: dict[str, dict[int, RunSpec]] = {}
    runs_dir = Path(config.directory) / "runs"
    for stage in config.stages:
        axes = list(stage.grid.items())
        by_seed: dict[int, list[RunSpec]] = {}
        for case, values in itertools.product(
            stage.cases, itertools.product(*(v for _, v in axes))
        ):
            distinct = {**case, **dict(zip((k for k, _ in axes), values, strict=True))}
            for seed in config.seeds:
                refs = {name: specs[seed] for name, specs in single.items()}
                used: list[str] = []
                merged = deep_merge(deep_merge(config.base, nest(stage.set)), nest(distinct))
                merged = _resolve_refs({**merged, "seed": seed}, refs, used)
                spec = _build(stage, distinct, seed, merged, runs_dir, tuple(used))
                runs.append(spec)
                by_seed.setdefault(seed, []).append(spec)
        if all(len(specs) == 1 for specs in by_seed.values()):
            single[stage.name] = {seed: specs[0] for seed, specs in by_seed.items()}
    ids = [spec.run_id for spec in runs]
    if len(set(ids)) != len(ids):
        raise ConfigError("two runs of the sweep have the same config; make stages or cases differ")
    return runs


def _build(
    stage: StageConfig,
    distinct: dict[str, Any],
    seed: int,
    merged: dict[str, Any],
    runs_dir: Path,
    depends_on: tuple[str, ...],
) -> RunSpec:
    merged.pop("run_dir", None)
    try:
        resolved = build_config(merged).to_dict()
    except ConfigError as exc:
        raise ConfigError(
            f"stage {stage.name!r}, {distinct or 'base'}, seed {seed}: {exc}"
        ) from None
    run_id = config_hash(resolved)
    resolved["run_dir"] = str(runs_dir / f"{stage.name}-{run_id}")
    resolved["tags"] = {
        **resolved.get("tags", {}),
        "sweep": runs_dir.parent.resolve().name,
        "stage": stage.name,
        "seed": str(seed),
        "run_id": run_id,
    }
    return RunSpec(
        run_id=run_id,
        stage=stage.name,
        label=stage.label or stage.name,
        seed=seed,
        overrides=distinct,
        config=resolved,
        depends_on=depends_on,
    )


def load_sweep_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """A sweep config from YAML; a relative ``directory`` is kept relative to the working dir.

    Raises:
        ConfigError: unreadable file or invalid fields.
    """
    data = deep_merge(read_yaml(path), overrides or {})
    return build_sweep_config(data)


def build_sweep_config(data: dict[str, Any]) -> SweepConfig:
    """Validate a dict into a :class:`SweepConfig`, with readable errors."""
    try:
        return SweepConfig(**data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, SweepConfig)) from None
