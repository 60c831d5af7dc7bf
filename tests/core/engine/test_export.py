"""Export: each artifact, loaded by its own runtime without sparsekit, computes what the compact
model computes, at any batch size, and names its outputs by task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

import sparsekit
from sparsekit import compact
from sparsekit.engine.export import DEFAULT_FILE_NAMES, METADATA_KEY, export
from sparsekit.errors import ConfigError, MissingDependency
from sparsekit.nn.compaction import ChannelSelectConv2d
from sparsekit.registry import create
from sparsekit.tasks import AttributeTask, DepthTask, SegmentationTask

TOL = 1e-4
IMAGE = (3, 24, 24)
TASKS = ["seg", "depth", "attr"]
#: Fraction of each backbone conv's input-channel groups zeroed, those of smallest norm.
ZERO_FRACTION = 0.6


def masked_net() -> nn.Module:
    """A small_resnet with identity skips and all three head kinds, trained-looking BatchNorm
    and the smallest-norm 60 % of every backbone conv's input groups zeroed."""
    torch.manual_seed(0)
    builder = create("model", "small_resnet", widths=(4, 6, 8), blocks_per_stage=2, head_channels=5)
    tasks = [SegmentationTask("seg", 3), DepthTask("depth"), AttributeTask("attr")]
    model = builder.build(tasks, IMAGE[0])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen))
        for conv in model.backbone.modules():
            if isinstance(conv, nn.Conv2d):
                norms = conv.weight.square().sum(dim=(0, 2, 3))
                conv.weight[:, norms.argsort()[: int(ZERO_FRACTION * len(norms))]] = 0
    return model.eval()


@pytest.fixture(scope="module")
def models() -> tuple[nn.Module, nn.Module]:
    dense = masked_net()
    return dense, compact(dense)


@pytest.fixture(scope="module")
def artifacts(models, tmp_path_factory) -> dict[str, Path]:
    """Every format of the compact model, written into a directory (default file names)."""
    out = tmp_path_factory.mktemp("export")
    example = torch.randn(1, *IMAGE)
    return {fmt: export(models[1], out, fmt, example) for fmt in DEFAULT_FILE_NAMES}


def inputs(batch: int) -> Tensor:
    return torch.randn(batch, *IMAGE, generator=torch.Generator().manual_seed(batch))


def reference(model: nn.Module, x: Tensor) -> list[Tensor]:
    with torch.no_grad():
        outputs = model(x)
    assert list(outputs) == TASKS
    return [outputs[task] for task in TASKS]


def test_the_compact_model_is_smaller_and_selects_channels(models):
    dense, small = models
    assert any(isinstance(m, ChannelSelectConv2d) for m in small.modules())
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in dense.parameters())


def test_default_file_names_by_format(artifacts):
    assert {fmt: path.name for fmt, path in artifacts.items()} == {
        "onnx": "model.onnx",
        "torchscript": "model.torchscript.pt",
        "exported-program": "model.pt2",
    }
    assert all(path.is_file() for path in artifacts.values())
    assert len(list(artifacts["onnx"].parent.iterdir())) == 3  # no external-data or sidecar file


