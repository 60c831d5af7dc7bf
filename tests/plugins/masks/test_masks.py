"""Mask criteria hit their target exactly; the pruner keeps masked weights at zero under every
optimiser; schedules of nested masks; the meta mask reproduces a learned pattern."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsekit.engine.pruning import Pruner
from sparsekit.nn import backbone_conv_weights
from sparsekit.nn.groups import select_keep, zeroed_parameters
from sparsekit.nn.masking import zero_channel_groups
from sparsekit.runs.store import Result
from sparsekit.testing import contract_model, save_contract_run
from sparsekit.testing.doubles import contract_components
from sparsekit_plugins.masks import MagnitudeMask, RandomMask, RunPatternMask
from sparsekit_plugins.regrowth import RandomRegrowth
from sparsekit_plugins.schedulers import IterativeScheduler, SparseTrainingScheduler

OPTIMIZERS = {
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
    "adam_wd": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2),
}


def random_weights(seed, shapes=((6, 3, 3, 3), (8, 6, 3, 3), (4, 8, 1, 1))):
    gen = torch.Generator().manual_seed(seed)
    return {f"w{i}": torch.randn(s, generator=gen) for i, s in enumerate(shapes)}


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), target=st.floats(0.0, 1.0))
def test_element_masks_zero_exactly_the_budget_of_smallest_weights(seed, target):
    weights = random_weights(seed)
    keep = MagnitudeMask().keep_mask(weights, target, "element", torch.Generator())
    flat = np.concatenate([w.numpy().ravel() for w in weights.values()])
    budget = round(target * flat.size)
    assert zeroed_parameters(weights, keep) == budget
    zeroed = np.concatenate([(~keep[n]).numpy().ravel() for n in weights])
    # Independent check: the zeroed entries are the `budget` smallest |w| (values are distinct).
    expected = np.zeros(flat.size, dtype=bool)
    expected[np.argsort(np.abs(flat), kind="stable")[:budget]] = True
    assert np.array_equal(zeroed, expected)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), target=st.floats(0.0, 1.0))
def test_channel_masks_land_within_half_a_group_of_the_budget(seed, target):
    weights = random_weights(seed)
    for criterion in (MagnitudeMask(), RandomMask()):
        keep = criterion.keep_mask(weights, target, "channel", torch.Generator().manual_seed(seed))
        total = sum(w.numel() for w in weights.values())
        budget = round(target * total)
        zeroed = zeroed_parameters(weights, keep)
        sizes = sorted({w.numel() // w.shape[1] for w in weights.values()})
        assert abs(zeroed - budget) <= max(sizes) / 2, (zeroed, budget)
        assert all(keep[n].shape == (w.shape[1],) for n, w in weights.items())


def test_magnitude_channel_mask_drops_the_lowest_rms_groups_across_layers():
    weights = random_weights(3)
    keep = MagnitudeMask().keep_mask(weights, 0.3, "channel", torch.Generator())
    rms, names = [], []
    for name, w in weights.items():
        groups = w.numpy().transpose(1, 0, 2, 3).reshape(w.shape[1], -1)
        rms += list(np.sqrt((groups**2).mean(axis=1)))
        names += [(name, c) for c in range(w.shape[1])]
    dropped = {(n, c) for n in weights for c in range(weights[n].shape[1]) if not keep[n][c]}
    order = np.argsort(rms, kind="stable")
    assert dropped == {names[i] for i in order[: len(dropped)]}


def test_select_keep_respects_frozen_and_protected_entries():
    weights = random_weights(5)
    scores = {n: torch.rand(w.shape[1]) for n, w in weights.items()}
    frozen = {n: torch.zeros(w.shape[1], dtype=torch.bool) for n, w in weights.items()}
    frozen["w2"][:] = True  # all of the last layer (largest scores forced first)
    protected = {n: torch.ones(w.shape[1], dtype=torch.bool) for n, w in weights.items()}
    protected["w2"][:] = False
    keep = select_keep(weights, scores, 0.05, "channel", frozen=frozen)
    assert not keep["w2"].any() or zeroed_parameters(weights, keep) < weights["w2"].numel()
    assert keep["w0"].all() and keep["w1"].all()
    keep = select_keep(weights, scores, 0.01, "channel", protected=protected)
    assert keep["w0"].all() and keep["w1"].all()


def test_random_masks_are_uniform_subsets():
    weights = {"w": torch.ones(2, 20, 1, 1)}
    counts = torch.zeros(20)
    trials = 2000
    gen = torch.Generator().manual_seed(0)
    for _ in range(trials):
        counts += (~RandomMask().keep_mask(weights, 0.25, "channel", gen)["w"]).float()
    # Each of the 20 groups is dropped with probability 5/20; binomial std ≈ 19.4 per group.
    assert torch.all((counts - 0.25 * trials).abs() < 5 * (trials * 0.25 * 0.75) ** 0.5)
    assert int(counts.sum()) == 5 * trials


@pytest.fixture(autouse=True)
def doubles():
    """The contract doubles the saved contract run names, registered for each test."""
    with contract_components():
        yield


def test_meta_mask_reproduces_the_learned_pattern_at_its_own_sparsity(tmp_path):
    run = save_contract_run(tmp_path / "run")
    criterion = RunPatternMask(from_run=str(run))
    weights = {n: w.detach() for n, w in backbone_conv_weights(contract_model()).items()}
    learned = {n: w.detach() for n, w in backbone_conv_weights(run_model(run)).items()}
    for granularity in ("channel", "element"):
        if granularity == "channel":
            pattern = {n: zero_channel_groups(w) for n, w in learned.items()}
            size = {n: w.numel() // w.shape[1] for n, w in learned.items()}
            zeroed = sum(int(pattern[n].sum()) * size[n] for n in learned)
        else:
            pattern = {n: w.eq(0) for n, w in learned.items()}
            zeroed = sum(int(p.sum()) for p in pattern.values())
        total = sum(w.numel() for w in learned.values())
        keep = criterion.keep_mask(weights, zeroed / total, granularity, torch.Generator())
        for name in weights:
            assert torch.equal(~keep[name], pattern[name]), (granularity, name)


def run_model(run):
    """The saved model of a run."""
    return Result.load(run).model


def test_meta_mask_rejects_another_architecture(tmp_path):
    run = save_contract_run(tmp_path / "run")
    with pytest.raises(Exception, match="does not match"):
        mask = RunPatternMask(from_run=str(run))
        mask.keep_mask(random_weights(0), 0.2, "channel", torch.Generator())


def net_and_loss(seed=0):
    model = contract_model()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 16, 16, generator=gen)

    def loss():
        return sum(out.float().pow(2).mean() for out in model(x).values())

    return model, loss


@pytest.mark.parametrize("granularity", ["channel", "element"])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_pruned_weights_stay_exactly_zero_after_every_optimiser_step(kind, granularity):
    model, loss = net_and_loss()
    optimizer = OPTIMIZERS[kind](model.parameters())
    for _ in range(3):  # optimiser state everywhere, so stale momentum would revive weights
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    schedule = IterativeScheduler(rounds=3).schedule(0.5, 30)
    pruner = Pruner(model, schedule, MagnitudeMask(), granularity, torch.Generator())
    pruner.start(optimizer)
    weights = backbone_conv_weights(model)
    previous = None
    for step in range(1, 31):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
        pruner.after_step(step)
        zero = {n: w.detach().eq(0) for n, w in weights.items()}
        for name, weight in weights.items():
            keep = pruner.masks.keep(name)
            masked = ~keep.expand(weight.shape) if keep.shape != weight.shape else ~keep
            assert torch.all(weight.detach()[masked] == 0), (step, name)
            if previous is not None:  # nested: what was zeroed stays zeroed
                assert torch.all(zero[name][previous[name]])
        previous = {n: (~pruner.masks.keep(n)).expand(w.shape).clone() for n, w in weights.items()}
    pruner.stop()
    total = sum(w.numel() for w in weights.values())
    assert [round(u["level"], 6) for u in pruner.updates] == [round(s, 6) for s in schedule.levels]
    final = sum(int(w.detach().eq(0).sum()) for w in weights.values())
    assert final >= round(0.5 * total) - max(w.numel() // w.shape[1] for w in weights.values())


def test_drop_and_grow_regrows_groups_and_returns_to_the_target():
    model, loss = net_and_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    schedule = SparseTrainingScheduler(regrowth="random", update_every=5, end=1.0).schedule(0.4, 20)
    pruner = Pruner(
        model,
        schedule,
        MagnitudeMask(),
        "channel",
        torch.Generator().manual_seed(1),
        RandomRegrowth(prob=0.5),
    )
    pruner.start(optimizer)
    weights = backbone_conv_weights(model)
    patterns = []
    for step in range(1, 21):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
        pruner.after_step(step)
        if schedule.is_update_step(step):
            patterns.append({n: zero_channel_groups(w).clone() for n, w in weights.items()})
    pruner.stop()
    assert sum(u["regrown_groups"] for u in pruner.updates) > 0
    # The pattern moved (groups regrown and others dropped) while the sparsity stayed put.
    assert any(not torch.equal(patterns[0][n], patterns[-1][n]) for n in weights)
    levels = [u["zeroed"] for u in pruner.updates]
    largest = max(w.numel() // w.shape[1] for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    assert all(abs(level - 0.4) <= largest / total for level in levels)
