"""The CelebAMask-HQ data set provider (``celeba_mask_hq``): face segmentation and attributes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from sparsekit.data.celeba import (
    CelebAMaskHQDataset,
    celeba_tasks,
    load_celeba_mask_hq,
    write_example_celeba_mask_hq,
)
from sparsekit.data.common import ImageSize
from sparsekit.interfaces import ComponentConfig, DatasetProvider
from sparsekit.tasks import Task


class CelebAMaskHQProvider(DatasetProvider):
    """CelebAMask-HQ read from ``root`` (nothing is downloaded).

    Tasks: ``segmentation`` (background, hair, skin) and the binary attributes ``male``,
    ``smiling``, ``big_lips``, ``high_cheekbones``, ``wearing_lipstick``, ``bushy_eyebrows``.
    The images listed in the annotation file are split 60/20/20 by a permutation seeded with
    ``split_seed``. The layout is :data:`sparsekit.data.celeba.LAYOUT`.
    """

    name: ClassVar[str] = "celeba_mask_hq"

    class Config(ComponentConfig):
        """Where the data is and how it is prepared.

        Attributes:
            root: the data set's root directory.
            image_size: ``(height, width)`` images and masks are resized to.
            split_seed: seed of the permutation that splits the ids into train/val/test.
        """

        root: Path
        image_size: ImageSize = (256, 256)
        split_seed: int = 0

    config: Config

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        """Writes a tiny random CelebAMask-HQ under ``workdir`` and points ``root`` at it."""
        root = write_example_celeba_mask_hq(Path(workdir) / "celeba_mask_hq")
        return {"root": str(root), "image_size": (16, 16)}

    def tasks(self) -> list[Task]:
        return celeba_tasks()

    def load(self, split: str, tasks: Sequence[str]) -> CelebAMaskHQDataset:
        """The ``split`` with targets for ``tasks``.

        Raises:
            FileNotFoundError: naming the missing path and the expected layout.
            ValueError: for an unknown split or task, or a malformed annotation file.
        """
        names = [task.name for task in self.select_tasks(tasks)]
        return load_celeba_mask_hq(
            self.config.root,
            split,
            names,
            image_size=self.config.image_size,
            split_seed=self.config.split_seed,
        )
