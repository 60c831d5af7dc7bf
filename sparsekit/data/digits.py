"""The UCI handwritten digits shipped with scikit-learn, turned into a multi-task data set.

The 1797 greyscale 8×8 images (intensities 0..16) are upsampled bilinearly; every target is a
deterministic function of the upsampled image or of the digit label.

References:
    Alpaydin, Kaynak. Optical Recognition of Handwritten Digits. UCI Machine Learning
    Repository, 1998.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: Largest intensity in the raw images.
MAX_INTENSITY = 16.0
#: Digits whose usual shape encloses a region. A 4 is written open in this data set.
CLOSED_LOOP_DIGITS: tuple[int, ...] = (0, 6, 8, 9)
#: Binary attributes derived from the digit label, in order.
ATTRIBUTES: tuple[str, ...] = ("parity", "ge5", "closed_loop")


@dataclass(frozen=True)
class Digits:
    """Every image of the data set.

    Attributes:
        intensity: ``[N, 1, S, S]`` float32 upsampled intensities scaled to [0, 1].
        labels: ``[N]`` int64 digits 0..9.
    """

    intensity: Tensor
    labels: Tensor


def load_upsampled_digits(image_size: int) -> Digits:
    """All 1797 digits, upsampled bilinearly (half-pixel centres) to ``image_size`` squared."""
    from sklearn.datasets import load_digits  # scikit-learn is imported only when digits are used

    raw = load_digits()
    images = torch.from_numpy(raw.images.astype(np.float32) / MAX_INTENSITY)[:, None]
    if image_size != images.shape[-1]:
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    return Digits(images.contiguous(), torch.from_numpy(raw.target.astype(np.int64)))


def foreground(intensity: Tensor, threshold: float) -> Tensor:
    """Segmentation labels: 1 where the intensity exceeds ``threshold``, else 0.

    Args:
        intensity: ``[N, 1, S, S]`` intensities in [0, 1].
        threshold: the foreground threshold in the same units.

    Returns:
        ``[N, S, S]`` int64 labels.
    """
    return (intensity[:, 0] > threshold).long()


def digit_attributes(labels: Tensor) -> dict[str, Tensor]:
    """The binary attributes of each digit as float32 in {0, 1}.

    ``parity`` is 1 for an even digit, ``ge5`` for a digit of at least 5 and ``closed_loop`` for
    the digits in :data:`CLOSED_LOOP_DIGITS`.
    """
    closed = torch.isin(labels, torch.tensor(CLOSED_LOOP_DIGITS, device=labels.device))
    return {
        "parity": (labels % 2 == 0).float(),
        "ge5": (labels >= 5).float(),
        "closed_loop": closed.float(),
    }


def stratified_split(labels: Tensor, seed: int) -> dict[str, Tensor]:
    """Disjoint train/val/test indices covering every image, 60/20/20 in each class.

    The split is drawn with scikit-learn's stratified shuffle (40% held out, then halved), so
    each split holds the classes in their overall proportions up to rounding.

    Args:
        labels: ``[N]`` class labels to stratify by.
        seed: the random state of the shuffles.

    Returns:
        Sorted int64 index tensors keyed ``train``, ``val`` and ``test``.
    """
    from sklearn.model_selection import train_test_split  # imported only when digits are used

    y = labels.cpu().numpy()
    everything = np.arange(len(y))
    train, rest = train_test_split(everything, test_size=0.4, stratify=y, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=seed)
    return {
        name: torch.from_numpy(np.sort(idx)).long()
        for name, idx in (("train", train), ("val", val), ("test", test))
    }
