"""The λ update rules of ``MetaConfig.lam_update``, checked against independent computations.

float64, on the tiny two-conv network of ``test_meta_gradients`` (whose model, data and
functional reference are reused). The references here are written with
``torch.func.functional_call``, plain autograd and the closed forms of the group lasso, its prox
and Adam's first step; they share no code with the learners' ``_meta*`` or ``_lam_update``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from test_meta_gradients import (
    BETA,
    CONVS,
    EPISODE,
    INNER_LR,
    LAM,
    combined_loss,
    episode_batch,
    make_state,
    outer_params,
    reference,
    soft_threshold,
    tiny_batch,
    tiny_context,
    tiny_model,
)
from torch import Tensor, nn
from torch.func import functional_call

from sparsekit import Experiment
from sparsekit.config import ConfigError
from sparsekit.nn import backbone_conv_weights
from sparsekit_plugins.learners._episodes import EpisodeBatch
from sparsekit_plugins.learners._learned_lambda import LearnedLambda
from sparsekit_plugins.learners._meta import MetaState
from sparsekit_plugins.learners._meta_trainer import MetaTrainer
from sparsekit_plugins.learners.maml import MAMLLearner
from sparsekit_plugins.penalties.group_lasso import GroupLassoPenalty

ALPHA_OUT, ALPHA_RHO = 0.2, 0.5
OUTER_PENALTY_LAM_LR = 0.002


def trainer_for(
    rule: str | None,
    batches: list[EpisodeBatch],
    optimizer: dict,
    lam: float = LAM,
    steps: int = 1,
    eval_every: int = 1,
    learned: bool = True,
    lam_lr: float = ALPHA_RHO,
    **extra: object,
) -> MetaTrainer:
    """A ``maml`` trainer (κ = 1) whose episode stream replays ``batches`` in turn."""
    options = {"lam_update": rule} if rule is not None else {}
    options.update(extra)
    learner = MAMLLearner(
        inner_lr=INNER_LR,
        episodes_per_batch=len(batches),
        batch_size=4,
        lam_lr=lam_lr,
        episodes=(EPISODE,),
        lam_beta=BETA,
        lam_init=(lam, lam),
        **options,
    )
    context = tiny_context(
        "learned" if learned else lam, steps=steps, eval_every=eval_every, optimizer=optimizer
    )
    with torch.no_grad():
        context.combiner.log_vars.copy_(torch.tensor([0.3, -0.2]))
    trainer = MetaTrainer(learner, context)
    replay = iter(batches * steps)
    trainer.stream.next = lambda: next(replay)
    return trainer


SGD = {"name": "sgd_prox", "lr": ALPHA_OUT, "momentum": 0.0}
TWO_EPISODES = [
    episode_batch(),
    EpisodeBatch(
        ("seg",),
        tiny_batch(3),
        tiny_batch(4),
        torch.empty(0, dtype=torch.long),
        torch.empty(0, dtype=torch.long),
    ),
]


# --- independent references ----------------------------------------------------------------


def functional_net(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose BatchNorm uses batch statistics and keeps no running ones."""
    net = copy.deepcopy(model)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    return net


def plain_inner_loop(state: MetaState, batch: EpisodeBatch) -> tuple[dict[str, Tensor], Tensor]:
    """κ second-order SGD steps on the support loss, no prox; the adapted params and query loss."""
    net = functional_net(state.model)
    params = dict(state.model.named_parameters())
    log_vars = state.combiner.log_vars
    images, targets = batch.support
    for _ in range(state.inner_steps):
        loss = combined_loss(
            functional_call(net, params, (images,)), targets, log_vars, batch.tasks
        )
        names = list(params)
        grads = torch.autograd.grad(
            loss, [params[n] for n in names], create_graph=True, allow_unused=True
        )
        params = {
            n: p if g is None else p - INNER_LR * g
            for (n, p), g in zip(params.items(), grads, strict=True)
        }
    images, targets = batch.query
    outputs = functional_call(net, params, (images,))
    return params, combined_loss(outputs, targets, log_vars, batch.tasks)


def group_lasso(weight: Tensor) -> Tensor:
    """Eq. 12 for one conv weight: √n_g · Σ_c ‖w[:, c]‖."""
    n_g = weight.shape[0] * weight.shape[2] * weight.shape[3]
    return math.sqrt(n_g) * weight.pow(2).sum(dim=(0, 2, 3)).sqrt().sum()


