"""Ray casting of ``shapes`` scenes: images with exact segmentation, depth, normals and edges.

Every pixel's ray is intersected with every surface at once (broadcast over images, pixels and
objects), so the targets are exact properties of the geometry; the frames are described in
:mod:`.scene`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from sparsekit_plugins.datasets.shapes.scene import (
    BOX,
    CYLINDER,
    FLOOR,
    NUM_SURFACES,
    SPHERE,
    WALL,
    SceneBatch,
)


@dataclass(frozen=True)
class Rendering:
    """Rendered images and their exact targets for ``N`` scenes of ``H × W`` pixels.

    Attributes:
        image: ``[N, 3, H, W]`` float32 shaded RGB in [0, 1].
        segmentation: ``[N, H, W]`` int64 class per pixel (indices into :data:`CLASS_NAMES`).
        instance: ``[N, H, W]`` int64 surface id (0 floor, 1 back wall, 2 left, 3 right wall,
            ``4 + k`` object slot ``k``).
        depth: ``[N, 1, H, W]`` float32 z-depth, > 0 everywhere.
        normals: ``[N, 3, H, W]`` float32 unit normals in the camera frame.
        edges: ``[N, 1, H, W]`` float32, 1 where a 4-neighbour has a different instance id.
    """

    image: Tensor
    segmentation: Tensor
    instance: Tensor
    depth: Tensor
    normals: Tensor
    edges: Tensor


def camera_rays(
    image_size: int,
    fov: float,
    dtype: torch.dtype = torch.float64,
    device: torch.device | None = None,
) -> Tensor:
    """Camera-frame ray directions ``[H·W, 3]`` through the pixel centres, scaled to ``z = 1``.

    Args:
        image_size: the square image's side ``S``; pixel ``(i, j)`` has centre ``(j + ½, i + ½)``.
        fov: the full field of view in radians (horizontal and vertical).
        dtype: floating dtype of the result.
        device: device of the result (the default device when None).
    """
    focal = (image_size / 2) / math.tan(fov / 2)
    coords = (torch.arange(image_size, dtype=dtype, device=device) + 0.5 - image_size / 2) / focal
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([x, y, torch.ones_like(x)], dim=-1).reshape(-1, 3)


def camera_basis(pitch: Tensor) -> Tensor:
    """``[N, 3, 3]`` matrices ``M`` mapping world vectors to camera vectors (columns e_x, u, f)."""
    c, s = pitch.cos(), pitch.sin()
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    cols = [torch.stack([one, zero, zero], -1), torch.stack([zero, -c, -s], -1)]
    cols.append(torch.stack([zero, -s, c], -1))
    return torch.stack(cols, dim=-1)


def edge_map(instance: Tensor) -> Tensor:
    """1 where any 4-neighbour of a pixel has a different id, else 0 (``[N, H, W]`` → same)."""
    edges = torch.zeros_like(instance, dtype=torch.bool)
    horizontal = instance[..., :, 1:] != instance[..., :, :-1]
    vertical = instance[..., 1:, :] != instance[..., :-1, :]
    edges[..., :, 1:] |= horizontal
    edges[..., :, :-1] |= horizontal
    edges[..., 1:, :] |= vertical
    edges[..., :-1, :] |= vertical
    return edges.to(torch.float32)


_EPS = 1e-9
# Rays per rendering chunk times object slots: bounds the [N, P, K, 3] temporaries to ~200 MB.
_CHUNK_RAYS = 1 << 18


@dataclass(frozen=True)
class _Hit:
    t: Tensor  # [N, P] ray parameter of the nearest hit, which is the z-depth (rays have z = 1)
    instance: Tensor  # [N, P] surface id
    face: Tensor  # [N, P] box: 2·axis + (normal along +axis); cylinder: 1 on the top cap


@dataclass(frozen=True)
class _HitSlots:
    """Parameters of the object slot each pixel hit (meaningless on the floor and walls)."""

    kind: Tensor
    centre: Tensor
    size: Tensor
    yaw: Tensor
    colour: Tensor

    @classmethod
    def gather(cls, instance: Tensor, scenes: SceneBatch) -> _HitSlots:
        slot = (instance - NUM_SURFACES).clamp_min(0)

        def take(x: Tensor) -> Tensor:
            index = slot.reshape(*slot.shape, *([1] * (x.dim() - 2)))
            return x.gather(1, index.expand(*slot.shape, *x.shape[2:]))

        return cls(*(take(getattr(scenes, f.name)) for f in fields(cls)))


def _rotate_y(v: Tensor, angle: Tensor) -> Tensor:
    """Rotate vectors ``[..., 3]`` about the vertical axis by ``angle`` (broadcast over ``v``)."""
    c, s = angle.cos(), angle.sin()
    x, y, z = v.unbind(-1)
    return torch.stack([c * x + s * z, y.expand_as(c * x), -s * x + c * z], dim=-1)


def _plane_hits(origin: Tensor, dirs: Tensor, scenes: SceneBatch) -> Tensor:
    """``[N, P, 4]`` hits on the floor, back wall, left and right wall (``inf`` when missed)."""
    dx, dy, dz = dirs.unbind(-1)
    inf = torch.full_like(dx, math.inf)
    h, w = origin[:, 1:2], scenes.half_width[:, None]
    floor = torch.where(dy < 0, -h / dy, inf)
    back = torch.where(dz > 0, scenes.back_wall[:, None] / dz, inf)
    left = torch.where(dx < 0, -w / dx, inf)
    right = torch.where(dx > 0, w / dx, inf)
    return torch.stack([floor, back, left, right], dim=-1)


def _sphere_hits(origin: Tensor, dirs: Tensor, scenes: SceneBatch) -> Tensor:
    """``[N, P, K]`` nearest positive root of ``|o + t·d − c|² = r²`` (``inf`` when missed)."""
    oc = origin[:, None, :] - scenes.centre
    a = dirs.pow(2).sum(-1, keepdim=True)
    half_b = torch.einsum("npc,nkc->npk", dirs, oc)
    c = oc.pow(2).sum(-1) - scenes.size[..., 0].pow(2)
    disc = half_b.pow(2) - a * c[:, None, :]
    t = (-half_b - disc.clamp_min(0).sqrt()) / a
    return torch.where((disc >= 0) & (t > _EPS), t, math.inf)


def _box_hits(origin: Tensor, dirs: Tensor, scenes: SceneBatch) -> tuple[Tensor, Tensor]:
    """``[N, P, K]`` entry points into yawed boxes by the slab method, and the face entered."""
    o = _rotate_y(origin[:, None, :] - scenes.centre, -scenes.yaw)[:, None]
    d = _rotate_y(dirs[:, :, None, :], -scenes.yaw[:, None, :])
    # A ray parallel to a slab never crosses it; a tiny slope gives the same verdict without 0/0.
    d = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    half = scenes.size[:, None]
    t1, t2 = (-half - o) / d, (half - o) / d
    near, axis = torch.minimum(t1, t2).max(dim=-1)
    far = torch.maximum(t1, t2).min(dim=-1).values
    entering_positive = d.gather(-1, axis[..., None]).squeeze(-1) < 0
    t = torch.where((near <= far) & (near > _EPS), near, math.inf)
    return t, 2 * axis + entering_positive.long()


def _cylinder_hits(origin: Tensor, dirs: Tensor, scenes: SceneBatch) -> tuple[Tensor, Tensor]:
    """``[N, P, K]`` hits on vertical cylinders (side or top cap) and whether the cap was hit.

    The bottom cap lies on the floor and can only be reached from below it, so it is not tested.
    """
    o = (origin[:, None, :] - scenes.centre)[:, None]
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = (v[..., None] for v in dirs.unbind(-1))
    r, hh = scenes.size[:, None, :, 0], scenes.size[:, None, :, 1]
    a = dx.pow(2) + dz.pow(2)
    half_b = dx * ox + dz * oz
    disc = half_b.pow(2) - a * (ox.pow(2) + oz.pow(2) - r.pow(2))
    t_side = (-half_b - disc.clamp_min(0).sqrt()) / a
    side_ok = (disc >= 0) & ((oy + t_side * dy).abs() <= hh) & (t_side > _EPS)
    t_cap = (hh - oy) / dy
    radial = (ox + t_cap * dx).pow(2) + (oz + t_cap * dz).pow(2)
    cap_ok = (radial <= r.pow(2)) & (t_cap > _EPS)
    t_side = torch.where(side_ok, t_side, math.inf)
    t_cap = torch.where(cap_ok, t_cap, math.inf)
    return torch.minimum(t_side, t_cap), (t_cap < t_side).long()


def _cast(origin: Tensor, dirs: Tensor, scenes: SceneBatch) -> _Hit:
    """The nearest surface along every ray ``origin[n] + t·dirs[n, p]``."""
    kind = scenes.kind[:, None, :]
    t_box, face_box = _box_hits(origin, dirs, scenes)
    t_cyl, face_cyl = _cylinder_hits(origin, dirs, scenes)
    t_obj = torch.where(kind == SPHERE, _sphere_hits(origin, dirs, scenes), math.inf)
    t_obj = torch.where(kind == BOX, t_box, t_obj)
    t_obj = torch.where(kind == CYLINDER, t_cyl, t_obj)
    t, instance = torch.cat([_plane_hits(origin, dirs, scenes), t_obj], dim=-1).min(dim=-1)
    face = torch.where(kind == BOX, face_box, face_cyl)
    slot = (instance - NUM_SURFACES).clamp_min(0)
    return _Hit(t, instance, face.gather(-1, slot[..., None]).squeeze(-1))


def _surface_normals(point: Tensor, hit: _Hit, slots: _HitSlots) -> Tensor:
    """``[N, P, 3]`` unit world normals at the hit points."""
    planes = torch.tensor(
        [[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]],
        dtype=point.dtype,
        device=point.device,
    )
    rel = point - slots.centre
    sphere = rel / slots.size[..., :1]
    axis_normal = torch.nn.functional.one_hot(hit.face // 2 % 3, 3).to(point.dtype)
    box = _rotate_y(axis_normal * (2 * (hit.face % 2) - 1)[..., None], slots.yaw)
    up = torch.zeros_like(rel)
    up[..., 1] = 1.0
    radial = rel * rel.new_tensor([1.0, 0.0, 1.0]) / slots.size[..., :1]
    cylinder = torch.where((hit.face == 1)[..., None], up, radial)
    kind = slots.kind[..., None]
    normal = torch.where(kind == SPHERE, sphere, torch.where(kind == BOX, box, cylinder))
    normal = torch.where(
        (hit.instance >= NUM_SURFACES)[..., None], normal, planes[hit.instance.clamp_max(3)]
    )
    return normal * normal.pow(2).sum(-1, keepdim=True).rsqrt()


def _instance_classes(scenes: SceneBatch) -> Tensor:
    """``[N, 4 + K]`` class of every surface id."""
    surfaces = scenes.kind.new_tensor([FLOOR, WALL, WALL, WALL]).expand(len(scenes), -1)
    return torch.cat([surfaces, scenes.kind], dim=1)


def _checker(coords: Tensor, cell: float) -> Tensor:
    """1 on alternate cells of a regular grid over the last dimension's coordinates, else 0."""
    return (coords / cell).floor().sum(-1).remainder(2)


