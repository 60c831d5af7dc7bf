"""Physical removal of zeroed channel groups: a smaller network that computes the same outputs.

Group lasso zeroes input-channel groups ``weight[:, c]`` of the backbone's convs, but a masked
network still spends the same FLOPs on those zeros. :func:`compact` removes them in two passes:

1. Producer channels. Torch-Pruning's :class:`~torch_pruning.DependencyGraph` couples every channel
   of the backbone with everything that shares it: the conv that produces it, its BatchNorm, the
   residual additions it flows through, and every consumer (convs of later blocks, the skip
   connections' 1×1 convs, the task heads). A channel is removed from the whole coupled group only
   when every consumer's input group at that channel is zero and the channel reaches no model
   output. The BatchNorm shift of a removed channel still gives ``relu(β)``, a constant, but every
   reader multiplies it by zero weights, so the removal is exact. A channel that also flows through
   a skip connection into a reader with non-zero weights (or into a head) stays.
2. Remaining zero input groups. A consumer whose zero groups read channels that must stay for other
   readers (the skip stream, the network's RGB input) drops those groups from its weight and reads
   only the channels it needs (:class:`ChannelSelectConv2d`, an ``index_select`` then the conv).

Every layer keeps at least one channel, so a fully zeroed layer becomes a one-channel layer with
zero weights rather than an empty one. The compact model's layer shapes are recorded by
:func:`architecture` so that :func:`resize_to_architecture` can rebuild it from a dense model of
the same builder (the run store saves and loads compact models).

References:
    Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023 (Torch-Pruning);
    Upadhyay et al., "Less is More – Towards parsimonious multi-task models using structured
    sparsity", CPAL 2024.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from sparsekit.errors import CompactionError
from sparsekit.nn.groups import zero_channel_groups

#: Side of the square random input traced to build the dependency graph by default.
DEFAULT_TRACE_SIZE = 64

#: Graph nodes that only route channels (element-wise ops, concatenation, reshapes): a channel
#: passing through them is removable when its readers allow it.
_ROUTING_TYPES = frozenset(
    {
        tp.ops.OPTYPE.ELEMENTWISE,
        tp.ops.OPTYPE.CONCAT,
        tp.ops.OPTYPE.SPLIT,
        tp.ops.OPTYPE.RESHAPE,
        tp.ops.OPTYPE.SLICE,
    }
)


class ChannelSelectConv2d(nn.Conv2d):
    """A Conv2d that reads only the input channels listed in its ``input_index`` buffer.

    It replaces a conv whose zeroed input groups read channels that other layers still need, so
    the producer keeps them and this layer skips them. Its parameters are those of an
    ``nn.Conv2d`` with ``in_channels = len(input_index)``; ``input_index`` is saved in the state
    dict.
    """

    input_index: Tensor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer(
            "input_index", torch.arange(self.in_channels, device=self.weight.device)
        )

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, keep: Tensor) -> ChannelSelectConv2d:
        """The conv restricted to the input channels ``keep`` (sorted indices into its input).

        Raises:
            ValueError: a grouped conv, whose input channels cannot be selected independently.
        """
        if conv.groups != 1:
            raise ValueError(f"cannot select the inputs of a grouped conv ({conv})")
        new = _conv_like(conv, cls, len(keep), conv.out_channels)
        source = conv.input_index if isinstance(conv, ChannelSelectConv2d) else None
        with torch.no_grad():
            new.weight.copy_(conv.weight.index_select(1, keep))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)  # type: ignore[union-attr]
            new.input_index.copy_(keep if source is None else source[keep])
        return new

    def forward(self, x: Tensor) -> Tensor:
        """The conv of the selected input channels of ``x``."""
        return super().forward(x.index_select(1, self.input_index))


def compact(
    model: nn.Module,
    example_input: Tensor | None = None,
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> nn.Module:
    """A physically smaller copy of a multi-task model whose zeroed backbone groups are removed.

    Args:
        model: a network with a ``backbone`` attribute (a :class:`~sparsekit.models.MultiTaskNet`);
            it is not modified.
        example_input: an input batch traced to find the channel dependencies and used for the
            check; by default one random ``64×64`` image with the backbone's input channels.
        verify: compare the compact model's outputs with the masked model's on ``example_input``.
        atol: absolute tolerance of that check.
        rtol: relative tolerance of that check.

    Returns:
        The compact model, in eval mode, on the model's device.

    Raises:
        ValueError: ``model`` has no ``backbone`` or was compacted already.
        CompactionError: with ``verify``, an output differs beyond the tolerance.
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(
            f"compact needs a model with a backbone module, got {type(model).__name__}"
        )
    if any(isinstance(m, ChannelSelectConv2d) for m in model.modules()):
        raise ValueError("the model is compact already; compact the masked (dense) model")
    net = copy.deepcopy(model).eval()
    x = _default_input(net) if example_input is None else example_input
    with torch.no_grad():
        reference = _flat_outputs(net(x))
    _remove_producer_channels(net, x)
    _select_nonzero_inputs(net.backbone)
    if verify:
        with torch.no_grad():
            _check_outputs(reference, _flat_outputs(net(x)), atol, rtol)
    return net


