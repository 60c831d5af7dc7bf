"""Exporting a trained run directory: its compact model, for its data set's image size."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sparsekit import Experiment, export_run
from sparsekit.engine.export import run_input_shape
from sparsekit.runs.store import COMPACT_FILE, RESULT_FILE, load_compact_run, load_model

IMAGE = (3, 16, 16)
TASKS = ["segmentation", "edges"]
TOL = 1e-4


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Six steps of group lasso with a λ large enough to zero about a quarter of the groups."""
    run_dir = tmp_path_factory.mktemp("runs") / "gl"
    result = Experiment(
        dataset={"name": "shapes", "n_train": 32, "n_val": 8, "n_test": 8, "image_size": 16},
        tasks=TASKS,
        penalty="group_lasso",
        lam=10.0,
        optimizer={"name": "adam_prox"},
        steps=6,
        batch_size=8,
        eval_every=6,
        debias_steps=0,
        device="cpu",
        run_dir=run_dir,
    ).run()
    assert 0.1 < result.sparsity["group"] < 0.9
    return run_dir


def outputs_of(model, x):
    with torch.no_grad():
        out = model.eval()(x)
    assert list(out) == TASKS
    return [out[t] for t in TASKS]


def test_export_run_compacts_the_run_and_writes_onnx_into_it(run_dir):
    assert not (run_dir / COMPACT_FILE).exists()
    path = export_run(run_dir, "onnx")
    assert path == run_dir / "export" / "model.onnx" and (run_dir / COMPACT_FILE).is_file()
    masked, small = load_model(run_dir), load_compact_run(run_dir)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in masked.parameters())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", *IMAGE]
    assert [o.name for o in session.get_outputs()] == [f"task/{t}" for t in TASKS]
    for batch in (1, 8):
        x = torch.rand(batch, *IMAGE)
        got = session.run(None, {"images": x.numpy()})
        for task, out, ref in zip(TASKS, got, outputs_of(small, x), strict=True):
            np.testing.assert_allclose(out, ref.numpy(), atol=TOL, rtol=TOL, err_msg=task)


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated:FutureWarning")
def test_export_run_to_a_folder_and_of_the_masked_model(run_dir, tmp_path):
    scripted = torch.jit.load(str(export_run(run_dir, "torchscript", tmp_path)))
    program = torch.export.load(export_run(run_dir, "exported-program", compact=False))
    assert (tmp_path / "model.torchscript.pt").is_file()
    x = torch.rand(8, *IMAGE)
    with torch.no_grad():
        pairs = [
            (scripted(x), outputs_of(load_compact_run(run_dir), x)),
            (program.module()(x), outputs_of(load_model(run_dir), x)),
        ]
    for got, expected in pairs:
        for out, ref in zip(got, expected, strict=True):
            torch.testing.assert_close(out, ref, atol=TOL, rtol=TOL)


def test_the_image_shape_comes_from_the_data_set_when_the_run_did_not_record_it(run_dir, tmp_path):
    assert run_input_shape(run_dir) == IMAGE
    copy = shutil.copytree(run_dir, tmp_path / "run")
    record = json.loads((copy / RESULT_FILE).read_text())
    record["efficiency"] = {}
    (copy / RESULT_FILE).write_text(json.dumps(record))
    assert run_input_shape(copy) == IMAGE
