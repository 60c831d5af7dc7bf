"""Episodes: the power set of tasks, sampled uniformly, with disjoint training-only batches."""

from __future__ import annotations

import math
from itertools import combinations

import pytest
import torch
from torch.utils.data import Dataset

from sparsekit.config import build_config
from sparsekit.data.tensor_dataset import MultiTaskTensorDataset
from sparsekit.engine import loop
from sparsekit.engine.resolve import train_settings
from sparsekit.interfaces import TrainingContext
from sparsekit.nn import MultiTaskNet
from sparsekit.tasks import AttributeTask, DepthTask
from sparsekit_plugins.learners._episodes import EpisodeStream, power_set_episodes, resolve_episodes
from sparsekit_plugins.learners.anil import ANILLearner
from sparsekit_plugins.learners.maml import MAMLLearner
from sparsekit_plugins.loss_combiners.uncertainty import UncertaintyWeighting
from sparsekit_plugins.penalties.group_lasso import GroupLassoPenalty

NAMES = ["a", "b", "c", "d"]


def dataset(n: int, seed: int = 0) -> MultiTaskTensorDataset:
    gen = torch.Generator().manual_seed(seed)
    return MultiTaskTensorDataset(
        torch.randn(n, 3, 4, 4, generator=gen),
        {
            "a": torch.arange(n, dtype=torch.float32),
            "b": torch.randn(n, 2, generator=gen),
            "c": torch.randn(n, generator=gen),
        },
    )


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_power_set_has_every_non_empty_subset_once(n):
    names = NAMES[:n]
    episodes = power_set_episodes(names)
    assert len(episodes) == 2**n - 1 == len(set(episodes))
    expected = {frozenset(c) for k in range(1, n + 1) for c in combinations(names, k)}
    assert {frozenset(e) for e in episodes} == expected
    assert [len(e) for e in episodes] == sorted(len(e) for e in episodes)
    multi = power_set_episodes(names, min_tasks=2) if n >= 2 else []
    assert len(multi) == 2**n - 1 - n and all(len(e) >= 2 for e in multi)


def test_explicit_episodes_are_validated():
    assert resolve_episodes(NAMES, [["c", "a"], ["b"]]) == [("a", "c"), ("b",)]
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['x'\].*trained tasks"):
        resolve_episodes(NAMES, [["a", "x"]])
    with pytest.raises(ValueError, match="non-empty"):
        resolve_episodes(NAMES, [[]])
    with pytest.raises(ValueError, match="distinct"):
        resolve_episodes(NAMES, [["a", "a"]])
    with pytest.raises(ValueError, match="twice"):
        resolve_episodes(NAMES, [["a", "b"], ["b", "a"]])
    with pytest.raises(ValueError, match="min_tasks=2"):
        resolve_episodes(NAMES, [["a"]], min_tasks=2)
    with pytest.raises(ValueError, match="min_tasks"):
        power_set_episodes(NAMES, min_tasks=5)


def test_support_and_query_are_disjoint_training_examples():
    train = dataset(30)
    stream = EpisodeStream(
        train, power_set_episodes(["a", "b", "c"]), 7, torch.Generator().manual_seed(1)
    )
    uses = torch.zeros(30, dtype=torch.long)
    for _ in range(40):
        batch = stream.next()
        support, query = batch.support_indices, batch.query_indices
        assert len(support) == len(query) == 7
        assert not set(support.tolist()) & set(query.tolist())
        assert len(set(support.tolist()) | set(query.tolist())) == 14
        both = torch.cat([support, query])
        assert 0 <= int(both.min()) and int(both.max()) < 30
        uses[support] += 1
        uses[query] += 1
        # The batches are exactly the training examples at those positions, for the episode's tasks.
        images, targets = batch.support
        torch.testing.assert_close(images, train.images[support])
        assert set(targets) == set(batch.tasks)
        for task in batch.tasks:
            torch.testing.assert_close(targets[task], train.targets[task][support])
        torch.testing.assert_close(batch.query[0], train.images[query])
    # 2 episodes fit in one pass of 30 (28 examples), so 40 episodes are 20 passes.
    assert int(uses.sum()) == 40 * 14 and int(uses.max()) <= 20


def test_episodes_are_sampled_uniformly_and_reproducibly():
    episodes = power_set_episodes(["a", "b", "c"])
    stream = EpisodeStream(dataset(4), episodes, 1, torch.Generator().manual_seed(2))
    draws = [stream.sample_tasks() for _ in range(7000)]
    counts = [draws.count(e) for e in episodes]
    expected = 1000
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < 22.5  # the 0.999 quantile of chi-square with 6 degrees of freedom
    again = EpisodeStream(dataset(4), episodes, 1, torch.Generator().manual_seed(2))
    assert [again.sample_tasks() for _ in range(50)] == draws[:50]
    first = EpisodeStream(dataset(10), episodes, 2, torch.Generator().manual_seed(3)).next()
    second = EpisodeStream(dataset(10), episodes, 2, torch.Generator().manual_seed(3)).next()
    assert first.tasks == second.tasks
    assert torch.equal(first.support_indices, second.support_indices)


def test_too_small_a_training_split_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 16 training examples.*has 10"):
        EpisodeStream(dataset(10), [("a",)], 8, torch.Generator())


class Counting(Dataset):
    """A data set that counts how often it is read."""

    def __init__(self, inner: Dataset) -> None:
        self.inner, self.reads = inner, 0

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        self.reads += 1
        return self.inner[index]


def tiny_net() -> MultiTaskNet:
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU()
    )
    heads = {
        "depth": torch.nn.Conv2d(4, 1, 1),
        "attr": torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 1)
        ),
    }
    return MultiTaskNet(backbone, heads, {"depth"}, 4)


@pytest.mark.parametrize(
    "learner", [MAMLLearner(batch_size=4), ANILLearner(batch_size=4)], ids=["maml", "anil"]
)
def test_meta_training_reads_only_the_training_split(monkeypatch, learner):
    gen = torch.Generator().manual_seed(0)
    n = 24

    def split() -> Counting:
        return Counting(
            MultiTaskTensorDataset(
                torch.randn(n, 3, 8, 8, generator=gen),
                {
                    "depth": torch.rand(n, 1, 8, 8, generator=gen) + 0.5,
                    "attr": torch.randint(0, 2, (n,), generator=gen).float(),
                },
            )
        )

    train, val = split(), split()
    # Evaluation is the one place the validation split may be read; it is replaced by a stub
    # that reads nothing, so any read left must come from meta-training itself.
    monkeypatch.setattr(loop, "evaluate", lambda *args, **kwargs: (1.0, {}))
    context = TrainingContext(
        model=tiny_net(),
        tasks=[DepthTask("depth"), AttributeTask("attr")],
        train=train,
        val=val,
        penalty=GroupLassoPenalty(),
        lam="learned",
        combiner=UncertaintyWeighting(["depth", "attr"], 0.0),
        settings=train_settings(build_config({"steps": 3, "eval_every": 1, "device": "cpu"})),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(1),
    )
    history = learner.fit(context)
    assert val.reads == 0
    per_step = learner.config.episodes_per_batch * 2 * 4
    assert train.reads == 3 * per_step
    assert len(history.lam_history) == 3 and math.isfinite(history.profile[-1]["lam"])
