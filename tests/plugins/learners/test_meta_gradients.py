"""Meta-gradients of the meta-sparsity learners, checked against independent computations.

Everything runs in float64 on a tiny two-conv network with BatchNorm and two heads. The reference
meta-gradient is a functional inner loop written here with ``torch.func.functional_call`` and plain
autograd (``create_graph=True``), with its own group soft-thresholding: it shares nothing with
learn2learn or the learners' code. Finite differences check ∂L_query/∂ρ directly.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from sparsekit.config import build_config
from sparsekit.data.tensor_dataset import MultiTaskTensorDataset
from sparsekit.engine.resolve import train_settings
from sparsekit.interfaces import TrainingContext
from sparsekit.nn import MultiTaskNet
from sparsekit.registry import create
from sparsekit.tasks import AttributeTask, SegmentationTask
from sparsekit_plugins.learners._episodes import EpisodeBatch
from sparsekit_plugins.learners._learned_lambda import (
    LearnedLambda,
    draw_initial_lambda,
    inverse_softplus,
)
from sparsekit_plugins.learners._meta import MetaState
from sparsekit_plugins.learners._meta_trainer import MetaTrainer
from sparsekit_plugins.learners.anil import ANILLearner
from sparsekit_plugins.learners.fomaml import FOMAMLLearner
from sparsekit_plugins.learners.maml import MAMLLearner
from sparsekit_plugins.loss_combiners.uncertainty import UncertaintyWeighting
from sparsekit_plugins.penalties.group_lasso import GroupLassoPenalty

TASKS = {"seg": SegmentationTask("seg", 3), "attr": AttributeTask("attr")}
EPISODE = ("seg", "attr")
CONVS = ("backbone.0.weight", "backbone.3.weight")
INNER_LR = 0.1
BETA = 2.0
#: Group norms of the two backbone convs: a clear gap around the threshold of λ below.
GROUP_NORMS = {"backbone.0.weight": [0.3, 1.4, 2.0], "backbone.3.weight": [1.5, 0.35, 1.8, 2.2]}
#: With α_in = 0.1 the thresholds are 0.1·λ·√n_g = 0.54 (conv 1, n_g = 36) and 0.81 (n_g = 81).
LAM = 0.9


def tiny_model() -> MultiTaskNet:
    """Two 3×3 convs with BatchNorm and tanh; a 1×1 segmentation head, a pooled attribute head."""
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.Tanh(),
        nn.Conv2d(4, 9, 3, padding=1, bias=False),
        nn.BatchNorm2d(9),
        nn.Tanh(),
    )
    heads = {
        "seg": nn.Conv2d(9, 3, 1),
        "attr": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(9, 1)),
    }
    model = MultiTaskNet(backbone, heads, {"seg"}, 9).double()
    with torch.no_grad():
        for name, norms in GROUP_NORMS.items():
            weight = model.get_parameter(name)[:, : len(norms)]
            current = weight.flatten(2).norm(dim=(0, 2))
            weight.mul_((torch.tensor(norms, dtype=torch.float64) / current)[None, :, None, None])
        for bn in (model.backbone[1], model.backbone[4]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return model


def tiny_batch(seed: int, size: int = 4) -> tuple[Tensor, dict[str, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, 6, 6, generator=gen, dtype=torch.float64)
    return images, {
        "seg": torch.randint(0, 3, (size, 6, 6), generator=gen),
        "attr": torch.randint(0, 2, (size,), generator=gen).double(),
    }


def episode_batch(episode: tuple[str, ...] = EPISODE) -> EpisodeBatch:
    empty = torch.empty(0, dtype=torch.long)
    return EpisodeBatch(episode, tiny_batch(1), tiny_batch(2), empty, empty)


def make_state(learner: MAMLLearner | ANILLearner, inner_steps: int) -> MetaState:
    model = tiny_model()
    combiner = UncertaintyWeighting(list(TASKS), 0.0).double()
    with torch.no_grad():
        combiner.log_vars.copy_(torch.tensor([0.3, -0.2]))
    lam = LearnedLambda(LAM, beta=BETA, dtype=torch.float64)
    return MetaState(
        model=model,
        combiner=combiner,
        tasks=TASKS,
        penalty=GroupLassoPenalty(),
        lam=lam,
        inner_lr=INNER_LR,
        inner_steps=inner_steps,
        regrowth=create("regrowth", {"name": "none"}),
        generator=torch.Generator().manual_seed(0),
        wrapper=learner.wrap(model),
    )


def outer_params(state: MetaState) -> dict[str, Tensor]:
    params = {f"model.{k}": v for k, v in state.model.named_parameters()}
    params["combiner.log_vars"] = state.combiner.log_vars
    params["rho"] = state.lam.rho
    return params


# --- the independent reference -------------------------------------------------------------


def soft_threshold(weight: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
    """Group soft-thresholding over input channels, and each group's distance to the threshold."""
    root_n = math.sqrt(weight.shape[0] * weight.shape[2] * weight.shape[3])
    norms = weight.pow(2).sum(dim=(0, 2, 3)).sqrt()
    scale = (1 - tau * root_n / norms).clamp(min=0)
    return weight * scale[None, :, None, None], (norms - tau * root_n).detach()