def softplus_slope(rho: Tensor) -> Tensor:
    """d softplus_β(ρ)/dρ = σ(βρ)."""
    return torch.sigmoid(BETA * rho)


def metric_margins(z: Tensor, d: Tensor, tau: float | Tensor) -> Tensor:
    """‖D⊙z_g‖ − τ√n_g per input-channel group: negative where the metric prox zeroes."""
    n_g = z.shape[0] * z.shape[2] * z.shape[3]
    return (d * z).pow(2).sum(dim=(0, 2, 3)).sqrt() - tau * math.sqrt(n_g)


def zero_groups(weight: Tensor) -> Tensor:
    return weight.abs().amax(dim=(0, 2, 3)) == 0


def assert_informative(margins: Tensor) -> None:
    """Some groups zeroed and some kept, none near the threshold (so a slip shows)."""
    assert (margins < 0).any() and (margins > 0).any(), margins
    assert margins.abs().min() > 1e-4, margins


# --- inner_prox: the rule of the paper's Algorithm 3 with a differentiable inner prox ---------


def test_tolerance_is_the_default_and_inner_prox_matches_a_hand_written_meta_step():
    """Explicit ``tolerance`` and no ``lam_update`` give bit-identical steps (Adam, two steps),
    with λ₀ drawn on the proxssi scale; and one SGD ``inner_prox`` meta-step equals the
    documented update: the inner prox's meta-gradient, an SGD step on Θ_meta and ρ, the plain
    outer prox with the new λ."""
    adam = {"name": "adam_prox", "lr": ALPHA_OUT}
    default, explicit = (
        trainer_for(rule, [episode_batch()], adam, steps=2, lam_window=1)
        for rule in (None, "tolerance")
    )
    assert default.learner.config.lam_update == "tolerance"
    assert MAMLLearner().config.lam_init == (0.001, 0.01)
    assert MAMLLearner(lam_update="inner_prox").config.lam_init == (0.1, 1.0)
    for trainer in (default, explicit):
        trainer.meta_step()
        trainer.meta_step()
    for (name, a), b in zip(
        outer_params(default.state).items(), outer_params(explicit.state).values(), strict=True
    ):
        assert torch.equal(a, b), name

    trainer = trainer_for("inner_prox", [episode_batch()], SGD)
    state = trainer.state
    params = outer_params(state)
    expected_loss, margins = reference(state, episode_batch())
    assert_informative(torch.cat(margins))
    grads = dict(
        zip(params, torch.autograd.grad(expected_loss, list(params.values())), strict=True)
    )
    before = {n: p.detach().clone() for n, p in params.items()}
    trainer.meta_step()
    new_lam = F.softplus(before["rho"] - ALPHA_RHO * grads["rho"], beta=BETA)
    for name, param in params.items():
        stepped = before[name] - (ALPHA_RHO if name == "rho" else ALPHA_OUT) * grads[name]
        if name.removeprefix("model.") in CONVS:
            stepped, _ = soft_threshold(stepped, ALPHA_OUT * new_lam)
        torch.testing.assert_close(param.detach(), stepped, rtol=1e-9, atol=1e-12, msg=name)
    expected_lam_grad = float(grads["rho"] / softplus_slope(before["rho"]))
    assert trainer.last_lam_grad == pytest.approx(expected_lam_grad, rel=1e-9)


# --- outer_penalty: Algorithm 3 as printed -----------------------------------------------------


def test_outer_penalty_inner_loop_is_a_plain_sgd_step():
    learner = MAMLLearner(inner_lr=INNER_LR, lam_update="outer_penalty")
    state = make_state(learner, inner_steps=2)
    state.lam_update = "outer_penalty"
    batch = episode_batch()
    adapted, _ = learner.adapt(state, batch.tasks, batch.support)
    expected, _ = plain_inner_loop(state, batch)
    got = dict(adapted.named_parameters())
    for name in CONVS:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=1e-12, msg=name)
        # The inner prox with this λ would have zeroed groups of this very step.
        _, margin = soft_threshold(expected[name], INNER_LR * state.lam())
        assert (margin < 0).any() and not zero_groups(got[name]).any()


