"""The component registry: plugin kinds, discovery through entry points, and creation.

Plugins are found only through the entry-point group ``sparsekit`` (the built-ins too), so a
third-party distribution extends sparsekit exactly as the built-ins do. :data:`KINDS` is the one
table of plugin kinds: each kind's interface (the abstract base its components implement) and its
hook. :func:`create` is the one way to make a component from a name, a ``{"name": ..., **params}``
dict or an instance; a component class that sets ``is_default = True`` is its kind's
:func:`default`, so the engine never spells a plugin's name.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata as importlib_metadata
import os
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import pluggy
from pydantic import BaseModel, ValidationError

from sparsekit import hookspecs
from sparsekit.config import DEFAULT_COMPONENT, describe_validation_error
from sparsekit.errors import ConfigError, PluginError, PluginLoadWarning
from sparsekit.hookspecs import PROJECT_NAME
from sparsekit.interfaces import (
    Component,
    DatasetProvider,
    Executor,
    Learner,
    Logger,
    LossCombiner,
    MaskCriterion,
    ModelBuilder,
    OptimizerKind,
    Penalty,
    RegrowthPolicy,
    SparsityScheduler,
)

DISABLE_ENV = "SPARSEKIT_DISABLE_PLUGINS"


@dataclass(frozen=True)
class Kind:
    """A plugin kind: the interface its components implement and the hook that registers them."""

    name: str
    interface: type[Component]
    hook: str


#: Every plugin kind, keyed by its singular API name.
KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("penalty", Penalty, "sparsekit_register_penalties"),
        Kind("learner", Learner, "sparsekit_register_learners"),
        Kind("loss_combiner", LossCombiner, "sparsekit_register_loss_combiners"),
        Kind("dataset", DatasetProvider, "sparsekit_register_datasets"),
        Kind("model", ModelBuilder, "sparsekit_register_models"),
        Kind("regrowth", RegrowthPolicy, "sparsekit_register_regrowth_policies"),
        Kind("scheduler", SparsityScheduler, "sparsekit_register_schedulers"),
        Kind("mask", MaskCriterion, "sparsekit_register_masks"),
        Kind("executor", Executor, "sparsekit_register_executors"),
        Kind("optimizer", OptimizerKind, "sparsekit_register_optimizers"),
        Kind("logger", Logger, "sparsekit_register_loggers"),
    )
}


class PluginRow(NamedTuple):
    """One registered component, as listed by :func:`list_plugins`."""

    kind: str
    name: str
    distribution: str
    version: str


@dataclass(frozen=True)
class _Entry:
    cls: type
    plugin: str
    distribution: str
    version: str


def _disabled() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _warn(message: str) -> None:
    warnings.warn(message, PluginLoadWarning, stacklevel=3)


def _entry_points() -> list[tuple[str, str, importlib_metadata.EntryPoint]]:
    """(distribution, version, entry point) of every ``sparsekit`` entry point, each once."""
    found: dict[tuple[str, str], tuple[str, str, importlib_metadata.EntryPoint]] = {}
    for dist in importlib_metadata.distributions():
        dist_name = dist.metadata["Name"] or "unknown"
        for ep in dist.entry_points:
            # setdefault: the same distribution found twice on sys.path counts once
            if ep.group == PROJECT_NAME:
                found.setdefault((dist_name, ep.name), (dist_name, dist.version or "", ep))
    return list(found.values())


def _hook_problem(pm: pluggy.PluginManager, module: object) -> str | None:
    """What is wrong with the hooks a registered plugin module implements (None: nothing)."""
    callers = pm.get_hookcallers(module) or []
    unknown = sorted(caller.name for caller in callers if caller.spec is None)
    hooks = sorted(kind.hook for kind in KINDS.values())
    if unknown:
        close = difflib.get_close_matches(unknown[0], hooks, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"implements {', '.join(unknown)}, which is no sparsekit hook{hint}"
    if not callers:
        return (
            f"implements no sparsekit hook (functions marked @sparsekit.hookimpl: {hooks[0]}, ...)"
        )
    return None


def make_plugin_manager() -> tuple[pluggy.PluginManager, dict[str, tuple[str, str]]]:
    """A fresh plugin manager with every ``sparsekit`` entry point loaded.

    Entry points named in ``SPARSEKIT_DISABLE_PLUGINS`` (comma-separated entry-point names, or
    ``distribution:entry-point`` to single out one distribution's) are skipped; a name there
    that no entry point has emits a :class:`PluginLoadWarning` listing the names there are. An
    entry point that fails to import, or whose module implements a hook that does not exist
    (a misspelt hook name) or none at all, emits a :class:`PluginLoadWarning` naming it and its
    distribution and is skipped; the others are loaded.

    Returns:
        The manager and, for every registered plugin name, its (distribution, version).
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    origins: dict[str, tuple[str, str]] = {}
    disabled, known = _disabled(), set()
    for dist_name, version, ep in _entry_points():
        plugin_name = f"{dist_name}:{ep.name}"
        known |= {ep.name, plugin_name}
        if {ep.name, plugin_name} & disabled:
            continue
        what = f"sparsekit plugin {ep.name!r} from {dist_name} ({ep.value})"
        try:
            module = ep.load()
            pm.register(module, name=plugin_name)
        except Exception as exc:  # noqa: BLE001 - any failure of a plugin must not stop the rest
            _warn(f"{what} failed to load and is skipped: {type(exc).__name__}: {exc}")
            continue
        problem = _hook_problem(pm, module)
        if problem is not None:
            pm.unregister(name=plugin_name)
            _warn(f"{what} {problem}; it is skipped")
            continue
        origins[plugin_name] = (dist_name, version)
    if disabled - known:
        _warn(
            f"{DISABLE_ENV} names {', '.join(sorted(disabled - known))}, which no installed "
            f"sparsekit entry point is called; the names there are: {', '.join(sorted(known))}"
        )
    pm.check_pending()
    return pm, origins


def _builtins_first(origins: dict[str, tuple[str, str]], plugin: str) -> tuple[bool, str]:
    dist = origins.get(plugin, (plugin, ""))[0]
    return dist != PROJECT_NAME, dist


class Registry:
    """Every component of every kind, collected by calling each kind's hook once."""

    def __init__(self) -> None:
        self.plugin_manager, origins = make_plugin_manager()
        self._entries: dict[str, dict[str, _Entry]] = {kind: {} for kind in KINDS}
        for kind in KINDS.values():
            impls = getattr(self.plugin_manager.hook, kind.hook).get_hookimpls()
            # The built-ins first, then by distribution name: on a name clash the first stays.
            for impl in sorted(impls, key=lambda i: _builtins_first(origins, i.plugin_name)):
                dist, version = origins.get(impl.plugin_name, (impl.plugin_name, ""))
                self._collect(kind.name, impl, dist, version)

    def _collect(self, kind: str, impl: Any, dist: str, version: str) -> None:
        """Call one plugin's hook; a class it cannot register is skipped with a warning."""

        def register(cls: type) -> None:
            try:
                self.add(kind, cls, impl.plugin_name, dist, version)
            except PluginError as exc:
                _warn(f"sparsekit plugin {impl.plugin_name!r}: {exc}; the class is skipped")

        try:
            impl.function(register=register)
        except Exception as exc:  # noqa: BLE001 - a failing plugin must not stop the rest
            _warn(
                f"sparsekit plugin {impl.plugin_name!r} failed while registering its {kind} "
                f"components and is skipped: {type(exc).__name__}: {exc}"
            )

    def add(
        self,
        kind: str,
        cls: type,
        plugin: str = "runtime",
        dist: str = "runtime",
        version: str = "",
    ) -> None:
        """Register a component class of ``kind`` (what a plugin's ``register`` call does).

        Raises:
            PluginError: an unknown kind, a class that is not of the kind's interface or has
                no ``name`` or pydantic ``Config``, or a name another class of the kind already
                has (then nothing is registered).
        """
        self._check_component(self._check_kind(kind), cls, dist)
        names = (cls.name, *getattr(cls, "aliases", ()))
        for name in names:  # every name checked before any is taken
            existing = self._entries[kind].get(name)
            if existing is not None and existing.cls is not cls:
                raise PluginError(
                    f"two {kind} plugins are named {name!r}: {existing.cls.__qualname__} from "
                    f"{existing.distribution} and {cls.__qualname__} from {dist}; disable one "
                    f"with {DISABLE_ENV}"
                )
        for name in names:
            self._entries[kind][name] = _Entry(cls, plugin, dist, version)

    def remove(self, kind: str, name: str) -> None:
        """Unregister the component ``name`` of ``kind`` and its aliases (nothing if absent)."""
        entries = self._entries[self._check_kind(kind)]
        entry = entries.get(name)
        if entry is not None:
            for key in [k for k, e in entries.items() if e.cls is entry.cls]:
                del entries[key]

    @staticmethod
    def _check_component(kind: str, cls: type, dist: str) -> None:
        name = getattr(cls, "name", None)
        config = getattr(cls, "Config", None)
        interface = KINDS[kind].interface
        if not (isinstance(cls, type) and issubclass(cls, interface)):
            raise PluginError(f"{kind} component {cls!r} from {dist} is not a {interface.__name__}")
        if not isinstance(name, str) or not name:
            raise PluginError(f"{kind} component {cls!r} from {dist} has no `name`")
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise PluginError(f"{kind} component {name!r} from {dist} has no pydantic `Config`")

    def kinds(self) -> list[str]:
        """Every plugin kind."""
        return list(self._entries)

    def rows(self, kind: str | None = None) -> list[PluginRow]:
        """(kind, name, distribution, version) of every component, or of one kind's."""
        kinds = [self._check_kind(kind)] if kind is not None else self.kinds()
        return [
            PluginRow(k, name, e.distribution, e.version)
            for k in kinds
            for name, e in sorted(self._entries[k].items())
            if name == e.cls.name
        ]

    def names(self, kind: str) -> list[str]:
        """The registered names of ``kind`` (aliases left out), sorted."""
        return sorted(
            n for n, e in self._entries[self._check_kind(kind)].items() if n == e.cls.name
        )

    def get(self, kind: str, name: str) -> type:
        """The component class of ``kind`` named ``name``.

        Raises:
            PluginError: an unknown kind or name (the message lists what exists and the closest
                match).
        """
        entries = self._entries[self._check_kind(kind)]
        if name == DEFAULT_COMPONENT:
            name = self.default(kind)
        if name not in entries:
            raise PluginError(_unknown(f"{kind} plugin", name, self.names(kind)))
        return entries[name].cls

    def default(self, kind: str) -> str:
        """The name of the component of ``kind`` whose class declares ``is_default = True``.

        Raises:
            PluginError: no component of the kind, or more than one, declares itself default.
        """
        entries = self._entries[self._check_kind(kind)]
        marked = [n for n, e in sorted(entries.items()) if n == e.cls.name and e.cls.is_default]
        if len(marked) != 1:
            found = ", ".join(marked) if marked else "none"
            raise PluginError(
                f"the {kind} kind needs exactly one component declaring is_default = True "
                f"(found: {found}); name the {kind} explicitly"
            )
        return marked[0]

    def create(self, kind: str, spec: Any) -> Any:
        """A configured component from a name, a ``{"name": ..., **params}`` dict or an instance.

        An instance of the kind's interface is returned as it is. ``"default"`` (or a dict named
        so) stands for :meth:`default`.

        Raises:
            ConfigError: parameters the component's Config rejects, a malformed spec, or an
                instance of another kind.
            PluginError: no component of that kind has that name.
        """
        interface = KINDS[self._check_kind(kind)].interface
        if isinstance(spec, interface):
            return spec
        if isinstance(spec, Component):
            raise ConfigError(f"{kind} must be a {interface.__name__}, got {type(spec).__name__}")
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ConfigError(f"a {kind} is a name or a {{'name': ...}} dict, got {spec!r}")
        params = dict(spec)
        name = params.pop("name")
        cls = self.get(kind, name)
        try:
            return cls(cls.Config(**params))
        except ValidationError as exc:
            raise ConfigError(
                f"{kind} {cls.name!r}: {describe_validation_error(exc, cls.Config)}"
            ) from None

    def spec(self, kind: str, spec: Any) -> Any:
        """``spec`` with a ``"default"`` name replaced by the default's name (others unchanged)."""
        if isinstance(spec, dict) and spec.get("name") == DEFAULT_COMPONENT:
            return {**spec, "name": self.default(kind)}
        return spec

    def _check_kind(self, kind: str) -> str:
        if kind not in self._entries:
            raise PluginError(_unknown("plugin kind", kind, self.kinds()))
        return kind


def _unknown(what: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=1, cutoff=0.4)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(available) if available else "none"
    return f"unknown {what} {name!r}.{hint} Available: {listing}."


@functools.lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The registry for this process, built on first use (never at import time)."""
    return Registry()


def reload_plugins() -> Registry:
    """Forget the cached registry and discover plugins again (after installing one)."""
    get_registry.cache_clear()
    importlib.invalidate_caches()  # newly added *.dist-info directories become visible
    return get_registry()


def list_plugins(kind: str | None = None) -> list[PluginRow]:
    """Rows of (kind, name, distribution, version) for every registered component."""
    return get_registry().rows(kind)


def create(kind: str, spec: Any, **params: Any) -> Any:
    """A component of ``kind``: ``create("penalty", "l1")``, ``create("loss_combiner",
    "uncertainty", init_log_var=0.5)``, a ``{"name": ..., **params}`` dict, or an instance.

    Raises:
        PluginError: unknown kind or name (the message lists what exists and the closest match).
        ConfigError: a parameter its Config does not accept.
    """
    if params:
        if not isinstance(spec, str):
            raise ConfigError("keyword parameters go with a component name, not a dict or instance")
        spec = {"name": spec, **params}
    return get_registry().create(kind, spec)


def default(kind: str) -> str:
    """The name of ``kind``'s default component (the one declaring ``is_default = True``)."""
    return get_registry().default(kind)