def combined_loss(
    outputs: dict[str, Tensor],
    targets: dict[str, Tensor],
    log_vars: Tensor,
    episode: tuple[str, ...] = EPISODE,
) -> Tensor:
    """Σ exp(−s_t)·L_t + s_t over the episode's tasks; s_t is log_vars at the task's position."""
    total = log_vars.new_zeros(())
    for name in episode:
        index = list(TASKS).index(name)
        loss = TASKS[name].loss(outputs[name], targets[name])
        total = total + torch.exp(-log_vars[index]) * loss + log_vars[index]
    return total


def reference(
    state: MetaState,
    batch: EpisodeBatch,
    *,
    anil: bool = False,
    first_order: bool = False,
    episode: tuple[str, ...] = EPISODE,
) -> tuple[Tensor, list[Tensor]]:
    """Query loss of a functional inner loop, and every group's distance to its threshold."""
    net = copy.deepcopy(state.model)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):  # batch statistics only, like every train pass
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    rho, log_vars = state.lam.rho, state.combiner.log_vars
    lam = torch.log1p(torch.exp(BETA * rho)) / BETA
    params = dict(state.model.named_parameters())
    margins = []

    def prox_all(p: dict[str, Tensor]) -> dict[str, Tensor]:
        p = dict(p)
        for name in CONVS:
            p[name], margin = soft_threshold(p[name], INNER_LR * lam)
            margins.append(margin)
        return p

    if anil:
        params = prox_all(params)
    images, targets = batch.support
    for _ in range(state.inner_steps):
        outputs = functional_call(net, params, (images,))
        loss = combined_loss(outputs, targets, log_vars, episode)
        names = [n for n in params if n.startswith("heads.") or not anil]
        grads = torch.autograd.grad(
            loss, [params[n] for n in names], create_graph=not first_order, allow_unused=True
        )
        stepped = {
            n: params[n] - INNER_LR * g for n, g in zip(names, grads, strict=True) if g is not None
        }
        params = {**params, **stepped}
        if not anil:
            params = prox_all(params)
    images, targets = batch.query
    query = combined_loss(functional_call(net, params, (images,)), targets, log_vars, episode)
    return query, margins


def check_prox_is_informative(margins: list[Tensor]) -> None:
    """Some but not all groups are zeroed, and none sits near its threshold."""
    every = torch.cat(margins)
    assert (every < 0).any() and (every > 0).any()
    assert every.abs().min() > 1e-3


def learner_query_loss(learner: MAMLLearner | ANILLearner, state: MetaState) -> Tensor:
    return learner.episode_losses(state, episode_batch())[1]


def finite_difference_rho(
    learner: MAMLLearner | ANILLearner, state: MetaState, h: float = 1e-6
) -> float:
    rho = state.lam.rho
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            rho.add_(sign * h)
        values.append(float(learner_query_loss(learner, state).detach()))
        with torch.no_grad():
            rho.sub_(sign * h)
    return (values[0] - values[1]) / (2 * h)


