"""The built-in model builders (``small_resnet``, ``resnet50_deeplab``) and the shared heads."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from sparsekit.errors import ConfigError
from sparsekit.interfaces import ModelBuilder
from sparsekit.nn import MultiTaskNet, backbone_conv_weights
from sparsekit.nn.heads import DenseHead, ImageHead, assemble_multitask_net
from sparsekit.registry import create, get_registry
from sparsekit.tasks import AttributeTask, ClassificationTask, DepthTask, SegmentationTask, Task

MODEL_NAMES = ["small_resnet", "resnet50_deeplab"]
#: Small inputs per model: (batch, height, width); non-square to catch swapped axes.
INPUT_SIZE = {"small_resnet": (4, 32, 40), "resnet50_deeplab": (2, 32, 40)}


def make_tasks() -> list[Task]:
    return [
        SegmentationTask("seg", 5),
        DepthTask("depth"),
        AttributeTask("smile"),
        ClassificationTask("kind", 3),
    ]


def builder_for(name: str, **params: object) -> ModelBuilder:
    """The registered builder ``name``, configured by ``params``."""
    return create("model", name, **params)


def build(
    name: str, tasks: list[Task] | None = None, seed: int = 0, **params: object
) -> MultiTaskNet:
    torch.manual_seed(seed)
    return builder_for(name, **params).build(make_tasks() if tasks is None else tasks, 3)


def images(name: str, channels: int = 3, seed: int = 1) -> Tensor:
    batch, height, width = INPUT_SIZE[name]
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, height, width, generator=generator)


@pytest.fixture(scope="module")
def model_cache() -> dict[str, MultiTaskNet]:
    """Models with the four standard tasks, built once per module; mutating tests copy them."""
    return {}


def standard_model(cache: dict[str, MultiTaskNet], name: str) -> MultiTaskNet:
    if name not in cache:
        cache[name] = build(name)
    return cache[name]


@pytest.fixture(params=MODEL_NAMES)
def built(
    request: pytest.FixtureRequest, model_cache: dict[str, MultiTaskNet]
) -> tuple[str, MultiTaskNet]:
    return request.param, standard_model(model_cache, request.param)


@pytest.fixture
def resnet50(model_cache: dict[str, MultiTaskNet]) -> MultiTaskNet:
    return standard_model(model_cache, "resnet50_deeplab")


def head_params(model: MultiTaskNet) -> set[int]:
    return {id(p) for p in model.heads.parameters()}


# --- registry -------------------------------------------------------------------------------


def test_registry_provides_both_builders() -> None:
    from sparsekit_plugins.models import ResNet50DeepLabBuilder, SmallResNetBuilder

    registry = get_registry()
    assert set(MODEL_NAMES) <= set(registry.names("model"))
    assert registry.get("model", "small_resnet") is SmallResNetBuilder
    assert registry.get("model", "resnet50_deeplab") is ResNet50DeepLabBuilder
    for name in MODEL_NAMES:
        builder = registry.create("model", name)
        assert isinstance(builder, ModelBuilder)
        assert builder.spec()["name"] == name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_rejects_unknown_keys_and_round_trips(name: str) -> None:
    with pytest.raises(ConfigError, match="not_a_field"):
        builder_for(name, not_a_field=1)
    builder = builder_for(name)
    spec = builder.spec()
    assert builder_for(spec.pop("name"), **spec).config == builder.config


# --- every builder --------------------------------------------------------------------------


def test_output_shapes(built: tuple[str, MultiTaskNet]) -> None:
    name, model = built
    x = images(name)
    batch, height, width = INPUT_SIZE[name]
    model.eval()
    with torch.no_grad():
        out = model(x)
    expected = {
        "seg": (batch, 5, height, width),
        "depth": (batch, 1, height, width),
        "smile": (batch, 1),
        "kind": (batch, 3),
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert model.pixel_tasks == {"seg", "depth"}
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_other_input_channels(name: str) -> None:
    model = builder_for(name).build([DepthTask("depth"), AttributeTask("smile")], 1)
    out = model(images(name, channels=1))
    batch, height, width = INPUT_SIZE[name]
    assert out["depth"].shape == (batch, 1, height, width)
    assert out["smile"].shape == (batch, 1)


def test_gradients_reach_backbone_and_every_head(built: tuple[str, MultiTaskNet]) -> None:
    name, model = built
    model = copy.deepcopy(model).train()
    out = model(images(name))
    sum(y.square().mean() for y in out.values()).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
    for weight_name, weight in backbone_conv_weights(model).items():
        assert weight.grad.abs().sum() > 0, weight_name
    for task, head in model.heads.items():
        assert sum(p.grad.abs().sum() for p in head.parameters()) > 0, task


def test_a_task_loss_reaches_only_its_own_head(built: tuple[str, MultiTaskNet]) -> None:
    name, model = built
    model = copy.deepcopy(model).train()
    model(images(name), tasks=["seg", "smile"])["smile"].sum().backward()
    assert all(p.grad is not None for p in model.heads["smile"].parameters())
    for other in ("seg", "depth", "kind"):
        assert all(p.grad is None for p in model.heads[other].parameters()), other
    assert all(w.grad is not None for w in backbone_conv_weights(model).values())


#: Backbone convs counted by hand: small_resnet's stem, 3 blocks of two convs and the 1×1
#: shortcuts of layer2 and layer3; ResNet-50's stem, 16 bottlenecks of three convs and 4 shortcuts.
EXPECTED_CONVS = {"small_resnet": 1 + 3 * 2 + 2, "resnet50_deeplab": 1 + 16 * 3 + 4}


def test_backbone_conv_weights_lists_every_backbone_conv_and_no_head(
    built: tuple[str, MultiTaskNet],
) -> None:
    name, model = built
    weights = backbone_conv_weights(model)
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(weights) == len(convs) == EXPECTED_CONVS[name]
    assert {id(w) for w in weights.values()} == {id(m.weight) for m in convs}
    assert not {id(w) for w in weights.values()} & head_params(model)
    named = dict(model.named_parameters())
    assert all(named[key] is weight and weight.dim() == 4 for key, weight in weights.items())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_deterministic_under_seed(name: str) -> None:
    tasks = [SegmentationTask("seg", 3), AttributeTask("smile")]
    first, second, other = build(name, tasks), build(name, tasks), build(name, tasks, seed=1)
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    assert any(
        not torch.equal(a, c) for a, c in zip(first.parameters(), other.parameters(), strict=True)
    )
    x = images(name)
    outputs = []
    for model in (first, second):
        torch.manual_seed(3)  # the DeepLab heads use dropout in training mode
        with torch.no_grad():
            outputs.append(model.train()(x))
    assert all(torch.equal(outputs[0][k], outputs[1][k]) for k in outputs[0])


def test_build_head_attaches_to_a_built_model(built: tuple[str, MultiTaskNet]) -> None:
    name, model = built
    model = copy.deepcopy(model)
    builder = builder_for(name)
    for task in (SegmentationTask("parts", 2), ClassificationTask("age", 4)):
        head = builder.build_head(task, model.backbone_channels)
        model.add_head(task.name, head, pixel=task.level == "pixel")
    out = model(images(name), tasks=["parts", "age"])
    batch, height, width = INPUT_SIZE[name]
    assert out["parts"].shape == (batch, 2, height, width)
    assert out["age"].shape == (batch, 4)
    (out["parts"].square().mean() + out["age"].square().mean()).backward()
    for task in ("parts", "age"):
        assert all(p.grad is not None for p in model.heads[task].parameters())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_duplicate_or_missing_tasks_are_errors(name: str) -> None:
    builder = builder_for(name)
    with pytest.raises(ValueError, match="unique"):
        builder.build([DepthTask("x"), AttributeTask("x")], 3)
    with pytest.raises(ValueError, match="non-empty"):
        builder.build([], 3)


# --- resnet50_deeplab ------------------------------------------------------------------------


def is_3x3_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3)


def test_resnet50_backbone_has_output_stride_8_through_dilation(resnet50: MultiTaskNet) -> None:
    builder = builder_for("resnet50_deeplab")
    backbone = resnet50.backbone.eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 2048, 8, 8)
    assert builder.output_stride == 8
    layer3_dilations = {m.dilation for m in backbone.layer3.modules() if is_3x3_conv(m)}
    layer4_dilations = {m.dilation for m in backbone.layer4.modules() if is_3x3_conv(m)}
    # torchvision keeps the first block of a dilated layer at the previous layer's dilation.
    assert layer3_dilations == {(1, 1), (2, 2)}
    assert layer4_dilations == {(2, 2), (4, 4)}


def test_resnet50_dilation_is_configurable() -> None:
    builder = builder_for("resnet50_deeplab", replace_stride_with_dilation=(False, False, True))
    backbone = builder.build([AttributeTask("smile")], 3).backbone.eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 64))
    assert builder.output_stride == 16
    assert features.shape == (1, 2048, 4, 4)


def test_resnet50_backbone_matches_torchvision_without_fc(resnet50: MultiTaskNet) -> None:
    model = resnet50
    reference = torchvision.models.resnet50(weights=None)
    expected = sum(p.numel() for p in reference.parameters()) - sum(
        p.numel() for p in reference.fc.parameters()
    )
    assert sum(p.numel() for p in model.backbone.parameters()) == expected == 23_508_032
    conv_params = sum(m.weight.numel() for m in reference.modules() if isinstance(m, nn.Conv2d))
    assert sum(w.numel() for w in backbone_conv_weights(model).values()) == conv_params
    assert model.backbone_channels == 2048


def test_resnet50_heads_are_deeplab_and_image_heads(resnet50: MultiTaskNet) -> None:
    model = resnet50
    from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead

    assert isinstance(model.heads["seg"], DeepLabHead)
    aspp = model.heads["seg"][0]
    assert isinstance(aspp, ASPP)
    rates = [
        m.dilation for m in aspp.modules() if isinstance(m, nn.Conv2d) and m.dilation != (1, 1)
    ]
    assert rates == [(12, 12), (24, 24), (36, 36)]
    assert isinstance(model.heads["smile"], ImageHead)


def test_resnet50_batch_of_one_works_in_eval_mode_only() -> None:
    model = build("resnet50_deeplab", [DepthTask("depth"), AttributeTask("smile")])
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out["depth"].shape == (1, 1, 32, 32) and out["smile"].shape == (1, 1)
    # The documented caveat: ASPP's pooling branch normalises one value per channel.
    model.train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model(x)


# --- small_resnet ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "feature_size", "convs", "dilations"),
    [
        # Defaults: stride-2 stem, stride-2 layer2 and layer3 -> 32 / 8 = 4.
        ({}, 4, 1 + 3 * 2 + 2, {(1, 1)}),
        # Output stride 4: layer3 keeps 8×8 and dilates by 2.
        ({"output_stride": 4}, 8, 1 + 3 * 2 + 2, {(1, 1), (2, 2)}),
        # Stride-1 stem, two blocks per stage: stem + 12 convs + 2 shortcuts.
        ({"stem_stride": 1, "output_stride": 4, "blocks_per_stage": 2}, 8, 15, {(1, 1)}),
        # Equal widths, output stride 2: no stage changes shape, so no shortcut convs.
        ({"widths": (8, 8, 8), "output_stride": 2}, 16, 1 + 3 * 2, {(1, 1), (2, 2), (4, 4)}),
    ],
)
def test_small_resnet_output_stride_and_layers(
    params: dict[str, object], feature_size: int, convs: int, dilations: set[tuple[int, int]]
) -> None:
    builder = builder_for("small_resnet", **params)
    model = builder.build([DepthTask("depth")], 3)
    features = model.backbone(torch.randn(2, 3, 32, 32))
    channels = builder.config.widths[-1]
    assert features.shape == (2, channels, feature_size, feature_size)
    assert model.backbone_channels == channels
    assert len(backbone_conv_weights(model)) == convs
    assert {m.dilation for m in model.backbone.modules() if isinstance(m, nn.Conv2d)} >= dilations
    assert model(torch.randn(2, 3, 32, 32))["depth"].shape == (2, 1, 32, 32)


@pytest.mark.parametrize(
    "params",
    [
        {"output_stride": 16},  # beyond what three stages after a stride-2 stem reach
        {"output_stride": 6},
        {"stem_stride": 2, "output_stride": 1},
        {"stem_stride": 3},
        {"widths": ()},
        {"widths": (16, 0)},
        {"blocks_per_stage": 0},
        {"head_channels": 0},
    ],
)
def test_small_resnet_rejects_invalid_configs(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        builder_for("small_resnet", **params)


def test_basic_block_is_residual() -> None:
    from sparsekit_plugins.models.small_resnet import BasicBlock

    x = torch.randn(2, 8, 6, 6)
    same = BasicBlock(8, 8, dilation=2).eval()
    wider = BasicBlock(8, 16, stride=2).eval()
    for block in (same, wider):
        # With the residual branch's last BatchNorm at zero, only the shortcut remains.
        nn.init.zeros_(block.bn2.weight)
        nn.init.zeros_(block.bn2.bias)
    with torch.no_grad():
        assert same.downsample is None
        torch.testing.assert_close(same(x), F.relu(x))
        conv, norm = wider.downsample
        shortcut = F.batch_norm(
            F.conv2d(x, conv.weight, stride=2),
            norm.running_mean,
            norm.running_var,
            norm.weight,
            norm.bias,
        )
        torch.testing.assert_close(wider(x), F.relu(shortcut))
        assert wider(x).shape == (2, 16, 3, 3)


# --- heads ------------------------------------------------------------------------------------


def test_image_head_matches_a_functional_reference() -> None:
    torch.manual_seed(0)
    head = ImageHead(6, 3, hidden_channels=8, fc_channels=5).eval()
    norm = head.features[1]
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)
    x = torch.randn(4, 6, 5, 7)
    conv, fc1, fc2 = head.features[0], head.classifier[2], head.classifier[5]
    h = F.conv2d(x, conv.weight, padding=1)
    h = (h - norm.running_mean[:, None, None]) / torch.sqrt(
        norm.running_var[:, None, None] + norm.eps
    )
    h = F.relu(h * norm.weight[:, None, None] + norm.bias[:, None, None]).mean(dim=(2, 3))
    expected = F.relu(h @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias
    with torch.no_grad():
        torch.testing.assert_close(head(x), expected)


def test_heads_shapes_and_batch_of_one_in_training() -> None:
    dense, image = DenseHead(12, 4, hidden_channels=6), ImageHead(12, 2)
    x = torch.randn(1, 12, 3, 5)
    assert dense.train()(x).shape == (1, 4, 3, 5)
    assert image.train()(x).shape == (1, 2)
    assert image.classifier[2].out_features == 16  # the default fc width: half the conv width
    with pytest.raises(ValueError):
        DenseHead(12, 0)
    with pytest.raises(ValueError):
        ImageHead(12, 2, dropout=1.0)


def test_assemble_rejects_unknown_levels() -> None:
    task = AttributeTask("smile")
    task.level = "voxel"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="unknown level"):
        assemble_multitask_net(nn.Identity(), 4, [task], lambda t, c: nn.Identity())
