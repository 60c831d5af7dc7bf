"""Reading configs: YAML files, ``key=value`` overrides, and readable validation errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sparsekit.config.experiment import ExperimentConfig
from sparsekit.errors import ConfigError


def describe_validation_error(error: ValidationError, model: type[BaseModel]) -> str:
    """One readable line per problem, naming the offending key."""
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "<config>"
        if item["type"] == "extra_forbidden":
            valid = ", ".join(model.model_fields) if len(item["loc"]) == 1 else "see the docs"
            lines.append(f"unknown config key {where!r} (valid keys: {valid})")
        else:
            lines.append(f"{where}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(lines)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["optimizer.lr=0.01", "tasks=[depth, edges]"]`` → a nested dict (values parsed as YAML)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"an override is key=value, got {pair!r}")
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return result


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, recursively for nested dicts."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; unreadable or malformed files raise :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}"
        )
    return data


def build_config(data: dict[str, Any]) -> ExperimentConfig:
    """Validate a dict into an :class:`ExperimentConfig`, with readable errors."""
    try:
        return ExperimentConfig(**data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, ExperimentConfig)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """An experiment config from a YAML file, with ``key=value`` overrides applied."""
    data = deep_merge(read_yaml(path), parse_overrides(overrides or []))
    return build_config(data)
