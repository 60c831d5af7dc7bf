"""Compaction: the physically smaller model computes what the masked model computes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from sparsekit import compact
from sparsekit.cli import main
from sparsekit.errors import CompactionError
from sparsekit.nn import MultiTaskNet, compaction
from sparsekit.nn.compaction import ChannelSelectConv2d
from sparsekit.registry import create
from sparsekit.runs.store import (
    COMPACT_FILE,
    Result,
    load_compact,
    load_compact_run,
    save_compact,
)
from sparsekit.tasks import AttributeTask, DepthTask, SegmentationTask

TOL = 1e-4
#: Readers of the residual stream that leaves the stem of the small test network.
STEM_STREAM_READERS = (
    "layer1.0.conv1",
    "layer1.1.conv1",
    "layer2.0.conv1",
    "layer2.0.downsample.0",
)


def tasks() -> list:
    return [SegmentationTask("seg", 3), DepthTask("depth"), AttributeTask("attr")]


def small_net(seed: int = 0) -> MultiTaskNet:
    """A small_resnet with two blocks per stage (identity skips) and all three head kinds."""
    torch.manual_seed(seed)
    builder = create("model", "small_resnet", widths=(4, 6, 8), blocks_per_stage=2, head_channels=5)
    return randomise_batchnorm(builder.build(tasks(), 3), seed)


def randomise_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so BN shifts are real constants."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen))
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(n, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen))
    return model.eval()


def zero_groups(model: MultiTaskNet, layer: str, channels: Tensor | list[int]) -> None:
    with torch.no_grad():
        model.backbone.get_submodule(layer).weight[:, channels] = 0


def nonzero_groups(conv: nn.Conv2d) -> int:
    return int(conv.weight.detach().ne(0).any(dim=(0, 2, 3)).sum())


def max_output_diff(a: nn.Module, b: nn.Module, x: Tensor) -> dict[str, float]:
    with torch.no_grad():
        out_a, out_b = a.eval()(x), b.eval()(x)
    assert out_a.keys() == out_b.keys()
    return {k: (out_a[k] - out_b[k]).abs().max().item() for k in out_a}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    fraction=st.floats(0.0, 1.0),
    zero_rgb=st.booleans(),
    zero_block_layer=st.booleans(),
)
# Always run: zeroed RGB groups with a fully zeroed layer inside an identity-skip block, and
# every group of every conv zeroed.
@example(seed=1, fraction=0.3, zero_rgb=True, zero_block_layer=True)
@example(seed=2, fraction=1.0, zero_rgb=True, zero_block_layer=True)
def test_compact_outputs_equal_masked_outputs(
    seed: int, fraction: float, zero_rgb: bool, zero_block_layer: bool
) -> None:
    model = small_net(seed)
    gen = torch.Generator().manual_seed(seed)
    for name, conv in model.backbone.named_modules():
        if isinstance(conv, nn.Conv2d):
            zero_groups(model, name, torch.rand(conv.in_channels, generator=gen) < fraction)
    if zero_rgb:
        zero_groups(model, "stem.0", [0, 2])
    if zero_block_layer:  # a whole layer inside a block with an identity skip
        zero_groups(model, "layer1.1.conv2", list(range(4)))
    small = compact(model, verify=False)
    x = torch.randn(2, 3, 16, 16, generator=gen)
    diffs = max_output_diff(model, small, x)
    assert set(diffs) == {"seg", "depth", "attr"}
    assert max(diffs.values()) <= TOL, diffs
    for name, conv in model.backbone.named_modules():
        if isinstance(conv, nn.Conv2d):
            # Every zero input group is gone (one zero group stays in a fully zeroed layer).
            kept = small.backbone.get_submodule(name)
            assert kept.in_channels == max(1, nonzero_groups(conv)), name
            if name.endswith("conv1"):  # its only reader is the block's conv2
                reader = model.backbone.get_submodule(name.replace("conv1", "conv2"))
                assert kept.out_channels == max(1, nonzero_groups(reader)), name
    assert sum(p.numel() for p in small.parameters()) <= sum(p.numel() for p in model.parameters())


def test_channel_feeding_a_skip_connection_stays() -> None:
    model = small_net()
    zero_groups(model, "layer1.0.conv1", [1])  # stem channel 1 still flows through the skip
    small = compact(model, verify=False)
    assert small.backbone.stem[0].out_channels == 4
    assert small.backbone.stem[1].num_features == 4
    reader = small.backbone.layer1[0].conv1
    assert isinstance(reader, ChannelSelectConv2d)
    assert reader.input_index.tolist() == [0, 2, 3]
    assert max(max_output_diff(model, small, torch.randn(2, 3, 16, 16)).values()) <= TOL


def test_stream_channel_read_by_nobody_is_removed_everywhere() -> None:
    model = small_net()
    for layer in STEM_STREAM_READERS:
        zero_groups(model, layer, [2])
    small = compact(model, verify=False)
    backbone = small.backbone
    # The channel leaves the stem conv, both blocks' second convs and their BatchNorms.
    for conv, bn in (
        (backbone.stem[0], backbone.stem[1]),
        (backbone.layer1[0].conv2, backbone.layer1[0].bn2),
        (backbone.layer1[1].conv2, backbone.layer1[1].bn2),
    ):
        assert conv.out_channels == 3 and bn.num_features == 3
    for layer in STEM_STREAM_READERS:
        conv = backbone.get_submodule(layer)
        assert conv.in_channels == 3 and not isinstance(conv, ChannelSelectConv2d), layer
    assert max(max_output_diff(model, small, torch.randn(2, 3, 16, 16)).values()) <= TOL


def test_resnet50_deeplab_compact_equals_masked_and_reloads(tmp_path) -> None:
    torch.manual_seed(0)
    builder = create("model", "resnet50_deeplab")
    model = builder.build(tasks(), 3).eval()
    gen = torch.Generator().manual_seed(1)
    for name, conv in model.backbone.named_modules():
        if isinstance(conv, nn.Conv2d):
            zero_groups(model, name, torch.rand(conv.in_channels, generator=gen) < 0.5)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    small = compact(model, x[:1], verify=False)
    diffs = max_output_diff(model, small, x)
    assert set(diffs) == {"seg", "depth", "attr"}
    assert max(diffs.values()) <= TOL, diffs
    dense_params = sum(p.numel() for p in model.backbone.parameters())
    assert sum(p.numel() for p in small.backbone.parameters()) < 0.5 * dense_params
    path = save_compact(small, tmp_path / "compact.pt")
    loaded = load_compact(path, builder.build(tasks(), 3))  # a dense skeleton, other weights
    with torch.no_grad():
        expected, got = small(x), loaded.eval()(x)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_save_and_load_give_identical_outputs(tmp_path) -> None:
    model = small_net(3)
    gen = torch.Generator().manual_seed(3)
    for name, conv in model.backbone.named_modules():
        if isinstance(conv, nn.Conv2d):
            zero_groups(model, name, torch.rand(conv.in_channels, generator=gen) < 0.5)
    small = compact(model)
    path = save_compact(small, tmp_path / "compact.pt")
    skeleton = small_net(seed=99)  # other weights: everything must come from the file
    loaded = load_compact(path, skeleton)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected, got = small(x), loaded(x)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert torch.load(path, weights_only=True)["architecture"]["backbone.stem.0"]["in"] == (
        small.backbone.stem[0].in_channels
    )


def test_compact_refuses_a_compact_model() -> None:
    model = small_net()
    zero_groups(model, "layer1.0.conv1", [1])  # makes a channel-selecting conv
    small = compact(model)
    with pytest.raises(ValueError, match="compact already"):
        compact(small)


def test_verification_catches_a_wrong_removal(monkeypatch) -> None:
    model = small_net()

    def claim_all_zero(weight: Tensor) -> Tensor:  # every group reported zero: wrong
        return torch.ones(weight.shape[1], dtype=torch.bool)

    monkeypatch.setattr(compaction, "zero_channel_groups", claim_all_zero)
    with pytest.raises(CompactionError, match="differs"):
        compact(model)


def test_cli_compact_writes_a_reloadable_model(tmp_path, capsys) -> None:
    from sparsekit import Experiment

    run_dir = tmp_path / "run"
    Experiment(
        dataset={"name": "shapes", "n_train": 16, "n_val": 8, "n_test": 8, "image_size": 16},
        model={"name": "small_resnet", "widths": [4, 8], "output_stride": 4},
        steps=5,
        batch_size=8,
        lam=5.0,
        optimizer={"lr": 0.05},
        device="cpu",
        run_dir=run_dir,
    ).run()
    assert main(["compact", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    assert "masked" in printed and "compact" in printed and "parameters" in printed
    assert (run_dir / COMPACT_FILE).is_file()
    masked = Result.load(run_dir).model
    loaded = load_compact_run(run_dir)
    assert sum(p.numel() for p in loaded.parameters()) < sum(p.numel() for p in masked.parameters())
    diffs = max_output_diff(masked, loaded, torch.randn(2, 3, 16, 16))
    assert max(diffs.values()) <= TOL
