"""``import``: a backbone made by the user's own callable, named by its import path."""

import sys
import textwrap

import pytest
import torch
from torch import nn

from sparsekit.errors import ConfigError
from sparsekit.registry import create
from sparsekit.tasks import AttributeTask, SegmentationTask

TASKS = [SegmentationTask("seg", 3), AttributeTask("attr")]

MODULE = """
import torch
from torch import nn

calls = []


def backbone(in_channels, width=4):
    calls.append((in_channels, width))
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU())


def fixed_backbone(width=4):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())


def broken():
    raise RuntimeError("no GPU here")


def not_a_module():
    return "a string"


NOT_CALLABLE = 3
"""


@pytest.fixture
def own_code(tmp_path, monkeypatch):
    """A module of the user's own code, importable for the test's duration (fresh each time)."""
    name = "sk_test_own_backbones"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    yield name
    sys.modules.pop(name, None)


def builder(target, **params):
    return create("model", {"name": "import", "target": target, "head_channels": 4, **params})


def test_the_callable_gets_its_kwargs_and_the_input_channels_it_asks_for(own_code):
    model = builder(f"{own_code}:backbone", kwargs={"width": 6}).build(TASKS, 2)
    assert model.backbone_channels == 6 and model.backbone[0].in_channels == 2
    assert sys.modules[own_code].calls == [(2, 6)]
    out = model(torch.randn(2, 2, 8, 8))
    assert out["seg"].shape == (2, 3, 8, 8) and out["attr"].shape == (2, 1)


def test_a_callable_without_in_channels_and_a_class_work_too(own_code):
    assert builder(f"{own_code}:fixed_backbone").build(TASKS, 3).backbone_channels == 4
    conv = builder("torch.nn:Conv2d", kwargs={"out_channels": 5, "kernel_size": 1})
    model = conv.build(TASKS, 2)
    assert isinstance(model.backbone, nn.Conv2d) and model.backbone.in_channels == 2


def test_the_spec_rebuilds_the_same_model(own_code):
    first = builder(f"{own_code}:backbone", kwargs={"width": 3})
    spec = first.spec()
    assert spec["target"] == f"{own_code}:backbone" and spec["kwargs"] == {"width": 3}
    torch.manual_seed(0)
    a = first.build(TASKS, 3)
    torch.manual_seed(0)
    b = create("model", spec).build(TASKS, 3)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon_here", "an import target is 'package.module:callable'"),
        ("sk_no_such_module:make", "cannot import module 'sk_no_such_module'"),
        ("{own}:missing", "has no attribute 'missing'"),
        ("{own}:NOT_CALLABLE", "is a int, not a callable"),
    ],
)
def test_a_target_that_cannot_be_loaded_fails_when_configured(own_code, target, message):
    with pytest.raises(ConfigError, match=message):
        builder(target.format(own=own_code))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("broken", r"broken\(\*\*\{\}\) failed: RuntimeError: no GPU here"),
        ("not_a_module", "must return an nn.Module backbone, got str"),
    ],
)
def test_a_callable_that_fails_or_returns_no_module_is_a_clear_error(own_code, name, message):
    with pytest.raises(ConfigError, match=message):
        builder(f"{own_code}:{name}").build(TASKS, 3)
