"""Own data as a data set: from_tensors and from_dataset, their splits, checks and records."""

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from sparsekit.data import IN_MEMORY, InMemoryData, from_dataset, from_tensors
from sparsekit.data.in_memory import recorded_tasks
from sparsekit.errors import ConfigError
from sparsekit.tasks import (
    AttributeTask,
    ClassificationTask,
    DepthTask,
    NormalsTask,
    SegmentationTask,
)

N, SIZE = 20, 8


def data(seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(N, 3, SIZE, SIZE, generator=gen)
    targets = {
        "segmentation": torch.randint(0, 4, (N, SIZE, SIZE), generator=gen),
        "depth": torch.rand(N, SIZE, SIZE, generator=gen),  # one channel, without its axis
        "normals": torch.randn(N, 3, SIZE, SIZE, generator=gen),
        "kind": torch.randint(0, 3, (N,), generator=gen),
        "smile": torch.randint(0, 2, (N,), generator=gen),
    }
    return images, targets


def tasks() -> list:
    return [
        SegmentationTask("segmentation", num_classes=4),
        DepthTask(),
        NormalsTask(),
        ClassificationTask("kind", 3),
        AttributeTask("smile"),
    ]


def test_from_tensors_splits_by_seed_into_disjoint_splits_of_the_stated_fractions():
    images, targets = data()
    provider = from_tensors(images, targets, tasks(), seed=3)
    assert isinstance(provider, InMemoryData) and provider.in_channels == 3
    splits = {s: provider.load(s, None) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 12, "val": 4, "test": 4}
    seen = [tuple(d.images.flatten(1)[:, 0].tolist()) for d in splits.values()]
    assert len(set(sum(seen, ()))) == N  # every image once
    again = from_tensors(images, targets, tasks(), seed=3).load("val", None)
    assert torch.equal(again.images, splits["val"].images)
    other = from_tensors(images, targets, tasks(), seed=4).load("val", None)
    assert not torch.equal(other.images, splits["val"].images)


def test_targets_take_the_form_their_tasks_train_on():
    images, targets = data()
    image, target = from_tensors(images, targets, tasks()).load("train", None)[0]
    assert image.shape == (3, SIZE, SIZE)
    assert target["segmentation"].dtype == torch.int64
    assert target["depth"].shape == (1, SIZE, SIZE) and target["depth"].dtype == torch.float32
    assert target["kind"].dtype == torch.int64 and target["smile"].dtype == torch.float32


def test_explicit_splits_are_used_as_given_and_a_subset_of_tasks_loads():
    images, targets = data()
    splits = {"train": range(0, 10), "val": [10, 11, 12], "test": torch.tensor([15, 19])}
    provider = from_tensors(images, targets, tasks(), splits=splits)
    test = provider.load("test", ["depth"])
    assert torch.equal(test.images, images[[15, 19]]) and test.task_names == ["depth"]
    assert provider.spec()["split_seed"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda im, t: (im[:5], t), r"task 'segmentation': 20 targets for 5 images"),
        (lambda im, t: (im, {**t, "segmentation": t["segmentation"] + 3}), r"in \[0, 4\)"),
        (lambda im, t: (im, {**t, "kind": t["kind"] - 1}), r"'kind': labels must be in \[0, 3\)"),
        (lambda im, t: (im, {**t, "depth": t["depth"][:, :4]}), r"'depth': expected maps"),
        (lambda im, t: (im, {**t, "segmentation": t["segmentation"] + 0.5}), "integers"),
        (lambda im, t: (im[:, 0], t), r"images must be a float tensor \[N, C, H, W\]"),
        (
            lambda im, t: (im, {k: v for k, v in t.items() if k != "smile"}),
            r"no target for \['smile",
        ),
    ],
)
def test_mismatched_images_and_targets_are_clear_config_errors(change, message):
    images, targets = change(*data())
    with pytest.raises(ConfigError, match=message):
        from_tensors(images, targets, tasks())


def test_ignored_segmentation_labels_are_allowed():
    images, targets = data()
    targets["segmentation"][0, 0, 0] = 255
    from_tensors(images, targets, tasks())


@pytest.mark.parametrize(
    "splits",
    [
        {"train": [0, 1], "val": [1], "test": [2]},  # overlapping
        {"train": [0, 1], "val": [], "test": [2]},  # empty
        {"train": [0, 1], "val": [20], "test": [2]},  # out of range
        {"train": [0, 1], "test": [2]},  # missing
    ],
)
def test_bad_splits_are_clear_config_errors(splits):
    images, targets = data()
    with pytest.raises(ConfigError, match="splits"):
        from_tensors(images, targets, tasks(), splits=splits)


def test_too_few_samples_for_three_splits():
    images, targets = data()
    two = {k: v[:2] for k, v in targets.items()}
    with pytest.raises(ConfigError, match="too few"):
        from_tensors(images[:2], two, tasks())


class Pairs(Dataset):
    """(image, {task: target}) pairs, or (image, bare target) for one task."""

    def __init__(self, bare: bool = False):
        self.images, self.targets = data()
        self.bare = bare

    def __len__(self):
        return N

    def __getitem__(self, index):
        if self.bare:
            return self.images[index], int(self.targets["kind"][index])
        return self.images[index], {k: v[index] for k, v in self.targets.items()}


def test_from_dataset_splits_a_torch_dataset_and_conforms_its_targets():
    provider = from_dataset(Pairs(), tasks(), seed=1)
    assert [len(provider.load(s, None)) for s in ("train", "val", "test")] == [12, 4, 4]
    image, target = provider.load("val", ["depth", "kind"])[0]
    assert set(target) == {"depth", "kind"} and target["depth"].shape == (1, SIZE, SIZE)
    assert provider.spec()["source"] == "dataset" and provider.spec()["val_fraction"] == 0.2


def test_from_dataset_takes_a_dataset_per_split_and_bare_targets_of_one_task():
    images = torch.randn(6, 1, SIZE, SIZE)
    split = TensorDataset(images, torch.tensor([0, 1, 2, 0, 1, 2]))
    provider = from_dataset(
        {"train": split, "val": split, "test": split}, [ClassificationTask("kind", 3)]
    )
    assert provider.in_channels == 1
    _, target = provider.load("train", None)[2]
    assert target == {"kind": torch.tensor(2)}


def test_from_dataset_checks_the_first_sample_of_every_split():
    with pytest.raises(ConfigError, match=r"'kind': labels must be in \[0, 2\)"):
        from_dataset(Pairs(bare=True), [ClassificationTask("kind", 2)], splits=None, seed=0)
    with pytest.raises(ConfigError, match="first sample"):
        from_dataset(Pairs(), [DepthTask("no_such_target")])


def test_a_run_records_the_tasks_and_channels_and_they_rebuild_heads_only():
    images, targets = data()
    spec = from_tensors(images, targets, tasks()).spec()
    assert spec["name"] == IN_MEMORY == "in_memory" and spec["in_channels"] == 3
    assert spec["tasks"][0] == {
        "name": "segmentation",
        "class": "sparsekit.tasks.pixel.SegmentationTask",
        "level": "pixel",
        "out_channels": 4,
    }
    recorded, channels = recorded_tasks(spec)
    assert channels == 3
    assert [(t.name, t.level, t.out_channels) for t in recorded] == [
        (t.name, t.level, t.out_channels) for t in tasks()
    ]
    with pytest.raises(ConfigError, match="given in memory"):
        recorded[0].loss(torch.zeros(1), torch.zeros(1))
