"""Every read and write of a run directory: results, models, compact models, plots.

A run directory holds the resolved ``config.yaml``, ``result.json`` (metrics, sparsity,
per-layer channels, the sparsity profile, timings), ``model.pt`` (model and loss-combiner
weights) and plots; ``compact.pt`` after compaction, ``pretrain/`` for the first stage of a
two-stage run, ``checkpoints/`` while it trains, ``state.json`` and ``error.txt`` when it
failed. The file names and the atomic writes are in :mod:`sparsekit.runs.directory`; a result
is published by writing ``result.json`` last, with ``"status": "complete"`` and the SHA-256 of
its ``model.pt``, and nothing else counts as a finished run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from sparsekit.config import GIVEN_MODULE
from sparsekit.data.in_memory import IN_MEMORY, in_memory_message, recorded_tasks
from sparsekit.errors import ConfigError
from sparsekit.interfaces import DatasetProvider, GivenBackbone, ModelBuilder
from sparsekit.nn.compaction import architecture, compact, resize_to_architecture
from sparsekit.registry import create
from sparsekit.reporting import plots
from sparsekit.runs.directory import (
    CHECKPOINT_FILE,
    COMPACT_FILE,
    COMPLETE,
    CONFIG_FILE,
    ERROR_FILE,
    PRETRAIN_DIR,
    RESULT_FILE,
    check_run_dir,
    file_sha256,
    torch_load,
    torch_save,
    write_json,
    write_text,
)
from sparsekit.runs.record import RunRecord

__all__ = [
    "CHECKPOINT_FILE",
    "COMPACT_FILE",
    "CONFIG_FILE",
    "ERROR_FILE",
    "PRETRAIN_DIR",
    "RESULT_FILE",
    "Result",
]


class Result(RunRecord):
    """A :class:`~sparsekit.runs.record.RunRecord` that saves itself to and loads itself from a
    run directory."""

    def save(self, directory: str | Path) -> Path:
        """Write config, model, plots and, last, ``result.json`` into ``directory``.

        Each file is written atomically; ``result.json`` comes last, marked complete and
        holding the SHA-256 of the ``model.pt`` written with it.
        """
        directory = Path(directory)
        check_run_dir(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_config(directory, self.config)
        record: dict[str, Any] = {"status": COMPLETE, **self.to_dict()}
        if self.model is not None:
            state = {"model": self.model.state_dict()}
            if self.combiner is not None:
                state["combiner"] = self.combiner.state_dict()
            record["model_sha256"] = file_sha256(torch_save(state, directory / CHECKPOINT_FILE))
        plots.plot_run(self, directory)
        write_json(directory / RESULT_FILE, record)
        return directory

    @classmethod
    def load(
        cls, directory: str | Path, with_model: bool = True, backbone: nn.Module | None = None
    ) -> Result:
        """Reload a saved result; with ``with_model`` the network is rebuilt and its weights loaded.

        Args:
            directory: the run directory.
            with_model: rebuild the model and load its weights (``model.pt``).
            backbone: for a run whose backbone was given as an ``nn.Module`` instance, that
                backbone again (an instance of the same class and shape); the saved weights
                are loaded into it and heads built around it (a copy of it: ``backbone`` itself
                is not changed).

        Raises:
            FileNotFoundError: ``directory`` holds no saved result.
            ConfigError: the run's backbone was given as an instance and no ``backbone`` is
                passed, ``backbone`` is passed for a run whose model is configured, or the
                saved weights do not fit it.
        """
        directory = Path(directory)
        record, model_sha256 = read_result(directory)
        result = cls(**record)
        if with_model and model_sha256 is not None:
            check_model_file(directory, model_sha256)
        if with_model and (directory / CHECKPOINT_FILE).is_file():
            result.model, result.combiner = build_model(result.config, result.tasks, backbone)
            try:
                load_weights(result.model, result.combiner, directory, strict_combiner=True)
            except RuntimeError as exc:
                if backbone is None:
                    raise
                raise ConfigError(
                    f"the saved weights of {str(directory)!r} do not fit the given backbone "
                    f"{type(backbone).__name__}: {str(exc).splitlines()[0]}"
                ) from exc
            result.model.eval()
        return result


def read_result(directory: Path) -> tuple[dict[str, Any], str | None]:
    """A finished run's ``result.json``: the record's fields, and the SHA-256 of its
    ``model.pt`` (None for a result saved without a model, or before 0.2).

    Raises:
        FileNotFoundError: no ``result.json`` (or ``directory`` does not exist).
        ConfigError: ``directory`` is a file; ``result.json`` is truncated, not a sparsekit
            result, or of a run that did not complete.
    """
    check_run_dir(directory)
    path = directory / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no sparsekit result in {str(directory)!r} (missing {RESULT_FILE})"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError(f"it holds a {type(record).__name__}, not an object")
        status = record.pop("status", COMPLETE)  # results written before 0.2 carry none
        sha = record.pop("model_sha256", None)
        if status == COMPLETE:
            RunRecord(**record)  # every field there, none unknown
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path} is not a complete sparsekit result ({reason})") from None
    if status != COMPLETE:
        raise ConfigError(f"{path} is of a run that did not complete (status {status!r})")
    return record, sha


def check_model_file(directory: Path, sha256: str) -> None:
    """Raise a :class:`ConfigError` unless ``model.pt`` is the model ``result.json`` names."""
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing; result.json says the run saved its model there")
    if file_sha256(path) != sha256:
        raise ConfigError(
            f"{path} is not the model result.json was saved with (it was changed or replaced "
            "after the run)"
        )


def write_config(directory: Path, config: dict[str, Any]) -> None:
    """Write the resolved config of a run (``config.yaml``)."""
    write_text(directory / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def write_error(directory: Path, text: str) -> None:
    """Record why a run failed (``error.txt``)."""
    write_text(directory / ERROR_FILE, text)


def build_model(
    config: dict[str, Any], tasks: list[str], backbone: nn.Module | None = None
) -> tuple[nn.Module, nn.Module]:
    """A fresh model and loss combiner for ``tasks`` from a run's (resolved) config.

    This is the one way a run's network is rebuilt: to reload it, to compact it, to read its
    zero pattern. A data set given in memory is not needed: its record holds the tasks' heads
    and the input channels.

    Args:
        config: the run's resolved config.
        tasks: the tasks whose heads are built.
        backbone: the backbone of a run whose backbone was given as an instance.

    Raises:
        ConfigError: the backbone was given as an instance and ``backbone`` is None (the message
            says how to reload such a run), or ``backbone`` is given for a configured model.
    """
    spec = config["dataset"]
    if isinstance(spec, dict) and spec.get("name") == IN_MEMORY:
        available, in_channels = recorded_tasks(spec)
        by_name = {task.name: task for task in available}
        selected = [by_name[name] for name in tasks]
    else:
        provider = make_provider(spec)
        selected, in_channels = provider.select_tasks(tasks), provider.in_channels
    model = make_builder(config["model"], backbone).build(selected, in_channels)
    combiner = create("loss_combiner", config["loss_combiner"]).build(tasks)
    return model, combiner


def make_builder(spec: Any, backbone: nn.Module | None = None) -> ModelBuilder:
    """The model builder of a config's ``model`` field.

    An ``nn.Module`` becomes a :class:`~sparsekit.interfaces.GivenBackbone`; a run's record of
    one (``{"name": "module", ...}``) a builder around ``backbone``, or, without it, one that
    builds heads but raises a :class:`ConfigError` saying how to reload the run when asked for
    a whole model. Anything else is made by the registry.

    Raises:
        ConfigError: ``backbone`` given for a model that is not a given backbone.
        PluginError: an unknown model name.
    """
    if isinstance(spec, nn.Module):
        return GivenBackbone(spec)
    if isinstance(spec, dict) and spec.get("name") == GIVEN_MODULE:
        return GivenBackbone.from_spec(spec, backbone)
    if backbone is not None:
        name = spec.get("name") if isinstance(spec, dict) else getattr(spec, "name", spec)
        raise ConfigError(
            f"backbone= replaces a backbone that was given as an nn.Module instance; this "
            f"run's model {name!r} is rebuilt from its config"
        )
    return create("model", spec)


def make_provider(spec: Any) -> DatasetProvider:
    """The data set of a config's ``dataset`` field (made by the registry).

    Raises:
        ConfigError: a record of data given in memory (the message says what to do instead).
        PluginError: an unknown data-set name.
    """
    if isinstance(spec, dict) and spec.get("name") == IN_MEMORY:
        raise ConfigError(in_memory_message())
    return create("dataset", spec)


def load_weights(
    model: nn.Module, combiner: nn.Module, directory: Path, strict_combiner: bool = False
) -> None:
    """Load ``model.pt`` of ``directory`` into ``model`` and ``combiner``.

    Args:
        strict_combiner: raise when the saved combiner does not fit; otherwise a combiner of
            another kind keeps its initial state.

    Raises:
        FileNotFoundError: the directory holds no ``model.pt``.
        RuntimeError, KeyError: the checkpoint does not fit the model.
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no model checkpoint in {str(directory)!r}")
    state = torch_load(path, "model checkpoint")
    if not isinstance(state, dict) or "model" not in state:
        raise ConfigError(f"{path} is not a readable sparsekit model checkpoint (no model state)")
    model.load_state_dict(state["model"])
    if "combiner" in state:
        try:
            combiner.load_state_dict(state["combiner"])
        except RuntimeError:
            if strict_combiner:
                raise


