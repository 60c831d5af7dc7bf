"""Multi-task architectures: the model contract, and a base for any backbone a user brings."""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ConfigDict, Field
from torch import nn

from sparsekit.config import GIVEN_MODULE
from sparsekit.errors import ConfigError
from sparsekit.interfaces.base import Component, ComponentConfig
from sparsekit.nn.heads import (
    DenseHead,
    ImageHead,
    assemble_multitask_net,
    check_tasks,
    probe_backbone,
)

if TYPE_CHECKING:
    from sparsekit.nn import MultiTaskNet
    from sparsekit.tasks import Task


class ModelBuilder(Component):
    """Builds a hard-parameter-sharing multi-task network for a list of tasks.

    ``build(tasks, in_channels)`` returns a :class:`sparsekit.nn.MultiTaskNet`: one shared
    ``backbone`` and one head per task, randomly initialised. Sparsity acts on the backbone's
    ungrouped conv weights only. A builder for any backbone derives from
    :class:`BackboneBuilder` and implements ``make_backbone(in_channels)`` alone
    (docs/own-model-and-data.md).

    Kind ``model`` (hook ``sparsekit_register_models``).
    """

    @abstractmethod
    def build(self, tasks: Sequence[Task], in_channels: int) -> MultiTaskNet:
        """One shared backbone and one head per task, randomly initialised."""

    @abstractmethod
    def build_head(self, task: Task, backbone_channels: int) -> nn.Module:
        """A fresh head for ``task`` on top of a backbone with ``backbone_channels`` outputs."""


class BackboneConfig(ComponentConfig):
    """The settings every :class:`BackboneBuilder` shares: the widths of the task heads.

    Attributes:
        head_channels: hidden channels of every dense head (3×3 conv) and, unless
            ``image_head_channels`` is set, of every image head's conv.
        image_head_channels: hidden channels of the image heads' conv (their first fully
            connected layer halves it); ``head_channels`` when unset.
        probe_size: side of the dummy image the backbone runs on once to find its output
            channels.
    """

    head_channels: int = Field(32, ge=1)
    image_head_channels: int | None = Field(None, ge=1)
    probe_size: int = Field(64, ge=8)


class BackboneBuilder(ModelBuilder):
    """A model builder for any backbone: subclasses implement :meth:`make_backbone` only.

    ``make_backbone(in_channels)`` returns a module mapping images ``[B, in_channels, H, W]`` to
    features ``[B, C, h, w]``. :meth:`build` runs it once on a dummy image (eval mode, no
    gradients) to find ``C`` and puts one head per task on it: a
    :class:`~sparsekit.nn.heads.DenseHead` for a pixel-level task, an
    :class:`~sparsekit.nn.heads.ImageHead` for an image-level one, with the widths of the
    Config (a :class:`BackboneConfig`). A backbone returning a list or tuple of feature maps
    (timm's ``features_only``) is reduced to the last, one returning a dict (torchvision's
    segmentation backbones) to ``"out"``.

    Sparsity penalties act on the backbone's ungrouped ``Conv2d`` weights
    (:func:`sparsekit.nn.backbone_conv_weights`).
    """

    Config: ClassVar[type[ComponentConfig]] = BackboneConfig
    config: BackboneConfig

    @abstractmethod
    def make_backbone(self, in_channels: int) -> nn.Module:
        """A fresh backbone for images with ``in_channels`` channels.

        Raises:
            ConfigError: the backbone cannot be made as configured.
        """

    def build(self, tasks: Sequence[Task], in_channels: int) -> MultiTaskNet:
        """The backbone of :meth:`make_backbone` and one head per task.

        Raises:
            ValueError: no tasks, duplicate task names or an unknown task level.
            ConfigError: the backbone fails on a dummy image or returns no 4-D feature map.
        """
        check_tasks(tasks)  # before the backbone is made, to fail fast
        backbone = self.make_backbone(in_channels)
        backbone, channels = probe_backbone(backbone, in_channels, self.config.probe_size)
        return assemble_multitask_net(backbone, channels, tasks, self.build_head)

    def build_head(self, task: Task, backbone_channels: int) -> nn.Module:
        """A dense head for a pixel-level task, an image head for an image-level one.

        Raises:
            ValueError: a task level other than ``"pixel"`` or ``"image"``.
        """
        cfg = self.config
        if task.level == "pixel":
            return DenseHead(backbone_channels, task.out_channels, cfg.head_channels)
        if task.level == "image":
            hidden = cfg.image_head_channels or cfg.head_channels
            return ImageHead(backbone_channels, task.out_channels, hidden)
        raise ValueError(f"task {task.name!r} has unknown level {task.level!r}")


