"""Export of a multi-task model as a standalone artifact that loads without sparsekit.

Three formats, each a single file:

- ``onnx`` (``model.onnx``): ``torch.onnx.export`` with the dynamo exporter; runs in ONNX
  Runtime. Needs the ``onnx`` and ``onnxscript`` packages (``pip install 'sparsekit[export]'``).
- ``torchscript`` (``model.torchscript.pt``): ``torch.jit.trace``, saved with
  ``torch.jit.save``; loads with ``torch.jit.load``.
- ``exported-program`` (``model.pt2``): ``torch.export.export``, saved with
  ``torch.export.save``; loads with ``torch.export.load``.

Whatever the format, the artifact takes one input, ``images`` ``[B, C, H, W]``, whose batch
size ``B`` is dynamic and whose other sizes are those of the example input, and returns one
tensor per task, as a tuple in a fixed task order (in ONNX, outputs named ``task/<name>``).
That order, the task names and the input shape are recorded inside the artifact as the JSON
entry ``sparsekit.json``: an ONNX ``metadata_props`` entry, a TorchScript extra file, an
extra file of the exported program.
"""

from __future__ import annotations

import copy
import importlib
import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sparsekit._version import __version__
from sparsekit.errors import ConfigError, MissingDependency
from sparsekit.nn.compaction import ChannelSelectConv2d
from sparsekit.runs.directory import CHECKPOINT_FILE, file_sha256
from sparsekit.runs.store import (
    COMPACT_FILE,
    Result,
    compact_is_current,
    compact_run,
    load_compact_run,
    load_model,
    make_provider,
)

#: The export formats and the file name each gets by default.
DEFAULT_FILE_NAMES = {
    "onnx": "model.onnx",
    "torchscript": "model.torchscript.pt",
    "exported-program": "model.pt2",
}
#: Sub-directory of a run directory that :func:`export_run` writes to by default.
EXPORT_DIR = "export"
#: Name of the artifact's input.
INPUT_NAME = "images"
#: Prefix of the ONNX output names: ``task/<name>``.
OUTPUT_PREFIX = "task/"
#: Key of the JSON record of tasks, outputs and input shape inside every artifact.
METADATA_KEY = "sparsekit.json"
#: Side of the square random example image when neither an example nor a run gives the size.
DEFAULT_IMAGE_SIZE = 64
ONNX_PACKAGES = ("onnx", "onnxscript")
INSTALL_HINT = "pip install 'sparsekit[export]'"


class TaskTuple(nn.Module):
    """A multi-task model whose forward returns its task outputs as a tuple in a fixed order.

    Args:
        model: a network whose forward returns ``{task: tensor}``.
        tasks: the task names, in the order of the returned tuple.
    """

    def __init__(self, model: nn.Module, tasks: list[str]) -> None:
        super().__init__()
        self.model = model
        self.tasks = list(tasks)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """The model's outputs on ``images``, one per task, in the order of ``tasks``."""
        outputs = self.model(images)
        return tuple(outputs[task] for task in self.tasks)


def export(
    model: nn.Module,
    path: str | Path,
    format: str = "onnx",
    example: Tensor | None = None,
    source: dict[str, Any] | None = None,
) -> Path:
    """Write a multi-task model as a standalone artifact (see the module docstring).

    The model is copied to the CPU and exported in eval mode; the model passed in is not modified.

    Args:
        model: a masked or compact multi-task model whose forward returns ``{task: tensor}``.
        path: the file to write, or an existing directory to write the format's default file
            name into (:data:`DEFAULT_FILE_NAMES`); missing parent directories are made.
        format: ``onnx``, ``torchscript`` or ``exported-program``.
        example: an input batch ``[B, C, H, W]``; the artifact accepts any batch size and these
            ``C, H, W`` only. By default one random ``64×64`` image with the input channels of
            the model's first conv (a compact model whose first conv selects some of the
            image's channels needs an example).
        source: where the model came from, recorded in the artifact's metadata (``export_run``
            records the run directory and the SHA-256 of its ``model.pt``).

    Returns:
        The path of the written file.

    Raises:
        ConfigError: an unknown format.
        MissingDependency: ONNX export without the ``onnx`` and ``onnxscript`` packages.
        ValueError: no example, and the input channels cannot be told from the model.
        TypeError: the model does not return a mapping of task names to tensors.
    """
    writer = _writer(format)
    net = copy.deepcopy(model).cpu().eval().requires_grad_(False)
    x = _default_example(net) if example is None else example.detach().cpu()
    tasks = _task_names(net, x)
    target = Path(path)
    if target.is_dir():
        target = target / DEFAULT_FILE_NAMES[format]
    target.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "tasks": tasks,
        "outputs": [OUTPUT_PREFIX + task for task in tasks],
        "input": INPUT_NAME,
        "input_shape": ["batch", *(int(s) for s in x.shape[1:])],
        "format": format,
        "sparsekit_version": __version__,
        **({"source": source} if source else {}),
    }
    # A dynamic batch dimension cannot be traced from a batch of one: export specialises it.
    batch = x[:1].expand(2, *x.shape[1:]).contiguous() if x.shape[0] < 2 else x
    writer(TaskTuple(net, tasks).eval(), batch, target, metadata)
    return target