def _shade(
    point: Tensor,
    normal: Tensor,
    instance: Tensor,
    classes: Tensor,
    slots: _HitSlots,
    scenes: SceneBatch,
) -> Tensor:
    """``[N, P, 3]`` Lambert-plus-ambient shading of textured albedo, clamped to [0, 1]."""
    floor, wall = scenes.surface_colour[:, :1], scenes.surface_colour[:, 1:]
    palette = torch.cat([floor, wall.expand(-1, 3, -1), scenes.colour], dim=1)
    albedo = palette.gather(1, instance[..., None].expand(-1, -1, 3))
    local = _rotate_y(point - slots.centre, -slots.yaw)
    # Texture tells surfaces of one colour apart: tiles, a skirting band, cubes, rings.
    texture = torch.ones_like(point[..., 0])
    texture = torch.where(classes == FLOOR, 1 - 0.2 * _checker(point[..., ::2], 0.5), texture)
    texture = torch.where(
        classes == WALL, 1 - 0.15 * (point[..., 1] < 0.4).to(point.dtype), texture
    )
    texture = torch.where(classes == BOX, 1 - 0.25 * _checker(local, 0.25), texture)
    texture = torch.where(classes == CYLINDER, 1 - 0.25 * _checker(point[..., 1:2], 0.2), texture)
    lambert = (normal * scenes.light[:, None, :]).sum(-1).clamp_min(0)
    ambient = scenes.ambient[:, None]
    return (albedo * (texture * (ambient + (1 - ambient) * lambert))[..., None]).clamp(0, 1)