# --- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("learner", "inner_steps"),
    [
        (MAMLLearner(lam_update="inner_prox", inner_lr=INNER_LR), 2),
        (FOMAMLLearner(lam_update="inner_prox", inner_lr=INNER_LR), 1),
        (ANILLearner(lam_update="inner_prox", inner_lr=INNER_LR), 2),
    ],
    ids=["maml", "fomaml", "anil"],
)
def test_lambda_meta_gradient_matches_finite_differences(learner, inner_steps):
    state = make_state(learner, inner_steps)
    _, margins = reference(state, episode_batch(), anil=isinstance(learner, ANILLearner))
    check_prox_is_informative(margins)
    (grad,) = torch.autograd.grad(learner_query_loss(learner, state), [state.lam.rho])
    assert abs(float(grad)) > 1e-3
    assert float(grad) == pytest.approx(finite_difference_rho(learner, state), rel=1e-6)


@pytest.mark.parametrize(
    ("learner", "first_order"),
    [
        (MAMLLearner(lam_update="inner_prox", inner_lr=INNER_LR), False),
        (FOMAMLLearner(lam_update="inner_prox", inner_lr=INNER_LR), True),
    ],
    ids=["maml", "fomaml"],
)
def test_meta_gradient_matches_functional_reference(learner, first_order):
    state = make_state(learner, inner_steps=2)
    params = outer_params(state)
    got = torch.autograd.grad(learner_query_loss(learner, state), list(params.values()))
    expected_loss, margins = reference(state, episode_batch(), first_order=first_order)
    check_prox_is_informative(margins)
    expected = torch.autograd.grad(expected_loss, list(params.values()))
    for name, g, e in zip(params, got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-10, msg=f"meta-gradient of {name}")
    assert all(float(g.abs().sum()) > 0 for g in got)


def test_single_task_episode_loss_uses_only_its_own_task():
    """An episode of one task: its loss and uncertainty weight alone, inner and outer."""
    learner = MAMLLearner(lam_update="inner_prox", inner_lr=INNER_LR)
    state = make_state(learner, inner_steps=2)
    episode = ("seg",)
    params = outer_params(state)
    got = torch.autograd.grad(
        learner.episode_losses(state, episode_batch(episode))[1],
        list(params.values()),
        allow_unused=True,
    )
    expected_loss, _ = reference(state, episode_batch(episode), episode=episode)
    two_task_loss, _ = reference(state, episode_batch(episode), episode=EPISODE)
    expected = torch.autograd.grad(expected_loss, list(params.values()), allow_unused=True)
    for name, g, e in zip(params, got, expected, strict=True):
        g = torch.zeros_like(params[name]) if g is None else g
        e = torch.zeros_like(params[name]) if e is None else e
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-10, msg=f"meta-gradient of {name}")
    named = dict(zip(params, got, strict=True))
    # The absent task's head and log-variance get nothing; the present one's do.
    assert named["combiner.log_vars"][1] == 0 and named["combiner.log_vars"][0] != 0
    assert all(named[n] is None or not named[n].any() for n in params if ".attr." in n)
    assert float(named["rho"]) != 0
    query = learner.episode_losses(state, episode_batch(episode))[1].detach()
    expected_value, two_task_value = float(expected_loss.detach()), float(two_task_loss.detach())
    assert float(query) == pytest.approx(expected_value, rel=1e-10)
    assert abs(two_task_value - expected_value) > 1e-3


