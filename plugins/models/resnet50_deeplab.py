"""``resnet50_deeplab``: the papers' dilated ResNet-50 with DeepLabv3 dense heads.

The backbone is torchvision's ResNet-50 (random initialisation, no pretrained weights) with the
strides of layer3 and layer4 replaced by dilation, so its 2048-channel features have output stride
8. Pixel-level tasks get torchvision's ``DeepLabHead`` (ASPP with rates 12/24/36 and 256 channels);
image-level tasks a small conv, global average pooling and two fully connected layers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, field_validator
from torch import nn

from sparsekit.interfaces import ComponentConfig, ModelBuilder
from sparsekit.nn.heads import ImageHead, assemble_multitask_net, check_tasks

if TYPE_CHECKING:
    from sparsekit.nn import MultiTaskNet
    from sparsekit.tasks import Task

#: Channels of ResNet-50's layer4 output.
RESNET50_CHANNELS = 2048

#: torchvision's ResNet children that make up the backbone (everything before avgpool and fc).
_BACKBONE_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def resnet50_backbone(
    in_channels: int = 3,
    replace_stride_with_dilation: Sequence[bool] = (False, True, True),
) -> nn.Sequential:
    """torchvision's ResNet-50 without avgpool and fc, randomly initialised.

    The children keep torchvision's names (``conv1``, ``bn1``, ``relu``, ``maxpool``,
    ``layer1`` … ``layer4``), so weight names match the usual ResNet layer names.

    References:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; Yu et al., "Dilated
        Residual Networks", CVPR 2017.

    Args:
        in_channels: channels of the input images; other than 3, the stem conv is replaced by one
            of the same shape and initialisation with ``in_channels`` inputs.
        replace_stride_with_dilation: for layer2, layer3 and layer4, whether to dilate instead of
            striding; the output stride is ``32 / 2 ** sum(replace_stride_with_dilation)``.

    Returns:
        An ``nn.Sequential`` mapping ``[B, in_channels, H, W]`` to the layer4 features
        ``[B, 2048, h, w]``.
    """
    from torchvision.models import resnet50  # torchvision loads in ~1.5 s: only when used

    net = resnet50(weights=None, replace_stride_with_dilation=list(replace_stride_with_dilation))
    if in_channels != 3:
        stem = net.conv1
        net.conv1 = nn.Conv2d(
            in_channels,
            stem.out_channels,
            stem.kernel_size,  # type: ignore[arg-type]
            stem.stride,  # type: ignore[arg-type]
            stem.padding,  # type: ignore[arg-type]
            bias=False,
        )
        # The initialisation torchvision gives every ResNet conv.
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(OrderedDict((name, getattr(net, name)) for name in _BACKBONE_CHILDREN))


class ResNet50DeepLabBuilder(ModelBuilder):
    """The papers' architecture: dilated ResNet-50 backbone, DeepLabv3 and small image heads.

    Training-mode caveat: the pooling branch of DeepLabv3's ASPP applies BatchNorm to globally
    pooled features, which have one value per channel and image, so a pixel-level head in training
    mode raises ``ValueError`` for a batch of one image. Train with batches of at least two; in
    eval mode (running statistics) a batch of one works.

    References:
        Upadhyay et al., "Less is More – Towards parsimonious multi-task models using structured
        sparsity"; Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation",
        2017 (DeepLabv3).
    """

    name: ClassVar[str] = "resnet50_deeplab"

    class Config(ComponentConfig):
        """Configuration of :class:`ResNet50DeepLabBuilder`.

        torchvision's ``DeepLabHead`` fixes its ASPP width at 256 channels, so that is not
        configurable.

        Attributes:
            replace_stride_with_dilation: dilate instead of stride in layer2, layer3, layer4.
            atrous_rates: dilation rates of the ASPP branches of the dense heads.
            image_head_channels: channels of the image heads' conv (their first fully connected
                layer halves it).
            image_head_dropout: dropout before each fully connected layer of the image heads.
        """

        replace_stride_with_dilation: tuple[bool, bool, bool] = (False, True, True)
        atrous_rates: tuple[int, ...] = (12, 24, 36)
        image_head_channels: int = Field(64, ge=1)
        image_head_dropout: float = Field(0.0, ge=0.0, lt=1.0)

        @field_validator("atrous_rates")
        @classmethod
        def _positive_rates(cls, rates: tuple[int, ...]) -> tuple[int, ...]:
            if not rates or min(rates) < 1:
                raise ValueError(
                    f"atrous_rates must be a non-empty tuple of positive ints: {rates}"
                )
            return rates

    config: Config

    @property
    def output_stride(self) -> int:
        """Input size divided by the backbone's feature size."""
        return 32 // 2 ** sum(self.config.replace_stride_with_dilation)

    def build(self, tasks: Sequence[Task], in_channels: int) -> MultiTaskNet:
        """A dilated ResNet-50 backbone and one head per task, randomly initialised.

        Args:
            tasks: the tasks to predict, each with a unique name.
            in_channels: channels of the input images.

        Returns:
            The multi-task network.

        Raises:
            ValueError: no tasks, duplicate task names or an unknown task level.
        """
        check_tasks(tasks)  # before the (slow to build) backbone
        backbone = resnet50_backbone(in_channels, self.config.replace_stride_with_dilation)
        return assemble_multitask_net(backbone, RESNET50_CHANNELS, tasks, self.build_head)

    def build_head(self, task: Task, backbone_channels: int) -> nn.Module:
        """A DeepLabv3 head for a pixel-level task, an image head for an image-level one.

        Raises:
            ValueError: a task level other than ``"pixel"`` or ``"image"``.
        """
        if task.level == "pixel":
            from torchvision.models.segmentation.deeplabv3 import DeepLabHead

            return DeepLabHead(backbone_channels, task.out_channels, self.config.atrous_rates)
        if task.level == "image":
            return ImageHead(
                backbone_channels,
                task.out_channels,
                self.config.image_head_channels,
                dropout=self.config.image_head_dropout,
            )
        raise ValueError(f"task {task.name!r} has unknown level {task.level!r}")
