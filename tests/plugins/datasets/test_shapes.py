"""The ``shapes`` data set: exact geometry, targets, determinism and the tensor data set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from sparsekit.data.tensor_dataset import MultiTaskTensorDataset
from sparsekit.tasks import DepthTask, EdgeTask, NormalsTask, SegmentationTask
from sparsekit_plugins.datasets.shapes import ShapesProvider, sample_scenes
from sparsekit_plugins.datasets.shapes.render import render
from sparsekit_plugins.datasets.shapes.scene import (
    BOX,
    CYLINDER,
    EMPTY,
    FLOOR,
    SPHERE,
    WALL,
    Scene,
    SceneBatch,
    SceneObject,
)

FOV = math.radians(60.0)
TASKS = ["segmentation", "depth", "normals", "edges"]


def small_provider(**params: object) -> ShapesProvider:
    return ShapesProvider(image_size=12, n_train=10, n_val=4, n_test=4, **params)


def pixel_ray(i: int | np.ndarray, j: int | np.ndarray, size: int, fov: float = FOV) -> np.ndarray:
    """Camera-frame direction (x right, y down, z = 1) through the centre of pixel (i, j)."""
    focal = (size / 2) / math.tan(fov / 2)
    x = (np.asarray(j) + 0.5 - size / 2) / focal
    y = (np.asarray(i) + 0.5 - size / 2) / focal
    return np.stack(np.broadcast_arrays(x, y, np.ones_like(x)), axis=-1)


def render_one(scene: Scene, size: int) -> dict[str, np.ndarray]:
    out = render(SceneBatch.from_scenes([scene]), size, FOV)
    return {k: getattr(out, k)[0].numpy() for k in TASKS + ["instance", "image"]}


# --- Hand-placed scenes, checked against geometry worked out by hand -------------------------


def test_single_sphere_centre_pixel_matches_hand_geometry() -> None:
    h, r, zc = 1.0, 0.8, 4.0
    scene = Scene(objects=(SceneObject("sphere", 0.0, zc, (r, r, r)),), camera_height=h, pitch=0.0)
    out = render_one(scene, 33)  # odd size: pixel (16, 16) lies on the optical axis
    # The axis is the horizontal line at height h; it meets the sphere (centre height r) where
    # (z - zc)² + (h - r)² = r².
    z_hit = zc - math.sqrt(r**2 - (h - r) ** 2)
    assert out["depth"][0, 16, 16] == pytest.approx(z_hit, abs=1e-5)
    assert out["segmentation"][16, 16] == SPHERE
    # World normal (0, h - r, z_hit - zc) / r; with no pitch, camera y = -world Y, z = world Z.
    expected = np.array([0.0, -(h - r) / r, (z_hit - zc) / r])
    np.testing.assert_allclose(out["normals"][:, 16, 16], expected, atol=1e-5)
    assert -out["normals"][2, 16, 16] > 0.9  # faces the camera


def test_floor_and_back_wall_depth_and_normals_with_pitch() -> None:
    h, pitch, back, size = 1.4, 0.3, 7.0, 21
    out = render_one(Scene(camera_height=h, pitch=pitch, back_wall=back, half_width=None), size)
    c, s = math.cos(pitch), math.sin(pitch)
    column = np.arange(size)
    # Bottom row, far below the horizon: the floor plane u·p = -h with up u = (0, -c, -s).
    ray = pixel_ray(size - 1, column, size)
    np.testing.assert_allclose(out["depth"][0, -1], h / (c * ray[:, 1] + s), rtol=1e-5)
    assert (out["segmentation"][-1] == FLOOR).all()
    np.testing.assert_allclose(out["normals"][:, -1], np.tile([[0.0], [-c], [-s]], size), atol=1e-6)
    # Top row: the back wall f·p = back with forward f = (0, -s, c), facing the camera (-f).
    ray = pixel_ray(0, column, size)
    np.testing.assert_allclose(out["depth"][0, 0], back / (c - s * ray[:, 1]), rtol=1e-5)
    assert (out["segmentation"][0] == WALL).all()
    np.testing.assert_allclose(out["normals"][:, 0], np.tile([[0.0], [s], [-c]], size), atol=1e-6)


@pytest.mark.parametrize(("yaw", "front"), [(0.0, 0.3), (math.pi / 2, 0.5)])
def test_box_front_face(yaw: float, front: float) -> None:
    # Half-extents (0.5, 0.6, 0.3): the face towards the camera is 0.3 ahead of the centre, or
    # 0.5 once the box is turned by 90°.
    box = SceneObject("box", 0.0, 4.0, (0.5, 0.6, 0.3), yaw=yaw)
    out = render_one(Scene(objects=(box,), camera_height=1.0, pitch=0.0), 33)
    assert out["segmentation"][16, 16] == BOX
    assert out["depth"][0, 16, 16] == pytest.approx(4.0 - front, abs=1e-5)
    np.testing.assert_allclose(out["normals"][:, 16, 16], [0.0, 0.0, -1.0], atol=1e-6)


def test_cylinder_side_and_top_cap() -> None:
    size, h, pitch, r, height, zc = 41, 1.5, 0.3, 1.0, 1.0, 4.0
    cyl = SceneObject("cylinder", 0.0, zc, (r, height / 2, r))
    out = render_one(Scene(objects=(cyl,), camera_height=h, pitch=pitch), size)
    c, s = math.cos(pitch), math.sin(pitch)
    rays = pixel_ray(np.arange(size), size // 2, size)
    # The top cap Y = height is the floor formula with the camera height reduced by the cylinder's.
    z_cap = (h - height) / (c * rays[:, 1] + s)
    world_z = z_cap * (c - s * rays[:, 1])  # forward world coordinate of the cap point
    on_cap = (z_cap > 0) & (np.abs(world_z - zc) < r - 0.02)
    assert on_cap.sum() >= 3
    rows = np.flatnonzero(on_cap)
    assert (out["segmentation"][rows, size // 2] == CYLINDER).all()
    np.testing.assert_allclose(out["depth"][0, rows, size // 2], z_cap[on_cap], rtol=1e-5)
    np.testing.assert_allclose(
        out["normals"][:, rows, size // 2], np.tile([[0.0], [-c], [-s]], len(rows)), atol=1e-6
    )
    # Just below the cap, the ray meets the side wall of the cylinder, whose nearest point to
    # the camera's vertical plane is zc - r ahead.
    row = rows.max() + 1
    assert out["segmentation"][row, size // 2] == CYLINDER
    side_z = (zc - r) / (c - s * rays[row, 1])  # z-depth of the world point with Z = zc - r
    assert out["depth"][0, row, size // 2] == pytest.approx(side_z, rel=1e-5)


def test_side_walls_are_at_half_width() -> None:
    size, w = 17, 2.0
    out = render_one(Scene(camera_height=1.5, pitch=0.0, back_wall=9.0, half_width=w), size)
    row = size // 2  # on the horizon, so neither floor nor ceiling interferes
    rays = pixel_ray(row, np.array([0, size - 1]), size)
    assert list(out["instance"][row, [0, size - 1]]) == [2, 3]
    np.testing.assert_allclose(
        out["depth"][0, row, [0, size - 1]], w / np.abs(rays[:, 0]), rtol=1e-5
    )
    np.testing.assert_allclose(out["normals"][:, row, 0], [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out["normals"][:, row, -1], [-1.0, 0.0, 0.0], atol=1e-6)


def test_camera_looking_up_too_steeply_is_an_error() -> None:
    with pytest.raises(ValueError, match="looks up"):
        render(SceneBatch.from_scenes([Scene(pitch=-1.3, half_width=None)]), 8, FOV)


# --- Random scenes: properties every rendering must have -------------------------------------


@pytest.fixture(scope="module")
def random_batch() -> tuple[SceneBatch, object]:
    gen = torch.Generator().manual_seed(3)
    scenes = sample_scenes(16, gen, (2, 4), side_walls=True, fov=FOV)
    return scenes, render(scenes, 16, FOV)


def test_floor_and_wall_pixels_match_plane_geometry(random_batch) -> None:
    scenes, out = random_batch
    rays = pixel_ray(*np.meshgrid(np.arange(16), np.arange(16), indexing="ij"), 16)
    for n in range(len(scenes)):
        h, p = float(scenes.camera_height[n]), float(scenes.pitch[n])
        c, s = math.cos(p), math.sin(p)
        floor = out.instance[n].numpy() == 0
        back = out.instance[n].numpy() == 1
        depth = out.depth[n, 0].numpy()
        np.testing.assert_allclose(depth[floor], h / (c * rays[..., 1] + s)[floor], rtol=1e-5)
        d = float(scenes.back_wall[n])
        np.testing.assert_allclose(depth[back], d / (c - s * rays[..., 1])[back], rtol=1e-5)


def test_object_pixels_lie_on_their_object_surface(random_batch) -> None:
    scenes, out = random_batch
    rays = pixel_ray(*np.meshgrid(np.arange(16), np.arange(16), indexing="ij"), 16)
    checked = set()
    for n in range(len(scenes)):
        h, p = float(scenes.camera_height[n]), float(scenes.pitch[n])
        c, s = math.cos(p), math.sin(p)
        z = out.depth[n, 0].numpy().astype(np.float64)
        # Camera point z·ray in world coordinates: X = x, Y = h + (up·p), Z = forward·p.
        world = np.stack(
            [z * rays[..., 0], h - z * (c * rays[..., 1] + s), z * (c - s * rays[..., 1])], -1
        )
        for slot in range(scenes.kind.shape[1]):
            mask = out.instance[n].numpy() == 4 + slot
            if not mask.any():
                continue
            kind = int(scenes.kind[n, slot])
            a, b, cc = scenes.size[n, slot].tolist()
            rel = world[mask] - scenes.centre[n, slot].numpy()
            yaw = float(scenes.yaw[n, slot])
            local_x = math.cos(yaw) * rel[:, 0] - math.sin(yaw) * rel[:, 2]
            local_z = math.sin(yaw) * rel[:, 0] + math.cos(yaw) * rel[:, 2]
            if kind == SPHERE:
                residual = np.linalg.norm(rel, axis=1) - a
            elif kind == BOX:
                ratios = np.abs(np.stack([local_x / a, rel[:, 1] / b, local_z / cc], 1))
                residual = ratios.max(axis=1) - 1
            else:
                radial = np.hypot(rel[:, 0], rel[:, 2])
                on_side = np.abs(radial - a) < 1e-4
                on_cap = np.abs(rel[:, 1] - b) < 1e-4
                assert (on_side | on_cap).all()
                residual = np.maximum(radial - a, np.abs(rel[:, 1]) - b).clip(min=0)
            np.testing.assert_allclose(residual, 0.0, atol=1e-4)
            checked.add(kind)
    assert checked == {SPHERE, BOX, CYLINDER}


def test_visible_normals_are_unit_and_face_the_camera(random_batch) -> None:
    _, out = random_batch
    normals = out.normals.numpy()
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    rays = pixel_ray(*np.meshgrid(np.arange(16), np.arange(16), indexing="ij"), 16)
    assert (np.einsum("nchw,hwc->nhw", normals, rays) < 1e-6).all()


def test_edges_are_exactly_the_instance_changes(random_batch) -> None:
    _, out = random_batch
    inst = out.instance.numpy()
    expected = np.zeros_like(inst, dtype=np.float32)
    n, height, width = inst.shape
    for b in range(n):
        for i in range(height):
            for j in range(width):
                for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    a, k = i + di, j + dj
                    if 0 <= a < height and 0 <= k < width and inst[b, a, k] != inst[b, i, j]:
                        expected[b, i, j] = 1.0
    np.testing.assert_array_equal(out.edges[:, 0].numpy(), expected)
    # Every class change is an instance change, hence an edge on both sides.
    seg = out.segmentation.numpy()
    change = seg[:, :, 1:] != seg[:, :, :-1]
    assert (expected[:, :, 1:][change] == 1).all() and (expected[:, :, :-1][change] == 1).all()
    assert 0 < expected.mean() < 0.5


def test_every_pixel_is_labelled_with_positive_depth(random_batch) -> None:
    _, out = random_batch
    assert out.segmentation.min() >= FLOOR and out.segmentation.max() <= CYLINDER
    assert (out.depth > 0).all() and torch.isfinite(out.depth).all()
    assert set(out.segmentation.unique().tolist()) >= {FLOOR, WALL}
    assert torch.isfinite(out.image).all() and out.image.min() >= 0 and out.image.max() <= 1


# --- The provider ----------------------------------------------------------------------------


def test_provider_tasks_shapes_and_dtypes() -> None:
    provider = small_provider()
    tasks = provider.tasks()
    assert [t.name for t in tasks] == TASKS
    assert [type(t) for t in tasks] == [SegmentationTask, DepthTask, NormalsTask, EdgeTask]
    assert tasks[0].num_classes == 5
    ds = provider.load("train", TASKS)
    assert len(ds) == 10
    image, targets = ds[0]
    assert image.shape == (3, 12, 12) and image.dtype == torch.float32
    assert torch.isfinite(ds.images).all()
    expected = {
        "segmentation": ((12, 12), torch.int64),
        "depth": ((1, 12, 12), torch.float32),
        "normals": ((3, 12, 12), torch.float32),
        "edges": ((1, 12, 12), torch.float32),
    }
    assert {k: (tuple(v.shape), v.dtype) for k, v in targets.items()} == expected
    assert set(torch.unique(ds.targets["edges"]).tolist()) <= {0.0, 1.0}


def test_train_images_are_standardised_per_channel() -> None:
    provider = small_provider()
    images = provider.load("train", ["depth"]).images
    torch.testing.assert_close(images.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(images.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5, rtol=0)
    # The other splits use the training statistics: centred only roughly.
    assert provider.load("test", ["depth"]).images.mean().abs() < 1.0


def test_provider_is_deterministic_and_seeds_matter() -> None:
    a, b = small_provider(seed=5), small_provider(seed=5)
    other = small_provider(seed=6)
    for split in ("train", "val", "test"):
        ra, rb = a.rendering(split), b.rendering(split)
        for field in ("image", "segmentation", "depth", "normals", "edges"):
            assert torch.equal(getattr(ra, field), getattr(rb, field))
        assert not torch.equal(ra.depth, other.rendering(split).depth)
    assert not torch.equal(a.rendering("val").depth, a.rendering("test").depth)
    seeds = {p.seed_for(s) for p in (a, other) for s in ("train", "val", "test")}
    assert len(seeds) == 6


def test_noise_is_applied_and_configurable() -> None:
    clean = small_provider(noise=0.0).rendering("train").image
    noisy = small_provider(noise=0.05).rendering("train").image
    diff = (noisy - clean).abs()
    assert 0.01 < diff.mean() < 0.06
    assert torch.equal(
        small_provider(noise=0.0).rendering("train").depth,
        small_provider(noise=0.05).rendering("train").depth,
    )


def test_object_count_range_is_respected() -> None:
    gen = torch.Generator().manual_seed(0)
    counts = (sample_scenes(200, gen, (1, 4), True, FOV).kind != EMPTY).sum(dim=1)
    assert set(counts.tolist()) == {1, 2, 3, 4}
    empty = small_provider(n_objects=(0, 0)).rendering("train")
    assert (empty.instance < 4).all()
    assert set(empty.segmentation.unique().tolist()) <= {FLOOR, WALL}


def test_load_selects_tasks_and_rejects_unknown_ones() -> None:
    provider = small_provider()
    ds = provider.load("val", ["normals", "depth"])
    assert ds.task_names == ["normals", "depth"]
    with pytest.raises(ValueError, match="no task 'semantic'"):
        provider.load("val", ["semantic"])
    with pytest.raises(ValueError, match="unknown split"):
        provider.load("holdout", ["depth"])


def test_config_validation() -> None:
    with pytest.raises(ValidationError):
        ShapesProvider(image_sise=16)
    with pytest.raises(ValidationError):
        ShapesProvider(n_objects=(3, 2))
    config = ShapesProvider.Config(image_size=16, n_objects=(0, 2))
    assert ShapesProvider.Config.model_validate(config.model_dump(mode="json")) == config


# --- The in-memory tensor data set ------------------------------------------------------------


def test_tensor_dataset_indexes_without_copying() -> None:
    images = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).reshape(2, 1, 2, 2)
    targets = {"a": torch.tensor([3, 4]), "b": torch.zeros(2, 1, 2, 2)}
    ds = MultiTaskTensorDataset(images, targets)
    image, target = ds[1]
    assert torch.equal(image, images[1]) and int(target["a"]) == 4
    assert image.data_ptr() == images[1].data_ptr()
    sub = ds.subset_tasks(["b"])
    assert sub.task_names == ["b"] and sub.images is images and sub.targets["b"] is targets["b"]
    with pytest.raises(KeyError):
        ds.subset_tasks(["c"])
    with pytest.raises(ValueError, match="entries"):
        MultiTaskTensorDataset(images, {"a": torch.zeros(3)})
    with pytest.raises(ValueError, match="N, C, H, W"):
        MultiTaskTensorDataset(images[0], {})
