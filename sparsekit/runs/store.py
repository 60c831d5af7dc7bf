"""Every read and write of a run directory: results, checkpoints, compact models, plots.

A run directory holds the resolved ``config.yaml``, ``result.json`` (metrics, sparsity,
per-layer channels, the sparsity profile, timings), ``model.pt`` (model and loss-combiner
weights) and plots; ``compact.pt`` after compaction, ``pretrain/`` for the first stage of a
two-stage run, and ``error.txt`` when the run failed. The file names are defined here only.
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
from sparsekit.runs.record import RunRecord

RESULT_FILE = "result.json"
CHECKPOINT_FILE = "model.pt"
CONFIG_FILE = "config.yaml"
COMPACT_FILE = "compact.pt"
ERROR_FILE = "error.txt"
#: Sub-directory of a run directory holding the pre-trained result of a two-stage experiment.
PRETRAIN_DIR = "pretrain"


class Result(RunRecord):
    """A :class:`~sparsekit.runs.record.RunRecord` that saves itself to and loads itself from a
    run directory."""

    def save(self, directory: str | Path) -> Path:
        """Write config, results, checkpoint and plots into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_config(directory, self.config)
        (directory / RESULT_FILE).write_text(json.dumps(self.to_dict(), indent=2))
        if self.model is not None:
            state = {"model": self.model.state_dict()}
            if self.combiner is not None:
                state["combiner"] = self.combiner.state_dict()
            torch.save(state, directory / CHECKPOINT_FILE)
        plots.plot_run(self, directory)
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
        path = directory / RESULT_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no sparsekit result in {str(directory)!r} (missing {RESULT_FILE})"
            )
        result = cls(**json.loads(path.read_text()))
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


def write_config(directory: Path, config: dict[str, Any]) -> None:
    """Write the resolved config of a run (``config.yaml``)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))


def write_error(directory: Path, text: str) -> None:
    """Record why a run failed (``error.txt``)."""
    (directory / ERROR_FILE).write_text(text)


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
    state = torch.load(path, map_location="cpu", weights_only=True)
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

    Raises:
        ConfigError: the run directory holds no readable ``result.json`` with a parameter
            sparsity in ``[0, 1)``.
    """
    path = Path(run_dir) / RESULT_FILE
    try:
        value = json.loads(path.read_text())["sparsity"]["parameter"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"target from_run: cannot read the parameter sparsity from {str(path)!r} ({exc})"
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
    torch.save({"architecture": architecture(model), "model": model.state_dict(), **extra}, path)
    return path


def load_compact(path: str | Path, skeleton: nn.Module) -> nn.Module:
    """Rebuild a compact model saved by :func:`save_compact` from a dense ``skeleton`` of the
    same configuration (resized in place); in eval mode."""
    tensor = next(iter(skeleton.state_dict().values()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    state = torch.load(path, map_location=device, weights_only=True)
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
    return model, small, save_compact(small, run_dir / COMPACT_FILE)


def load_compact_run(run_dir: str | Path) -> nn.Module:
    """The compact model saved in a run directory by :func:`compact_run`.

    Raises:
        FileNotFoundError: the run directory holds no result, checkpoint or compact model.
    """
    run_dir = Path(run_dir)
    path = run_dir / COMPACT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no compact model in {str(run_dir)!r} (run `sparsekit compact`)")
    return load_compact(path, load_model(run_dir))
