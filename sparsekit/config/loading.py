"""Reading configs: YAML files, ``key=value`` overrides, and readable validation errors."""

from __future__ import annotations

import re
from pathlib import Path, PurePath
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sparsekit.config.experiment import COMPONENT_FIELDS, ExperimentConfig
from sparsekit.errors import ConfigError


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with two fixes for config files.

    A key given twice in one mapping is an error (PyYAML keeps the last silently), and ``1e-3``
    is a float as in YAML 1.2 (YAML 1.1 reads an exponent without a dot as a string).
    """

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first_line: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue  # keys merged in with `<<: *base` may be overridden: that is the point
            key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
            if key in first_line:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"duplicate key {key_node.value!r} (first given at line {first_line[key]})",
                    key_node.start_mark,
                )
            first_line[key] = line
        return node


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """YAML ``text`` parsed as a config is: duplicate keys refused, ``1e-3`` a float.

    Raises:
        yaml.YAMLError: malformed YAML or a duplicate key (:func:`yaml_problem` words it).
    """
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where (``line L, column C``)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}" + (f" ({context})" if context else "")


def describe_validation_error(error: ValidationError, model: type[BaseModel]) -> str:
    """One readable line per problem, naming the offending key."""
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "<config>"
        if item["type"] == "extra_forbidden":
            valid = ", ".join(model.model_fields) if len(item["loc"]) == 1 else "see the docs"
            lines.append(f"unknown config key {where!r} (valid keys: {valid})")
        else:
            given = item.get("input")
            given = str(given) if isinstance(given, PurePath) else given
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message} (got {given!r})")
    return "; ".join(" ".join(line.split()) for line in lines)


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
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r} sets a key inside {part!r}={node!r}")
        try:
            node[leaf] = load_yaml(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {pair!r}: not valid YAML: {yaml_problem(exc)}") from None
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


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """An experiment's fields with nested ``overrides`` merged in.

    A dotted override of a component (``dataset.n_train=64``) changes that parameter and keeps
    the rest of the spec: a component given by name (``dataset: shapes``, or left unset, which
    is ``default``) is read as ``{name: shapes}`` first. A whole value (``dataset=digits``)
    replaces the spec.
    """
    base = dict(base)
    for key in COMPONENT_FIELDS:
        if isinstance(overrides.get(key), dict):
            current = base.get(key, ExperimentConfig.model_fields[key].default)
            if isinstance(current, str):
                base[key] = {"name": current}
    return deep_merge(base, overrides)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; unreadable or malformed files raise :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"position {exc.start}); a config is a YAML text file"
        ) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not valid YAML: {yaml_problem(exc)}"
        ) from None
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
    data = merge_overrides(read_yaml(path), parse_overrides(overrides or []))
    return build_config(data)