def test_outer_penalty_lambda_gradient_is_r_of_the_adapted_backbone():
    """∂/∂λ of mean_e [query_e + λ·R(adapted_e)] = mean_e R(adapted_e) > 0: central finite
    differences of the learner's objective in ρ, the closed form R·σ(βρ) of a functional
    reference, and the whole SGD meta-step (R reaches ρ only; Θ_meta gets the query gradient and
    the outer prox with the new λ)."""
    # R ≈ 75 here, so a λ learning rate of 0.5 would take λ to ~0 in one step.
    trainer = trainer_for("outer_penalty", TWO_EPISODES, SGD, lam_lr=OUTER_PENALTY_LAM_LR)
    state, learner = trainer.state, trainer.learner
    rho = state.lam.rho

    def objective() -> float:
        values = [float(learner.episode_objective(state, b)[2].detach()) for b in TWO_EPISODES]
        return sum(values) / len(values)

    h = 1e-6
    with torch.no_grad():
        rho.add_(h)
    upper = objective()
    with torch.no_grad():
        rho.sub_(2 * h)
    lower = objective()
    with torch.no_grad():
        rho.add_(h)
    finite_difference = (upper - lower) / (2 * h)

    params = outer_params(state)
    queries, penalties = [], []
    for batch in TWO_EPISODES:
        adapted, query = plain_inner_loop(state, batch)
        queries.append(query)
        penalties.append(sum(float(group_lasso(adapted[n].detach())) for n in CONVS))
    mean_query = sum(queries) / len(queries)
    mean_r = sum(penalties) / len(penalties)
    lam0 = F.softplus(rho.detach(), beta=BETA)
    reference_objective = float(mean_query.detach()) + float(lam0) * mean_r
    assert objective() == pytest.approx(reference_objective, rel=1e-10)
    grads = {
        name: torch.zeros_like(params[name]) if g is None else g
        for name, g in zip(
            params,
            torch.autograd.grad(mean_query, list(params.values()), allow_unused=True),
            strict=True,
        )
    }
    assert not grads["rho"].any()  # the query loss does not see ρ: R is all λ's gradient
    grads["rho"] = mean_r * softplus_slope(rho.detach())

    before = {n: p.detach().clone() for n, p in params.items()}
    trainer.meta_step()
    assert float(rho.grad) == pytest.approx(finite_difference, rel=1e-6)
    assert float(rho.grad) == pytest.approx(float(grads["rho"]), rel=1e-9)
    assert trainer.last_lam_grad == pytest.approx(mean_r, rel=1e-9) and mean_r > 0
    new_lam = F.softplus(before["rho"] - OUTER_PENALTY_LAM_LR * grads["rho"], beta=BETA)
    assert float(new_lam) < float(lam0)  # ∂/∂λ = R > 0: λ can only shrink
    zeroed = 0
    for name, param in params.items():
        rate = OUTER_PENALTY_LAM_LR if name == "rho" else ALPHA_OUT
        stepped = before[name] - rate * grads[name]
        if name.removeprefix("model.") in CONVS:
            stepped, margin = soft_threshold(stepped, ALPHA_OUT * new_lam)
            assert margin.abs().min() > 1e-6
            zeroed += int((margin < 0).sum())
        torch.testing.assert_close(param.detach(), stepped, rtol=1e-9, atol=1e-12, msg=name)
    assert zeroed > 0


# --- preconditioned: both proxes in Adam's metric ------------------------------------------------


