"""The ``tolerance`` λ rule: its controller against hand-computed values, and in meta-training.

The controller's averages, best values and factor are recomputed here from their definitions
(an exponential moving average, a running best, multiplicative dual ascent); the meta-step is
checked against the controller's own arithmetic applied to metrics measured independently with
each task's meter on the adapted clone's query outputs.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_lam_update import SGD, trainer_for
from test_meta_gradients import episode_batch

from sparsekit.config import ConfigError
from sparsekit.nn import backbone_conv_weights
from sparsekit_plugins.learners._lam_update import adam_preconditioners
from sparsekit_plugins.learners._meta import use_batch_statistics
from sparsekit_plugins.learners._tolerance import ToleranceControl

HIGHER = {"seg": True, "depth": False}
EPS, RATE, WINDOW = 0.02, 0.1, 3


def factor(control: ToleranceControl, seg: float, depth: float) -> float:
    return control.observe({"seg": [seg], "depth": [depth]}, HIGHER)


def test_lambda_is_held_while_the_averages_settle_then_grows_at_the_best():
    control = ToleranceControl(EPS, RATE, WINDOW)
    assert [factor(control, 0.5, 1.0) for _ in range(WINDOW)] == [1.0] * WINDOW
    assert control.violation is None
    # Constant metrics: every average is its own best, r = 0, log λ grows by the full η.
    assert factor(control, 0.5, 1.0) == pytest.approx(math.exp(RATE), rel=1e-12)
    assert control.violation == 0.0


def test_moving_average_best_and_factor_follow_their_definitions():
    control = ToleranceControl(EPS, RATE, WINDOW)
    seg = [0.50, 0.60, 0.40, 0.70, 0.30, 0.30, 0.64]
    depth = [1.00, 0.90, 1.20, 0.80, 1.00, 1.10, 0.95]
    avg_s = avg_d = None
    best_s, best_d = -math.inf, math.inf
    for step, (s, d) in enumerate(zip(seg, depth, strict=True), start=1):
        avg_s = s if avg_s is None else avg_s + (s - avg_s) / WINDOW
        avg_d = d if avg_d is None else avg_d + (d - avg_d) / WINDOW
        got = factor(control, s, d)
        if step <= WINDOW:
            assert got == 1.0
            continue
        best_s, best_d = max(best_s, avg_s), min(best_d, avg_d)
        r = max((best_s - avg_s) / best_s, (avg_d - best_d) / best_d)
        assert control.violation == pytest.approx(r, rel=1e-12)
        drive = min(1.0, max(-1.0, 1.0 - r / EPS))
        assert got == pytest.approx(math.exp(RATE * drive), rel=1e-12)
    # The sequence has a step past 2ε (full decrease) and one inside (0, ε) (partial increase).
    assert control.violation > 2 * EPS


def test_a_task_missing_from_a_step_keeps_its_average_and_several_episodes_are_averaged():
    control = ToleranceControl(EPS, RATE, window=2)
    control.observe({"seg": [0.4, 0.6], "depth": [1.0]}, HIGHER)
    control.observe({"depth": [2.0]}, HIGHER)
    assert control.average == pytest.approx({"seg": 0.5, "depth": 1.5})


def test_a_larger_shortfall_than_twice_the_tolerance_shrinks_lambda_by_the_full_rate():
    control = ToleranceControl(EPS, RATE, window=1)
    factor(control, 0.5, 1.0)
    factor(control, 0.5, 1.0)  # best = 0.5 and 1.0
    # Depth (lower is better) worsens: the average moves fully (window 1) to 1.1, 10 % > 2ε.
    assert factor(control, 0.5, 1.1) == pytest.approx(math.exp(-RATE), rel=1e-12)
    assert control.violation == pytest.approx(0.1, rel=1e-12)


def test_state_round_trip_continues_identically():
    first = ToleranceControl(EPS, RATE, WINDOW)
    for s, d in [(0.5, 1.0), (0.6, 0.9), (0.4, 1.2), (0.7, 0.8)]:
        factor(first, s, d)
    second = ToleranceControl(EPS, RATE, WINDOW)
    second.load_state_dict(first.state_dict())
    for s, d in [(0.3, 1.1), (0.65, 0.85)]:
        assert factor(first, s, d) == factor(second, s, d)


def test_bad_settings_and_non_finite_metrics_are_rejected():
    with pytest.raises(ValueError, match="tolerance"):
        ToleranceControl(0.0, RATE, WINDOW)
    with pytest.raises(ValueError, match="finite"):
        ToleranceControl(EPS, RATE, WINDOW).observe({"seg": [math.nan]}, HIGHER)


def test_meta_step_multiplies_lambda_by_the_factor_of_the_query_metrics():
    """λ is not learned by gradient: ρ has no gradient and no optimiser step; after each
    meta-step λ is the previous λ times the controller's factor of the query metrics."""
    adam = {"name": "adam_prox", "lr": 0.01}
    trainer = trainer_for(
        "tolerance",
        [episode_batch()],
        adam,
        lam=0.01,
        steps=4,
        lam_tolerance=EPS,
        lam_rate=RATE,
        lam_window=1,
    )
    assert all(
        trainer.lam.rho is not p for g in trainer.optimizer.param_groups for p in g["params"]
    )
    shadow = ToleranceControl(EPS, RATE, window=1)
    learner, state = trainer.learner, trainer.state
    tasks = [state.tasks[t] for t in episode_batch().tasks]
    for _ in range(4):
        # The query metrics, measured independently on a copy of the coming adaptation.
        expected: dict[str, list[float]] = {}
        # The inner prox's metric D, which the meta-step reads from Adam before it steps.
        state.precond = adam_preconditioners(trainer.optimizer, backbone_conv_weights(state.model))
        saved = torch.get_rng_state()
        adapted, _ = learner.adapt(state, episode_batch().tasks, episode_batch().support)
        torch.set_rng_state(saved)
        images, targets = episode_batch().query
        use_batch_statistics(adapted)
        outputs = adapted(images, list(episode_batch().tasks))
        for task in tasks:
            meter = task.meter()
            meter.update(outputs[task.name].detach(), targets[task.name])
            expected[task.name] = [meter.compute()[task.primary_metric]]
        higher = {t.name: t.metrics[t.primary_metric] for t in tasks}
        lam_before = float(trainer.lam())
        trainer.meta_step()
        assert trainer.lam.rho.grad is None
        step_factor = shadow.observe(expected, higher)
        assert float(trainer.lam()) == pytest.approx(lam_before * step_factor, rel=1e-9)
    assert trainer.control is not None and trainer.control.steps == 4


def test_tolerance_takes_plain_proxes_under_sgd_and_refuses_a_holdout():
    """Without a metric in the outer optimiser the proxes are the plain ones (no D)."""
    trainer = trainer_for("tolerance", [episode_batch()], SGD, steps=2, lam_window=1)
    trainer.meta_step()
    assert trainer.state.precond == {}
    with pytest.raises(ConfigError, match="lam_holdout: 0"):
        trainer_for("tolerance", [episode_batch()], {"name": "adam_prox"}, lam_holdout=0.2)


def test_history_records_the_constraint_violation():
    adam = {"name": "adam_prox", "lr": 0.01}
    trainer = trainer_for("tolerance", [episode_batch()], adam, steps=3, lam_window=1)
    extra = trainer.run().extra
    assert extra["lam_violation"][0] is None
    assert all(isinstance(v, float) and v >= 0 for v in extra["lam_violation"][1:])
