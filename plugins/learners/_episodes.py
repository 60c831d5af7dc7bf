"""Learning episodes for meta-training: task subsets with disjoint support and query batches.

An episode is a non-empty subset of the trained tasks (Meta-Sparsity, Eq. 9: the power set of the N
tasks without the empty set, 2^N − 1 episodes) together with a support batch, on which the inner
loop adapts, and a query batch, on which the adapted model is scored. Both batches come from the
training split only and never share an example.

References:
    Upadhyay et al., "Meta-Sparsity: Learning Optimal Sparse Structures in Multi-task Networks
    through Meta-learning" (Eq. 9, Algorithm 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

Episode = tuple[str, ...]


def power_set_episodes(task_names: Sequence[str], min_tasks: int = 1) -> list[Episode]:
    """Every subset of ``task_names`` with at least ``min_tasks`` tasks, smallest first.

    Tasks keep their order inside an episode; episodes of one size are in lexicographic order of
    task positions, so the list is the same on every run.

    Args:
        task_names: the trained tasks, without repeats.
        min_tasks: the fewest tasks an episode may hold (1 gives all 2^N − 1 episodes, 2 only the
            multi-task ones).

    Returns:
        The episodes as tuples of task names.

    Raises:
        ValueError: no tasks, repeated names, or ``min_tasks`` outside ``[1, N]``.
    """
    names = list(task_names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"episodes need a non-empty list of distinct tasks, got {names}")
    if not 1 <= min_tasks <= len(names):
        raise ValueError(
            f"min_tasks must be between 1 and the number of tasks ({len(names)}), got {min_tasks}"
        )
    return [
        episode
        for size in range(min_tasks, len(names) + 1)
        for episode in combinations(names, size)
    ]


def resolve_episodes(
    task_names: Sequence[str],
    episodes: Sequence[Sequence[str]] | None = None,
    min_tasks: int = 1,
) -> list[Episode]:
    """The episodes to sample from: an explicit list, validated, or the power set.

    Args:
        task_names: the trained tasks.
        episodes: an explicit list of task subsets, or None for the power set.
        min_tasks: with ``episodes=None``, the fewest tasks per episode; with an explicit list,
            every episode must hold at least this many tasks.

    Returns:
        Episodes as tuples, each in the order of ``task_names``, without duplicates.

    Raises:
        ValueError: an episode is empty, repeats a task, names a task that is not trained, is
            smaller than ``min_tasks``, or appears twice.
    """
    if episodes is None:
        return power_set_episodes(task_names, min_tasks)
    order = {name: index for index, name in enumerate(task_names)}
    resolved: list[Episode] = []
    for episode in episodes:
        unknown = [name for name in episode if name not in order]
        if unknown:
            raise ValueError(
                f"episode {list(episode)} names unknown task(s) {unknown}; the trained tasks are "
                f"{list(task_names)}"
            )
        if not episode or len(set(episode)) != len(episode):
            raise ValueError(
                f"an episode is a non-empty list of distinct tasks, got {list(episode)}"
            )
        if len(episode) < min_tasks:
            raise ValueError(f"episode {list(episode)} has fewer than min_tasks={min_tasks} tasks")
        canonical = tuple(sorted(episode, key=order.__getitem__))
        if canonical in resolved:
            raise ValueError(f"episode {list(episode)} is listed twice")
        resolved.append(canonical)
    if not resolved:
        raise ValueError("the explicit episode list is empty")
    return resolved


@dataclass
class EpisodeBatch:
    """One episode's data.

    Attributes:
        tasks: the episode's tasks.
        support: ``(images, {task: target})`` for the inner-loop adaptation.
        query: ``(images, {task: target})`` for the meta-objective.
        support_indices: positions in the training split of the support examples.
        query_indices: positions in the training split of the query examples.
    """

    tasks: Episode
    support: tuple[Tensor, dict[str, Tensor]]
    query: tuple[Tensor, dict[str, Tensor]]
    support_indices: Tensor
    query_indices: Tensor

    def to(self, device: torch.device) -> EpisodeBatch:
        """The batch with its tensors on ``device``."""

        def move(batch: tuple[Tensor, dict[str, Tensor]]) -> tuple[Tensor, dict[str, Tensor]]:
            images, targets = batch
            return images.to(device), {k: v.to(device) for k, v in targets.items()}

        return EpisodeBatch(
            self.tasks,
            move(self.support),
            move(self.query),
            self.support_indices,
            self.query_indices,
        )


class EpisodeStream:
    """Samples episodes uniformly and draws disjoint support and query batches for each.

    Examples are taken without replacement from a seeded permutation of the training split: each
    episode consumes the next ``2·batch_size`` positions, the first half as support and the second
    as query, and a new permutation starts when fewer remain (the tail is dropped rather than
    wrapped, so an episode never straddles two permutations and its two batches are disjoint).
    Every training example is therefore used once per pass, as support or as query.

    Args:
        train: the training split (the only data meta-training may read).
        episodes: the task subsets to sample from, uniformly.
        batch_size: examples in the support batch, and again in the query batch.
        generator: the seeded source of every random choice.
        pool: the positions of ``train`` the stream may use (all of them when None); the
            reported indices are positions in ``train`` either way.

    Raises:
        ValueError: no episodes, or the pool holds fewer than ``2·batch_size`` examples.
    """

    def __init__(
        self,
        train: Dataset,
        episodes: Sequence[Episode],
        batch_size: int,
        generator: torch.Generator,
        pool: Tensor | None = None,
    ) -> None:
        if not episodes:
            raise ValueError("an episode stream needs at least one episode")
        size = len(train) if pool is None else pool.numel()  # type: ignore[arg-type]
        if batch_size < 1 or 2 * batch_size > size:
            where = "the training split has" if pool is None else "its part of the split has"
            raise ValueError(
                f"disjoint support and query batches of {batch_size} need at least "
                f"{2 * batch_size} training examples, {where} {size}"
            )
        self.train = train
        self.episodes = list(episodes)
        self.batch_size = batch_size
        self.generator = generator
        self.pool = pool
        self._size = size
        self._order = torch.empty(0, dtype=torch.long)
        self._position = 0

    def state_dict(self) -> dict[str, Any]:
        """The current pass's order and the position in it (the generator is saved apart)."""
        return {"order": self._order.clone(), "position": self._position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back a state from :meth:`state_dict`."""
        self._order, self._position = state["order"].clone(), int(state["position"])

    def sample_tasks(self) -> Episode:
        """One episode's tasks, uniformly among the episodes."""
        index = int(torch.randint(len(self.episodes), (1,), generator=self.generator))
        return self.episodes[index]

    def _next_indices(self) -> Tensor:
        needed = 2 * self.batch_size
        if self._position + needed > self._order.numel():
            order = torch.randperm(self._size, generator=self.generator)
            self._order = order if self.pool is None else self.pool[order]
            self._position = 0
        indices = self._order[self._position : self._position + needed]
        self._position += needed
        return indices

    def _fetch(self, indices: Tensor, tasks: Episode) -> tuple[Tensor, dict[str, Tensor]]:
        images, targets = default_collate([self.train[int(i)] for i in indices])
        return images, {name: targets[name] for name in tasks}

    def next(self) -> EpisodeBatch:
        """The next episode: its tasks, then its support and query batches for those tasks."""
        tasks = self.sample_tasks()
        indices = self._next_indices()
        support, query = indices[: self.batch_size], indices[self.batch_size :]
        return EpisodeBatch(
            tasks, self._fetch(support, tasks), self._fetch(query, tasks), support, query
        )


def split_holdout(size: int, fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Positions ``0..size-1`` split at random into (kept, held out), ``round(fraction·size)``
    of them held out; both sorted.
    """
    order = torch.randperm(size, generator=generator)
    held = int(round(fraction * size))
    return order[held:].sort().values, order[:held].sort().values


class HeldOutBatches:
    """Batches from the held-out part of the training split, for λ's meta-gradient.

    Meta-training never adapts on these examples nor steps Θ_meta with their gradient; each
    episode scores its adapted clone on one batch of them, and only λ is differentiated through
    that score (the training/validation split of Luketina et al. 2016, both parts taken from the
    training split so that the validation split keeps its one role, early stopping). Positions are
    drawn without replacement from a seeded permutation of the held-out part, a new permutation
    starting when fewer than ``batch_size`` remain.

    Args:
        train: the training split.
        pool: the held-out positions of ``train``.
        batch_size: examples per batch.
        generator: the seeded source of the order.

    Raises:
        ValueError: the held-out part is smaller than one batch.
    """

    def __init__(
        self, train: Dataset, pool: Tensor, batch_size: int, generator: torch.Generator
    ) -> None:
        if pool.numel() < batch_size:
            raise ValueError(
                f"lam_holdout keeps {pool.numel()} training examples for λ, fewer than one "
                f"batch of {batch_size}; hold out a larger fraction"
            )
        self.train, self.pool, self.batch_size, self.generator = train, pool, batch_size, generator
        self._order = torch.empty(0, dtype=torch.long)
        self._position = 0

    def state_dict(self) -> dict[str, Any]:
        """The current pass's order and the position in it (the generator is saved apart)."""
        return {"order": self._order.clone(), "position": self._position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back a state from :meth:`state_dict`."""
        self._order, self._position = state["order"].clone(), int(state["position"])

    def next(self, tasks: Episode) -> tuple[tuple[Tensor, dict[str, Tensor]], Tensor]:
        """The next held-out batch for ``tasks`` and its positions in the training split."""
        if self._position + self.batch_size > self._order.numel():
            self._order = self.pool[torch.randperm(self.pool.numel(), generator=self.generator)]
            self._position = 0
        indices = self._order[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        images, targets = default_collate([self.train[int(i)] for i in indices])
        return (images, {name: targets[name] for name in tasks}), indices