def test_preconditioned_inner_prox_lambda_gradient_matches_finite_differences():
    learner = MAMLLearner(inner_lr=INNER_LR, lam_update="preconditioned")
    state = make_state(learner, inner_steps=1)
    state.lam_update = "preconditioned"
    gen = torch.Generator().manual_seed(11)
    convs = backbone_conv_weights(state.model)
    state.precond = {
        n: torch.exp(0.6 * torch.randn(w.shape, generator=gen, dtype=torch.float64))
        for n, w in convs.items()
    }
    batch = episode_batch()
    stepped, _ = plain_inner_loop(state, batch)
    lam = float(state.lam().detach())
    margins = [metric_margins(stepped[n].detach(), state.precond[n], INNER_LR * lam) for n in CONVS]
    assert_informative(torch.cat(margins))
    adapted, _ = learner.adapt(state, batch.tasks, batch.support)
    got = dict(adapted.named_parameters())
    for name, margin in zip(CONVS, margins, strict=True):
        assert torch.equal(zero_groups(got[name].detach()), margin <= 0), name

    def query() -> Tensor:
        return learner.episode_losses(state, batch)[1]

    (grad,) = torch.autograd.grad(query(), [state.lam.rho])
    h, rho = 1e-6, state.lam.rho
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            rho.add_(sign * h)
        values.append(float(query().detach()))
        with torch.no_grad():
            rho.sub_(sign * h)
    assert abs(float(grad)) > 1e-3
    assert float(grad) == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-6)
    plain = copy.copy(state)
    plain.precond = None
    (plain_grad,) = torch.autograd.grad(learner.episode_losses(plain, batch)[1], [rho])
    assert float(plain_grad) != pytest.approx(float(grad), rel=1e-3)


def test_preconditioned_outer_prox_zeroes_by_the_norm_in_adams_metric():
    """First meta-step with Adam: the inner prox is plain (no Adam state yet); then Adam's first
    step w' = w − α·g/(|g|+ε), whose metric is D = |g| + ε, and the outer prox in D with the new
    λ: a group dies iff ‖D⊙w'_g‖ ≤ α·λ·√n_g, and a surviving one solves x = D·z·r/(D·r + τ),
    r = ‖x_g‖. The next meta-step's inner prox reads that same D."""
    eps = 1e-8
    adam = {"name": "adam_prox", "lr": ALPHA_OUT, "eps": eps}
    trainer = trainer_for("preconditioned", [episode_batch()], adam, lam=0.027, steps=2)
    state = trainer.state
    params = outer_params(state)
    expected_loss, _ = reference(state, episode_batch())  # the plain inner prox of step 1
    grads = dict(
        zip(params, torch.autograd.grad(expected_loss, list(params.values())), strict=True)
    )
    before = {n: p.detach().clone() for n, p in params.items()}
    trainer.meta_step()
    assert trainer.last_lam_grad == pytest.approx(
        float(grads["rho"] / softplus_slope(before["rho"])), rel=1e-9
    )
    rho = before["rho"] - ALPHA_RHO * grads["rho"] / (grads["rho"].abs() + eps)
    new_lam = F.softplus(rho, beta=BETA)
    torch.testing.assert_close(state.lam.rho.detach(), rho, rtol=1e-12, atol=1e-14)
    metrics, zeroed = {}, 0
    for name in CONVS:
        g = grads[f"model.{name}"]
        z = before[f"model.{name}"] - ALPHA_OUT * g / (g.abs() + eps)
        d = metrics[name] = g.abs() + eps
        tau = ALPHA_OUT * new_lam * math.sqrt(z.shape[0] * z.shape[2] * z.shape[3])
        margin = metric_margins(z, d, ALPHA_OUT * new_lam)
        assert_informative(margin)
        x = params[f"model.{name}"].detach()
        assert torch.equal(zero_groups(x), margin <= 0), name
        r = x.pow(2).sum(dim=(0, 2, 3), keepdim=True).sqrt()
        alive = (margin > 0)[None, :, None, None].expand_as(x)
        optimality = d * z * r / (d * r + tau)
        torch.testing.assert_close(x[alive], optimality[alive], rtol=1e-9, atol=1e-12)
        zeroed += int((margin <= 0).sum())
    assert zeroed > 0
    trainer.meta_step()
    assert state.precond is not None and set(state.precond) == set(CONVS)
    for name in CONVS:
        torch.testing.assert_close(state.precond[name], metrics[name], rtol=1e-9, atol=1e-15)


# --- relative: λ in units of each layer's RMS weight ---------------------------------------------

#: λ on the relative scale: with the tiny model's layer RMS weights (≈ 0.24 and 0.18) and α_in,
#: it zeroes the weak group of each conv and keeps the others.
LAM_RELATIVE = 4.0


def rms(weight: Tensor) -> Tensor:
    return weight.detach().pow(2).mean().sqrt()


