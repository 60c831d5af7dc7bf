"""Scene descriptions of the ``shapes`` data set: a room, objects on its floor, their classes.

A pinhole camera at height ``h`` above a floor, pitched down by ``θ``, looks at a back wall (and
optionally two side walls) with spheres, boxes and vertical cylinders standing on the floor.
Every pixel's ray is intersected with every surface at once (broadcast over images, pixels and
objects), so segmentation, depth, normals and edges are exact properties of the geometry.

Frames. The world frame has X to the right, Y up and Z forward (horizontal), with the floor at
``Y = 0`` and the camera at ``(0, h, 0)``. The camera frame is OpenCV's: x right, y down (in the
image), z along the optical axis. A world vector ``(X, Y, Z)`` is ``X·e_x + Y·u + Z·f`` in camera
coordinates, with ``u = (0, −cos θ, −sin θ)`` (up) and ``f = (0, −sin θ, cos θ)`` (forward).
Depth is z-depth (distance along the optical axis); normals are unit vectors in the camera frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from torch import Tensor

CLASS_NAMES: tuple[str, ...] = ("floor", "wall", "sphere", "box", "cylinder")
FLOOR, WALL, SPHERE, BOX, CYLINDER = range(5)
#: Instance ids 0..3 are the floor, back wall, left wall and right wall; object k is ``4 + k``.
NUM_SURFACES = 4
EMPTY = -1

#: Base albedo of each class; sampled scenes jitter it per surface.
BASE_COLOURS: dict[int, tuple[float, float, float]] = {
    FLOOR: (0.55, 0.45, 0.35),
    WALL: (0.78, 0.78, 0.82),
    SPHERE: (0.80, 0.25, 0.20),
    BOX: (0.30, 0.70, 0.30),
    CYLINDER: (0.25, 0.35, 0.80),
}
_KINDS = {"sphere": SPHERE, "box": BOX, "cylinder": CYLINDER}


@dataclass(frozen=True)
class SceneObject:
    """One object standing on the floor.

    Attributes:
        kind: ``"sphere"``, ``"box"`` or ``"cylinder"``.
        x: lateral world position of the object's vertical axis.
        z: forward world position of the object's vertical axis.
        size: half-extents ``(a, b, c)``: a sphere's radius is ``a``; a box spans ``±a, ±b, ±c``
            along its own X, Y, Z axes; a cylinder has radius ``a`` and half-height ``b``.
            The centre is at height ``b``, so every object rests on the floor.
        yaw: rotation about the vertical axis in radians (matters for boxes only): the box's own
            X axis points along world ``(cos yaw, 0, −sin yaw)``.
        colour: RGB albedo in [0, 1]; the class's base colour when None.
    """

    kind: Literal["sphere", "box", "cylinder"]
    x: float
    z: float
    size: tuple[float, float, float]
    yaw: float = 0.0
    colour: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class Scene:
    """An explicit scene description (angles in radians, lengths in metres).

    Attributes:
        objects: the objects on the floor.
        camera_height: the camera's height ``h`` above the floor.
        pitch: downward tilt ``θ`` of the optical axis from the horizontal.
        back_wall: forward distance of the back wall (the plane ``Z = back_wall``).
        half_width: side walls at ``X = ±half_width``; None for no side walls.
        light: direction towards the light in the world frame (normalised when rendered).
        ambient: the ambient share of the shading, in [0, 1].
        floor_colour: RGB albedo of the floor.
        wall_colour: RGB albedo of the walls.
    """

    objects: tuple[SceneObject, ...] = ()
    camera_height: float = 1.5
    pitch: float = 0.25
    back_wall: float = 8.0
    half_width: float | None = 3.5
    light: tuple[float, float, float] = (0.3, 1.0, -0.5)
    ambient: float = 0.3
    floor_colour: tuple[float, float, float] = BASE_COLOURS[FLOOR]
    wall_colour: tuple[float, float, float] = BASE_COLOURS[WALL]


@dataclass(frozen=True)
class SceneBatch:
    """``N`` scenes with up to ``K`` object slots each, as tensors (the renderer's input).

    Attributes:
        camera_height: ``[N]``.
        pitch: ``[N]``.
        back_wall: ``[N]``.
        half_width: ``[N]``, ``inf`` where a scene has no side walls.
        light: ``[N, 3]`` unit directions towards the light (world frame).
        ambient: ``[N]``.
        surface_colour: ``[N, 2, 3]`` albedo of the floor and of the walls.
        kind: ``[N, K]`` class index of each slot (``SPHERE``, ``BOX``, ``CYLINDER``), or ``EMPTY``.
        centre: ``[N, K, 3]`` world centres ``(x, b, z)``.
        size: ``[N, K, 3]`` half-extents as in :class:`SceneObject`.
        yaw: ``[N, K]``.
        colour: ``[N, K, 3]``.
    """

    camera_height: Tensor
    pitch: Tensor
    back_wall: Tensor
    half_width: Tensor
    light: Tensor
    ambient: Tensor
    surface_colour: Tensor
    kind: Tensor
    centre: Tensor
    size: Tensor
    yaw: Tensor
    colour: Tensor

    def __len__(self) -> int:
        return self.camera_height.shape[0]

    def slice(self, start: int, stop: int) -> SceneBatch:
        """Scenes ``start`` to ``stop`` (views, no copies)."""
        return SceneBatch(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})

    def to(self, device: torch.device | str) -> SceneBatch:
        """The same scenes on ``device``."""
        return SceneBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @classmethod
    def from_scenes(cls, scenes: Sequence[Scene], dtype: torch.dtype = torch.float64) -> SceneBatch:
        """Stack explicit scenes, padding with empty slots to the largest object count."""
        k = max(1, *(len(s.objects) for s in scenes))
        filler = SceneObject("sphere", 0.0, 1.0, (1.0, 1.0, 1.0), colour=(0.0, 0.0, 0.0))
        rows = [list(s.objects) + [filler] * (k - len(s.objects)) for s in scenes]

        def floats(values: list[Any]) -> Tensor:
            return torch.tensor(values, dtype=dtype)

        light = floats([s.light for s in scenes])
        return cls(
            camera_height=floats([s.camera_height for s in scenes]),
            pitch=floats([s.pitch for s in scenes]),
            back_wall=floats([s.back_wall for s in scenes]),
            half_width=floats([math.inf if s.half_width is None else s.half_width for s in scenes]),
            light=light / light.norm(dim=-1, keepdim=True),
            ambient=floats([s.ambient for s in scenes]),
            surface_colour=floats([[s.floor_colour, s.wall_colour] for s in scenes]),
            kind=torch.tensor(
                [
                    [_KINDS[o.kind] for o in s.objects] + [EMPTY] * (k - len(s.objects))
                    for s in scenes
                ]
            ),
            centre=floats([[(o.x, o.size[1], o.z) for o in row] for row in rows]),
            size=floats([[o.size for o in row] for row in rows]),
            yaw=floats([[o.yaw for o in row] for row in rows]),
            colour=floats(
                [[o.colour or BASE_COLOURS[_KINDS[o.kind]] for o in row] for row in rows]
            ),
        )
