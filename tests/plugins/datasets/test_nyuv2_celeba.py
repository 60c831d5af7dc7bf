"""The NYU-v2 and CelebAMask-HQ loaders on tiny data sets written here in the on-disk layouts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from torch.utils.data import DataLoader

from sparsekit.tasks import SegmentationTask
from sparsekit_plugins.datasets.celeba import CelebAMaskHQProvider
from sparsekit_plugins.datasets.nyuv2 import NYUv2Provider

H, W = 20, 24
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])

# --------------------------------------------------------------------------- NYU-v2 on disk

NYU_SPLITS = {"train": ["a1", "a2", "a3"], "val": ["b1"], "test": ["c1", "c2"]}


def _nyu_sample(k: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(100 + k)
    labels = rng.integers(0, 41, size=(H, W)).astype(np.uint8)
    labels[0, :3] = [0, 1, 40]
    depth = rng.uniform(0.5, 8.0, size=(H, W)).astype(np.float32)
    depth[rng.random((H, W)) < 0.2] = 0.0
    normals = rng.normal(size=(3, H, W)).astype(np.float32)
    normals *= 2.0 / np.linalg.norm(normals, axis=0, keepdims=True)  # deliberately not unit
    normals[:, :4, :4] = 0.0
    return {
        "image": rng.integers(0, 256, size=(H, W, 3)).astype(np.uint8),
        "segmentation": labels,
        "depth": depth,
        "normals": normals,
        "edges": rng.uniform(0, 1, size=(H, W)).astype(np.float32),
    }


@pytest.fixture
def nyu_root(tmp_path: Path) -> Path:
    root = tmp_path / "nyu"
    for sub in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / sub).mkdir(parents=True)
    k = 0
    for split, ids in NYU_SPLITS.items():
        (root / "gt_sets" / f"{split}.txt").write_text("\n".join(ids) + "\n\n")
        for sample_id in ids:
            s = _nyu_sample(k)
            k += 1
            Image.fromarray(s["image"]).save(root / "images" / f"{sample_id}.jpg")
            Image.fromarray(s["segmentation"]).save(root / "segmentation" / f"{sample_id}.png")
            np.save(root / "depth" / f"{sample_id}.npy", s["depth"])
            np.save(root / "normals" / f"{sample_id}.npy", s["normals"])
            np.save(root / "edge" / f"{sample_id}.npy", s["edges"])
    return root


def _nyu(root: Path, **params: object) -> NYUv2Provider:
    return NYUv2Provider(root=root, **params)


ALL_NYU = ["segmentation", "depth", "normals", "edges"]


def test_nyu_splits_follow_the_lists(nyu_root: Path) -> None:
    provider = _nyu(nyu_root)
    for split, ids in NYU_SPLITS.items():
        data = provider.load(split, ALL_NYU)
        assert len(data) == len(ids) and data.ids == ids


def test_nyu_targets_without_resize(nyu_root: Path) -> None:
    data = _nyu(nyu_root, image_size=(H, W)).load("train", ALL_NYU)
    image, targets = data[1]
    stored = _nyu_sample(1)
    raw = stored["segmentation"].astype(np.int64)
    expected_labels = np.where(raw == 0, 255, raw - 1)
    np.testing.assert_array_equal(targets["segmentation"].numpy(), expected_labels)
    assert targets["segmentation"][0, :3].tolist() == [255, 0, 39]
    assert targets["segmentation"].dtype == torch.int64
    np.testing.assert_array_equal(targets["depth"].numpy()[0], stored["depth"])
    np.testing.assert_allclose(targets["edges"].numpy()[0], stored["edges"])
    np.testing.assert_allclose(targets["normals"].numpy(), stored["normals"] / 2.0, atol=1e-6)
    # The image is the decoded JPEG, scaled to [0, 1] and normalised per channel.
    decoded = np.asarray(Image.open(nyu_root / "images" / "a2.jpg").convert("RGB")) / 255.0
    np.testing.assert_allclose(
        image.numpy(), ((decoded - MEAN) / STD).transpose(2, 0, 1), atol=1e-5
    )


def test_nyu_resize_shapes_and_nearest_labels(nyu_root: Path) -> None:
    size = (10, 12)
    image, targets = _nyu(nyu_root, image_size=size).load("val", ALL_NYU)[0]
    assert image.shape == (3, *size) and image.dtype == torch.float32
    assert targets["segmentation"].shape == size
    assert targets["depth"].shape == (1, *size)
    assert targets["normals"].shape == (3, *size)
    assert targets["edges"].shape == (1, *size)
    # Nearest neighbour as PIL computes it, then the void/class mapping.
    raw = Image.open(nyu_root / "segmentation" / "b1.png").resize(size[::-1], Image.NEAREST)
    raw = np.asarray(raw).astype(np.int64)
    np.testing.assert_array_equal(targets["segmentation"].numpy(), np.where(raw == 0, 255, raw - 1))
    # Bilinear image resize matches PIL's.
    decoded = Image.open(nyu_root / "images" / "b1.jpg").convert("RGB")
    small = np.asarray(decoded.resize(size[::-1], Image.BILINEAR)) / 255.0
    np.testing.assert_allclose(image.numpy(), ((small - MEAN) / STD).transpose(2, 0, 1), atol=1e-5)


def test_nyu_normals_are_unit_or_zero_after_resize(nyu_root: Path) -> None:
    _, targets = _nyu(nyu_root, image_size=(7, 9)).load("train", ["normals"])[0]
    length = targets["normals"].norm(dim=0)
    valid = length > 0
    assert valid.any() and (~valid).any()
    torch.testing.assert_close(length[valid], torch.ones(int(valid.sum())))


def test_nyu_depth_normalisation_option(nyu_root: Path) -> None:
    stored = _nyu_sample(0)["depth"]
    _, plain = _nyu(nyu_root, image_size=(H, W)).load("train", ["depth"])[0]
    provider = _nyu(nyu_root, image_size=(H, W), depth_normalization="per_image_max")
    _, scaled = provider.load("train", ["depth"])[0]
    np.testing.assert_array_equal(plain["depth"].numpy()[0], stored)
    np.testing.assert_allclose(scaled["depth"].numpy()[0], stored / stored.max(), rtol=1e-6)
    assert scaled["depth"].max().item() == pytest.approx(1.0)
    with pytest.raises(ValidationError):
        _nyu(nyu_root, depth_normalization="global")


def test_nyu_accepts_channel_layout_variants(nyu_root: Path) -> None:
    stored = _nyu_sample(0)
    np.save(nyu_root / "depth" / "a1.npy", stored["depth"][None])
    np.save(nyu_root / "normals" / "a1.npy", stored["normals"].transpose(1, 2, 0))
    _, targets = _nyu(nyu_root, image_size=(H, W)).load("train", ["depth", "normals"])[0]
    np.testing.assert_array_equal(targets["depth"].numpy()[0], stored["depth"])
    np.testing.assert_allclose(targets["normals"].numpy(), stored["normals"] / 2.0, atol=1e-6)


def test_nyu_batches_fit_the_tasks(nyu_root: Path) -> None:
    provider = _nyu(nyu_root, image_size=(8, 8))
    images, targets = next(iter(DataLoader(provider.load("train", ALL_NYU), batch_size=3)))
    assert images.shape == (3, 3, 8, 8)
    for task in provider.tasks():
        pred = torch.randn(3, task.out_channels, 8, 8)
        assert torch.isfinite(task.loss(pred, targets[task.name]))
        task.meter().update(pred, targets[task.name])


def test_nyu_missing_root_names_path_and_layout(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere") as error:
        _nyu(missing).load("train", ["depth"])
    assert "gt_sets" in str(error.value)


def test_nyu_missing_files(nyu_root: Path) -> None:
    (nyu_root / "depth" / "a2.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"depth/a2\.npy"):
        _nyu(nyu_root).load("train", ["depth"])
    _nyu(nyu_root).load("train", ["segmentation"])  # depth not requested: fine
    (nyu_root / "gt_sets" / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.txt"):
        _nyu(nyu_root).load("train", ["segmentation"])


def test_nyu_rejects_bad_input(nyu_root: Path) -> None:
    provider = _nyu(nyu_root)
    with pytest.raises(ValueError, match="split"):
        provider.load("validation", ["depth"])
    with pytest.raises(ValueError, match="no task"):
        provider.load("train", ["edge"])
    (nyu_root / "gt_sets" / "val.txt").write_text("b1\na1\n")
    with pytest.raises(ValueError, match="a1"):
        provider.load("train", ["depth"])


def test_nyu_rejects_out_of_range_labels(nyu_root: Path) -> None:
    Image.fromarray(np.full((H, W), 41, dtype=np.uint8)).save(nyu_root / "segmentation" / "b1.png")
    data = _nyu(nyu_root).load("val", ["segmentation"])
    with pytest.raises(ValueError, match="0..40"):
        data[0]


def test_nyu_provider_declares_tasks(tmp_path: Path) -> None:
    provider = _nyu(tmp_path)
    tasks = {t.name: t for t in provider.tasks()}
    assert list(tasks) == ALL_NYU
    assert isinstance(tasks["segmentation"], SegmentationTask)
    assert tasks["segmentation"].out_channels == 40 and tasks["segmentation"].ignore_index == 255
    with pytest.raises(ValidationError):
        NYUv2Provider()
    with pytest.raises(ValidationError):
        NYUv2Provider(root=tmp_path, image_size=(0, 4))


# --------------------------------------------------------------------------- CelebAMask-HQ on disk

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
TASK_TO_ATTRIBUTE = {
    "male": "Male",
    "smiling": "Smiling",
    "big_lips": "Big_Lips",
    "high_cheekbones": "High_Cheekbones",
    "wearing_lipstick": "Wearing_Lipstick",
    "bushy_eyebrows": "Bushy_Eyebrows",
}
CELEBA_IDS = [0, 1, 2, 3, 5, 8, 9, 11, 14, 20, 27, 103, 1500]  # 13 ids, not contiguous


def _celeba_values() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(7)
    return {n: rng.choice([-1, 1], size=len(CELEBA_ATTRIBUTES)) for n in CELEBA_IDS}


def _celeba_mask(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 3, size=(H, W)).astype(np.uint8)


@pytest.fixture
def celeba_root(tmp_path: Path) -> Path:
    root = tmp_path / "celeba"
    (root / "CelebA-HQ-img").mkdir(parents=True)
    (root / "CelebA-HQ-segmask").mkdir()
    values = _celeba_values()
    lines = [str(len(CELEBA_IDS)), " ".join(CELEBA_ATTRIBUTES)]
    for n in reversed(CELEBA_IDS):  # file order differs from sorted order on purpose
        lines.append(f"{n}.jpg  " + " ".join(str(v) for v in values[n]))
        pixels = np.random.default_rng(1000 + n).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "CelebA-HQ-img" / f"{n}.jpg")
        np.save(root / "CelebA-HQ-segmask" / f"{n:05d}_mask.npy", _celeba_mask(n))
    (root / "CelebAMask-HQ-attribute-anno.txt").write_text("\n".join(lines) + "\n")
    return root


ALL_CELEBA = ["segmentation", *TASK_TO_ATTRIBUTE]


def _split_members(provider: CelebAMaskHQProvider) -> dict[str, list[int]]:
    return {s: [int(i) for i in provider.load(s, ["male"]).ids] for s in ("train", "val", "test")}


def test_celeba_split_sizes_and_membership(celeba_root: Path) -> None:
    members = _split_members(CelebAMaskHQProvider(root=celeba_root, split_seed=3))
    # n = 13: floor(7.8) = 7 train, floor(2.6) = 2 val, the remaining 4 test.
    assert [len(members[s]) for s in ("train", "val", "test")] == [7, 2, 4]
    assert sorted(sum(members.values(), [])) == CELEBA_IDS
    permuted = np.array(sorted(CELEBA_IDS))[np.random.default_rng(3).permutation(13)]
    assert members["train"] == sorted(permuted[:7].tolist())
    assert members["val"] == sorted(permuted[7:9].tolist())
    assert _split_members(CelebAMaskHQProvider(root=celeba_root, split_seed=3)) == members
    assert _split_members(CelebAMaskHQProvider(root=celeba_root, split_seed=4)) != members


def test_celeba_attribute_values(celeba_root: Path) -> None:
    values = _celeba_values()
    data = CelebAMaskHQProvider(root=celeba_root).load("test", list(TASK_TO_ATTRIBUTE))
    for k, sample_id in enumerate(data.ids):
        _, targets = data[k]
        for task, attribute in TASK_TO_ATTRIBUTE.items():
            stored = values[int(sample_id)][CELEBA_ATTRIBUTES.index(attribute)]
            assert targets[task].shape == () and targets[task].dtype == torch.float32
            assert targets[task].item() == (1.0 if stored == 1 else 0.0)


def test_celeba_segmentation_and_resize(celeba_root: Path) -> None:
    size = (10, 12)
    data = CelebAMaskHQProvider(root=celeba_root, image_size=size).load("val", ALL_CELEBA)
    image, targets = data[0]
    assert image.shape == (3, *size)
    mask = Image.fromarray(_celeba_mask(int(data.ids[0]))).resize(size[::-1], Image.NEAREST)
    np.testing.assert_array_equal(targets["segmentation"].numpy(), np.asarray(mask))
    assert targets["segmentation"].dtype == torch.int64
    _, full = CelebAMaskHQProvider(root=celeba_root, image_size=(H, W)).load("val", ALL_CELEBA)[0]
    np.testing.assert_array_equal(full["segmentation"].numpy(), _celeba_mask(int(data.ids[0])))


def test_celeba_batches_fit_the_tasks(celeba_root: Path) -> None:
    provider = CelebAMaskHQProvider(root=celeba_root, image_size=(8, 8))
    images, targets = next(iter(DataLoader(provider.load("train", ALL_CELEBA), batch_size=4)))
    assert images.shape == (4, 3, 8, 8)
    for task in provider.tasks():
        shape = (4, task.out_channels, 8, 8) if task.level == "pixel" else (4, task.out_channels)
        pred = torch.randn(shape)
        assert torch.isfinite(task.loss(pred, targets[task.name]))
        task.meter().update(pred, targets[task.name])


def test_celeba_missing_files(celeba_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent"):
        CelebAMaskHQProvider(root=tmp_path / "absent").load("train", ["male"])
    provider = CelebAMaskHQProvider(root=celeba_root)
    victim = int(provider.load("train", ["male"]).ids[0])
    (celeba_root / "CelebA-HQ-segmask" / f"{victim:05d}_mask.npy").unlink()
    provider.load("train", ["male"])  # masks not requested: fine
    with pytest.raises(FileNotFoundError, match=f"{victim:05d}_mask.npy"):
        provider.load("train", ["segmentation"])
    annotation = celeba_root / "CelebAMask-HQ-attribute-anno.txt"
    annotation.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"not found: {annotation}")) as error:
        provider.load("train", ["male"])
    assert "CelebA-HQ-segmask" in str(error.value)


def test_celeba_rejects_malformed_annotation(celeba_root: Path) -> None:
    path = celeba_root / "CelebAMask-HQ-attribute-anno.txt"
    lines = path.read_text().splitlines()
    provider = CelebAMaskHQProvider(root=celeba_root)
    path.write_text("\n".join([lines[0], lines[1], lines[2].replace(" -1", " 0", 1), *lines[3:]]))
    with pytest.raises(ValueError, match="1 or -1"):
        provider.load("train", ["male"])
    path.write_text("\n".join(["99", *lines[1:]]))
    with pytest.raises(ValueError, match="first line"):
        provider.load("train", ["male"])


def test_celeba_rejects_bad_mask_labels(celeba_root: Path) -> None:
    provider = CelebAMaskHQProvider(root=celeba_root)
    victim = int(provider.load("val", ["segmentation"]).ids[0])
    np.save(celeba_root / "CelebA-HQ-segmask" / f"{victim:05d}_mask.npy", np.full((H, W), 3))
    with pytest.raises(ValueError, match="0..2"):
        provider.load("val", ["segmentation"])[0]


def test_celeba_provider_declares_tasks(tmp_path: Path) -> None:
    provider = CelebAMaskHQProvider(root=tmp_path)
    tasks = provider.tasks()
    assert [t.name for t in tasks] == ALL_CELEBA
    assert tasks[0].out_channels == 3 and tasks[0].level == "pixel"
    assert all(t.level == "image" and t.out_channels == 1 for t in tasks[1:])
    with pytest.raises(ValueError, match="no task"):
        provider.select_tasks(["eyeglasses"])
    with pytest.raises(ValidationError):
        CelebAMaskHQProvider(root=tmp_path, split_ratio=0.5)