def relative_query_loss(state: MetaState, batch: EpisodeBatch) -> tuple[Tensor, list[Tensor]]:
    """One SGD step on the support loss, then group soft-thresholding with τ = α_in·λ·RMS(w)
    per conv (the RMS a constant), then the query loss; and each group's threshold margin."""
    net = functional_net(state.model)
    params = dict(state.model.named_parameters())
    log_vars = state.combiner.log_vars
    lam = F.softplus(state.lam.rho, beta=BETA)
    images, targets = batch.support
    loss = combined_loss(functional_call(net, params, (images,)), targets, log_vars, batch.tasks)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True, allow_unused=True)
    params = {
        n: p if g is None else p - INNER_LR * g
        for (n, p), g in zip(params.items(), grads, strict=True)
    }
    margins = []
    for name in CONVS:
        params[name], margin = soft_threshold(params[name], INNER_LR * lam * rms(params[name]))
        margins.append(margin)
    images, targets = batch.query
    query = combined_loss(functional_call(net, params, (images,)), targets, log_vars, batch.tasks)
    return query, margins


def test_relative_lambda_gradient_matches_a_reference_and_finite_differences():
    learner = MAMLLearner(inner_lr=INNER_LR, lam_update="relative")
    state = make_state(learner, inner_steps=1)
    state.lam_update = "relative"
    with torch.no_grad():
        state.lam.rho.fill_(math.log(math.expm1(BETA * LAM_RELATIVE)) / BETA)
    batch = episode_batch()
    expected, margins = relative_query_loss(state, batch)
    assert_informative(torch.cat(margins))
    adapted, _ = learner.adapt(state, batch.tasks, batch.support)
    got = dict(adapted.named_parameters())
    for name, margin in zip(CONVS, margins, strict=True):
        assert torch.equal(zero_groups(got[name].detach()), margin <= 0), name

    def query() -> Tensor:
        return learner.episode_losses(state, batch)[1]

    rho = state.lam.rho
    (grad,) = torch.autograd.grad(query(), [rho])
    (expected_grad,) = torch.autograd.grad(expected, [rho])
    assert float(query().detach()) == pytest.approx(float(expected.detach()), rel=1e-10)
    assert float(grad) == pytest.approx(float(expected_grad), rel=1e-8)
    h, values = 1e-6, []
    for sign in (1, -1):
        with torch.no_grad():
            rho.add_(sign * h)
        values.append(float(query().detach()))
        with torch.no_grad():
            rho.sub_(sign * h)
    assert abs(float(grad)) > 1e-4
    assert float(grad) == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-6)


def test_relative_outer_prox_is_equivariant_to_a_layers_scale():
    """The outer prox of ``relative`` gives c·prox(W) for c·W, zeroing the same groups; the plain
    prox of ``inner_prox`` zeroes more groups of a shrunken layer (BatchNorm makes c free)."""
    from sparsekit_plugins.learners._lam_update import outer_prox_

    weight = tiny_model().get_parameter(CONVS[1]).detach()
    penalty = GroupLassoPenalty()

    def proxed(rule: str, scale: float, lam: float = LAM_RELATIVE) -> Tensor:
        w = {"w": (weight * scale).clone()}
        outer_prox_(w, penalty, LearnedLambda(lam, dtype=torch.float64), INNER_LR, {}, rule)
        return w["w"]

    for scale in (0.05, 7.3):
        base, scaled = proxed("relative", 1.0), proxed("relative", scale)
        torch.testing.assert_close(scaled, base * scale, rtol=1e-12, atol=1e-15)
        assert torch.equal(zero_groups(scaled), zero_groups(base))
    assert 0 < int(zero_groups(proxed("relative", 1.0)).sum()) < weight.shape[1]
    plain_kept = int((~zero_groups(proxed("inner_prox", 1.0, LAM))).sum())
    assert plain_kept > 0 and not (~zero_groups(proxed("inner_prox", 0.05, LAM))).any()


def test_relative_meta_step_applies_the_outer_prox_with_the_new_lambda_in_layer_units():
    trainer = trainer_for("relative", [episode_batch()], SGD, lam=LAM_RELATIVE)
    state = trainer.state
    params = outer_params(state)
    expected_loss, _ = relative_query_loss(state, episode_batch())
    grads = dict(
        zip(params, torch.autograd.grad(expected_loss, list(params.values())), strict=True)
    )
    before = {n: p.detach().clone() for n, p in params.items()}
    trainer.meta_step()
    new_lam = F.softplus(before["rho"] - ALPHA_RHO * grads["rho"], beta=BETA)
    for name, param in params.items():
        stepped = before[name] - (ALPHA_RHO if name == "rho" else ALPHA_OUT) * grads[name]
        if name.removeprefix("model.") in CONVS:
            stepped, _ = soft_threshold(stepped, ALPHA_OUT * new_lam * rms(stepped))
        torch.testing.assert_close(param.detach(), stepped, rtol=1e-9, atol=1e-12, msg=name)


