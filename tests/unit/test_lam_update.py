"""The λ update rules of ``MetaConfig.lam_update``, checked against independent computations.

float64, on the tiny two-conv network of ``test_meta_gradients`` (whose model, data and
functional reference are reused). The references here are written with
``torch.func.functional_call``, plain autograd and the closed forms of the group lasso, its prox
and Adam's first step; they share no code with ``sparsekit.engine.meta`` or ``lam_update``.
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
)
from torch import Tensor, nn
from torch.func import functional_call

from sparsekit import Experiment
from sparsekit.config import ConfigError, build_config
from sparsekit.engine.episodes import EpisodeBatch
from sparsekit.engine.meta import MetaState, MetaTrainer
from sparsekit.models import backbone_conv_weights
from sparsekit_plugins.learners.maml import MAMLLearner

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
) -> MetaTrainer:
    """A ``maml`` trainer (κ = 1) whose episode stream replays ``batches`` in turn."""
    options = {"lam_update": rule} if rule is not None else {}
    learner = MAMLLearner(
        inner_lr=INNER_LR,
        episodes_per_batch=len(batches),
        batch_size=4,
        lam_lr=lam_lr,
        episodes=(EPISODE,),
        **options,
    )
    context = tiny_context(lam=lam)
    context.config = build_config(
        {
            "lam": "learned" if learned else lam,
            "lam_beta": BETA,
            "steps": steps,
            "eval_every": eval_every,
            "device": "cpu",
            "optimizer": optimizer,
        }
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


# --- inner_prox: the default, unchanged -------------------------------------------------------


def test_inner_prox_is_the_default_and_matches_a_hand_written_meta_step():
    """Explicit ``inner_prox`` and no ``lam_update`` give bit-identical steps (Adam, two steps),
    and one SGD meta-step equals the documented update: the inner prox's meta-gradient, an SGD
    step on Θ_meta and ρ, the plain outer prox with the new λ."""
    adam = {"name": "adam_prox", "lr": ALPHA_OUT}
    default, explicit = (
        trainer_for(rule, [episode_batch()], adam, steps=2) for rule in (None, "inner_prox")
    )
    assert default.learner.config.lam_update == "inner_prox"
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


# --- configuration and diagnostics -------------------------------------------------------------


def test_an_unknown_lam_update_is_a_clear_error():
    with pytest.raises(ValidationError, match="inner_prox.*outer_penalty.*preconditioned"):
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