class GivenBackboneConfig(BackboneConfig):
    """Configuration of :class:`GivenBackbone`.

    Attributes:
        class_path: ``package.module.ClassName`` of the given backbone (recorded as ``class``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_path: str = Field("", alias="class")


class GivenBackbone(BackboneBuilder):
    """A backbone given as an ``nn.Module`` instance: ``Experiment(model=my_backbone, ...)``.

    Every build deep-copies the instance, so two models built from it (a scheduled run's phases,
    a second stage, a reload) never share parameters; the trained backbone is the model's, not
    the instance passed in. The run records ``{"name": "module", "class": "pkg.mod.ClassName",
    ...}``, which names no plugin: a config cannot rebuild the instance. A builder made from such
    a record without the instance (:meth:`from_spec`) still builds heads, but :meth:`build`
    raises a :class:`~sparsekit.errors.ConfigError` saying how to reload the run.

    This is not a registered plugin; the engine wraps a given module in it.

    Args:
        backbone: the backbone, mapping ``[B, C, H, W]`` images to ``[B, C', h, w]`` features;
            None for a builder made from a run's record.
        config: the head widths (a :class:`GivenBackboneConfig`), or give them as ``params``.
    """

    name: ClassVar[str] = GIVEN_MODULE
    Config: ClassVar[type[ComponentConfig]] = GivenBackboneConfig
    config: GivenBackboneConfig

    def __init__(
        self,
        backbone: nn.Module | None = None,
        config: ComponentConfig | None = None,
        **params: Any,
    ) -> None:
        if backbone is not None and not isinstance(backbone, nn.Module):
            raise ConfigError(f"a backbone must be an nn.Module, got {type(backbone).__name__}")
        super().__init__(config, **params)
        self.backbone = backbone
        if backbone is not None:
            cls = type(backbone)
            path = f"{cls.__module__}.{cls.__qualname__}"
            self.config = self.config.model_copy(update={"class_path": path})

    @classmethod
    def from_spec(cls, spec: dict[str, Any], backbone: nn.Module | None = None) -> GivenBackbone:
        """The builder a run recorded (``{"name": "module", ...}``), around ``backbone``.

        Raises:
            ConfigError: the record has keys the Config does not know.
        """
        params = {k: v for k, v in spec.items() if k != "name"}
        try:
            config = GivenBackboneConfig(**params)
        except ValueError as exc:
            raise ConfigError(f"model {GIVEN_MODULE!r}: {exc}") from None
        return cls(backbone, config)

    def spec(self) -> dict[str, Any]:
        """``{"name": "module", "class": "pkg.mod.ClassName", ...head widths}``."""
        params = self.config.model_dump(mode="json", by_alias=True)
        return {"name": self.name, "class": params.pop("class"), **params}

    def make_backbone(self, in_channels: int) -> nn.Module:
        """A deep copy of the given backbone (``in_channels`` must be what it expects).

        Raises:
            ConfigError: no backbone was given (a builder made from a run's record), or it
                cannot be deep-copied.
        """
        if self.backbone is None:
            raise ConfigError(cannot_rebuild_message(self.config.class_path))
        try:
            return copy.deepcopy(self.backbone)
        except Exception as exc:  # noqa: BLE001 - whatever the module holds that cannot be copied
            raise ConfigError(
                f"the given backbone {self.config.class_path} cannot be copied ({exc}); give it "
                f"as an import path instead, model: {{name: import, target: ...}}"
            ) from exc


def cannot_rebuild_message(class_path: str) -> str:
    """Why a run whose backbone was given as an instance cannot be rebuilt, and what to do."""
    module, _, name = class_path.rpartition(".")
    name = name or "MyBackbone"
    return (
        f"this run's backbone was given as an instance of {class_path or 'an nn.Module'}, which "
        f"sparsekit cannot rebuild from a config. Either pass the backbone again, "
        f"Result.load(run_dir, backbone={name}(...)) (the saved weights are loaded into heads "
        f"built around it), or configure the model as an import path that makes it, "
        f"model: {{name: import, target: '{module or 'package.module'}:make_backbone'}}, so "
        f"that the run can be reloaded, compacted, fine-tuned and swept"
    )