# --- lam_holdout: λ's meta-gradient from held-out training examples -----------------------------


def test_holdout_gives_rho_the_held_out_gradient_and_theta_the_query_gradient():
    """With ``lam_holdout`` ρ's gradient is d/dρ of the mean held-out loss of the adapted clones
    (checked against the functional reference and central finite differences), while Θ_meta and
    the combiner get exactly the query loss's gradient, as without a hold-out."""
    held_batch = tiny_batch(9)
    trainer = trainer_for("inner_prox", TWO_EPISODES, SGD, lam_holdout=0.25)
    assert trainer.held_out is not None
    trainer.held_out.next = lambda tasks: (
        (held_batch[0], {t: held_batch[1][t] for t in tasks}),
        torch.empty(0, dtype=torch.long),
    )
    state, learner = trainer.state, trainer.learner
    params = outer_params(state)
    queries, helds = [], []
    for batch in TWO_EPISODES:
        queries.append(reference(state, batch, episode=batch.tasks)[0])
        as_query = EpisodeBatch(
            batch.tasks,
            batch.support,
            (held_batch[0], {t: held_batch[1][t] for t in batch.tasks}),
            batch.support_indices,
            batch.query_indices,
        )
        helds.append(reference(state, as_query, episode=batch.tasks)[0])
    mean_query, mean_held = sum(queries) / 2, sum(helds) / 2
    theta = [p for n, p in params.items() if n != "rho"]
    theta_grads = torch.autograd.grad(mean_query, theta, allow_unused=True, retain_graph=True)
    (rho_grad,) = torch.autograd.grad(mean_held, [state.lam.rho])
    (query_rho_grad,) = torch.autograd.grad(mean_query, [state.lam.rho])
    assert float(rho_grad) != pytest.approx(float(query_rho_grad), rel=1e-3)

    def held_objective() -> float:
        total = 0.0
        for batch in TWO_EPISODES:
            tasks = batch.tasks
            held = (held_batch[0], {t: held_batch[1][t] for t in tasks})
            total += float(learner.episode_objectives(state, batch, held)[3].detach())
        return total / 2

    h, rho = 1e-6, state.lam.rho
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            rho.add_(sign * h)
        values.append(held_objective())
        with torch.no_grad():
            rho.sub_(sign * h)
    trainer.optimizer.step = lambda: None  # keep the gradients as they were accumulated
    trainer.meta_step()
    assert float(rho.grad) == pytest.approx(float(rho_grad), rel=1e-9)
    assert float(rho.grad) == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-6)
    for (name, param), expected in zip(
        [(n, p) for n, p in params.items() if n != "rho"], theta_grads, strict=True
    ):
        got = param.grad if param.grad is not None else torch.zeros_like(param)
        want = expected if expected is not None else torch.zeros_like(param)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=name)
    assert trainer.last_held_out_loss == pytest.approx(float(mean_held.detach()), rel=1e-10)


def test_holdout_examples_are_never_support_or_query_and_are_seeded():
    from sparsekit_plugins.learners._episodes import EpisodeStream, HeldOutBatches, split_holdout

    data = tiny_context(LAM).train
    size = len(data)
    kept, held = split_holdout(size, 0.25, torch.Generator().manual_seed(3))
    assert held.numel() == round(0.25 * size) and kept.numel() + held.numel() == size
    assert set(kept.tolist()).isdisjoint(held.tolist())
    gen = torch.Generator().manual_seed(4)
    stream = EpisodeStream(data, [EPISODE], 2, gen, pool=kept)
    batches = HeldOutBatches(data, held, 2, gen)
    used, scored = set(), set()
    for _ in range(10):
        episode = stream.next()
        used |= set(episode.support_indices.tolist()) | set(episode.query_indices.tolist())
        scored |= set(batches.next(EPISODE)[1].tolist())
    assert used <= set(kept.tolist()) and scored <= set(held.tolist()) and used.isdisjoint(scored)
    again = split_holdout(size, 0.25, torch.Generator().manual_seed(3))
    assert torch.equal(again[1], held)


