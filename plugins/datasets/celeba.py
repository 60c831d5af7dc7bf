"""CelebAMask-HQ read from its on-disk layout: face segmentation and six binary attributes.

References:
    Lee, Liu, Wu, Luo. MaskGAN: Towards diverse and interactive facial image manipulation.
    CVPR 2020 (CelebAMask-HQ); Liu, Luo, Wang, Tang. Deep learning face attributes in the wild.
    ICCV 2015 (the CelebA attributes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from sparsekit.data.common import (
    SPLITS,
    FileDataset,
    ImageSize,
    check_split,
    require_files,
    resize_nearest,
)
from sparsekit.interfaces import ComponentConfig, DatasetProvider
from sparsekit.tasks import AttributeTask, SegmentationTask, Task

#: Segmentation classes, by label.
SEGMENTATION_CLASSES = ("background", "hair", "skin")

#: Task name → CelebA attribute name in the annotation file.
ATTRIBUTE_TASKS: dict[str, str] = {
    "male": "Male",
    "smiling": "Smiling",
    "big_lips": "Big_Lips",
    "high_cheekbones": "High_Cheekbones",
    "wearing_lipstick": "Wearing_Lipstick",
    "bushy_eyebrows": "Bushy_Eyebrows",
}

#: Fractions of the ids in train and val; test takes the rest.
SPLIT_FRACTIONS = (0.6, 0.2)

ANNOTATION_FILE = "CelebAMask-HQ-attribute-anno.txt"

LAYOUT = f"""\
  <root>/CelebA-HQ-img/{{n}}.jpg                RGB image of sample n
  <root>/CelebA-HQ-segmask/{{n:05d}}_mask.npy   labels [H, W]: 0 background, 1 hair, 2 skin
  <root>/{ANNOTATION_FILE}   line 1: count; line 2: attribute names;
                                              then "{{n}}.jpg v1 v2 ..." with v = 1 or -1"""


def celeba_tasks() -> list[Task]:
    """Segmentation and the six attribute tasks, in canonical order."""
    return [
        SegmentationTask("segmentation", len(SEGMENTATION_CLASSES)),
        *(AttributeTask(name) for name in ATTRIBUTE_TASKS),
    ]


@dataclass(frozen=True)
class AttributeTable:
    """The parsed annotation file.

    Attributes:
        ids: image numbers, in file order.
        names: attribute names, in column order.
        values: ``[len(ids), len(names)]`` uint8 array, 1 where the attribute holds (file value
            1) and 0 where it does not (file value −1).
    """

    ids: list[int]
    names: list[str]
    values: np.ndarray

    def column(self, name: str) -> np.ndarray:
        """The 0/1 values of attribute ``name`` for every id."""
        return self.values[:, self.names.index(name)]


def read_attributes(path: Path) -> AttributeTable:
    """Parses a CelebA-format attribute file (±1 values mapped to 1/0).

    Raises:
        ValueError: if the count, a row's length, a file name or a value is malformed.
    """
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and an attribute-name line")
    names, rows = lines[1], lines[2:]
    if lines[0] != [str(len(rows))]:
        raise ValueError(f"{path}: first line says {' '.join(lines[0])!r}, found {len(rows)} rows")
    bad = [row[0] for row in rows if len(row) != len(names) + 1 or not row[0].endswith(".jpg")]
    if bad:
        raise ValueError(
            f"{path}: malformed rows for {bad[:5]} (expected '<n>.jpg' and {len(names)} values)"
        )
    try:
        ids = [int(row[0].removesuffix(".jpg")) for row in rows]
        raw = np.array([[int(v) for v in row[1:]] for row in rows], dtype=np.int64)
    except ValueError as error:
        raise ValueError(f"{path}: non-integer image number or attribute value ({error})") from None
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: an image is listed more than once")
    raw = raw.reshape(len(rows), len(names))
    if not np.isin(raw, (-1, 1)).all():
        raise ValueError(f"{path}: attribute values must be 1 or -1")
    return AttributeTable(ids, names, (raw == 1).astype(np.uint8))


def split_ids(ids: Sequence[int], seed: int) -> dict[str, list[int]]:
    """Deterministic 60/20/20 split of ``ids``.

    The ids are sorted, permuted by ``numpy.random.default_rng(seed).permutation``, and the first
    ``floor(0.6·n)`` go to train, the next ``floor(0.2·n)`` to val and the rest to test. Each split
    is returned in sorted order.
    """
    ordered = np.sort(np.asarray(ids, dtype=np.int64))
    permuted = ordered[np.random.default_rng(seed).permutation(len(ordered))]
    n_train = int(len(ordered) * SPLIT_FRACTIONS[0])
    n_val = int(len(ordered) * SPLIT_FRACTIONS[1])
    parts = np.split(permuted, [n_train, n_train + n_val])
    return {split: sorted(int(i) for i in part) for split, part in zip(SPLITS, parts, strict=True)}


class CelebAMaskHQDataset(FileDataset):
    """One split of CelebAMask-HQ with targets for some of its tasks.

    Targets: ``segmentation`` long ``[H, W]`` with labels 0..2 (resized by nearest neighbour);
    each attribute task a 0-d float tensor, 0 or 1.

    Args:
        root: the data set's root directory.
        ids: the image numbers of this split.
        tasks: names of the tasks whose targets are yielded.
        image_size: ``(height, width)`` of images and segmentation maps.
        attributes: the parsed annotation file.
    """

    def __init__(
        self,
        root: Path,
        ids: Sequence[int],
        tasks: Sequence[str],
        image_size: tuple[int, int],
        attributes: AttributeTable,
    ) -> None:
        super().__init__(root, [str(i) for i in ids], tasks, image_size)
        row_of = {n: r for r, n in enumerate(attributes.ids)}
        rows = [row_of[int(i)] for i in ids]
        self._attributes = {
            task: torch.from_numpy(
                attributes.column(ATTRIBUTE_TASKS[task])[rows].astype(np.float32)
            )
            for task in tasks
            if task in ATTRIBUTE_TASKS
        }
        self._index = {sample_id: k for k, sample_id in enumerate(self.ids)}

    def image_path(self, sample_id: str) -> Path:
        return self.root / "CelebA-HQ-img" / f"{sample_id}.jpg"

    def mask_path(self, sample_id: str) -> Path:
        """Where the segmentation mask of ``sample_id`` is stored."""
        return self.root / "CelebA-HQ-segmask" / f"{int(sample_id):05d}_mask.npy"

    def target_path(self, task: str, sample_id: str) -> Path | None:
        # Attributes come from the annotation file, not from per-sample files.
        return self.mask_path(sample_id) if task == "segmentation" else None

    def target(self, task: str, sample_id: str) -> Tensor:
        if task in self._attributes:
            return self._attributes[task][self._index[sample_id]]
        path = self.mask_path(sample_id)
        labels = np.load(path)
        if labels.ndim == 3 and labels.shape[0] == 1:
            labels = labels[0]
        if labels.ndim != 2:
            raise ValueError(f"{path}: expected a label map [H, W], got shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(SEGMENTATION_CLASSES)):
            raise ValueError(f"{path}: labels must lie in 0..{len(SEGMENTATION_CLASSES) - 1}")
        return resize_nearest(torch.from_numpy(labels.astype(np.int64)), self.image_size)


def load_celeba_mask_hq(
    root: Path,
    split: str,
    tasks: Sequence[str],
    image_size: tuple[int, int] = (256, 256),
    split_seed: int = 0,
) -> CelebAMaskHQDataset:
    """One split of CelebAMask-HQ, after checking that every file it needs exists.

    The samples are the images listed in the annotation file, split by :func:`split_ids`.

    Args:
        root: the data set's root directory (layout in :data:`LAYOUT`).
        split: ``train``, ``val`` or ``test``.
        tasks: ``segmentation`` and/or any of :data:`ATTRIBUTE_TASKS`.
        image_size: ``(height, width)`` of images and segmentation maps.
        split_seed: seed of the split's permutation.

    Returns:
        The split as a :class:`CelebAMaskHQDataset`.

    Raises:
        FileNotFoundError: if the root, the annotation file or a sample's file is missing.
        ValueError: for an unknown split or task, or a malformed annotation file.
    """
    check_split(split)
    known = ("segmentation", *ATTRIBUTE_TASKS)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ValueError(f"CelebAMask-HQ has no task {unknown}; it has {', '.join(known)}")
    root = Path(root)
    annotation = root / ANNOTATION_FILE
    require_files([root, annotation], LAYOUT)
    table = read_attributes(annotation)
    wanted = [ATTRIBUTE_TASKS[t] for t in tasks if t in ATTRIBUTE_TASKS]
    absent = [name for name in wanted if name not in table.names]
    if absent:
        raise ValueError(f"{annotation}: no attribute column {absent}")
    ids = split_ids(table.ids, split_seed)[split]
    dataset = CelebAMaskHQDataset(root, ids, tasks, image_size, table)
    require_files(dataset.required_files(), LAYOUT)
    return dataset


def write_example_celeba_mask_hq(
    root: Path, num_images: int = 10, size: tuple[int, int] = (20, 24), seed: int = 0
) -> Path:
    """Writes a tiny random data set in the CelebAMask-HQ layout, for tests and examples.

    Args:
        root: directory to create it in.
        num_images: number of images (at least 5 so that every split is non-empty).
        size: ``(height, width)`` of the stored images and masks.
        seed: seed of the random content.

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "CelebA-HQ-img").mkdir(parents=True, exist_ok=True)
    (root / "CelebA-HQ-segmask").mkdir(parents=True, exist_ok=True)
    names = ["5_o_Clock_Shadow", *ATTRIBUTE_TASKS.values()]
    rows = []
    for n in range(num_images):
        pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "CelebA-HQ-img" / f"{n}.jpg")
        mask = rng.integers(0, len(SEGMENTATION_CLASSES), size=size, dtype=np.uint8)
        np.save(root / "CelebA-HQ-segmask" / f"{n:05d}_mask.npy", mask)
        values = rng.choice([-1, 1], size=len(names))
        rows.append(f"{n}.jpg " + " ".join(str(v) for v in values))
    (root / ANNOTATION_FILE).write_text("\n".join([str(num_images), " ".join(names), *rows]) + "\n")
    return root


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
