"""One registry mechanism for every kind of component (algorithms, models, data sets, delays, ...).

Scenario files name components by short names; a :class:`Registry` maps those names to classes or
factories at the edge where scenarios are loaded. There are no import strings anywhere.

Plug-ins. A user's installed package adds components through Python entry points, one group per
kind (:data:`GROUPS`). Each entry point is named like the component and points at a
:class:`Component`: the component's pydantic config model (which the scenario schema then
includes) and its implementation. ``pyproject.toml`` of a plug-in package::

    [project.entry-points."asyncfl.algorithms"]
    myalg = "mypkg.rules:MYALG"          # MYALG = Component(config=MyAlgConfig, build=MyRule)

Entry points are loaded once per process (:func:`plugins`), the first time a registry of their
group is read; a plug-in that fails to load, or names a config whose tag is not the entry point's
name, is a one-line :class:`~asyncfl.errors.PluginError` (exit 2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, Literal, TypeVar

from asyncfl.errors import PluginError, ScenarioError

T = TypeVar("T")

GROUPS = {
    "algorithm": "asyncfl.algorithms",
    "model": "asyncfl.models",
    "data set": "asyncfl.datasets",
    "distribution": "asyncfl.delays",
    "staleness weight": "asyncfl.staleness_weights",
    "selection strategy": "asyncfl.selection",
}
"""Entry-point group of each kind of component a plug-in may add."""


@dataclass(frozen=True)
class Component:
    """What a plug-in's entry point names.

    ``config``: the pydantic model of the component's scenario mapping (subclass of the kind's base
    in :mod:`asyncfl.config.schema`, e.g. ``AlgorithmBase``), whose tag field (``name``,
    ``dataset``, ``dist``) is a ``Literal`` of the entry point's name. ``build``: the
    implementation, as that kind's registry holds it (algorithms: a rule class with
    ``from_config``; models: ``fn(cfg, spec) -> nn.Module``; data sets: an
    :class:`asyncfl.data.registry.DataSet`; delays: ``fn(cfg) -> Distribution``; staleness
    weights: ``fn(cfg) -> (tau -> s(tau))``; selection strategies: a class ``(cfg, ctx)`` with the
    :class:`asyncfl.sim.selection.Selector` methods, usually a subclass of
    :class:`asyncfl.sim.selection.Uniform`)."""

    config: type
    build: Any


@functools.cache
def plugins(group: str) -> dict[str, Component]:
    """The components installed packages declare in entry-point ``group``, loaded once."""
    found: dict[str, Component] = {}
    for ep in entry_points(group=group):
        where = f"plug-in {ep.name!r} (entry point {ep.value!r} in group {group})"
        try:
            obj = ep.load()
        except Exception as exc:  # any import-time failure of foreign code is the user's to fix
            raise PluginError(f"{where} failed to load: {type(exc).__name__}: {exc}") from None
        if not isinstance(obj, Component):
            raise PluginError(f"{where} names {type(obj).__name__}, not an asyncfl.registry.Component")
        found[ep.name] = obj
    return found


class Registry(Generic[T]):
    """A name -> component map for one kind of component; ``key`` is the scenario key it serves.

    ``plugin_part`` (``config`` or ``build``): which part of a plug-in's :class:`Component` this
    registry holds; plug-ins of the kind's group (:data:`GROUPS`) join on the first read. None:
    in-process registrations only."""

    def __init__(self, kind: str, key: str, plugin_part: Literal["config", "build"] | None = None) -> None:
        self.kind = kind
        self.key = key
        self.group = GROUPS.get(kind) if plugin_part else None
        self._part = plugin_part
        self._items: dict[str, T] = {}
        self._plugins_joined = self.group is None
        self._from_plugins: set[str] = set()
        self._listeners: list[Callable[[], None]] = []

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("fedavg")``."""

        def deco(obj: T) -> T:
            self._add(name, obj)
            for listener in self._listeners:
                listener()
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def remove(self, name: str) -> None:
        """Unregister ``name`` (tests that register a toy component undo it)."""
        del self._items[name]
        self._from_plugins.discard(name)
        for listener in self._listeners:
            listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every later registration or removal (the schema rebuilds its
        unions)."""
        self._listeners.append(listener)

    def _add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = obj

    def _join_plugins(self) -> None:
        if self._plugins_joined or self.group is None:
            return
        self._plugins_joined = True
        for name, comp in plugins(self.group).items():
            if name in self._items:
                raise PluginError(
                    f"plug-in {name!r} (group {self.group}) clashes with the built-in {self.kind} {name!r}"
                )
            self._items[name] = getattr(comp, self._part or "build")
            self._from_plugins.add(name)

    def get(self, name: str) -> T:
        self._join_plugins()
        try:
            return self._items[name]
        except KeyError:
            allowed = ", ".join(sorted(self._items))
            raise ScenarioError(self.key, f"unknown {self.kind} {name!r}; allowed: {allowed}") from None

    def names(self) -> list[str]:
        self._join_plugins()
        return sorted(self._items)

    def own_names(self) -> list[str]:
        """The names registered in this process (built-ins and in-process registrations), never
        the plug-ins' (loaded or not): what an import-time consistency check compares, since a
        plug-in brings its config and its implementation together."""
        return sorted(set(self._items) - self._from_plugins)

    def check_same_names(self, configs: Registry[Any], where: str) -> None:
        """Raise ImportError unless ``configs`` (the schema's config classes of this kind) and this
        registry name the same in-process components: a config without its implementation, or the
        reverse, fails when ``where`` is imported, never silently at run time."""
        schema, registered = set(configs.own_names()), set(self.own_names())
        if schema != registered:
            raise ImportError(
                f"{self.kind}s in the schema {sorted(schema)} differ from those registered in {where} "
                f"{sorted(registered)}: add the missing implementation or schema class"
            )

    def items(self) -> list[tuple[str, T]]:
        """(name, component) pairs in registration order (built-ins first, then plug-ins)."""
        self._join_plugins()
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        self._join_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


__all__ = ["GROUPS", "Component", "Registry", "plugins"]
