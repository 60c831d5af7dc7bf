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
   a skip connection into a reader with non-zero weights (or into a head) stays. A depthwise conv
   maps channel c to channel c, like a BatchNorm; other grouped convs and unknown layers keep all.
2. Remaining zero input groups. A consumer whose zero groups read channels that must stay for other
   readers (the skip stream, the network's RGB input) drops those groups from its weight and reads
   only the channels it needs (:class:`ChannelSelectConv2d`, an ``index_select`` then the conv).

Every layer keeps at least one channel, so a fully zeroed layer becomes a one-channel layer with
zero weights rather than an empty one. The compact model's layer shapes are recorded by
:func:`architecture` so that :func:`resize_to_architecture` can rebuild it from a dense model of
the same builder (the run store saves and loads compact models). What Torch-Pruning cannot trace
or prune, and any output the compact model does not reproduce, raises a CompactionError naming the
layer.

References:
    Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023 (Torch-Pruning);
    Upadhyay et al., "Less is More – Towards parsimonious multi-task models using structured
    sparsity", CPAL 2024.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Iterator
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from sparsekit.errors import CompactionError
from sparsekit.nn.compact_layers import (
    ChannelSelectConv2d,
    architecture,
    resize_to_architecture,
    set_submodule,
)
from sparsekit.nn.groups import zero_channel_groups

__all__ = ["ChannelSelectConv2d", "architecture", "compact", "resize_to_architecture"]

#: Side of the square random input traced to build the dependency graph by default.
DEFAULT_TRACE_SIZE = 64

#: Graph nodes that only route channels (element-wise ops, concatenation, reshapes): a channel
#: passing through them is removable when its readers allow it.
_OP = tp.ops.OPTYPE
_ROUTING_TYPES = frozenset({_OP.ELEMENTWISE, _OP.CONCAT, _OP.SPLIT, _OP.RESHAPE, _OP.SLICE})


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
        CompactionError: Torch-Pruning cannot trace or prune the model, or (with ``verify``) an
            output differs beyond the tolerance; the message names the layer.
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
    graph, plans = _producer_plans(net, x)
    _prune(graph, plans, net)
    _select_nonzero_inputs(net.backbone)
    if verify:
        problem = _output_problem(net, x, reference, atol, rtol)
        if problem is not None:
            raise CompactionError(_culprit(model, x, reference, atol, rtol) or problem)
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


def _output_problem(
    net: nn.Module, x: Tensor, reference: dict[str, Tensor], atol: float, rtol: float
) -> str | None:
    """How the outputs of ``net`` on ``x`` differ from ``reference`` (None: they agree)."""
    try:
        with torch.no_grad():
            outputs = _flat_outputs(net(x))
    except RuntimeError as exc:
        return f"the compact model fails: {str(exc).splitlines()[0]}"
    for name, ref in reference.items():
        out = outputs[name]
        if out.shape != ref.shape or not torch.allclose(out, ref, atol=atol, rtol=rtol):
            diff = (out - ref).abs().max().item() if out.shape == ref.shape else float("nan")
            return (
                f"output {name!r} of the compact model differs from the masked model's "
                f"(max abs difference {diff:.3g}, shapes {tuple(out.shape)} vs {tuple(ref.shape)})"
            )
    return None


def _culprit(
    model: nn.Module, x: Tensor, reference: dict[str, Tensor], atol: float, rtol: float
) -> str | None:
    """Which removal breaks the outputs: the steps of :func:`compact` redone one by one."""
    net = copy.deepcopy(model).eval()
    names = {module: name for name, module in net.named_modules()}
    graph, plans = _producer_plans(net, x)
    for root, idxs in plans:
        _prune(graph, [(root, idxs)], net)
        problem = _output_problem(net, x, reference, atol, rtol)
        if problem is not None:
            return (
                f"removing {len(idxs)} output channels of layer {names[root]!r} and of the layers "
                f"Torch-Pruning couples to them changes the outputs ({problem}): its graph "
                f"misses how a layer after {names[root]!r} uses them; use the masked model."
            )
    return None


def _producer_plans(net: nn.Module, x: Tensor) -> tuple[Any, list[tuple[nn.Conv2d, list[int]]]]:
    """Pass 1's plan: for backbone convs, the output channels that no reader needs.

    Raises:
        CompactionError: Torch-Pruning cannot build the model's dependency graph.
    """
    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(True)  # the graph is traced through autograd
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(net, example_inputs=x, verbose=False)
    except Exception as exc:  # noqa: BLE001 - Torch-Pruning fails in many ways on odd layers
        raise CompactionError(_trace_failure(net, exc)) from exc
    finally:
        for p, flag in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    backbone_modules = set(net.backbone.modules())
    plans, coupled = [], set()
    for group in graph.get_all_groups(root_module_types=[nn.Conv2d]):
        root = group[0].dep.target.module
        # A depthwise conv's outputs are its inputs' channels: those of an earlier group.
        if root not in backbone_modules or root in coupled:
            continue
        coupled.update(
            item.dep.target.module for item in group if _is_depthwise(item.dep.target.module)
        )
        removable = _removable_channels(graph, group, root.out_channels)
        if removable.all():
            removable[0] = False  # keep one channel: an empty layer is not a valid conv
        if removable.any():
            plans.append((root, removable.nonzero().flatten().tolist()))
    return graph, plans


def _prune(graph: Any, plans: list[tuple[nn.Conv2d, list[int]]], net: nn.Module) -> None:
    """Pass 1: remove each plan's channels from its root and every layer coupled to them (a
    CompactionError names the root if Torch-Pruning fails). A plan's indices are its own root's
    output channels, which no other group touches; the graph recomputes concatenation offsets."""
    for root, idxs in plans:
        try:
            group = graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs)
            group.prune(record_history=False)
        except Exception as exc:  # noqa: BLE001 - see _producer_plans
            name = next(n for n, m in net.named_modules() if m is root)
            raise CompactionError(
                f"Torch-Pruning cannot remove {len(idxs)} output channels of layer {name!r} and "
                f"the layers coupled to them: {type(exc).__name__}: {exc}"
            ) from exc