def render(scenes: SceneBatch, image_size: int, fov: float = math.radians(60.0)) -> Rendering:
    """Ray-cast a batch of scenes, a bounded number of images at a time.

    Args:
        scenes: the scenes (floating tensors of one dtype; float64 keeps the targets exact).
        image_size: side of the square images.
        fov: the camera's full field of view in radians.

    Returns:
        The shaded images and their exact targets.

    Raises:
        ValueError: if some ray hits nothing, which happens only when the camera looks up by
            more than 90° minus half the field of view.
    """
    slots = scenes.kind.shape[1]
    chunk = max(1, _CHUNK_RAYS // (image_size * image_size * slots))
    parts = [
        _render_chunk(scenes.slice(start, start + chunk), image_size, fov)
        for start in range(0, len(scenes), chunk)
    ]
    return Rendering(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Rendering)))


def _render_chunk(scenes: SceneBatch, image_size: int, fov: float) -> Rendering:
    n = len(scenes)
    basis = camera_basis(scenes.pitch)
    rays_cam = camera_rays(image_size, fov, scenes.pitch.dtype, scenes.pitch.device)
    dirs = torch.einsum("nca,pc->npa", basis, rays_cam)  # world directions, as M is orthogonal
    origin = dirs.new_zeros(n, 3)
    origin[:, 1] = scenes.camera_height
    hit = _cast(origin, dirs, scenes)
    if not torch.isfinite(hit.t).all():
        raise ValueError("some rays hit no surface: the camera looks up too steeply")
    point = origin[:, None, :] + hit.t[..., None] * dirs
    slots = _HitSlots.gather(hit.instance, scenes)
    normal_world = _surface_normals(point, hit, slots)
    normal_cam = torch.einsum("nac,npc->npa", basis, normal_world)
    classes = _instance_classes(scenes).gather(1, hit.instance)
    image = _shade(point, normal_world, hit.instance, classes, slots, scenes)
    side = (n, image_size, image_size)
    instance = hit.instance.reshape(side)

    def channels_first(x: Tensor) -> Tensor:
        return x.reshape(*side, -1).permute(0, 3, 1, 2).to(torch.float32).contiguous()

    return Rendering(
        image=channels_first(image),
        segmentation=classes.reshape(side),
        instance=instance,
        depth=channels_first(hit.t),
        normals=channels_first(normal_cam),
        edges=edge_map(instance).unsqueeze(1),
    )
