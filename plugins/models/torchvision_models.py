"""``torchvision``: the convolutional trunk of a torchvision classification or segmentation model.

``arch`` is any name of ``torchvision.models.list_models()`` whose family has a convolutional
trunk sparsekit knows how to cut out (:data:`TRUNKS`): everything before the classifier of a
ResNet (ResNeXt, Wide ResNet: ``conv1`` … ``layer4``), the ``features`` of VGG, AlexNet,
MobileNet v2/v3, EfficientNet (v1, v2), ConvNeXt, DenseNet and SqueezeNet, MNASNet's ``layers``,
RegNet's stem and ``trunk_output``, ShuffleNet v2's stages and ``conv5``, and the ``backbone`` of
the segmentation models (FCN, DeepLabv3, LR-ASPP; its ``"out"`` features). Vision transformers,
detection and video models have no such trunk and are refused.

Weights are random (``weights: null``) unless a torchvision weights name is given, which
torchvision loads from its cache or downloads. ``kwargs`` go to the model's constructor, e.g.
``replace_stride_with_dilation: [false, true, true]`` for a ResNet-50 of output stride 8. A
segmentation model's ``weights_backbone`` defaults to None (no download).
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import Field, field_validator
from torch import nn

from sparsekit.errors import ConfigError
from sparsekit.interfaces import BackboneBuilder, BackboneConfig


def _children(*names: str) -> Callable[[nn.Module], nn.Module]:
    def trunk(net: nn.Module) -> nn.Module:
        return nn.Sequential(OrderedDict((name, getattr(net, name)) for name in names))

    return trunk


def _attribute(name: str) -> Callable[[nn.Module], nn.Module]:
    return lambda net: getattr(net, name)


def _densenet(net: nn.Module) -> nn.Module:
    # DenseNet's forward applies a ReLU after its last BatchNorm (features.norm5).
    return nn.Sequential(OrderedDict(features=net.features, relu=nn.ReLU(inplace=True)))


#: How to cut the trunk out of each family, by the module that defines the family's builders.
TRUNKS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "resnet": _children("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"),
    "vgg": _attribute("features"),
    "alexnet": _attribute("features"),
    "mobilenetv2": _attribute("features"),
    "mobilenetv3": _attribute("features"),
    "efficientnet": _attribute("features"),
    "convnext": _attribute("features"),
    "squeezenet": _attribute("features"),
    "densenet": _densenet,
    "mnasnet": _attribute("layers"),
    "regnet": _children("stem", "trunk_output"),
    "shufflenetv2": _children("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5"),
    "segmentation.fcn": _attribute("backbone"),
    "segmentation.deeplabv3": _attribute("backbone"),
    "segmentation.lraspp": _attribute("backbone"),
}


def known_archs() -> list[str]:
    """Every torchvision classification and segmentation model name."""
    from torchvision import models  # torchvision loads in ~1.5 s: only when used

    return sorted(
        models.list_models(module=models) + models.list_models(module=models.segmentation)
    )


def family(arch: str) -> str:
    """The key of :data:`TRUNKS` for ``arch``: its builder's module below ``torchvision.models``."""
    from torchvision import models

    return models.get_model_builder(arch).__module__.removeprefix("torchvision.models.")


def check_arch(arch: str) -> str:
    """``arch`` if torchvision has it and its trunk can be cut out.

    Raises:
        ValueError: an unknown name (with the closest ones) or an unsupported family.
    """
    archs = known_archs()
    if arch not in archs:
        close = difflib.get_close_matches(arch, archs, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"torchvision has no classification or segmentation model {arch!r}{hint}")
    if family(arch) not in TRUNKS:
        supported = ", ".join(sorted(TRUNKS))
        raise ValueError(
            f"cannot cut a convolutional trunk out of {arch!r} (family {family(arch)!r}); the "
            f"supported families are {supported}"
        )
    return arch


def replace_first_conv(trunk: nn.Module, in_channels: int) -> None:
    """Replace the trunk's first conv, in place, by one of the same shape with ``in_channels``
    inputs (randomly initialised as torchvision initialises convs).

    Raises:
        ConfigError: the trunk has no Conv2d.
    """
    name, conv = next(
        ((n, m) for n, m in trunk.named_modules() if isinstance(m, nn.Conv2d)), (None, None)
    )
    if conv is None or name is None:
        raise ConfigError(f"{type(trunk).__name__} has no Conv2d whose inputs could be changed")
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent_name, _, child = name.rpartition(".")
    setattr(trunk.get_submodule(parent_name) if parent_name else trunk, child, new)


class TorchvisionBackbone(BackboneBuilder):
    """The trunk of any torchvision CNN as the shared backbone, with the standard heads.

    Other input channels than 3 replace the first conv by a randomly initialised one of the same
    shape (also over pretrained weights).
    """

    name: ClassVar[str] = "torchvision"

    class Config(BackboneConfig):
        """Configuration of :class:`TorchvisionBackbone`.

        Attributes:
            arch: a torchvision model name (``torchvision.models.list_models()``).
            weights: a weights name of that model (``"DEFAULT"``, ``"IMAGENET1K_V1"``, …), or
                None for random weights.
            kwargs: more arguments of the model's constructor.
        """

        arch: str
        weights: str | None = None
        kwargs: dict[str, Any] = Field(default_factory=dict)

        @field_validator("arch")
        @classmethod
        def _known(cls, arch: str) -> str:
            return check_arch(arch)

    config: Config

    @classmethod
    def example_params(cls, workdir: Any) -> dict[str, Any]:
        """A small ResNet, for the contract test suite."""
        return {"arch": "resnet18", "head_channels": 8}

    def make_backbone(self, in_channels: int) -> nn.Module:
        """The trunk of a fresh ``arch`` model.

        Raises:
            ConfigError: the constructor rejects ``kwargs`` or ``weights``.
        """
        from torchvision import models

        cfg = self.config
        kwargs = dict(cfg.kwargs)
        if family(cfg.arch).startswith("segmentation."):
            kwargs.setdefault("weights_backbone", None)
        try:
            net = models.get_model(cfg.arch, weights=cfg.weights, **kwargs)
        except KeyError as exc:
            raise ConfigError(
                f"torchvision model {cfg.arch!r} has no weights {cfg.weights!r} ({exc})"
            ) from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"torchvision model {cfg.arch!r} with {kwargs}: {exc}") from exc
        trunk = TRUNKS[family(cfg.arch)](net)
        if in_channels != 3:
            replace_first_conv(trunk, in_channels)
        return trunk