def _default_input(net: nn.Module) -> Tensor:
    first = next(m for m in net.backbone.modules() if isinstance(m, nn.Conv2d))
    weight = first.weight
    size = (1, first.in_channels, DEFAULT_TRACE_SIZE, DEFAULT_TRACE_SIZE)
    # A private generator: compacting must not move the global random state of a run.
    gen = torch.Generator().manual_seed(0)
    return torch.randn(size, generator=gen, dtype=weight.dtype).to(weight.device)


def _flat_outputs(outputs: Any) -> dict[str, Tensor]:
    if isinstance(outputs, Tensor):
        return {"output": outputs}
    return dict(outputs)


def _check_outputs(
    reference: dict[str, Tensor], outputs: dict[str, Tensor], atol: float, rtol: float
) -> None:
    for name, ref in reference.items():
        out = outputs[name]
        if out.shape != ref.shape or not torch.allclose(out, ref, atol=atol, rtol=rtol):
            diff = (out - ref).abs().max().item() if out.shape == ref.shape else float("nan")
            raise CompactionError(
                f"output {name!r} of the compact model differs from the masked model's "
                f"(max abs difference {diff:.3g}, shapes {tuple(out.shape)} vs {tuple(ref.shape)})"
            )


def _remove_producer_channels(net: nn.Module, x: Tensor) -> None:
    """Pass 1: remove channels whose every reader has a zero input group there."""
    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(True)  # the graph is traced through autograd
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(net, example_inputs=x, verbose=False)
    backbone_modules = set(net.backbone.modules())
    plans = []
    for group in graph.get_all_groups(root_module_types=[nn.Conv2d]):
        root = group[0].dep.target.module
        if root not in backbone_modules:
            continue
        removable = _removable_channels(graph, group, root.out_channels)
        if removable.all():
            removable[0] = False  # keep one channel: an empty layer is not a valid conv
        if removable.any():
            plans.append((root, removable.nonzero().flatten().tolist()))
    # Every plan's indices refer to its own root's output channels, which no other group touches;
    # the graph recomputes concatenation offsets for each new group.
    for root, idxs in plans:
        graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs).prune(record_history=False)
    for p, flag in zip(net.parameters(), flags, strict=True):
        p.requires_grad_(flag)


