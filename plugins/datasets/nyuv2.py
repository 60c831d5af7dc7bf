"""The NYU-v2 data set provider (``nyuv2``): segmentation, depth, surface normals and edges."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from sparsekit.data.common import ImageSize
from sparsekit.data.nyuv2 import (
    DepthNormalization,
    NYUv2Dataset,
    load_nyuv2,
    nyuv2_tasks,
    write_example_nyuv2,
)
from sparsekit.interfaces import ComponentConfig, DatasetProvider
from sparsekit.tasks import Task


class NYUv2Provider(DatasetProvider):
    """NYU-v2 in the multi-task layout, read from ``root`` (nothing is downloaded).

    Tasks: ``segmentation`` (40 classes, void ignored), ``depth``, ``normals``, ``edges``. The
    splits are the lists in ``gt_sets/``. The layout is :data:`sparsekit.data.nyuv2.LAYOUT`.
    """

    name: ClassVar[str] = "nyuv2"

    class Config(ComponentConfig):
        """Where the data is and how it is prepared.

        Attributes:
            root: the data set's root directory.
            image_size: ``(height, width)`` images and targets are resized to.
            depth_normalization: ``"none"`` keeps depth as stored; ``"per_image_max"`` divides
                each depth map by its own maximum (as the authors of "Less is More" did), which
                discards the absolute scale.
        """

        root: Path
        image_size: ImageSize = (256, 256)
        depth_normalization: DepthNormalization = "none"

    config: Config

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        """Writes a tiny random NYU-v2 under ``workdir`` and points ``root`` at it."""
        root = write_example_nyuv2(Path(workdir) / "nyuv2")
        return {"root": str(root), "image_size": (16, 16)}

    def tasks(self) -> list[Task]:
        return nyuv2_tasks()

    def load(self, split: str, tasks: Sequence[str]) -> NYUv2Dataset:
        """The ``split`` with targets for ``tasks``.

        Raises:
            FileNotFoundError: naming the missing path and the expected layout.
            ValueError: for an unknown split or task.
        """
        names = [task.name for task in self.select_tasks(tasks)]
        return load_nyuv2(
            self.config.root,
            split,
            names,
            image_size=self.config.image_size,
            depth_normalization=self.config.depth_normalization,
        )