def _trace_failure(net: nn.Module, exc: Exception) -> str:
    """What Torch-Pruning could not trace, naming the nearest layer before the failing node."""
    names = {module: name for name, module in net.named_modules()}
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    nodes = [[v for v in f.f_locals.values() if isinstance(v, tp.dependency.Node)] for f in frames]
    queue, where = next((found[:1] for found in reversed(nodes) if found), []), ""
    for node in queue:  # breadth first through the inputs, up to the nearest named layer
        if node.module in names:
            where = f" at an operation after layer {names[node.module]!r}"
            break
        queue.extend(n for n in node.inputs if n not in queue)
    return (
        f"Torch-Pruning cannot trace the channel dependencies of this model{where}: "
        f"{type(exc).__name__}: {exc}. Its channels cannot be removed; use the masked model."
    )


def _removable_channels(graph: tp.DependencyGraph, group: Any, channels: int) -> Tensor:
    """Bool over the root's output channels: removable from the whole coupled group."""
    removable = torch.ones(channels, dtype=torch.bool)
    for item in group:
        node, handler = item.dep.target, item.dep.handler
        module = node.module
        root_idx = torch.as_tensor(item.root_idxs, dtype=torch.long)
        if _is_depthwise(module):  # channel c in, channel c out: removable if its readers allow
            feeding = _feeding_roots(group, item)
            if feeding is None or not torch.equal(feeding, root_idx):
                # Its channel c is another root channel than its input's (a concatenation of a
                # layer's output with its depthwise conv's, as in GhostNet): keep both.
                removable[root_idx] = False
                removable[feeding if feeding is not None else root_idx] = False
            continue
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


def _feeding_roots(group: Any, item: Any) -> Tensor | None:
    """The root channels of the input of a depthwise conv's ``item``, in the order of its
    channels ``item.idxs``; None when no item of the group feeds it, or not all its channels."""
    inputs = item.dep.target.inputs
    feeder = next((other for other in group if other.dep.target in inputs), None)
    if feeder is None:
        return None
    roots = dict(zip(feeder.idxs, feeder.root_idxs, strict=True))
    if not all(i in roots for i in item.idxs):
        return None
    return torch.as_tensor([roots[i] for i in item.idxs], dtype=torch.long)


def _is_depthwise(module: nn.Module) -> bool:
    """A conv that maps each input channel to one output channel of its own (``groups = C``)."""
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == module.in_channels == module.out_channels
        and module.groups > 1
    )


def _select_nonzero_inputs(backbone: nn.Module) -> None:
    """Pass 2: every backbone conv keeps only its non-zero input groups."""
    for name, conv in list(_convs(backbone)):
        zero = zero_channel_groups(conv.weight)
        if not zero.any() or conv.groups != 1:
            continue
        keep = (~zero).nonzero().flatten()
        if keep.numel() == 0:
            keep = keep.new_zeros(1)  # keep one (zero) group: an empty conv is not valid
        set_submodule(backbone, name, ChannelSelectConv2d.from_conv(conv, keep))


def _convs(module: nn.Module) -> Iterator[tuple[str, nn.Conv2d]]:
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d):
            yield name, sub
