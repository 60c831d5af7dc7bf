"""Any backbone: BackboneBuilder (probing, output wrapping, heads), GivenBackbone (an nn.Module
instance), and how configs, resolving and reloading treat a given backbone."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from sparsekit.config import GIVEN_MODULE, ExperimentConfig, build_config
from sparsekit.engine.resolve import resolve
from sparsekit.errors import ConfigError
from sparsekit.interfaces import BackboneBuilder, BackboneConfig, GivenBackbone
from sparsekit.nn import backbone_conv_weights
from sparsekit.nn.heads import DenseHead, ImageHead, LastFeatureMap, probe_backbone
from sparsekit.runs.store import build_model, make_builder
from sparsekit.tasks import AttributeTask, DepthTask, SegmentationTask


def tiny_backbone(in_channels: int = 3, width: int = 6) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
    )


class Several(nn.Module):
    """Returns its two feature maps in the container ``kind``."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.first = nn.Conv2d(3, 4, 3, padding=1)
        self.second = nn.Conv2d(4, 7, 3, stride=2, padding=1)

    def forward(self, x):
        a = self.first(x)
        b = self.second(a)
        if self.kind == "list":
            return [a, b]
        if self.kind == "dict":
            return OrderedDict(out=b, aux=a)
        return OrderedDict(low=a, high=b)


class TinyBuilder(BackboneBuilder):
    name = "tiny_test_backbone"

    def make_backbone(self, in_channels):
        return tiny_backbone(in_channels)


TASKS = [SegmentationTask("seg", 3), DepthTask(), AttributeTask("attr")]


def test_build_probes_the_channels_and_puts_the_standard_heads_on_them():
    model = TinyBuilder(head_channels=5, image_head_channels=9).build(TASKS, 2)
    assert model.backbone_channels == 12
    assert isinstance(model.heads["seg"], DenseHead) and model.heads["seg"][0].out_channels == 5
    assert isinstance(model.heads["attr"], ImageHead)
    assert model.heads["attr"].features[0].out_channels == 9
    out = model(torch.randn(2, 2, 20, 24))
    assert out["seg"].shape == (2, 3, 20, 24) and out["depth"].shape == (2, 1, 20, 24)
    assert out["attr"].shape == (2, 1)


def test_probing_runs_in_eval_mode_without_touching_statistics_and_restores_the_modes():
    backbone = tiny_backbone()
    backbone[1].eval()  # a module left in eval mode stays so
    before = backbone[4].running_mean.clone()
    same, channels = probe_backbone(backbone, 3, 16)
    assert same is backbone and channels == 12
    assert backbone.training and not backbone[1].training and backbone[4].training
    assert torch.equal(backbone[4].running_mean, before)


@pytest.mark.parametrize(("kind", "key", "channels"), [("list", -1, 7), ("dict", "out", 7)])
def test_several_feature_maps_are_reduced_to_the_deepest_or_out(kind, key, channels):
    wrapped, found = probe_backbone(Several(kind), 3, 16)
    assert isinstance(wrapped, LastFeatureMap) and wrapped.key == key and found == channels
    assert wrapped(torch.randn(1, 3, 16, 16)).shape == (1, channels, 8, 8)


def test_a_dict_without_out_keeps_its_last_entry():
    wrapped, channels = probe_backbone(Several("named"), 3, 16)
    assert wrapped.key == "high" and channels == 7


def test_a_backbone_that_returns_no_feature_map_is_a_clear_config_error():
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ConfigError, match=r"feature map \[B, C', h, w\].*returned \[1, 4\]"):
        probe_backbone(flat, 3, 16)


def test_a_backbone_of_other_input_channels_is_a_clear_config_error():
    with pytest.raises(ConfigError, match=r"fails on a dummy batch of shape \[1, 1, 64, 64\]"):
        GivenBackbone(tiny_backbone(3)).build(TASKS, 1)