def test_holdout_needs_a_learned_lambda_and_enough_examples():
    with pytest.raises(ConfigError, match="lam_holdout .* fixed lam"):
        trainer_for("inner_prox", [episode_batch()], SGD, learned=False, lam_holdout=0.25)
    with pytest.raises(ValidationError, match="lam_holdout"):
        MAMLLearner(lam_holdout=0.5)
    with pytest.raises(ConfigError, match="lam_holdout keeps .* fewer than one batch"):
        trainer_for("inner_prox", [episode_batch()], SGD, lam_holdout=0.01)


# --- configuration and diagnostics -------------------------------------------------------------


def test_an_unknown_lam_update_is_a_clear_error():
    rules = "inner_prox.*outer_penalty.*preconditioned.*relative"
    with pytest.raises(ValidationError, match=rules):
        MAMLLearner(lam_update="outer_prox")
    tiny = {"name": "shapes", "n_train": 32, "n_val": 8, "n_test": 8, "image_size": 16}
    with pytest.raises(ConfigError, match="learner 'maml': lam_update: .*'preconditioned'"):
        Experiment(
            dataset=tiny,
            tasks=["segmentation", "depth"],
            learner={"name": "maml", "lam_update": "outer_prox"},
            lam="learned",
            device="cpu",
        ).run()


@pytest.mark.parametrize(
    ("rule", "optimizer", "accepted"),
    [
        ("preconditioned", "sgd_prox", False),
        ("preconditioned", "adam_prox", True),
        ("preconditioned", "proxssi", True),
        ("preconditioned", None, True),
        ("inner_prox", "proxssi", False),
        ("outer_penalty", "proxssi", False),
        ("inner_prox", None, True),
        ("outer_penalty", "sgd_prox", True),
        ("relative", "proxssi", False),
        ("relative", "sgd_prox", True),
    ],
)
def test_outer_optimizer_must_fit_the_rule(rule, optimizer, accepted):
    spec = {"lr": ALPHA_OUT} if optimizer is None else {"name": optimizer, "lr": ALPHA_OUT}
    if accepted:
        trainer_for(rule, [episode_batch()], spec)
        return
    match = "Adam outer optimizer" if rule == "preconditioned" else "proxssi"
    with pytest.raises(ConfigError, match=match):
        trainer_for(rule, [episode_batch()], spec)


def test_history_records_the_lambda_diagnostics():
    trainer = trainer_for("inner_prox", [episode_batch()], SGD, lam=0.3, steps=3, eval_every=2)
    history = trainer.run()
    extra = history.extra
    assert len(extra["lam_grad"]) == 3 and all(isinstance(v, float) for v in extra["lam_grad"])
    assert len(extra["query_loss"]) == 3 and len(history.profile) == 2  # steps 2 and 3
    assert extra["outer_threshold"] == pytest.approx(
        [ALPHA_OUT * history.lam_history[1], ALPHA_OUT * history.lam_history[2]], rel=1e-12
    )
    norms = []
    for name in CONVS:
        w = trainer.context.model.get_parameter(name).detach()
        n_g = w.shape[0] * w.shape[2] * w.shape[3]
        norms += [float(v) for v in w.pow(2).sum(dim=(0, 2, 3)).sqrt() / math.sqrt(n_g)]
    alive = sorted(v for v in norms if v > 0)
    assert 0 < len(alive) < len(norms)

    def linear_quantile(q: float) -> float:
        position = q * (len(alive) - 1)
        low = math.floor(position)
        high = min(low + 1, len(alive) - 1)
        return alive[low] + (position - low) * (alive[high] - alive[low])

    expected = [linear_quantile(q) for q in (0.1, 0.5, 0.9)]
    assert len(extra["group_norm_quantiles"]) == 2
    assert extra["group_norm_quantiles"][-1] == pytest.approx(expected, rel=1e-12)

    fixed = trainer_for("inner_prox", [episode_batch()], SGD, learned=False)
    assert fixed.run().extra["lam_grad"] == [None]
