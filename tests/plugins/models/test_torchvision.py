"""``torchvision``: the trunk of every supported family, input channels, arguments, errors, and
which families compact."""

import pytest
import torch
from torch import nn
from torchvision import models

from sparsekit.errors import CompactionError, ConfigError
from sparsekit.nn import backbone_conv_weights
from sparsekit.nn.compaction import compact
from sparsekit.nn.heads import LastFeatureMap
from sparsekit.registry import create
from sparsekit.tasks import AttributeTask, SegmentationTask

TASKS = [SegmentationTask("seg", 3), AttributeTask("attr")]


def builder(arch, **params):
    return create("model", {"name": "torchvision", "arch": arch, "head_channels": 8, **params})


@pytest.mark.parametrize(
    ("arch", "channels"),
    [
        ("resnet18", 512),
        ("alexnet", 256),
        ("efficientnet_b0", 1280),
        ("mobilenet_v3_small", 576),
        ("regnet_x_400mf", 400),
        ("convnext_tiny", 768),
    ],
)
def test_the_trunk_is_what_the_classifier_pools(arch, channels):
    """Reference: the input of the torchvision model's own average pooling, same seed."""
    torch.manual_seed(0)
    trunk = builder(arch).make_backbone(3).eval()
    torch.manual_seed(0)
    net = models.get_model(arch, weights=None).eval()
    pooled = {}
    net.avgpool.register_forward_hook(lambda module, args, out: pooled.update(x=args[0]))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net(x)
        features = trunk(x)
    assert features.shape[1] == channels
    torch.testing.assert_close(features, pooled["x"])


@pytest.mark.parametrize(
    ("arch", "channels"),
    [
        ("mobilenet_v2", 1280),
        ("densenet121", 1024),
        ("squeezenet1_1", 512),
        ("mnasnet0_5", 1280),
        ("shufflenet_v2_x0_5", 1024),
        ("lraspp_mobilenet_v3_large", 960),
        ("deeplabv3_mobilenet_v3_large", 960),
    ],
)
def test_every_family_builds_a_multitask_net(arch, channels):
    model = builder(arch).build(TASKS, 3)
    assert model.backbone_channels == channels
    out = model(torch.randn(2, 3, 32, 32))
    assert out["seg"].shape == (2, 3, 32, 32) and out["attr"].shape == (2, 1)


def test_a_segmentation_model_gives_its_backbone_s_out_features_without_downloading():
    model = builder("fcn_resnet50", kwargs={"aux_loss": True}).build(TASKS, 3)
    assert isinstance(model.backbone, LastFeatureMap) and model.backbone.key == "out"
    assert model.backbone_channels == 2048


def test_other_input_channels_replace_the_first_conv():
    trunk = builder("resnet18").make_backbone(1)
    assert trunk.conv1.in_channels == 1 and trunk.conv1.out_channels == 64
    assert trunk.conv1.kernel_size == (7, 7) and trunk.conv1.stride == (2, 2)
    model = builder("mobilenet_v2").build(TASKS, 5)
    first = next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 5 and model(torch.randn(2, 5, 32, 32))["seg"].shape[1] == 3


def test_kwargs_reach_the_constructor():
    dilated = builder("resnet50", kwargs={"replace_stride_with_dilation": [False, True, True]})
    features = dilated.make_backbone(3)(torch.randn(1, 3, 32, 32))
    assert features.shape == (1, 2048, 4, 4)  # output stride 8
    assert dilated.spec()["kwargs"] == {"replace_stride_with_dilation": [False, True, True]}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"arch": "resnet81"}, "no classification or segmentation model 'resnet81'; did you mean"),
        ({"arch": "vit_b_16"}, r"family 'vision_transformer'.*supported families are alexnet"),
        ({"arch": "resnet18", "kwargs": {"wings": 2}}, "unexpected keyword argument 'wings'"),
        ({"arch": "resnet18", "weights": "NOPE"}, "has no weights 'NOPE'"),
    ],
)
def test_what_cannot_be_built_is_a_clear_config_error(params, message):
    with pytest.raises(ConfigError, match=message):
        builder(**params).build(TASKS, 3)


def zero_every_third_group(model):
    """Zero the same input groups of every backbone conv, so whole channels become unused, and
    give every BatchNorm a shift, as training would."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in backbone_conv_weights(model).values():
            weight[:, torch.arange(weight.shape[1]) % 3 == 0] = 0
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.bias.normal_(0, 0.5, generator=gen)
    return model.eval()


@pytest.mark.parametrize(
    "arch",
    [
        "mobilenet_v2",
        "mobilenet_v3_small",
        "efficientnet_b0",
        "regnet_y_400mf",
        "mnasnet0_5",
        "squeezenet1_1",
        "densenet121",
        "lraspp_mobilenet_v3_large",
    ],
)
def test_depthwise_squeeze_excitation_concatenating_and_grouped_families_compact_exactly(arch):
    torch.manual_seed(0)
    model = zero_every_third_group(builder(arch).build(TASKS, 3))
    x = torch.randn(2, 3, 32, 32)
    small = compact(model, x)
    assert sum(p.numel() for p in small.parameters()) < 0.8 * sum(
        p.numel() for p in model.parameters()
    )
    with torch.no_grad():
        for name, out in model(x).items():
            torch.testing.assert_close(small(x)[name], out, atol=1e-4, rtol=1e-4)


def test_a_family_torch_pruning_cannot_trace_fails_naming_the_layer():
    model = zero_every_third_group(builder("shufflenet_v2_x0_5").build(TASKS, 3))
    with pytest.raises(CompactionError, match=r"cannot trace .* after layer 'backbone\.stage"):
        compact(model)