def _removable_channels(graph: tp.DependencyGraph, group: Any, channels: int) -> Tensor:
    """Bool over the root's output channels: removable from the whole coupled group."""
    removable = torch.ones(channels, dtype=torch.bool)
    for item in group:
        node, handler = item.dep.target, item.dep.handler
        module = node.module
        root_idx = torch.as_tensor(item.root_idxs, dtype=torch.long)
        if isinstance(module, (nn.Conv2d, nn.Linear)) and graph.is_in_channel_pruning_fn(handler):
            if getattr(module, "groups", 1) != 1:
                removable[root_idx] = False
                continue
            idx = torch.as_tensor(item.idxs, dtype=torch.long)
            zero = zero_channel_groups(module.weight).cpu()
            removable[root_idx[~zero[idx]]] = False
        elif isinstance(module, nn.Conv2d) and graph.is_out_channel_pruning_fn(handler):
            if module.groups != 1:
                removable[root_idx] = False
        elif not (isinstance(module, (nn.Linear, nn.BatchNorm2d)) or node.type in _ROUTING_TYPES):
            # A model output, or a layer whose channel removal is not known to be exact.
            removable[root_idx] = False
    return removable


def _select_nonzero_inputs(backbone: nn.Module) -> None:
    """Pass 2: every backbone conv keeps only its non-zero input groups."""
    for name, conv in list(_convs(backbone)):
        zero = zero_channel_groups(conv.weight)
        if not zero.any() or conv.groups != 1:
            continue
        keep = (~zero).nonzero().flatten()
        if keep.numel() == 0:
            keep = keep.new_zeros(1)  # keep one (zero) group: an empty conv is not valid
        _set_submodule(backbone, name, ChannelSelectConv2d.from_conv(conv, keep))


def _convs(module: nn.Module) -> Iterator[tuple[str, nn.Conv2d]]:
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d):
            yield name, sub


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _conv_like(
    conv: nn.Conv2d, cls: type[nn.Conv2d], in_channels: int, out_channels: int
) -> nn.Conv2d:
    return cls(
        in_channels,
        out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )


def architecture(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The channel counts of every conv, BatchNorm and linear layer, by qualified name.

    With the dense model's builder this is enough to rebuild a compact model
    (:func:`resize_to_architecture`); JSON- and ``weights_only``-safe.
    """
    arch: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            kind = "select_conv2d" if isinstance(module, ChannelSelectConv2d) else "conv2d"
            arch[name] = {"kind": kind, "in": module.in_channels, "out": module.out_channels}
        elif isinstance(module, nn.BatchNorm2d):
            arch[name] = {"kind": "batchnorm2d", "out": module.num_features}
        elif isinstance(module, nn.Linear):
            arch[name] = {"kind": "linear", "in": module.in_features, "out": module.out_features}
    return arch


def resize_to_architecture(model: nn.Module, arch: dict[str, dict[str, Any]]) -> nn.Module:
    """Replace ``model``'s layers (in place) by fresh ones of the channel counts in ``arch``.

    Args:
        model: a freshly built dense model of the same configuration.
        arch: the record made by :func:`architecture` on the compact model.

    Returns:
        ``model``, with uninitialised-by-training layers of the recorded shapes, ready for
        ``load_state_dict``.

    Raises:
        ValueError: a recorded layer is missing or of another kind.
    """
    for name, spec in arch.items():
        module = model.get_submodule(name)
        kind = spec["kind"]
        if kind in ("conv2d", "select_conv2d") and isinstance(module, nn.Conv2d):
            cls = ChannelSelectConv2d if kind == "select_conv2d" else nn.Conv2d
            new: nn.Module = _conv_like(module, cls, spec["in"], spec["out"])
        elif kind == "batchnorm2d" and isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(
                spec["out"],
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
                device=_device_of(module),
            )
        elif kind == "linear" and isinstance(module, nn.Linear):
            new = nn.Linear(
                spec["in"], spec["out"], module.bias is not None, device=module.weight.device
            )
        else:
            raise ValueError(f"layer {name!r} is a {type(module).__name__}, recorded as {kind}")
        _set_submodule(model, name, new)
    return model


def _device_of(module: nn.Module) -> torch.device:
    tensor = next(iter(module.state_dict().values()), None)
    return tensor.device if tensor is not None else torch.device("cpu")