def test_one_meta_step_follows_the_documented_update_order():
    """Outer SGD step on Θ_meta and ρ from the query meta-gradient, then prox with the NEW λ.

    docs/meta_learning.md, "One meta-step, in order": θ' = θ − α_out·g_θ, ρ' = ρ − α_ρ·g_ρ,
    then w ← prox(w', α_out, softplus_β(ρ')) on the backbone convs; the heads, BatchNorm
    affine parameters and the combiner are not proxed. Reference: the functional inner loop.
    """
    alpha_out, alpha_rho = 0.2, 0.5
    learner = MAMLLearner(
        lam_update="inner_prox",
        inner_lr=INNER_LR,
        episodes_per_batch=1,
        batch_size=4,
        lam_lr=alpha_rho,
        episodes=(EPISODE,),
        lam_beta=BETA,
        lam_init=(LAM, LAM),
    )
    context = tiny_context(
        "learned", optimizer={"name": "sgd_prox", "lr": alpha_out, "momentum": 0.0}
    )
    with torch.no_grad():
        context.combiner.log_vars.copy_(torch.tensor([0.3, -0.2]))
    trainer = MetaTrainer(learner, context)
    # λ₀ took the generator's first draw; the batch is the one drawn from its seed as such.
    context.generator.manual_seed(3)
    batch = trainer.stream.next()
    trainer.stream.next = lambda: batch
    state = trainer.state
    params = outer_params(state)
    expected_loss, margins = reference(state, batch)
    check_prox_is_informative(margins)
    grads = dict(
        zip(params, torch.autograd.grad(expected_loss, list(params.values())), strict=True)
    )
    before = {n: p.detach().clone() for n, p in params.items()}
    trainer.meta_step()

    rho = before["rho"] - alpha_rho * grads["rho"]
    new_lam = F.softplus(rho, beta=BETA)
    old_lam = F.softplus(before["rho"], beta=BETA)
    zeroed_by_outer = 0
    for name, param in params.items():
        stepped = before[name] - (alpha_rho if name == "rho" else alpha_out) * grads[name]
        if name.removeprefix("model.") in CONVS:
            expected, margin = soft_threshold(stepped, alpha_out * new_lam)
            with_old_lam, _ = soft_threshold(stepped, alpha_out * old_lam)
            assert margin.abs().min() > 1e-6
            zeroed_by_outer += int((margin < 0).sum())
            assert not torch.allclose(expected, with_old_lam, rtol=1e-6, atol=1e-8)
        else:
            expected = stepped
        torch.testing.assert_close(param.detach(), expected, rtol=1e-9, atol=1e-12, msg=name)
    assert zeroed_by_outer > 0
    assert float(new_lam) != pytest.approx(float(old_lam), rel=1e-3)


def test_first_order_differs_from_second_order():
    maml, fomaml = (
        MAMLLearner(lam_update="inner_prox", inner_lr=INNER_LR),
        FOMAMLLearner(lam_update="inner_prox", inner_lr=INNER_LR),
    )
    grads = []
    for learner in (maml, fomaml):
        state = make_state(learner, inner_steps=2)
        grads.append(
            torch.autograd.grad(
                learner_query_loss(learner, state), [state.model.get_parameter(CONVS[0])]
            )[0]
        )
    assert not torch.allclose(grads[0], grads[1], rtol=1e-3)


def test_anil_meta_gradient_matches_functional_reference():
    learner = ANILLearner(lam_update="inner_prox", inner_lr=INNER_LR)
    state = make_state(learner, inner_steps=2)
    params = outer_params(state)
    got = torch.autograd.grad(learner_query_loss(learner, state), list(params.values()))
    expected = torch.autograd.grad(
        reference(state, episode_batch(), anil=True)[0], list(params.values())
    )
    for name, g, e in zip(params, got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-10, msg=f"meta-gradient of {name}")


def test_fixed_lambda_gets_no_gradient_and_zero_lambda_skips_the_prox():
    learner = MAMLLearner(lam_update="inner_prox", inner_lr=INNER_LR)
    state = make_state(learner, inner_steps=1)
    state.lam = LearnedLambda(0.0, learnable=False, dtype=torch.float64)
    assert not state.prox_active and not list(state.lam.parameters())
    state.lam = LearnedLambda(LAM, learnable=False, dtype=torch.float64)
    assert state.prox_active and float(state.lam()) == LAM
    assert not state.lam().requires_grad


