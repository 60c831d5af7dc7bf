"""Schedulers: properties over their whole configuration space, and the published formulas."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsekit_plugins.schedulers import (
    IterativeScheduler,
    OneShotScheduler,
    ProgressiveScheduler,
    SparseTrainingScheduler,
)

targets = st.floats(0.0, 0.99, allow_nan=False)
totals = st.integers(1, 400)


def schedulers():
    return st.one_of(
        st.builds(OneShotScheduler, at=st.floats(0.0, 0.99)),
        st.builds(
            IterativeScheduler,
            rounds=st.integers(1, 8),
            start=st.floats(0.0, 0.9),
            rule=st.sampled_from(["geometric", "linear"]),
        ),
        st.tuples(st.floats(0.0, 0.8), st.floats(0.05, 0.2), st.integers(1, 30), st.floats(0, 0.5))
        .filter(lambda t: t[0] + t[1] <= 1.0)
        .map(
            lambda t: ProgressiveScheduler(
                start=t[0], end=t[0] + t[1], update_every=t[2], initial=t[3]
            )
        ),
        st.builds(
            SparseTrainingScheduler,
            regrowth=st.sampled_from([None, "random", "gradient"]),
            update_every=st.integers(1, 60),
            end=st.floats(0.0, 1.0),
        ),
    )


@settings(max_examples=300, deadline=None)
@given(schedulers(), targets, totals)
def test_schedules_stay_in_range_end_at_the_target_and_never_decrease(scheduler, target, total):
    schedule = scheduler.schedule(target, total)
    levels = [schedule.sparsity_at(step) for step in range(total + 1)]
    assert all(0.0 <= level <= target for level in levels)
    assert levels[-1] == target
    assert schedule.dense_to_sparse
    assert all(b >= a for a, b in zip(levels, levels[1:], strict=False))
    updates = [step for step in range(total + 1) if schedule.is_update_step(step)]
    assert updates == list(schedule.update_steps)
    # Between update steps the sparsity is constant; it changes only at an update step.
    for step in range(1, total + 1):
        if levels[step] != levels[step - 1]:
            assert schedule.is_update_step(step)
    # From the settled step on, the sparsity is final.
    assert all(level == target for level in levels[schedule.settled_step :])


@settings(max_examples=200, deadline=None)
@given(
    target=st.floats(0.05, 0.95),
    total=st.integers(50, 2000),
    start=st.floats(0.0, 0.4),
    span=st.floats(0.2, 0.6),
    every=st.integers(1, 25),
    initial=st.floats(0.0, 0.04),
)
def test_progressive_follows_the_cubic_schedule_of_zhu_and_gupta(
    target, total, start, span, every, initial
):
    scheduler = ProgressiveScheduler(
        start=start, end=start + span, update_every=every, initial=initial
    )
    schedule = scheduler.schedule(target, total)
    t0 = math.floor(start * total)
    n = (max(t0, math.floor((start + span) * total)) - t0) // every
    if n == 0:
        assert schedule.update_steps == (t0,) and schedule.levels == (target,)
        return
    # Zhu & Gupta 2017, eq. (1): s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³ for t = t0 + jΔt.
    for j in range(n + 1):
        t = t0 + j * every
        expected = target + (initial - target) * (1 - (t - t0) / (n * every)) ** 3
        assert schedule.is_update_step(t)
        assert schedule.sparsity_at(t) == pytest.approx(expected, abs=1e-12)
    assert schedule.sparsity_at(t0 - 1) == 0.0 if t0 > 0 else True


@pytest.mark.parametrize("rule", ["geometric", "linear"])
def test_iterative_rounds_are_evenly_spaced_with_the_documented_levels(rule):
    schedule = IterativeScheduler(rounds=4, start=0.2, rule=rule).schedule(0.6, 100)
    assert schedule.update_steps == (20, 40, 60, 80)
    if rule == "geometric":
        # The same share of the remaining weights in every round: (1 − s_i) = 0.4^{(i+1)/4}.
        expected = [1 - 0.4 ** ((i + 1) / 4) for i in range(4)]
    else:
        expected = [0.15, 0.3, 0.45, 0.6]
    assert list(schedule.levels) == pytest.approx(expected, abs=1e-12)
    assert schedule.levels[-1] == 0.6


def test_one_shot_prunes_once_and_sparse_training_holds_from_step_zero():
    once = OneShotScheduler(at=0.25).schedule(0.5, 40)
    assert once.update_steps == (10,) and once.levels == (0.5,)
    assert once.sparsity_at(9) == 0.0 and once.sparsity_at(10) == 0.5
    held = SparseTrainingScheduler().schedule(0.5, 40)
    assert held.update_steps == (0,) and not held.regrow
    assert all(held.sparsity_at(s) == 0.5 for s in range(41))
    grow = SparseTrainingScheduler(regrowth="random", update_every=10, end=0.5).schedule(0.5, 40)
    assert grow.update_steps == (0, 10, 20) and grow.regrow


def test_bad_scheduler_options_are_rejected():
    with pytest.raises(ValueError, match="end"):
        ProgressiveScheduler(start=0.5, end=0.4)
    with pytest.raises(ValueError):
        IterativeScheduler(rounds=0)
    with pytest.raises(ValueError, match="regrowth"):
        SparseTrainingScheduler(regrowth=3)