@pytest.mark.parametrize("batch", [1, 8])
def test_onnx_runtime_matches_the_compact_model(models, artifacts, batch):
    session = ort.InferenceSession(str(artifacts["onnx"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == [f"task/{t}" for t in TASKS]
    x = inputs(batch)
    got = session.run(None, {"images": x.numpy()})
    for task, out, ref in zip(TASKS, got, reference(models[1], x), strict=True):
        np.testing.assert_allclose(out, ref.numpy(), atol=TOL, rtol=TOL, err_msg=task)
    metadata = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert metadata["tasks"] == TASKS and metadata["input_shape"] == ["batch", *IMAGE]


def test_onnx_batch_dimension_is_symbolic(artifacts):
    graph = onnx.load(str(artifacts["onnx"])).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == list(IMAGE)


def initialiser_elements(path: Path) -> int:
    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def test_onnx_of_the_compact_model_holds_fewer_weights_than_the_dense_one(
    models, artifacts, tmp_path
):
    dense, _ = models
    dense_file = export(dense, tmp_path / "dense.onnx", "onnx", torch.randn(2, *IMAGE))
    compact_elements = initialiser_elements(artifacts["onnx"])
    assert compact_elements < sum(p.numel() for p in dense.parameters())
    assert compact_elements < 0.8 * initialiser_elements(dense_file)


#: Runs in a fresh interpreter: load the TorchScript and exported-program artifacts with torch
#: alone, run them on the saved inputs and save their outputs.
LOADER = textwrap.dedent(
    """
    import json, sys, torch
    folder = sys.argv[1]
    extra = {"sparsekit.json": ""}
    scripted = torch.jit.load(f"{folder}/model.torchscript.pt", _extra_files=extra)
    pt2 = {"sparsekit.json": ""}
    program = torch.export.load(f"{folder}/model.pt2", extra_files=pt2)
    inputs = torch.load(f"{folder}/inputs.pt")
    with torch.no_grad():
        outputs = {
            "torchscript": [list(scripted(x)) for x in inputs],
            "exported-program": [list(program.module()(x)) for x in inputs],
        }
    torch.save(outputs, f"{folder}/outputs.pt")
    print(json.dumps({
        "sparsekit_imported": any(m.split(".")[0].startswith("sparsekit") for m in sys.modules),
        "torchscript": json.loads(extra["sparsekit.json"]),
        "exported-program": json.loads(pt2["sparsekit.json"]),
    }))
    """
)


def test_torchscript_and_exported_program_load_without_sparsekit(models, artifacts):
    folder = artifacts["torchscript"].parent
    batches = [inputs(1), inputs(8)]
    torch.save(batches, folder / "inputs.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        # -I: neither the working directory nor PYTHONPATH on the path; torch.jit.load's
        # deprecation notice is not what this checks.
        [sys.executable, "-I", "-W", "ignore::FutureWarning", "-c", LOADER, str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["sparsekit_imported"] is False
    outputs = torch.load(folder / "outputs.pt")
    for fmt in ("torchscript", "exported-program"):
        assert report[fmt]["tasks"] == TASKS and report[fmt]["format"] == fmt
        for x, got in zip(batches, outputs[fmt], strict=True):
            for task, out, ref in zip(TASKS, got, reference(models[1], x), strict=True):
                torch.testing.assert_close(out, ref, atol=TOL, rtol=TOL, msg=f"{fmt} {task}")


def test_export_leaves_the_model_and_the_random_state_alone(tmp_path):
    model = masked_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()
    export(model, tmp_path / "m.pt", "torchscript")
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_an_unknown_format_is_a_config_error_naming_the_valid_ones(models, tmp_path):
    with pytest.raises(ConfigError, match="onnx, torchscript, exported-program") as info:
        export(models[1], tmp_path, "tflite")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="'tflite'"):
        sparsekit.export_run(tmp_path / "no_run", "tflite")


def test_onnx_without_its_packages_says_how_to_install_them(models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(MissingDependency, match=r"pip install 'sparsekit\[export\]'") as info:
        export(models[1], tmp_path, "onnx")
    assert "\n" not in str(info.value) and not list(tmp_path.iterdir())


def test_a_model_without_task_outputs_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"\{task: tensor\}"):
        export(nn.Conv2d(3, 4, 3), tmp_path, "torchscript")


def test_a_stem_reading_some_image_channels_needs_an_example(models, tmp_path):
    # One of the three RGB groups of the stem is zeroed: the compact stem reads two channels.
    stem = models[1].backbone.stem[0]
    assert isinstance(stem, ChannelSelectConv2d) and stem.in_channels < IMAGE[0]
    with pytest.raises(ValueError, match="pass an example input"):
        export(models[1], tmp_path, "torchscript")
