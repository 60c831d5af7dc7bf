"""``timm``: feature extractors as backbones, their arguments and errors, no timm, compaction."""

import sys

import pytest
import torch

from sparsekit.errors import ConfigError, MissingDependency
from sparsekit.nn import backbone_conv_weights
from sparsekit.nn.compaction import compact
from sparsekit.nn.heads import LastFeatureMap
from sparsekit.registry import create
from sparsekit.tasks import AttributeTask, SegmentationTask

TASKS = [SegmentationTask("seg", 3), AttributeTask("attr")]


def builder(arch, **params):
    return create("model", {"name": "timm", "arch": arch, "head_channels": 8, **params})


def test_the_deepest_feature_map_of_a_features_only_model_is_the_backbone():
    model = builder("resnet10t").build(TASKS, 1)
    assert isinstance(model.backbone, LastFeatureMap) and model.backbone.key == -1
    assert model.backbone_channels == model.backbone.body.feature_info.channels()[-1] == 512
    first = model.backbone.body.conv1[0]
    assert first.in_channels == 1  # in_chans
    out = model(torch.randn(2, 1, 32, 32))
    assert out["seg"].shape == (2, 3, 32, 32) and out["attr"].shape == (2, 1)


def test_kwargs_reach_create_model():
    strided = builder("resnet10t", kwargs={"output_stride": 16}).make_backbone(3)
    assert strided(torch.randn(1, 3, 32, 32))[-1].shape[-2:] == (2, 2)


def test_an_unknown_model_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="timm has no model 'resnet10x'; did you mean resnet10t"):
        builder("resnet10x")


def test_without_timm_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'sparsekit\[timm\]'"):
        builder("resnet10t")


def zero_every_third_group(model):
    """Zero the same input groups of every backbone conv, so whole channels become unused, and
    give every BatchNorm a shift, as training would."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in backbone_conv_weights(model).values():
            weight[:, torch.arange(weight.shape[1]) % 3 == 0] = 0
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.bias.normal_(0, 0.5, generator=gen)
    return model.eval()


@pytest.mark.parametrize(
    ("arch", "fraction"),
    [("mobilenetv3_small_050", 0.6), ("ghostnet_050", 0.7), ("convnext_atto", 0.7)],
)
def test_depthwise_squeeze_excitation_and_ghost_modules_compact_exactly(arch, fraction):
    """MobileNet v3 (depthwise convs, squeeze-excitation), GhostNet (a layer concatenated with
    its depthwise conv) and ConvNeXt (LayerNorm, layer scale)."""
    torch.manual_seed(0)
    model = zero_every_third_group(builder(arch).build(TASKS, 3))
    x = torch.randn(2, 3, 32, 32)
    small = compact(model, x)
    assert sum(p.numel() for p in small.parameters()) < fraction * sum(
        p.numel() for p in model.parameters()
    )
    with torch.no_grad():
        for name, out in model(x).items():
            torch.testing.assert_close(small(x)[name], out, atol=1e-4, rtol=1e-4)