def test_softplus_parametrisation():
    for beta in (0.5, 1.0, 4.0):
        for value in (1e-3, 0.1, 0.7, 30.0):
            lam = LearnedLambda(value, beta=beta, dtype=torch.float64)
            assert lam.values() == pytest.approx(value, rel=1e-12)
            rho = float(lam.rho.detach())
            assert rho == pytest.approx(inverse_softplus(value, beta), rel=1e-12)
    lam = LearnedLambda(0.5, layers=3)
    with torch.no_grad():
        lam.rho.copy_(torch.tensor([-50.0, 0.0, 50.0]))
    assert (lam() > 0).all() and lam.values() == pytest.approx([math.exp(-50), math.log(2), 50])
    with pytest.raises(ValueError):
        LearnedLambda(0.0)
    with pytest.raises(ValueError):
        LearnedLambda(-0.1, learnable=False)


def test_initial_lambda_is_uniform_and_seeded():
    draws = [draw_initial_lambda((0.1, 1.0), torch.Generator().manual_seed(s)) for s in range(400)]
    assert min(draws) >= 0.1 and max(draws) <= 1.0
    assert sum(draws) / len(draws) == pytest.approx(0.55, abs=0.04)
    again = draw_initial_lambda((0.1, 1.0), torch.Generator().manual_seed(7))
    assert again == draws[7]


def test_softplus_matches_torch_reference():
    rho = torch.linspace(-5, 5, 11, dtype=torch.float64)
    lam = LearnedLambda(1.0, beta=1.5, layers=11, dtype=torch.float64)
    with torch.no_grad():
        lam.rho.copy_(rho)
    torch.testing.assert_close(lam(), torch.log1p(torch.exp(1.5 * rho)) / 1.5)
    torch.testing.assert_close(lam(), F.softplus(rho, beta=1.5))


# --- BatchNorm: running statistics come from support batches only ------------------------------


def tiny_context(lam: float | str, **fields) -> TrainingContext:
    """The tiny network and data; ``fields`` are ExperimentConfig fields of the run settings."""
    gen = torch.Generator().manual_seed(5)
    n = 16
    train = MultiTaskTensorDataset(
        torch.randn(n, 3, 6, 6, generator=gen, dtype=torch.float64),
        {
            "seg": torch.randint(0, 3, (n, 6, 6), generator=gen),
            "attr": torch.randint(0, 2, (n,), generator=gen).double(),
        },
    )
    model = tiny_model()
    combiner = UncertaintyWeighting(list(TASKS), 0.0).double()
    config = build_config({"steps": 1, "batch_size": 4, "device": "cpu", **fields})
    return TrainingContext(
        model=model,
        tasks=list(TASKS.values()),
        train=train,
        val=train,
        penalty=GroupLassoPenalty(),
        lam=lam,
        combiner=combiner,
        settings=train_settings(config),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(3),
    )


def bn_buffers(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.named_buffers()}


@pytest.mark.parametrize("learner_cls", [MAMLLearner, FOMAMLLearner, ANILLearner])
def test_running_statistics_come_from_support_batches_only(learner_cls):
    learner = learner_cls(inner_lr=INNER_LR, episodes_per_batch=3, batch_size=4)
    context = tiny_context(lam=0.0)
    trainer = MetaTrainer(learner, context)
    before = copy.deepcopy(context.model)
    drawn: list[EpisodeBatch] = []
    draw = trainer.stream.next
    trainer.stream.next = lambda: drawn.append(draw()) or drawn[-1]
    history = trainer.run()  # one meta-step, then a validation pass in eval mode
    assert len(drawn) == 3 and len(history.profile) == 1
    support_only, with_query = copy.deepcopy(before), copy.deepcopy(before)
    with torch.no_grad():
        for batch in drawn:
            support_only(batch.support[0], list(batch.tasks))
            with_query(batch.support[0], list(batch.tasks))
            with_query(batch.query[0], list(batch.tasks))
    got, expected, leaked = (bn_buffers(m) for m in (context.model, support_only, with_query))
    assert set(got) == set(expected)
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-12, msg=name)
    assert any(not torch.allclose(got[k], leaked[k]) for k in got if "running_mean" in k)