def load_dense_weights(model: nn.Module, combiner: nn.Module, run_dir: str | Path) -> None:
    """Copy the weights of the dense model saved in ``run_dir`` into ``model`` (``init_from``).

    Raises:
        ConfigError: no checkpoint, or one of another architecture or task set.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT_FILE).is_file():
        raise ConfigError(
            f"init_from: {str(run_dir)!r} holds no trained model (missing {CHECKPOINT_FILE})"
        )
    try:
        load_weights(model, combiner, run_dir)
    except (RuntimeError, KeyError) as exc:
        raise ConfigError(
            f"init_from: the model in {str(run_dir)!r} does not fit this experiment's model and "
            f"tasks ({str(exc).splitlines()[0]})"
        ) from None


def read_parameter_sparsity(run_dir: str | Path) -> float:
    """The parameter sparsity a finished run reached (``target: {from_run: ...}``).

    Only ``sparsity.parameter`` is read, so a ``result.json`` written by other code serves
    too, but never one of a run that did not complete (a ``status`` other than complete).

    Raises:
        ConfigError: the run directory holds no readable ``result.json`` of a complete run
            with a parameter sparsity in ``[0, 1)``.
    """
    path = Path(run_dir) / RESULT_FILE
    try:
        check_run_dir(Path(run_dir))
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("status", COMPLETE) != COMPLETE:
            raise ValueError(f"the run did not complete: status {record['status']!r}")
        value = record["sparsity"]["parameter"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"target from_run: cannot read the parameter sparsity from {str(path)!r} ({reason})"
        ) from None
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value < 1.0):
        raise ConfigError(f"target from_run: {str(path)!r} holds parameter sparsity {value!r}")
    return float(value)


def load_model(run_dir: str | Path) -> nn.Module:
    """The trained model of a run directory.

    Raises:
        FileNotFoundError: the run directory holds no result or no model checkpoint.
    """
    model = Result.load(run_dir, with_model=True).model
    if model is None:
        raise FileNotFoundError(f"no model checkpoint in {str(run_dir)!r}")
    return model


def save_compact(model: nn.Module, path: str | Path, **extra: Any) -> Path:
    """Save a compact model's architecture record, weights and ``extra`` entries to ``path``.

    Args:
        model: the compact model (from :func:`sparsekit.nn.compaction.compact`).
        path: the file to write; :func:`load_compact` reads it back.
        **extra: more entries of plain data or tensors (loadable with ``weights_only=True``).
    """
    path = Path(path)
    state = {"architecture": architecture(model), "model": model.state_dict(), **extra}
    return torch_save(state, path)


def load_compact(path: str | Path, skeleton: nn.Module) -> nn.Module:
    """Rebuild a compact model saved by :func:`save_compact` from a dense ``skeleton`` of the
    same configuration (resized in place); in eval mode."""
    tensor = next(iter(skeleton.state_dict().values()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    state = torch_load(Path(path), "compact model", map_location=device)
    model = resize_to_architecture(skeleton, state["architecture"])
    model.load_state_dict(state["model"])
    return model.eval()


def compact_run(run_dir: str | Path) -> tuple[nn.Module, nn.Module, Path]:
    """Compact the trained model of a run directory and save it there as ``compact.pt``.

    Returns:
        The masked model, the compact model and the saved file.

    Raises:
        FileNotFoundError: the run directory holds no result or no model checkpoint.
    """
    run_dir = Path(run_dir)
    model = load_model(run_dir)
    small = compact(model)
    source = file_sha256(run_dir / CHECKPOINT_FILE)
    return model, small, save_compact(small, run_dir / COMPACT_FILE, model_sha256=source)


def load_compact_run(run_dir: str | Path) -> nn.Module:
    """The compact model saved in a run directory by :func:`compact_run`.

    Raises:
        FileNotFoundError: the run directory holds no result, checkpoint or compact model.
    """
    run_dir = Path(run_dir)
    path = run_dir / COMPACT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no compact model in {str(run_dir)!r} (run `sparsekit compact`)")
    if not compact_is_current(run_dir):
        raise ConfigError(
            f"{path} was made from another model.pt than the run's; run `sparsekit compact "
            f"{run_dir}` again"
        )
    return load_compact(path, load_model(run_dir))


def compact_is_current(run_dir: Path) -> bool:
    """Whether ``compact.pt`` was made from the run's present ``model.pt``."""
    state = torch_load(run_dir / COMPACT_FILE, "compact model")
    recorded = state.get("model_sha256") if isinstance(state, dict) else None
    model = run_dir / CHECKPOINT_FILE
    return recorded is not None and model.is_file() and recorded == file_sha256(model)
