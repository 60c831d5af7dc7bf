"""Plugin manager factory and the component registry.

Plugins are discovered only through the entry-point group ``sparsekit`` (the built-ins too), so a
third-party distribution extends sparsekit exactly as the built-ins do.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata as importlib_metadata
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import pluggy

from sparsekit import hookspecs
from sparsekit.hookspecs import HOOKS_BY_KIND, PROJECT_NAME

logger = logging.getLogger(__name__)

DISABLE_ENV = "SPARSEKIT_DISABLE_PLUGINS"


class PluginLoadWarning(UserWarning):
    """A plugin could not be imported or registered; the others still work."""


class PluginError(LookupError):
    """An unknown plugin kind or name, or two plugins claiming the same name."""


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


def make_plugin_manager() -> tuple[pluggy.PluginManager, dict[str, tuple[str, str]]]:
    """A fresh plugin manager with every ``sparsekit`` entry point loaded.

    Entry points named in ``SPARSEKIT_DISABLE_PLUGINS`` (comma-separated entry-point names, or
    ``distribution:entry-point`` to single out one distribution's) are skipped. An entry
    point that fails to import emits a :class:`PluginLoadWarning` naming it and is skipped.

    Returns:
        The manager and, for every registered plugin name, its (distribution, version).
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    origins: dict[str, tuple[str, str]] = {}
    disabled = _disabled()
    seen_dists: set[tuple[str, str]] = set()
    for dist in importlib_metadata.distributions():
        dist_name = dist.metadata["Name"] or "unknown"
        for ep in dist.entry_points:
            if ep.group != PROJECT_NAME or {ep.name, f"{dist_name}:{ep.name}"} & disabled:
                continue
            key = (dist_name, ep.name)
            if key in seen_dists:  # the same distribution found twice on sys.path
                continue
            seen_dists.add(key)
            plugin_name = f"{dist_name}:{ep.name}"
            try:
                module = ep.load()
                pm.register(module, name=plugin_name)
            except Exception as exc:  # noqa: BLE001 - any failure of a plugin must not stop the rest
                warnings.warn(
                    f"sparsekit plugin {ep.name!r} from {dist_name} ({ep.value}) failed to load "
                    f"and is skipped: {type(exc).__name__}: {exc}",
                    PluginLoadWarning,
                    stacklevel=2,
                )
                continue
            origins[plugin_name] = (dist_name, dist.version or "")
    pm.check_pending()
    return pm, origins


class Registry:
    """Every component of every kind, collected by calling each kind's hook once."""

    def __init__(self) -> None:
        self.plugin_manager, origins = make_plugin_manager()
        self._entries: dict[str, dict[str, _Entry]] = {kind: {} for kind in HOOKS_BY_KIND}
        for kind, hook_name in HOOKS_BY_KIND.items():
            hook = getattr(self.plugin_manager.hook, hook_name)
            for impl in hook.get_hookimpls():
                dist, version = origins.get(impl.plugin_name, (impl.plugin_name, ""))
                self._collect(kind, impl, dist, version)

    def _collect(self, kind: str, impl: Any, dist: str, version: str) -> None:
        def register(cls: type) -> None:
            self._check_component(kind, cls, dist)
            existing = self._entries[kind].get(cls.name)
            if existing is not None and existing.cls is not cls:
                raise PluginError(
                    f"two {kind} plugins are named {cls.name!r}: {existing.cls.__qualname__} from "
                    f"{existing.distribution} and {cls.__qualname__} from {dist}; disable one with "
                    f"{DISABLE_ENV}"
                )
            self._entries[kind][cls.name] = _Entry(cls, impl.plugin_name, dist, version)

        try:
            impl.function(register=register)
        except PluginError:
            raise
        except Exception as exc:  # noqa: BLE001
            warnings.warn(
                f"sparsekit plugin {impl.plugin_name!r} failed while registering its {kind} "
                f"components and is skipped: {type(exc).__name__}: {exc}",
                PluginLoadWarning,
                stacklevel=3,
            )

    @staticmethod
    def _check_component(kind: str, cls: type, dist: str) -> None:
        from pydantic import BaseModel

        name = getattr(cls, "name", None)
        config = getattr(cls, "Config", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"{kind} component {cls!r} from {dist} has no `name`")
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise PluginError(f"{kind} component {name!r} from {dist} has no pydantic `Config`")

    def kinds(self) -> list[str]:
        return list(self._entries)

    def rows(self, kind: str | None = None) -> list[PluginRow]:
        kinds = [self._check_kind(kind)] if kind is not None else self.kinds()
        return [
            PluginRow(k, name, e.distribution, e.version)
            for k in kinds
            for name, e in sorted(self._entries[k].items())
        ]

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[self._check_kind(kind)])

    def get(self, kind: str, name: str) -> type:
        entries = self._entries[self._check_kind(kind)]
        if name not in entries:
            raise PluginError(_unknown(f"{kind} plugin", name, sorted(entries)))
        return entries[name].cls

    def create(self, kind: str, name: str, **params: Any) -> Any:
        cls = self.get(kind, name)
        return cls(cls.Config(**params))

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
    importlib_metadata_cache_clear()
    return get_registry()


def importlib_metadata_cache_clear() -> None:
    """Make newly added ``*.dist-info`` directories on ``sys.path`` visible."""
    import importlib

    importlib.invalidate_caches()


def list_plugins(kind: str | None = None) -> list[PluginRow]:
    """Rows of (kind, name, distribution, version) for every registered component."""
    return get_registry().rows(kind)


def create(kind: str, name: str, **params: Any) -> Any:
    """A component of ``kind`` named ``name``, configured by ``params`` (validated by its Config).

    Raises:
        PluginError: unknown kind or name (the message lists what exists and the closest match).
        pydantic.ValidationError: a parameter its Config does not accept.
    """
    return get_registry().create(kind, name, **params)
