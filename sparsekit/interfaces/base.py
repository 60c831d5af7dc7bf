"""The base every component class derives from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict

from sparsekit.config import StrictModel


class ComponentConfig(StrictModel):
    """Base for component configs: immutable, and as strict as every config.

    Unknown keys are errors, numbers must be finite (no ``inf`` or ``nan``), and ``true`` or
    ``false`` are refused by fields that do not take a boolean.
    """

    model_config = ConfigDict(frozen=True)


class Component:
    """A configurable plugin component.

    Subclasses set ``name`` (the registry name) and ``Config`` (a :class:`ComponentConfig`
    subclass). Instances are built from a validated config, ``Cls(Config(...))``, or from
    keyword parameters, ``Cls(**params)``. A component that sets ``is_default = True`` is what
    the name ``"default"`` (and every unset component field) means for its kind; exactly one
    component of a kind may declare it. ``aliases`` are further names the registry accepts for
    the component (kept when a component is renamed).
    """

    name: ClassVar[str]
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    is_default: ClassVar[bool] = False
    aliases: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        if config is not None and params:
            raise TypeError(f"{type(self).__name__}: pass either a config or keyword parameters")
        if config is None:
            config = self.Config(**params)
        elif not isinstance(config, self.Config):
            expected, got = self.Config.__name__, type(config).__name__
            raise TypeError(f"{type(self).__name__} expects a {expected}, got {got}")
        self.config = config

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        """Parameters that make a small working instance, for the contract test suite.

        The default is the Config's defaults. A component with required parameters (a data set
        root, say) overrides this, and may write what it needs (e.g. a tiny data set in its
        on-disk layout) under ``workdir``.
        """
        return {}

    def check_available(self) -> None:
        """Raise :class:`sparsekit.errors.MissingDependency` when an optional package this
        component needs is not installed. Called before a run starts, so a missing package is
        one clear error instead of a failure minutes in; the default checks nothing."""

    def spec(self) -> dict[str, Any]:
        """The ``{"name": ..., **params}`` dict that recreates this component."""
        return {"name": self.name, **self.config.model_dump(mode="json")}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({params})"
