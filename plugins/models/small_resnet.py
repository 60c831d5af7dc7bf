"""``small_resnet``: a small residual CNN for quick multi-task experiments on CPU.

The backbone is a stem (3×3 conv, BatchNorm, ReLU) followed by one stage of BasicBlocks per entry of
``widths``. The first stage keeps the stem's resolution; each later stage halves it with a stride-2
block until the output stride reaches ``output_stride``, after which stages keep the resolution and
dilate their convolutions instead (as in dilated residual networks), so dense tasks can get finer
feature maps. The defaults (stride-2 stem, widths (16, 32, 64), output stride 8, the paper model's
output stride) map a 32×32 input to 64-channel 4×4 features for about 0.8 GFLOP per forward and
backward pass of 32 images with four heads, which keeps training fast on two CPU cores.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from sparsekit.interfaces import ComponentConfig, ModelBuilder
from sparsekit.nn.heads import DenseHead, ImageHead, assemble_multitask_net, check_tasks

if TYPE_CHECKING:
    from sparsekit.nn import MultiTaskNet
    from sparsekit.tasks import Task


class BasicBlock(nn.Module):
    """Two 3×3 convs with BatchNorm and a residual connection (He et al. 2016).

    The shortcut is a 1×1 conv with BatchNorm wherever the block changes the number of channels or
    the resolution, and the identity otherwise.

    References:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; Yu et al., "Dilated
        Residual Networks", CVPR 2017.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first conv (and of the shortcut).
        dilation: dilation of both 3×3 convs; padding keeps the spatial size (up to the stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(
            out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """The block's output ``relu(F(x) + shortcut(x))``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def stage_strides(num_stages: int, output_stride: int, stem_stride: int) -> list[tuple[int, int]]:
    """The ``(stride, dilation)`` of every stage for a target output stride.

    The first stage keeps the stem's resolution; each later stage halves the resolution until the
    output stride is reached, after which stages keep it and double their dilation instead.

    Args:
        num_stages: number of stages.
        output_stride: input size over feature size.
        stem_stride: stride of the stem conv.

    Returns:
        One ``(stride, dilation)`` pair per stage.

    Raises:
        ValueError: ``output_stride`` is not a power of two between ``stem_stride`` and
            ``stem_stride * 2 ** (num_stages - 1)``.
    """
    limit = stem_stride * 2 ** (num_stages - 1)
    if output_stride & (output_stride - 1) or not stem_stride <= output_stride <= limit:
        raise ValueError(
            f"output_stride must be a power of two in [{stem_stride}, {limit}] for {num_stages} "
            f"stages after a stride-{stem_stride} stem, got {output_stride}"
        )
    strides, current, dilation = [(1, 1)], stem_stride, 1
    for _ in range(1, num_stages):
        if current < output_stride:
            current *= 2
            strides.append((2, dilation))
        else:
            dilation *= 2
            strides.append((1, dilation))
    return strides


def small_resnet_backbone(
    in_channels: int,
    widths: Sequence[int],
    blocks_per_stage: int = 1,
    output_stride: int = 8,
    stem_stride: int = 2,
) -> nn.Sequential:
    """The small residual backbone: ``stem`` then ``layer1`` … ``layerN``.

    Args:
        in_channels: channels of the input images.
        widths: output channels of each stage; the stem has ``widths[0]`` channels.
        blocks_per_stage: BasicBlocks per stage.
        output_stride: input size over feature size (see :func:`stage_strides`).
        stem_stride: stride of the stem conv.

    Returns:
        An ``nn.Sequential`` mapping ``[B, in_channels, H, W]`` to
        ``[B, widths[-1], H / output_stride, W / output_stride]`` (sizes rounded up).

    Raises:
        ValueError: an output stride the stages cannot produce.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["stem"] = nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 3, stem_stride, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
    )
    channels = widths[0]
    schedule = stage_strides(len(widths), output_stride, stem_stride)
    for index, (width, (stride, dilation)) in enumerate(zip(widths, schedule, strict=True)):
        blocks = []
        for block_index in range(blocks_per_stage):
            blocks.append(BasicBlock(channels, width, stride if block_index == 0 else 1, dilation))
            channels = width
        layers[f"layer{index + 1}"] = nn.Sequential(*blocks)
    backbone = nn.Sequential(layers)
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            # He initialisation for ReLU networks, as torchvision's ResNets use.
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return backbone


class SmallResNetBuilder(ModelBuilder):
    """The default multi-task model: a small residual CNN sized for CPU runs on 32×32 images.

    Pixel-level tasks get a :class:`~sparsekit.nn.heads.DenseHead` (3×3 conv, BatchNorm, ReLU,
    1×1 conv); image-level tasks an :class:`~sparsekit.nn.heads.ImageHead` (conv, global
    average pooling, two fully connected layers). Both use ``head_channels`` hidden channels.
    """

    name: ClassVar[str] = "small_resnet"
    is_default: ClassVar[bool] = True

    class Config(ComponentConfig):
        """Configuration of :class:`SmallResNetBuilder`.

        Attributes:
            widths: output channels of each stage.
            blocks_per_stage: BasicBlocks per stage.
            head_channels: hidden channels of every task head.
            output_stride: input size over feature size, a power of two from ``stem_stride`` to
                ``stem_stride * 2 ** (len(widths) - 1)``; stages past it dilate instead of
                striding (4 with the default widths gives 8×8 features on 32×32 inputs at about
                2.5 times the compute).
            stem_stride: stride of the stem conv.
        """

        widths: tuple[int, ...] = (16, 32, 64)
        blocks_per_stage: int = Field(1, ge=1)
        head_channels: int = Field(32, ge=1)
        output_stride: int = Field(8, ge=1)
        stem_stride: Literal[1, 2] = 2

        @field_validator("widths")
        @classmethod
        def _positive_widths(cls, widths: tuple[int, ...]) -> tuple[int, ...]:
            if not widths or min(widths) < 1:
                raise ValueError(f"widths must be a non-empty tuple of positive ints, got {widths}")
            return widths

        @model_validator(mode="after")
        def _reachable_output_stride(self) -> SmallResNetBuilder.Config:
            stage_strides(len(self.widths), self.output_stride, self.stem_stride)
            return self

    config: Config

    def build(self, tasks: Sequence[Task], in_channels: int) -> MultiTaskNet:
        """A small residual backbone and one head per task, randomly initialised.

        Args:
            tasks: the tasks to predict, each with a unique name.
            in_channels: channels of the input images.

        Returns:
            The multi-task network.

        Raises:
            ValueError: no tasks, duplicate task names or an unknown task level.
        """
        check_tasks(tasks)  # before the backbone is built, to fail fast
        cfg = self.config
        backbone = small_resnet_backbone(
            in_channels, cfg.widths, cfg.blocks_per_stage, cfg.output_stride, cfg.stem_stride
        )
        return assemble_multitask_net(backbone, cfg.widths[-1], tasks, self.build_head)

    def build_head(self, task: Task, backbone_channels: int) -> nn.Module:
        """A dense head for a pixel-level task, an image head for an image-level one.

        Raises:
            ValueError: a task level other than ``"pixel"`` or ``"image"``.
        """
        hidden = self.config.head_channels
        if task.level == "pixel":
            return DenseHead(backbone_channels, task.out_channels, hidden)
        if task.level == "image":
            return ImageHead(backbone_channels, task.out_channels, hidden)
        raise ValueError(f"task {task.name!r} has unknown level {task.level!r}")