def export_run(
    run_dir: str | Path, format: str, out: str | Path | None = None, compact: bool = True
) -> Path:
    """Export the model of a run directory, for inputs of its data set's image size.

    Args:
        run_dir: a finished run directory.
        format: ``onnx``, ``torchscript`` or ``exported-program``.
        out: the file to write, or an existing directory; by default
            ``RUN_DIR/export/<default file name>``.
        compact: export the compact model (``compact.pt``, made and saved first when missing
            or made from another ``model.pt``); otherwise the masked model as trained.

    Returns:
        The path of the written file.

    Raises:
        ConfigError: an unknown format.
        MissingDependency: ONNX export without the ``onnx`` and ``onnxscript`` packages.
        FileNotFoundError: the run directory holds no result or no model checkpoint.
    """
    _writer(format)  # fail on a bad format before loading anything
    run_dir = Path(run_dir)
    if not compact:
        model = load_model(run_dir)
    elif (run_dir / COMPACT_FILE).is_file() and compact_is_current(run_dir):
        model = load_compact_run(run_dir)
    else:
        model = compact_run(run_dir)[1]
    example = _random_input((2, *run_input_shape(run_dir)))
    target = run_dir / EXPORT_DIR / DEFAULT_FILE_NAMES[format] if out is None else Path(out)
    source = {"run_dir": str(run_dir), "model_sha256": file_sha256(run_dir / CHECKPOINT_FILE)}
    return export(model, target, format, example, source)


def run_input_shape(run_dir: str | Path) -> tuple[int, ...]:
    """The shape ``(C, H, W)`` of one input image of a run's data set.

    It is read from the efficiency record of ``result.json`` when the run measured it, else
    from the first test image of the data set rebuilt from the run's config.
    """
    result = Result.load(run_dir, with_model=False)
    shape = result.efficiency.get("input_shape")
    if shape:
        return tuple(int(s) for s in shape)
    provider = make_provider(result.config["dataset"])
    return tuple(provider.load("test", result.tasks)[0][0].shape)


def _writer(format: str) -> Callable[[nn.Module, Tensor, Path, dict[str, Any]], None]:
    """The function writing ``format``, once its optional packages are found importable."""
    writers = {
        "onnx": _write_onnx,
        "torchscript": _write_torchscript,
        "exported-program": _write_exported_program,
    }
    if format not in writers:
        raise ConfigError(
            f"unknown export format {format!r}; valid formats: {', '.join(DEFAULT_FILE_NAMES)}"
        )
    for package in ONNX_PACKAGES if format == "onnx" else ():
        try:
            importlib.import_module(package)
        except ImportError:
            raise MissingDependency(
                f"ONNX export needs the {package!r} package: {INSTALL_HINT}"
            ) from None
    return writers[format]


def _random_input(shape: tuple[int, ...]) -> Tensor:
    # A private generator: exporting must not move the global random state.
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def _default_example(net: nn.Module) -> Tensor:
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    # A compact model's first conv may read only some of the image's channels.
    if first is None or isinstance(first, ChannelSelectConv2d):
        raise ValueError(
            f"cannot tell the input channels of this {type(net).__name__}; pass an example input"
        )
    return _random_input((1, first.in_channels, DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE))


def _task_names(net: nn.Module, x: Tensor) -> list[str]:
    with torch.no_grad():
        outputs = net(x[:1])
    if not isinstance(outputs, Mapping) or not all(isinstance(v, Tensor) for v in outputs.values()):
        raise TypeError(
            f"export needs a model returning {{task: tensor}}, got {type(outputs).__name__}"
        )
    return [str(task) for task in outputs]


def _batch_dim() -> dict[str, dict[int, Any]]:
    return {INPUT_NAME: {0: torch.export.Dim("batch", min=1)}}


def _write_onnx(module: nn.Module, x: Tensor, path: Path, metadata: dict[str, Any]) -> None:
    program = torch.onnx.export(
        module,
        (x,),
        input_names=[INPUT_NAME],
        output_names=metadata["outputs"],
        dynamic_shapes=_batch_dim(),
        dynamo=True,
        verbose=False,
    )
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    program.save(path)  # one file: weights go to a separate one only past protobuf's 2 GB


def _write_torchscript(module: nn.Module, x: Tensor, path: Path, metadata: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        # The user chose the format; torch's notice that TorchScript is deprecated is not news.
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        # The heads' "upsample if the sizes differ" checks are constants for a fixed image size.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"sparsekit\.")
        traced = torch.jit.trace(module, (x,))
        torch.jit.save(traced, str(path), _extra_files={METADATA_KEY: json.dumps(metadata)})


def _write_exported_program(
    module: nn.Module, x: Tensor, path: Path, metadata: dict[str, Any]
) -> None:
    program = torch.export.export(module, (x,), dynamic_shapes=_batch_dim())
    torch.export.save(program, path, extra_files={METADATA_KEY: json.dumps(metadata)})