def test_given_backbone_records_its_class_and_copies_the_instance_at_every_build():
    instance = tiny_backbone()
    builder = GivenBackbone(instance, head_channels=4)
    spec = builder.spec()
    assert spec["name"] == GIVEN_MODULE == "module"
    assert spec["class"] == "torch.nn.modules.container.Sequential"
    assert spec["head_channels"] == 4
    first, second = builder.build(TASKS, 3), builder.build(TASKS, 3)
    weights = [dict(m.backbone.named_parameters()) for m in (first, second)]
    assert all(weights[0][n] is not weights[1][n] for n in weights[0])
    copies = zip(first.backbone.parameters(), instance.parameters(), strict=True)
    assert all(p is not q for p, q in copies)
    with torch.no_grad():
        first.backbone[0].weight.zero_()
    assert instance[0].weight.abs().sum() > 0 and second.backbone[0].weight.abs().sum() > 0


def test_a_recorded_given_backbone_builds_heads_but_not_the_model():
    recorded = GivenBackbone.from_spec(GivenBackbone(tiny_backbone(), head_channels=4).spec())
    head = recorded.build_head(TASKS[0], 12)
    assert isinstance(head, DenseHead) and head[0].out_channels == 4
    with pytest.raises(ConfigError) as error:
        recorded.build(TASKS, 3)
    message = str(error.value)
    assert "given as an instance of torch.nn.modules.container.Sequential" in message
    assert "Result.load(run_dir, backbone=Sequential(...))" in message
    assert "model: {name: import, target: 'torch.nn.modules.container:" in message


def test_make_builder_wraps_a_module_and_rebuilds_a_record_around_a_given_backbone():
    assert isinstance(make_builder(tiny_backbone()), GivenBackbone)
    record = GivenBackbone(tiny_backbone()).spec()
    again = make_builder(record, tiny_backbone())
    assert again.build(TASKS, 3).backbone_channels == 12
    with pytest.raises(ConfigError, match="backbone= replaces a backbone"):
        make_builder({"name": "small_resnet"}, tiny_backbone())


def test_the_config_takes_a_module_as_model_only_and_cannot_write_it():
    config = ExperimentConfig(model=tiny_backbone())
    assert isinstance(config.model, nn.Module)
    with pytest.raises(ConfigError, match="cannot be written into a config"):
        config.to_dict()
    with pytest.raises(ConfigError, match="accepted as the model's backbone only"):
        build_config({"penalty": tiny_backbone()})


def test_resolve_wraps_a_module_and_records_its_class():
    resolved = resolve(ExperimentConfig(model=tiny_backbone()))
    assert isinstance(resolved.builder, GivenBackbone)
    assert resolved.config.to_dict()["model"]["class"] == "torch.nn.modules.container.Sequential"


def test_a_config_recording_a_given_backbone_or_in_memory_data_cannot_run_again():
    record = GivenBackbone(tiny_backbone()).spec()
    with pytest.raises(ConfigError, match="cannot rebuild from a config"):
        resolve(build_config({"model": record}))
    with pytest.raises(ConfigError, match="given in memory"):
        resolve(build_config({"dataset": {"name": "in_memory", "tasks": []}}))


def test_reloading_a_given_backbone_run_without_the_backbone_is_the_clear_error():
    config = {
        "model": GivenBackbone(tiny_backbone()).spec(),
        "dataset": {
            "name": "in_memory",
            "in_channels": 3,
            "tasks": [{"name": "seg", "level": "pixel", "out_channels": 3}],
        },
        "loss_combiner": "default",
    }
    with pytest.raises(ConfigError, match="which sparsekit cannot rebuild"):
        build_model(config, ["seg"])
    model, _ = build_model(config, ["seg"], tiny_backbone())
    assert model.heads["seg"][-1].out_channels == 3


def test_penalties_act_on_ungrouped_convs_only():
    class Mixed(BackboneBuilder):
        name = "mixed_test_backbone"

        def make_backbone(self, in_channels):
            return nn.Sequential(
                nn.Conv2d(in_channels, 8, 1),
                nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise
                nn.Conv2d(8, 8, 3, padding=1, groups=2),  # grouped
                nn.Conv2d(8, 4, 1),
            )

    model = Mixed(BackboneConfig()).build(TASKS, 3)
    assert list(backbone_conv_weights(model)) == ["backbone.0.weight", "backbone.3.weight"]
