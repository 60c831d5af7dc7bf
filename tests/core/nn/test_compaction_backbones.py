"""Compaction of backbones beyond plain residual CNNs: depthwise convs pass channels through,
a concatenation of a layer with its own depthwise conv (GhostNet) keeps them, and a layer
Torch-Pruning misreads is a CompactionError naming it."""

import pytest
import torch
from torch import nn

from sparsekit.errors import CompactionError
from sparsekit.interfaces import BackboneBuilder
from sparsekit.nn import backbone_conv_weights
from sparsekit.nn.compaction import ChannelSelectConv2d, compact
from sparsekit.tasks import AttributeTask, SegmentationTask


class InvertedResidual(nn.Module):
    """MobileNet v2's block: 1×1 expansion, 3×3 depthwise conv, 1×1 projection, residual."""

    def __init__(self, channels=4, expanded=12):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels))
        self.expand = nn.Sequential(nn.Conv2d(channels, expanded, 1), nn.BatchNorm2d(expanded))
        self.depthwise = nn.Sequential(
            nn.Conv2d(expanded, expanded, 3, padding=1, groups=expanded),
            nn.BatchNorm2d(expanded),
            nn.ReLU6(),
        )
        self.project = nn.Conv2d(expanded, channels, 1)

    def forward(self, x):
        x = self.stem(x)
        return x + self.project(self.depthwise(self.expand(x).relu()))


class Ghost(nn.Module):
    """GhostNet's module: a layer's output concatenated with its depthwise conv's."""

    def __init__(self):
        super().__init__()
        self.primary = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        self.cheap = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4))
        self.out = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        a = self.primary(x)
        return self.out(torch.cat([a, self.cheap(a)], 1))


class Softmaxed(nn.Module):
    """A softmax over channels, which Torch-Pruning takes for an element-wise operation."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.out(torch.softmax(self.conv(x), dim=1))


def model_of(backbone_class, zero):
    """A two-task net on ``backbone_class()`` whose convs ``zero`` names have groups 1, 3 zero."""

    class Given(BackboneBuilder):
        name = "given_test_backbone"

        def make_backbone(self, in_channels):
            return backbone_class()

    torch.manual_seed(0)
    model = Given(head_channels=4).build([SegmentationTask("seg", 2), AttributeTask("a")], 3)
    with torch.no_grad():
        for name, weight in backbone_conv_weights(model).items():
            if name.split(".")[1] in zero:
                weight[:, [1, 3]] = 0
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):  # as after training: shifts are not zero
                module.bias.normal_(0, 0.5)
    return model.eval()


def assert_same_outputs(model, small):
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        for name, out in model(x).items():
            torch.testing.assert_close(small(x)[name], out, atol=1e-4, rtol=1e-4)


def test_channels_unused_after_a_depthwise_conv_are_removed_through_it():
    model = model_of(InvertedResidual, zero={"project"})
    small = compact(model)
    assert small.backbone.expand[0].out_channels == 10
    assert small.backbone.depthwise[0].groups == small.backbone.depthwise[0].in_channels == 10
    assert small.backbone.project.in_channels == 10
    assert_same_outputs(model, small)


def test_a_layer_concatenated_with_its_depthwise_conv_keeps_its_channels():
    model = model_of(Ghost, zero={"out"})
    small = compact(model)
    assert small.backbone.primary[0].out_channels == 4  # its channels 1, 3 feed cheap's 1, 3
    assert isinstance(small.backbone.out, ChannelSelectConv2d)
    assert small.backbone.out.input_index.tolist() == [0, 2, 4, 5, 6, 7]
    assert_same_outputs(model, small)


def test_a_removal_that_changes_the_outputs_is_a_compaction_error_naming_the_layer():
    model = model_of(Softmaxed, zero={"out"})
    with pytest.raises(CompactionError, match=r"2 output channels of layer 'backbone\.conv'"):
        compact(model)
