"""Masks hold zeroed weights at exactly 0.0 under momentum, weight decay, Adam and AdamW."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsekit.config import OptimizerConfig
from sparsekit.nn.groups import zero_channel_groups
from sparsekit.nn.heads import DenseHead
from sparsekit.nn.masking import MaskSet, freeze_zeros
from sparsekit.nn.multitask import MultiTaskNet
from sparsekit.registry import create

OPTIMIZERS = {
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
    "sgd_nesterov_wd": lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2
    ),
    "adam_wd": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.9, weight_decay=1e-2),
}


class TinyConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


def loss_of(net, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 6, 6, generator=gen)
    target = torch.randn(4, 6, 6, 6, generator=gen)
    return (net(x) - target).pow(2).mean()


def warm_up(net, optimizer, steps=5):
    """Fill the optimiser state everywhere, so stale momentum would revive zeroed weights."""
    for step in range(steps):
        optimizer.zero_grad()
        loss_of(net, step).backward()
        optimizer.step()


def zero_some_channels(net):
    with torch.no_grad():
        net.conv1.weight[:, [0, 2]] = 0.0
        net.conv2.weight[:, [1, 4, 5]] = 0.0


def train(net, optimizer, steps, masks=None, by_hand=False):
    for step in range(steps):
        optimizer.zero_grad()
        loss_of(net, 100 + step).backward()
        if by_hand:
            masks.mask_grads_()
        optimizer.step()
        if by_hand:
            masks.apply_(optimizer)


def params_of(net):
    return {"conv1.weight": net.conv1.weight, "conv2.weight": net.conv2.weight}


@pytest.mark.parametrize("by_hand", [False, True], ids=["hooks", "by_hand"])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_channel_masks_hold_zero_groups_exactly(kind, by_hand):
    torch.manual_seed(0)
    net = TinyConvNet()
    optimizer = OPTIMIZERS[kind](net.parameters())
    warm_up(net, optimizer)
    zero_some_channels(net)
    masks = freeze_zeros(params_of(net), "channel")
    frozen = {n: zero_channel_groups(p).clone() for n, p in params_of(net).items()}
    live_before = {n: p.detach()[:, ~frozen[n]].clone() for n, p in params_of(net).items()}
    if not by_hand:
        masks.attach(optimizer)
    train(net, optimizer, 30, masks, by_hand)
    for name, p in params_of(net).items():
        w = p.detach().numpy()
        dead = w[:, frozen[name].numpy()]
        assert (dead == 0.0).all() and not np.signbit(dead).any(), "must be exactly +0.0"
        assert not np.allclose(w[:, ~frozen[name].numpy()], live_before[name].numpy())
        for key, value in optimizer.state[p].items():
            if key != "step" and value.shape == p.shape:
                assert (value[:, frozen[name]] == 0).all(), key


@pytest.mark.parametrize("kind", ["sgd_momentum_wd", "adam_wd"])
def test_without_a_mask_zeroed_groups_revive(kind):
    # The control: the optimisers above do revive zeroed groups when nothing masks them.
    torch.manual_seed(0)
    net = TinyConvNet()
    optimizer = OPTIMIZERS[kind](net.parameters())
    warm_up(net, optimizer)
    zero_some_channels(net)
    train(net, optimizer, 3)
    assert not zero_channel_groups(net.conv1.weight)[[0, 2]].any()


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_element_masks_hold_zero_elements_exactly(kind):
    torch.manual_seed(1)
    net = TinyConvNet()
    optimizer = OPTIMIZERS[kind](net.parameters())
    warm_up(net, optimizer)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in params_of(net).values():
            p[torch.rand(p.shape, generator=gen) < 0.4] = 0.0
    masks = freeze_zeros(params_of(net), "element")
    dead = {n: (p.detach() == 0).clone() for n, p in params_of(net).items()}
    before = {n: p.detach().clone() for n, p in params_of(net).items()}
    masks.attach(optimizer)
    train(net, optimizer, 30)
    for name, p in params_of(net).items():
        assert (p.detach()[dead[name]] == 0).all()
        assert (p.detach()[~dead[name]] != before[name][~dead[name]]).float().mean() > 0.9
    assert masks.num_frozen() == sum(int(d.sum()) for d in dead.values())


@settings(max_examples=12, deadline=None)
@given(
    kind=st.sampled_from(sorted(OPTIMIZERS)),
    pattern=st.lists(st.booleans(), min_size=8, max_size=8),
    seed=st.integers(0, 1000),
)
def test_zeroed_groups_stay_zero_property(kind, pattern, seed):
    torch.manual_seed(seed)
    net = TinyConvNet()
    optimizer = OPTIMIZERS[kind](net.parameters())
    warm_up(net, optimizer, 2)
    chosen = torch.tensor(pattern)
    with torch.no_grad():
        net.conv2.weight[:, chosen] = 0.0
    freeze_zeros(params_of(net), "channel").attach(optimizer)
    train(net, optimizer, 5)
    assert torch.equal(zero_channel_groups(net.conv2.weight), chosen)


def test_proximal_optimizer_wrapper_is_masked_through_its_inner_optimizer():
    torch.manual_seed(2)
    net = TinyConvNet()
    optimizer = create("optimizer", "sgd_prox").build(
        net.parameters(),
        [net.conv2.weight],
        create("penalty", "group_lasso"),
        1e-4,
        OptimizerConfig(name="sgd_prox", lr=0.05, weight_decay=1e-2),
    )
    warm_up(net, optimizer)
    zero_some_channels(net)
    handle = freeze_zeros(params_of(net), "channel").attach(optimizer)
    train(net, optimizer, 10)
    assert zero_channel_groups(net.conv2.weight)[[1, 4, 5]].all()
    handle.remove()
    train(net, optimizer, 3)
    assert not zero_channel_groups(net.conv2.weight)[[1, 4, 5]].any(), "hooks were removed"


def test_unfreeze_releases_groups():
    torch.manual_seed(3)
    net = TinyConvNet()
    optimizer = OPTIMIZERS["sgd_momentum_wd"](net.parameters())
    zero_some_channels(net)
    masks = freeze_zeros(params_of(net), "channel")
    masks.attach(optimizer)
    released = torch.zeros(8, dtype=torch.bool)
    released[4] = True
    masks.unfreeze({"conv2.weight": released, "not.a.weight": released})
    train(net, optimizer, 5)
    assert torch.equal(
        zero_channel_groups(net.conv2.weight), torch.tensor([0, 1, 0, 0, 0, 1, 0, 0]).bool()
    )


def test_zero_channel_groups_matches_numpy():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(5, 7, 3, 3, generator=gen)
    w[:, [1, 6]] = 0.0
    w[0, 3, 0, 0] = 0.0  # a single zero element does not make a zero group
    arr = w.numpy()
    expected = np.all(arr.transpose(1, 0, 2, 3).reshape(7, -1) == 0, axis=1)
    assert np.array_equal(zero_channel_groups(w).numpy(), expected)
    with pytest.raises(ValueError, match="input-channel"):
        zero_channel_groups(torch.zeros(4))


def test_freeze_zeros_of_a_multitask_net_masks_the_backbone_convs():
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
    net = MultiTaskNet(backbone, {"t": DenseHead(4, 1, 4)}, {"t"}, 4)
    with torch.no_grad():
        backbone[2].weight[:, 1] = 0.0
    masks = freeze_zeros(net, "channel")
    assert list(masks) == ["backbone.0.weight", "backbone.2.weight"]
    assert masks.num_frozen() == 4
    with pytest.raises(ValueError, match="granularity"):
        freeze_zeros(net, "filter")


def test_mask_set_rejects_bad_masks():
    w = nn.Parameter(torch.ones(4, 3, 2, 2))
    with pytest.raises(ValueError, match="bool"):
        MaskSet({"w": w}, {"w": torch.ones(3)})
    with pytest.raises(ValueError, match="shape"):
        MaskSet({"w": w}, {"w": torch.ones(5, dtype=torch.bool)})
    with pytest.raises(ValueError, match="no keep mask"):
        MaskSet({"w": w}, {})
    keep = torch.tensor([True, False, True])
    MaskSet({"w": w}, {"w": keep}).apply_()
    assert (w[:, 1] == 0).all() and (w[:, [0, 2]] == 1).all()
