"""``shapes``: procedurally rendered indoor-like scenes with exact dense targets (no download)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from sparsekit.data.common import SPLITS
from sparsekit.data.tensor_dataset import MultiTaskTensorDataset
from sparsekit.interfaces import ComponentConfig, DatasetProvider
from sparsekit.tasks import DepthTask, EdgeTask, NormalsTask, SegmentationTask, Task
from sparsekit_plugins.datasets.shapes.render import Rendering, render
from sparsekit_plugins.datasets.shapes.scene import (
    BASE_COLOURS,
    BOX,
    CLASS_NAMES,
    CYLINDER,
    EMPTY,
    FLOOR,
    SPHERE,
    WALL,
    SceneBatch,
)

#: Standard deviation of the per-surface colour jitter around each class's base colour.
_COLOUR_JITTER = 0.1
#: Objects are kept this far (metres) inside the side walls and in front of the back wall.
_WALL_MARGIN = 0.9
#: Forward range (metres) of the objects' positions: none tiny, none cut by the image bottom.
_NEAREST, _FARTHEST = 2.2, 6.5


def _uniform(gen: torch.Generator, shape: Sequence[int], low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(*shape, generator=gen, dtype=torch.float64)


def _jittered(gen: torch.Generator, base: Tensor) -> Tensor:
    noise = _COLOUR_JITTER * torch.randn(*base.shape, generator=gen, dtype=torch.float64)
    return (base + noise).clamp(0.05, 1.0)


def _sample_objects(
    gen: torch.Generator,
    n: int,
    n_objects: tuple[int, int],
    back_wall: Tensor,
    half_width: Tensor,
    fov: float,
) -> dict[str, Tensor]:
    """Object slots of ``n`` scenes: kinds, centres, sizes, yaws and colours (see SceneBatch)."""
    slots = max(1, n_objects[1])
    count = torch.randint(n_objects[0], n_objects[1] + 1, (n, 1), generator=gen)
    kinds = torch.tensor([SPHERE, BOX, CYLINDER])[torch.randint(0, 3, (n, slots), generator=gen)]
    kind = torch.where(torch.arange(slots) < count, kinds, EMPTY)
    radius = _uniform(gen, (n, slots), 0.3, 0.75)
    sphere = radius[..., None].expand(-1, -1, 3)
    box = _uniform(gen, (n, slots, 3), 0.25, 0.65)
    cyl_radius, cyl_half_height = _uniform(gen, (2, n, slots), 0.0, 1.0)
    cylinder = torch.stack([0.2 + 0.3 * cyl_radius, 0.35 + 0.55 * cyl_half_height], -1)
    cylinder = cylinder[..., [0, 1, 0]]
    size = torch.where((kind == BOX)[..., None], box, sphere)
    size = torch.where((kind == CYLINDER)[..., None], cylinder, size)
    # Depth first, then a lateral position inside both the field of view and the side walls.
    far = (back_wall[:, None] - _WALL_MARGIN).clamp_max(_FARTHEST)
    z = _NEAREST + (far - _NEAREST) * _uniform(gen, (n, slots), 0.0, 1.0)
    lateral = torch.minimum(half_width[:, None] - _WALL_MARGIN, 0.9 * z * math.tan(fov / 2))
    x = lateral * _uniform(gen, (n, slots), -1.0, 1.0)
    base = torch.tensor(
        [BASE_COLOURS[int(k)] for k in (SPHERE, BOX, CYLINDER)], dtype=torch.float64
    )
    return {
        "kind": kind,
        "centre": torch.stack([x, size[..., 1], z], dim=-1),
        "size": size,
        "yaw": _uniform(gen, (n, slots), 0.0, math.pi),
        "colour": _jittered(gen, base[(kind.clamp_min(SPHERE) - SPHERE)]),
    }


def sample_scenes(
    n: int, gen: torch.Generator, n_objects: tuple[int, int], side_walls: bool, fov: float
) -> SceneBatch:
    """``n`` random rooms: camera pose, walls, light, surface colours and objects.

    Camera height is uniform in [1.2, 1.8] m and its pitch in [8°, 22°]; the back wall stands 6 to
    9 m ahead, side walls 2.5 to 4 m to either side. Objects stand 2.2 to 6.5 m ahead, inside the
    field of view, with half-extents of 0.2 to 0.9 m, and may intersect one another.

    Args:
        n: number of scenes.
        gen: the random generator (the scenes are a deterministic function of its state).
        n_objects: inclusive range of the number of objects per scene.
        side_walls: whether the rooms have side walls.
        fov: the camera's full field of view in radians.
    """
    back_wall = _uniform(gen, (n,), 6.0, 9.0)
    half_width = _uniform(gen, (n,), 2.5, 4.0)
    if not side_walls:
        half_width = torch.full_like(half_width, math.inf)
    light = torch.stack(
        [
            _uniform(gen, (n,), -1.0, 1.0),
            _uniform(gen, (n,), 0.6, 1.5),
            _uniform(gen, (n,), -1.0, 0.3),
        ],
        dim=-1,
    )
    surfaces = torch.tensor([BASE_COLOURS[FLOOR], BASE_COLOURS[WALL]], dtype=torch.float64)
    return SceneBatch(
        camera_height=_uniform(gen, (n,), 1.2, 1.8),
        pitch=_uniform(gen, (n,), math.radians(8.0), math.radians(22.0)),
        back_wall=back_wall,
        half_width=half_width,
        light=light / light.norm(dim=-1, keepdim=True),
        ambient=_uniform(gen, (n,), 0.25, 0.45),
        surface_colour=_jittered(gen, surfaces.expand(n, -1, -1)),
        **_sample_objects(gen, n, n_objects, back_wall, half_width, fov),
    )


class ShapesProvider(DatasetProvider):
    """Floors, walls, spheres, boxes and cylinders, ray-cast with exact dense targets.

    Tasks: ``segmentation`` (5 classes: floor, wall, sphere, box, cylinder), ``depth`` (z-depth in
    metres), ``normals`` (unit, camera frame) and ``edges`` (1 where the surface id changes between
    4-neighbours). Each split is rendered from its own seed derived from ``seed``, once per provider
    instance, and its images are standardised per channel with the training split's statistics.
    """

    name = "shapes"
    is_default = True
    in_channels = 3

    class Config(ComponentConfig):
        """Options of the ``shapes`` data set.

        Attributes:
            image_size: side of the square images in pixels.
            n_train: number of training scenes.
            n_val: number of validation scenes.
            n_test: number of test scenes.
            seed: the seed all three splits are derived from.
            noise: standard deviation of the Gaussian pixel noise on [0, 1] colours.
            n_objects: inclusive range of the number of objects per scene.
            side_walls: whether rooms have side walls.
            fov_degrees: the camera's field of view (horizontal and vertical).
        """

        image_size: int = Field(32, ge=4, le=512)
        n_train: int = Field(1024, ge=1)
        n_val: int = Field(256, ge=1)
        n_test: int = Field(256, ge=1)
        seed: int = Field(0, ge=0)
        noise: float = Field(0.02, ge=0.0)
        n_objects: tuple[int, int] = (1, 4)
        side_walls: bool = True
        fov_degrees: float = Field(60.0, gt=0.0, le=120.0)

        @model_validator(mode="after")
        def _check_objects(self) -> ShapesProvider.Config:
            low, high = self.n_objects
            if not 0 <= low <= high:
                raise ValueError(
                    f"n_objects must be (low, high) with 0 ≤ low ≤ high, got {self.n_objects}"
                )
            return self

    config: Config

    def __init__(self, config: ComponentConfig | None = None, **params: object) -> None:
        super().__init__(config, **params)
        self._renders: dict[str, Rendering] = {}
        self._images: dict[str, Tensor] = {}

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        """A few small scenes, for the contract test suite (``workdir`` is not used)."""
        return {"image_size": 16, "n_train": 16, "n_val": 8, "n_test": 8}

    def tasks(self) -> list[Task]:
        return [
            SegmentationTask("segmentation", num_classes=len(CLASS_NAMES)),
            DepthTask("depth"),
            NormalsTask("normals"),
            EdgeTask("edges"),
        ]

    def seed_for(self, split: str) -> int:
        """The seed of ``split``: an independent stream spawned from ``seed`` per split."""
        sequence = np.random.SeedSequence([self.config.seed, SPLITS.index(split)])
        return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))

    def rendering(self, split: str) -> Rendering:
        """The noisy rendering of ``split`` (colours in [0, 1]), rendered on first use."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if split not in self._renders:
            cfg = self.config
            gen = torch.Generator().manual_seed(self.seed_for(split))
            fov = math.radians(cfg.fov_degrees)
            n = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}[split]
            scenes = sample_scenes(n, gen, cfg.n_objects, cfg.side_walls, fov)
            clean = render(scenes, cfg.image_size, fov)
            noise = torch.randn(*clean.image.shape, generator=gen, dtype=clean.image.dtype)
            image = (clean.image + cfg.noise * noise).clamp(0.0, 1.0)
            self._renders[split] = Rendering(
                image, clean.segmentation, clean.instance, clean.depth, clean.normals, clean.edges
            )
        return self._renders[split]

    def load(self, split: str, tasks: Sequence[str]) -> MultiTaskTensorDataset:
        selected = [t.name for t in self.select_tasks(tasks)]
        rendering = self.rendering(split)
        if split not in self._images:
            # Statistics of the training split only, so no information flows from val or test.
            train = self.rendering("train").image
            mean = train.mean(dim=(0, 2, 3))[:, None, None]
            std = train.std(dim=(0, 2, 3)).clamp_min(1e-6)[:, None, None]
            self._images[split] = (rendering.image - mean) / std
        targets = {
            "segmentation": rendering.segmentation,
            "depth": rendering.depth,
            "normals": rendering.normals,
            "edges": rendering.edges,
        }
        return MultiTaskTensorDataset(
            self._images[split], {name: targets[name] for name in selected}
        )
