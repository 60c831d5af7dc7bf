"""``import``: a backbone made by a callable of the user's own code, named by its import path.

``target: "package.module:make_backbone"`` names a callable (a function or an ``nn.Module``
class) that ``kwargs`` are passed to, and ``in_channels`` too when its signature has a parameter
of that name; it returns the backbone, mapping ``[B, C, H, W]`` images to ``[B, C', h, w]``
features. A run records the path and the arguments, so it is rebuilt like any configured model:
reloaded, compacted, fine-tuned and run in sweeps (where every worker process must be able to
import the module: install the package, or put it on ``PYTHONPATH``).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field
from torch import nn

from sparsekit.errors import ConfigError
from sparsekit.interfaces import BackboneBuilder, BackboneConfig

#: ``package.module:attribute`` with an optional dotted attribute path.
TARGET_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def load_target(target: str) -> Callable[..., Any]:
    """The callable that ``"package.module:attribute"`` names.

    Raises:
        ConfigError: a malformed path, a module that cannot be imported, a missing attribute or
            one that is not callable.
    """
    if not TARGET_PATTERN.match(target):
        raise ConfigError(f"an import target is 'package.module:callable', got {target!r}")
    module_name, _, attribute = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the target's
        raise ConfigError(
            f"cannot import module {module_name!r} of target {target!r}: "
            f"{type(exc).__name__}: {exc} (is it installed or on PYTHONPATH?)"
        ) from exc
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ConfigError(f"module {module_name!r} has no attribute {attribute!r} ({target!r})")
        found = getattr(found, part)
    if not callable(found):
        raise ConfigError(f"target {target!r} is a {type(found).__name__}, not a callable")
    return found


def _importable(target: str) -> str:
    try:
        load_target(target)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return target


#: A config field naming a callable by ``"package.module:attribute"``, checked when validated.
ImportTarget = Annotated[str, AfterValidator(_importable)]


def accepts(function: Callable[..., Any], parameter: str) -> bool:
    """Whether ``function``'s signature has a parameter named ``parameter``."""
    try:
        return parameter in inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


class ImportBackbone(BackboneBuilder):
    """A backbone from ``target(**kwargs)`` (plus ``in_channels=``), with the standard heads."""

    name: ClassVar[str] = "import"

    class Config(BackboneConfig):
        """Configuration of :class:`ImportBackbone`.

        Attributes:
            target: ``"package.module:callable"`` returning the backbone.
            kwargs: keyword arguments of the callable.
        """

        target: ImportTarget
        kwargs: dict[str, Any] = Field(default_factory=dict)

    config: Config

    @classmethod
    def example_params(cls, workdir: Any) -> dict[str, Any]:
        """The small residual backbone, by its path, for the contract test suite."""
        target = "sparsekit_plugins.models.small_resnet:small_resnet_backbone"
        return {
            "target": target,
            "kwargs": {"widths": [8, 16], "output_stride": 4},
            "head_channels": 8,
        }

    def make_backbone(self, in_channels: int) -> nn.Module:
        """``target(**kwargs)``, with ``in_channels`` when the callable takes it.

        Raises:
            ConfigError: the target cannot be loaded, fails, or returns no ``nn.Module``.
        """
        cfg = self.config
        make = load_target(cfg.target)
        kwargs = dict(cfg.kwargs)
        if accepts(make, "in_channels"):
            kwargs.setdefault("in_channels", in_channels)
        try:
            backbone = make(**kwargs)
        except Exception as exc:  # noqa: BLE001 - the user's code may fail in any way
            raise ConfigError(
                f"{cfg.target}(**{kwargs}) failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(backbone, nn.Module):
            raise ConfigError(
                f"{cfg.target} must return an nn.Module backbone, got {type(backbone).__name__}"
            )
        return backbone
