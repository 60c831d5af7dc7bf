"""Task losses and metrics checked against independent numpy / scikit-learn computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, jaccard_score

from sparsekit.tasks import (
    AttributeTask,
    ClassificationTask,
    DepthTask,
    EdgeTask,
    NormalsTask,
    SegmentationTask,
    Task,
)
from sparsekit.tasks.pixel import hu_depth_loss


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _seg_batch(seed: int = 0, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(seed)
    logits = rng.normal(size=(3, k, 4, 5))
    labels = rng.integers(0, k, size=(3, 4, 5))
    labels[rng.random(labels.shape) < 0.25] = 255
    return logits, labels


# --------------------------------------------------------------------------- segmentation


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_segmentation_loss_matches_numpy_smoothed_ce(eps: float) -> None:
    logits, labels = _seg_batch()
    k = logits.shape[1]
    logp = _log_softmax(logits, axis=1).transpose(0, 2, 3, 1).reshape(-1, k)
    flat = labels.reshape(-1)
    keep = flat != 255
    logp, flat = logp[keep], flat[keep]
    per_pixel = -(1 - eps) * logp[np.arange(len(flat)), flat] - eps / k * logp.sum(axis=1)
    expected = per_pixel.mean()

    task = SegmentationTask("seg", k, label_smoothing=eps)
    got = task.loss(torch.tensor(logits), torch.tensor(labels))
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_segmentation_loss_all_ignored_is_zero_with_finite_gradient() -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = SegmentationTask("seg", 3).loss(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()


def test_segmentation_meter_matches_sklearn() -> None:
    logits, labels = _seg_batch(seed=1, k=6)
    # Class 5 occurs in neither target nor prediction, so it must not enter the mean.
    logits[:, 5] = -1e3
    labels[labels == 5] = 0
    meter = SegmentationTask("seg", 6).meter()
    meter.update(torch.tensor(logits), torch.tensor(labels))
    got = meter.compute()

    y_true = labels.reshape(-1)
    y_pred = logits.argmax(axis=1).reshape(-1)
    keep = y_true != 255
    y_true, y_pred = y_true[keep], y_pred[keep]
    present = np.union1d(y_true, y_pred)
    assert 5 not in present
    expected_miou = jaccard_score(y_true, y_pred, labels=present, average="macro")
    assert got["miou"] == pytest.approx(expected_miou, rel=1e-12)
    assert got["pixel_acc"] == pytest.approx(accuracy_score(y_true, y_pred), rel=1e-12)
    np.testing.assert_array_equal(
        meter.confusion.numpy(), confusion_matrix(y_true, y_pred, labels=np.arange(6))
    )


def test_segmentation_meter_hand_computed() -> None:
    # target [0, 0, 1, 255], prediction [0, 1, 1, 0]: IoU_0 = 1/2, IoU_1 = 1/2, acc = 2/3.
    target = torch.tensor([[[0, 0, 1, 255]]])
    pred_labels = torch.tensor([[[0, 1, 1, 0]]])
    logits = torch.nn.functional.one_hot(pred_labels, 3).permute(0, 3, 1, 2).float()
    meter = SegmentationTask("seg", 3).meter()
    meter.update(logits, target)
    result = meter.compute()
    assert result["miou"] == pytest.approx(0.5)
    assert result["pixel_acc"] == pytest.approx(2 / 3)


def test_segmentation_meter_rejects_out_of_range_labels() -> None:
    meter = SegmentationTask("seg", 3).meter()
    with pytest.raises(ValueError, match="target labels"):
        meter.update(torch.zeros(1, 3, 1, 2), torch.tensor([[[0, 3]]]))


# --------------------------------------------------------------------------- depth


def _np_depth_loss(d: np.ndarray, g: np.ndarray, alpha: float = 0.5) -> float:
    """Hu et al. 2019 with forward differences, written pixel by pixel."""
    _, _, h, w = d.shape
    depth_terms, grad_terms, normal_terms = [], [], []
    for b in range(d.shape[0]):
        for i in range(h):
            for j in range(w):
                if g[b, 0, i, j] <= 0:
                    continue
                depth_terms.append(math.log(abs(d[b, 0, i, j] - g[b, 0, i, j]) + alpha))
                if i + 1 >= h or j + 1 >= w or g[b, 0, i, j + 1] <= 0 or g[b, 0, i + 1, j] <= 0:
                    continue
                dxd, dyd = d[b, 0, i, j + 1] - d[b, 0, i, j], d[b, 0, i + 1, j] - d[b, 0, i, j]
                dxg, dyg = g[b, 0, i, j + 1] - g[b, 0, i, j], g[b, 0, i + 1, j] - g[b, 0, i, j]
                grad_terms.append(
                    math.log(abs(dxd - dxg) + alpha) + math.log(abs(dyd - dyg) + alpha)
                )
                nd, ng = np.array([-dxd, -dyd, 1.0]), np.array([-dxg, -dyg, 1.0])
                normal_terms.append(1 - nd @ ng / (np.linalg.norm(nd) * np.linalg.norm(ng)))
    return float(np.mean(depth_terms) + np.mean(grad_terms) + np.mean(normal_terms))


def test_depth_loss_matches_numpy_reference() -> None:
    rng = _rng(2)
    pred = rng.uniform(0.5, 3.0, size=(2, 1, 4, 5))
    target = rng.uniform(0.5, 3.0, size=(2, 1, 4, 5))
    target[rng.random(target.shape) < 0.2] = 0.0
    got = DepthTask("depth").loss(torch.tensor(pred), torch.tensor(target))
    assert got.item() == pytest.approx(_np_depth_loss(pred, target), rel=1e-10)


def test_depth_loss_at_perfect_prediction_is_three_log_alpha() -> None:
    target = torch.rand(1, 1, 5, 6) + 0.5
    loss = hu_depth_loss(target.clone(), target)
    assert loss.item() == pytest.approx(3 * math.log(0.5), rel=1e-6)


def test_depth_loss_gradient_matches_finite_differences() -> None:
    torch.manual_seed(0)
    pred = (torch.rand(1, 1, 3, 4, dtype=torch.float64) + 1).requires_grad_()
    target = torch.rand(1, 1, 3, 4, dtype=torch.float64) * 3
    target[0, 0, 1, 1] = 0
    assert torch.autograd.gradcheck(lambda p: hu_depth_loss(p, target), (pred,))


def test_depth_meter_matches_numpy_and_ignores_invalid() -> None:
    rng = _rng(3)
    pred = rng.normal(size=(3, 1, 4, 4))
    target = rng.uniform(0, 2, size=(3, 1, 4, 4))
    target[rng.random(target.shape) < 0.3] = 0.0
    meter = DepthTask("depth").meter()
    meter.update(torch.tensor(pred), torch.tensor(target))
    err = (pred - target)[target > 0]
    result = meter.compute()
    assert result["mae"] == pytest.approx(np.abs(err).mean(), rel=1e-12)
    assert result["rmse"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-12)


# --------------------------------------------------------------------------- normals


def _normals_batch(seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(seed)
    pred = rng.normal(size=(3, 3, 4, 4))
    target = rng.normal(size=(3, 3, 4, 4))
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    target[:, :, 0, :2] = 0.0
    return pred, target


def _np_cosines(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    p = pred.transpose(0, 2, 3, 1).reshape(-1, 3)
    t = target.transpose(0, 2, 3, 1).reshape(-1, 3)
    tn = np.linalg.norm(t, axis=1)
    keep = tn > 0
    p, t, tn = p[keep], t[keep], tn[keep]
    return (p * t).sum(axis=1) / (np.linalg.norm(p, axis=1) * tn)


def test_normals_loss_matches_numpy() -> None:
    pred, target = _normals_batch()
    got = NormalsTask("normals").loss(torch.tensor(pred), torch.tensor(target))
    assert got.item() == pytest.approx((1 - _np_cosines(pred, target)).mean(), rel=1e-10)


def test_normals_meter_matches_numpy() -> None:
    pred, target = _normals_batch()
    meter = NormalsTask("normals").meter()
    meter.update(torch.tensor(pred), torch.tensor(target))
    cos = _np_cosines(pred, target)
    result = meter.compute()
    assert result["cosine"] == pytest.approx(cos.mean(), rel=1e-12)
    assert result["mean_angle"] == pytest.approx(np.degrees(np.arccos(cos)).mean(), rel=1e-10)


def test_normals_perfect_prediction() -> None:
    _, target = _normals_batch()
    t = torch.tensor(target)
    task = NormalsTask("normals")
    assert task.loss(2.5 * t, t).item() == pytest.approx(0.0, abs=1e-12)
    meter = task.meter()
    meter.update(2.5 * t, t)
    assert meter.compute()["cosine"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- edges


@pytest.mark.parametrize("delta", [0.2, 0.3, 0.5])
def test_edge_loss_is_huber(delta: float) -> None:
    rng = _rng(5)
    pred = rng.normal(0.5, 0.6, size=(2, 1, 3, 4))
    target = rng.uniform(0, 1, size=(2, 1, 3, 4))
    r = np.abs(pred - target)
    expected = np.where(r < delta, 0.5 * r**2, delta * (r - 0.5 * delta)).mean()
    got = EdgeTask("edges", delta=delta).loss(torch.tensor(pred), torch.tensor(target))
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_edge_meter_is_mae_over_all_pixels() -> None:
    rng = _rng(6)
    pred, target = rng.normal(size=(2, 1, 3, 3)), rng.uniform(size=(2, 1, 3, 3))
    meter = EdgeTask("edges").meter()
    meter.update(torch.tensor(pred), torch.tensor(target))
    assert meter.compute()["mae"] == pytest.approx(np.abs(pred - target).mean(), rel=1e-12)


# --------------------------------------------------------------------------- image level


def test_attribute_loss_is_bce_with_one_sigmoid() -> None:
    rng = _rng(7)
    z = rng.normal(scale=2.0, size=(6, 1))
    y = rng.integers(0, 2, size=6).astype(np.float64)
    s = 1 / (1 + np.exp(-z[:, 0]))
    expected = -(y * np.log(s) + (1 - y) * np.log(1 - s)).mean()
    task = AttributeTask("male")
    assert task.loss(torch.tensor(z), torch.tensor(y)).item() == pytest.approx(expected, rel=1e-10)
    # A squeezed [B] output gives the same loss.
    got_flat = task.loss(torch.tensor(z[:, 0]), torch.tensor(y))
    assert got_flat.item() == pytest.approx(expected, rel=1e-10)


def test_attribute_accuracy_matches_sklearn() -> None:
    rng = _rng(8)
    z = rng.normal(size=(9, 1))
    y = rng.integers(0, 2, size=9).astype(np.float32)
    meter = AttributeTask("smiling").meter()
    meter.update(torch.tensor(z), torch.tensor(y))
    expected = accuracy_score(y.astype(int), (z[:, 0] > 0).astype(int))
    assert meter.compute()["accuracy"] == pytest.approx(expected)


def test_attribute_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="expected logits"):
        AttributeTask("male").loss(torch.zeros(4, 2), torch.zeros(4))


def test_classification_loss_and_accuracy() -> None:
    rng = _rng(9)
    logits = rng.normal(size=(7, 5))
    y = rng.integers(0, 5, size=7)
    expected_loss = -_log_softmax(logits, axis=1)[np.arange(7), y].mean()
    task = ClassificationTask("cls", 5)
    got = task.loss(torch.tensor(logits), torch.tensor(y))
    assert got.item() == pytest.approx(expected_loss, rel=1e-10)
    meter = task.meter()
    meter.update(torch.tensor(logits), torch.tensor(y))
    expected_acc = accuracy_score(y, logits.argmax(axis=1))
    assert meter.compute()["accuracy"] == pytest.approx(expected_acc)


# --------------------------------------------------------------------------- common contract


def _example(task_name: str) -> tuple[Task, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10)
    b, h, w = 5, 4, 3
    if task_name == "seg":
        target = torch.randint(0, 4, (b, h, w), generator=g)
        target[torch.rand(b, h, w, generator=g) < 0.3] = 255
        return SegmentationTask("seg", 4), torch.randn(b, 4, h, w, generator=g), target
    if task_name == "depth":
        target = torch.rand(b, 1, h, w, generator=g) * (torch.rand(b, 1, h, w, generator=g) > 0.3)
        return DepthTask("depth"), torch.randn(b, 1, h, w, generator=g), target
    if task_name == "normals":
        target = torch.nn.functional.normalize(torch.randn(b, 3, h, w, generator=g), dim=1)
        target[:, :, 0] = 0
        return NormalsTask("normals"), torch.randn(b, 3, h, w, generator=g), target
    if task_name == "edges":
        return EdgeTask("edges"), torch.randn(b, 1, h, w, generator=g), torch.rand(b, 1, h, w)
    if task_name == "attribute":
        target = torch.randint(0, 2, (b,), generator=g).float()
        return AttributeTask("male"), torch.randn(b, 1, generator=g), target
    target = torch.randint(0, 3, (b,), generator=g)
    return ClassificationTask("cls", 3), torch.randn(b, 3, generator=g), target


TASK_KINDS = ["seg", "depth", "normals", "edges", "attribute", "cls"]


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_metrics_do_not_depend_on_batch_size(kind: str) -> None:
    task, pred, target = _example(kind)
    whole = task.meter()
    whole.update(pred, target)
    one_by_one = task.meter()
    for i in range(pred.shape[0]):
        one_by_one.update(pred[i : i + 1], target[i : i + 1])
    expected = whole.compute()
    assert set(expected) == set(task.metrics)
    assert task.primary_metric in expected
    for key, value in one_by_one.compute().items():
        assert value == pytest.approx(expected[key], rel=1e-12)


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_empty_meter_gives_nan(kind: str) -> None:
    task, _, _ = _example(kind)
    assert all(math.isnan(v) for v in task.meter().compute().values())


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_loss_is_scalar_and_differentiable(kind: str) -> None:
    task, pred, target = _example(kind)
    pred.requires_grad_()
    loss = task.loss(pred, target)
    loss.backward()
    assert loss.dim() == 0
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("task", "level", "out"),
    [
        (SegmentationTask("s", 40), "pixel", 40),
        (DepthTask("d"), "pixel", 1),
        (NormalsTask("n"), "pixel", 3),
        (EdgeTask("e"), "pixel", 1),
        (AttributeTask("a"), "image", 1),
        (ClassificationTask("c", 7), "image", 7),
    ],
)
def test_task_declarations(task: Task, level: str, out: int) -> None:
    assert (task.level, task.out_channels) == (level, out)
    assert task.primary_metric in task.metrics


@pytest.mark.parametrize("kind", ["depth", "normals", "edges"])
def test_dense_tasks_reject_mismatched_shapes(kind: str) -> None:
    task, pred, target = _example(kind)
    with pytest.raises(ValueError, match="differs from target shape"):
        task.loss(pred[..., :-1], target)
