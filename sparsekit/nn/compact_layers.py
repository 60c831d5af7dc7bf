"""The layers of a compact network and the record of its shapes.

:class:`ChannelSelectConv2d` is the conv a compact network reads selected input channels with;
:func:`architecture` records every layer's channel counts so that :func:`resize_to_architecture`
can rebuild a compact network from a dense one of the same builder (the run store saves and
loads compact models this way). :mod:`sparsekit.nn.compaction` makes compact networks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


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
        new = conv_like(conv, cls, len(keep), conv.out_channels)
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


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def conv_like(
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
            new: nn.Module = conv_like(module, cls, spec["in"], spec["out"])
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
        set_submodule(model, name, new)
    return model


def _device_of(module: nn.Module) -> torch.device:
    tensor = next(iter(module.state_dict().values()), None)
    return tensor.device if tensor is not None else torch.device("cpu")
