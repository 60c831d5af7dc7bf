"""Building blocks shared by the loaders of data sets stored as files on disk."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field
from torch import Tensor
from torch.utils.data import Dataset

from sparsekit.interfaces.data import SPLITS

#: Per-channel RGB mean and standard deviation (ImageNet's) used to centre the input images.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

#: ``(height, width)`` in pixels, each at least 1.
ImageSize = tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]

#: How many missing paths an error message lists before summarising the rest.
_MISSING_SHOWN = 5


def check_split(split: str) -> None:
    """Raises ValueError unless ``split`` is one of ``train``, ``val``, ``test``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def require_files(paths: Iterable[Path], layout: str) -> None:
    """Checks that every path exists.

    Args:
        paths: files or directories that must exist.
        layout: a description of the expected on-disk layout, quoted in the error.

    Raises:
        FileNotFoundError: naming the missing paths (the first few and a count) and the layout.
    """
    missing = [p for p in paths if not p.exists()]
    if not missing:
        return
    shown = ", ".join(str(p) for p in missing[:_MISSING_SHOWN])
    more = f" and {len(missing) - _MISSING_SHOWN} more" if len(missing) > _MISSING_SHOWN else ""
    raise FileNotFoundError(f"not found: {shown}{more}. Expected layout:\n{layout}")


def load_image(path: Path, size: tuple[int, int]) -> Tensor:
    """An RGB image resized bilinearly to ``size`` and normalised per channel.

    Args:
        path: any image file PIL reads; grey or RGBA images are converted to RGB.
        size: ``(height, width)`` of the result.

    Returns:
        A float32 tensor ``[3, height, width]`` equal to ``(x / 255 − IMAGE_MEAN) / IMAGE_STD``.
    """
    height, width = size
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy())
    pixels = pixels.permute(2, 0, 1) / 255.0
    mean = pixels.new_tensor(IMAGE_MEAN).view(3, 1, 1)
    std = pixels.new_tensor(IMAGE_STD).view(3, 1, 1)
    return (pixels - mean) / std


def read_png_labels(path: Path) -> np.ndarray:
    """The integer label map ``[H, W]`` stored in a single-channel (or palette) PNG.

    Raises:
        ValueError: if the image has more than one channel.
    """
    with Image.open(path) as image:
        labels = np.asarray(image)
    if labels.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel label image, got shape {labels.shape}")
    return labels.astype(np.int64)


def read_map(path: Path, channels: int) -> np.ndarray:
    """A dense map stored as ``.npy``, returned channel-first as float32 ``[channels, H, W]``.

    Accepted stored shapes: ``[channels, H, W]``, ``[H, W, channels]``, and ``[H, W]`` when
    ``channels`` is 1.

    Raises:
        ValueError: for any other shape.
    """
    array = np.load(path)
    if channels == 1 and array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[0] != channels and array.shape[-1] == channels:
        array = np.moveaxis(array, -1, 0)
    if array.ndim != 3 or array.shape[0] != channels:
        raise ValueError(
            f"{path}: expected a map with {channels} channel(s) ([{channels}, H, W] or "
            f"[H, W, {channels}]), got shape {array.shape}"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def resize_nearest(values: Tensor, size: tuple[int, int]) -> Tensor:
    """Resizes ``[C, H, W]`` (or ``[H, W]``) to ``size`` by nearest neighbour, keeping the dtype.

    Nearest neighbour never invents values, so class labels stay labels and invalid (zero) depth
    or normals are not blended into valid neighbours. Pixel centres are matched as in PIL.
    """
    if tuple(values.shape[-2:]) == tuple(size):
        return values
    batched = values.reshape(1, -1, *values.shape[-2:]).to(torch.float32)
    resized = F.interpolate(batched, size=size, mode="nearest-exact")
    return resized.reshape(*values.shape[:-2], *size).to(values.dtype)


class FileDataset(Dataset):
    """``(image, {task: target})`` pairs read from files, one sample per id.

    Subclasses say where an id's image is and how each task's target is read.

    Args:
        root: the data set's root directory.
        ids: the samples of this split, in order.
        tasks: names of the tasks whose targets are yielded.
        image_size: ``(height, width)`` every image and target is resized to.
    """

    def __init__(
        self, root: Path, ids: Sequence[str], tasks: Sequence[str], image_size: tuple[int, int]
    ) -> None:
        self.root = Path(root)
        self.ids = list(ids)
        self.tasks = list(tasks)
        self.image_size = (int(image_size[0]), int(image_size[1]))

    @abstractmethod
    def image_path(self, sample_id: str) -> Path:
        """Where the image of ``sample_id`` is stored."""

    @abstractmethod
    def target_path(self, task: str, sample_id: str) -> Path | None:
        """The file holding ``task``'s target for ``sample_id`` (None if not a per-sample file)."""

    @abstractmethod
    def target(self, task: str, sample_id: str) -> Tensor:
        """``task``'s target for ``sample_id``, resized to ``image_size``."""

    def required_files(self) -> list[Path]:
        """Every per-sample file this data set will read."""
        paths = [self.image_path(i) for i in self.ids]
        for task in self.tasks:
            paths.extend(p for i in self.ids if (p := self.target_path(task, i)) is not None)
        return paths

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        sample_id = self.ids[index]
        image = load_image(self.image_path(sample_id), self.image_size)
        return image, {task: self.target(task, sample_id) for task in self.tasks}
