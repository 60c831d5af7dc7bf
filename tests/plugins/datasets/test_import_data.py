"""``import`` data sets: made by the user's own callable, named by its import path."""

import sys
import textwrap

import pytest
import torch

from sparsekit.errors import ConfigError
from sparsekit.registry import create

MODULE = """
import torch
from torch.utils.data import TensorDataset

from sparsekit.data import from_tensors
from sparsekit.tasks import ClassificationTask, DepthTask, SegmentationTask

made = []


def tensors(n=20, size=8, channels=1):
    made.append(n)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(n, channels, size, size, generator=gen)
    targets = {
        "segmentation": (images[:, 0] > 0).long(),
        "depth": images[:, :1].abs(),
    }
    return from_tensors(images, targets, [SegmentationTask("segmentation", 2), DepthTask()])


def pair(n=10):
    images = torch.randn(n, 3, 8, 8)
    return TensorDataset(images, torch.arange(n) % 4), [ClassificationTask("kind", 4)]


def wrong():
    return [1, 2, 3]
"""


@pytest.fixture
def own_code(tmp_path, monkeypatch):
    """A module of the user's own code, importable for the test's duration (fresh each time)."""
    name = "sk_test_own_data"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    yield name
    sys.modules.pop(name, None)


def provider(target, **kwargs):
    return create("dataset", {"name": "import", "target": target, "kwargs": kwargs})


def test_the_callable_runs_once_when_first_needed_and_its_data_set_is_handed_on(own_code):
    data = provider(f"{own_code}:tensors", n=30, channels=2)
    assert sys.modules[own_code].made == []  # creating the component made no data yet
    assert [t.name for t in data.tasks()] == ["segmentation", "depth"]
    assert data.in_channels == 2
    assert [len(data.load(s, ["depth"])) for s in ("train", "val", "test")] == [18, 6, 6]
    assert sys.modules[own_code].made == [30]
    assert data.spec() == {
        "name": "import",
        "target": f"{own_code}:tensors",
        "kwargs": {"n": 30, "channels": 2},
    }


def test_a_dataset_and_tasks_pair_is_split_by_the_default_seeded_split(own_code):
    data = provider(f"{own_code}:pair")
    assert [len(data.load(s, None)) for s in ("train", "val", "test")] == [6, 2, 2]
    image, target = data.load("train", None)[0]
    assert image.shape == (3, 8, 8) and target["kind"].dtype == torch.int64


def test_what_the_callable_returns_must_be_a_data_set(own_code):
    with pytest.raises(ConfigError, match="must return a data set provider"):
        provider(f"{own_code}:wrong").tasks()
    with pytest.raises(ConfigError, match="cannot import module"):
        provider("sk_no_such_module:make")
