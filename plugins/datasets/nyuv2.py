"""NYU-v2 (multi-task version) read from its on-disk layout: segmentation, depth, normals, edges.

References:
    Silberman, Hoiem, Kohli, Fergus. Indoor segmentation and support inference from RGBD images.
    ECCV 2012 (the data); the 40-class labels of Gupta, Arbeláez, Malik, CVPR 2013.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from sparsekit.data.common import (
    SPLITS,
    FileDataset,
    ImageSize,
    check_split,
    read_map,
    read_png_labels,
    require_files,
    resize_nearest,
)
from sparsekit.interfaces import ComponentConfig, DatasetProvider
from sparsekit.tasks import DepthTask, EdgeTask, NormalsTask, SegmentationTask, Task

NUM_CLASSES = 40
IGNORE_INDEX = 255

DepthNormalization = Literal["none", "per_image_max"]

LAYOUT = """\
  <root>/images/{id}.jpg          RGB image
  <root>/segmentation/{id}.png    uint8 labels: 0 = void, 1..40 = classes
  <root>/depth/{id}.npy           depth [H, W] (or [1, H, W]); values <= 0 are invalid
  <root>/normals/{id}.npy         surface normals [3, H, W], roughly unit vectors
  <root>/edge/{id}.npy            edge map [H, W] (or [1, H, W]) with values in [0, 1]
  <root>/gt_sets/{train,val,test}.txt   one id per line"""

#: Per task: the sub-directory and file suffix of its targets.
TASK_FILES: dict[str, tuple[str, str]] = {
    "segmentation": ("segmentation", ".png"),
    "depth": ("depth", ".npy"),
    "normals": ("normals", ".npy"),
    "edges": ("edge", ".npy"),
}


def nyuv2_tasks() -> list[Task]:
    """The four NYU-v2 tasks, in canonical order."""
    return [
        SegmentationTask("segmentation", NUM_CLASSES, ignore_index=IGNORE_INDEX),
        DepthTask("depth"),
        NormalsTask("normals"),
        EdgeTask("edges"),
    ]


def map_labels(raw: np.ndarray, source: Path | str = "labels") -> np.ndarray:
    """Maps stored labels (0 = void, 1..40) to training labels (void → 255, k → k − 1).

    Raises:
        ValueError: if a stored label lies outside 0..40.
    """
    if raw.size and (raw.min() < 0 or raw.max() > NUM_CLASSES):
        raise ValueError(
            f"{source}: labels must lie in 0..{NUM_CLASSES}, got {raw.min()}..{raw.max()}"
        )
    return np.where(raw == 0, IGNORE_INDEX, raw - 1).astype(np.int64)


def read_split_ids(root: Path) -> dict[str, list[str]]:
    """The ids listed in ``gt_sets/{train,val,test}.txt`` (blank lines skipped).

    Raises:
        FileNotFoundError: if a list is missing.
        ValueError: if an id is listed in two splits.
    """
    lists = {split: root / "gt_sets" / f"{split}.txt" for split in SPLITS}
    require_files(lists.values(), LAYOUT)
    ids = {
        split: [line.strip() for line in path.read_text().splitlines() if line.strip()]
        for split, path in lists.items()
    }
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1 :]:
            shared = sorted(set(ids[first]) & set(ids[second]))
            if shared:
                raise ValueError(
                    f"{root / 'gt_sets'}: ids in both {first} and {second}: {', '.join(shared[:5])}"
                )
    return ids


class NYUv2Dataset(FileDataset):
    """One split of NYU-v2 with targets for some of its tasks.

    Targets: ``segmentation`` long ``[H, W]`` (void = 255), ``depth`` float ``[1, H, W]`` (0 where
    invalid), ``normals`` float ``[3, H, W]`` (unit length, 0 where invalid), ``edges`` float
    ``[1, H, W]`` in [0, 1]. Targets are resized by nearest neighbour, images bilinearly.

    Args:
        root: the data set's root directory.
        ids: the samples of this split.
        tasks: names of the tasks whose targets are yielded.
        image_size: ``(height, width)`` of images and targets.
        depth_normalization: ``"none"`` keeps depth as stored; ``"per_image_max"`` divides each
            depth map by its own maximum (before resizing), so every map lies in [0, 1] and the
            absolute scale is lost.
    """

    def __init__(
        self,
        root: Path,
        ids: Sequence[str],
        tasks: Sequence[str],
        image_size: tuple[int, int],
        depth_normalization: DepthNormalization = "none",
    ) -> None:
        super().__init__(root, ids, tasks, image_size)
        self.depth_normalization = depth_normalization

    def image_path(self, sample_id: str) -> Path:
        return self.root / "images" / f"{sample_id}.jpg"

    def target_path(self, task: str, sample_id: str) -> Path:
        directory, suffix = TASK_FILES[task]
        return self.root / directory / f"{sample_id}{suffix}"

    def target(self, task: str, sample_id: str) -> Tensor:
        path = self.target_path(task, sample_id)
        if task == "segmentation":
            labels = torch.from_numpy(map_labels(read_png_labels(path), path))
            return resize_nearest(labels, self.image_size)
        if task == "depth":
            return resize_nearest(torch.from_numpy(self._depth(path)), self.image_size)
        if task == "normals":
            normals = torch.from_numpy(np.nan_to_num(read_map(path, 3), nan=0.0))
            normals = resize_nearest(normals, self.image_size)
            # Stored normals are only roughly unit length; zero vectors stay zero (invalid).
            length = normals.norm(dim=0, keepdim=True)
            return torch.where(length > 0, normals / length.clamp_min(1e-12), 0.0)
        edges = read_map(path, 1)
        if not np.all((edges >= 0) & (edges <= 1)):
            raise ValueError(f"{path}: edge values must lie in [0, 1]")
        return resize_nearest(torch.from_numpy(edges), self.image_size)

    def _depth(self, path: Path) -> np.ndarray:
        # Non-finite depth is missing depth, marked invalid like the zeros.
        depth = np.nan_to_num(read_map(path, 1), nan=0.0, posinf=0.0, neginf=0.0)
        if self.depth_normalization == "per_image_max":
            peak = depth.max(initial=0.0)
            if peak > 0:
                depth = depth / peak
        return depth


def load_nyuv2(
    root: Path,
    split: str,
    tasks: Sequence[str],
    image_size: tuple[int, int] = (256, 256),
    depth_normalization: DepthNormalization = "none",
) -> NYUv2Dataset:
    """One split of NYU-v2, after checking that every file it needs exists.

    Args:
        root: the data set's root directory (layout in :data:`LAYOUT`).
        split: ``train``, ``val`` or ``test``.
        tasks: any of ``segmentation``, ``depth``, ``normals``, ``edges``.
        image_size: ``(height, width)`` of images and targets.
        depth_normalization: see :class:`NYUv2Dataset`.

    Returns:
        The split as a :class:`NYUv2Dataset`.

    Raises:
        FileNotFoundError: if the root, a split list or a sample's file is missing.
        ValueError: for an unknown split or task, or ids shared between splits.
    """
    check_split(split)
    unknown = [t for t in tasks if t not in TASK_FILES]
    if unknown:
        raise ValueError(f"NYU-v2 has no task {unknown}; it has {', '.join(TASK_FILES)}")
    root = Path(root)
    require_files([root], LAYOUT)
    ids = read_split_ids(root)[split]
    dataset = NYUv2Dataset(root, ids, tasks, image_size, depth_normalization)
    require_files(dataset.required_files(), LAYOUT)
    return dataset


def write_example_nyuv2(
    root: Path, ids_per_split: int = 2, size: tuple[int, int] = (20, 24), seed: int = 0
) -> Path:
    """Writes a tiny random data set in the NYU-v2 layout, for tests and examples.

    Args:
        root: directory to create it in.
        ids_per_split: samples in each of train, val and test.
        size: ``(height, width)`` of the stored images and maps.
        seed: seed of the random content.

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    for directory in ("images", "gt_sets", *(d for d, _ in TASK_FILES.values())):
        (root / directory).mkdir(parents=True, exist_ok=True)
    height, width = size
    for s, split in enumerate(SPLITS):
        ids = [f"{s * ids_per_split + k:04d}" for k in range(ids_per_split)]
        (root / "gt_sets" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for sample_id in ids:
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{sample_id}.jpg")
            labels = rng.integers(0, NUM_CLASSES + 1, size=(height, width), dtype=np.uint8)
            Image.fromarray(labels).save(root / "segmentation" / f"{sample_id}.png")
            depth = rng.uniform(0.5, 10.0, size=(height, width)).astype(np.float32)
            np.save(root / "depth" / f"{sample_id}.npy", depth)
            normals = rng.normal(size=(3, height, width)).astype(np.float32)
            np.save(root / "normals" / f"{sample_id}.npy", normals)
            edges = (rng.random((height, width)) < 0.1).astype(np.float32)
            np.save(root / "edge" / f"{sample_id}.npy", edges)
    return root


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
