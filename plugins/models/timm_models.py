"""``timm``: any timm model's feature extractor as the shared backbone (needs ``sparsekit[timm]``).

The backbone is ``timm.create_model(arch, pretrained=False, features_only=True,
out_indices=(-1,), in_chans=in_channels, **kwargs)``: the model cut after its deepest feature
map, which the heads read. Weights are random; timm is an optional dependency.

References:
    Wightman, "PyTorch Image Models", https://github.com/huggingface/pytorch-image-models.
"""

from __future__ import annotations

import difflib
from types import ModuleType
from typing import Any, ClassVar

from pydantic import Field, field_validator
from torch import nn

from sparsekit.errors import ConfigError, MissingDependency
from sparsekit.interfaces import BackboneBuilder, BackboneConfig

INSTALL_HINT = "pip install 'sparsekit[timm]'"


def import_timm() -> ModuleType:
    """The timm package.

    Raises:
        MissingDependency: timm is not installed (the message says how to install it).
    """
    try:
        import timm
    except ImportError as exc:
        raise MissingDependency(
            f"the model 'timm' needs the timm package, which is not installed: {INSTALL_HINT}"
        ) from exc
    return timm


def check_arch(arch: str) -> str:
    """``arch`` if timm has a model of that name.

    Raises:
        ValueError: an unknown name (with the closest ones).
        MissingDependency: timm is not installed.
    """
    timm = import_timm()
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"timm has no model {arch!r}{hint}")
    return arch


class TimmBackbone(BackboneBuilder):
    """A timm model's deepest feature map (``features_only``) as the backbone, standard heads."""

    name: ClassVar[str] = "timm"

    class Config(BackboneConfig):
        """Configuration of :class:`TimmBackbone`.

        Attributes:
            arch: a timm model name (``timm.list_models()``).
            kwargs: more arguments of ``timm.create_model`` (``drop_path_rate``, …).
        """

        arch: str
        kwargs: dict[str, Any] = Field(default_factory=dict)

        @field_validator("arch")
        @classmethod
        def _known(cls, arch: str) -> str:
            return check_arch(arch)

    config: Config

    @classmethod
    def example_params(cls, workdir: Any) -> dict[str, Any]:
        """A small MobileNet v3, for the contract test suite."""
        return {"arch": "mobilenetv3_small_050", "head_channels": 8}

    def make_backbone(self, in_channels: int) -> nn.Module:
        """timm's feature extractor of ``arch`` with ``in_channels`` input channels.

        Raises:
            ConfigError: timm cannot make it with these arguments.
            MissingDependency: timm is not installed.
        """
        timm = import_timm()
        cfg = self.config
        try:
            return timm.create_model(
                cfg.arch,
                pretrained=False,
                features_only=True,
                out_indices=(-1,),
                in_chans=in_channels,
                **cfg.kwargs,
            )
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"timm model {cfg.arch!r} with {cfg.kwargs}: {exc}") from exc
