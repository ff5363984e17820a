"""The plugin manager: finds plugins once, then looks components up by name.

Built-in plugins are registered from :data:`BUILTIN_PLUGINS`, then third-party
plugins from the ``drift_framework`` entry-point group.  A third-party plugin
that fails to import, implements a hook that does not exist (a misspelling) or
fails to answer a hook is reported and skipped; a built-in one is an error.  Set
``DRIFT_DISABLE_PLUGINS=name1,name2`` to block plugins (module or entry-point
names).
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import pluggy

from . import hookspecs
from .types import COMPONENT_KINDS, Component, Preset, Trainer

log = logging.getLogger(__name__)

#: Built-in plugins, registered in this order before any third-party plugin.
BUILTIN_PLUGINS = (
    "drift_simulator",
    "drift_classical",
    "drift_control",
    "drift_dcnn",
    "drift_hyperspy",
    "drift_pyro5",
    "drift_bench",
    "drift_live",
    "drift_nion",
)

ENTRY_POINT_GROUP = "drift_framework"

#: Component kind → the hook that provides it.
KIND_HOOKS = {
    "source": "drift_frame_sources",
    "denoiser": "drift_denoisers",
    "correlator": "drift_correlators",
    "estimator": "drift_estimators",
    "controller": "drift_controllers",
    "actuator": "drift_actuators",
}


class RegistryError(LookupError):
    """A component or preset cannot be resolved."""


@dataclass(frozen=True)
class Entry:
    """A registered component and where it came from."""

    component: Component
    plugin: str
    package: str


@dataclass
class Registry:
    """Components by kind and name, presets, and the plugins that failed to load."""

    plugin_manager: pluggy.PluginManager
    components: dict = field(default_factory=lambda: {k: {} for k in COMPONENT_KINDS})
    presets: dict = field(default_factory=dict)
    trainers: dict = field(default_factory=dict)
    clashes: dict = field(default_factory=dict)
    broken: list = field(default_factory=list)
    packages: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)

    def get(self, kind: str, name: str) -> Entry:
        """Return the registration of component ``name`` of ``kind``.

        Raises
        ------
        RegistryError
            The name is unknown (the message lists the available names and the
            closest match) or registered by two packages (both are named).
        """
        if kind not in self.components:
            raise RegistryError(f"unknown component kind {kind!r}; kinds are {', '.join(COMPONENT_KINDS)}")
        if (kind, name) in self.clashes:
            a, b = self.clashes[kind, name]
            raise RegistryError(
                f"{kind} {name!r} is registered by two packages, {a} and {b}; "
                f"uninstall one or block it with DRIFT_DISABLE_PLUGINS")
        try:
            return self.components[kind][name]
        except KeyError:
            raise RegistryError(_unknown(f"{kind}", name, self.components[kind])) from None

    def preset(self, name: str) -> tuple[Preset, str]:
        """Return ``(preset, package)`` for a preset name."""
        if ("preset", name) in self.clashes:
            a, b = self.clashes["preset", name]
            raise RegistryError(f"pipeline preset {name!r} is registered by two packages, {a} and {b}")
        try:
            return self.presets[name]
        except KeyError:
            raise RegistryError(_unknown("pipeline preset", name, self.presets)) from None

    def trainer(self, name: str) -> tuple[Trainer, str]:
        """Return ``(trainer, package)`` for a trainer name."""
        try:
            return self.trainers[name]
        except KeyError:
            raise RegistryError(_unknown("trainer", name, self.trainers)) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])


def _unknown(what: str, name: str, available: Iterable[str]) -> str:
    names = sorted(available)
    msg = f"unknown {what} {name!r}"
    close = difflib.get_close_matches(str(name), names, n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    return msg + f"; available: {', '.join(names) if names else 'none'}"


def _disabled() -> set[str]:
    raw = os.environ.get("DRIFT_DISABLE_PLUGINS", "")
    return {n.strip() for n in raw.split(",") if n.strip()}


def _new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """The hook implementations of ``plugin`` that match no hook specification (misspelled hooks).

    Each entry reads ``drift_estimator (did you mean drift_estimators?)``.
    """
    specs = [name for name in dir(hookspecs) if name.startswith("drift_")]
    out = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.spec is None:
            close = difflib.get_close_matches(caller.name, specs, n=1)
            out.append(caller.name + (f" (did you mean {close[0]}?)" if close else ""))
    return sorted(out)


def register_checked(pm: pluggy.PluginManager, plugin: object, name: str | None = None) -> str:
    """Register ``plugin``; refuse it (unregistered again) when it implements a hook that does not exist.

    Raises
    ------
    RegistryError
        Naming the plugin and each unknown hook.
    """
    registered = pm.register(plugin, name=name)
    unknown = unknown_hooks(pm, plugin)
    if unknown:
        pm.unregister(plugin)
        raise RegistryError(f"plugin {name or registered} implements hooks that drift_framework does not have: "
                            f"{', '.join(unknown)}")
    return registered or ""


def _version(dist_name: str) -> str:
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _load_plugins(pm: pluggy.PluginManager, reg: Registry) -> None:
    blocked = _disabled()
    own = _version("drift_framework")  # the built-ins ship in drift_framework's distribution
    for modname in BUILTIN_PLUGINS:
        if modname in blocked:
            continue
        module = importlib.import_module(modname)
        register_checked(pm, module, modname)
        reg.packages[modname] = modname
        reg.versions[modname] = own
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        package = ep.dist.name if ep.dist is not None else ep.value
        if ep.name in blocked or package in blocked or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
            register_checked(pm, plugin, ep.name)
        except Exception as exc:  # a broken third-party plugin must not stop the program
            log.warning("plugin %s (%s) failed to load and was skipped: %s", ep.name, package, exc)
            reg.broken.append((ep.name, package, f"{type(exc).__name__}: {exc}"))
            continue
        reg.packages[ep.name] = package
        reg.versions[package] = ep.dist.version if ep.dist is not None else "unknown"


def _collect(pm: pluggy.PluginManager, reg: Registry) -> None:
    hooks = dict(KIND_HOOKS, preset="drift_presets", trainer="drift_trainers")
    # pluggy calls the last registered first; walk in registration order so built-ins win.
    for kind, hook_name in hooks.items():
        for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
            plugin = impl.plugin_name
            package = reg.packages.get(plugin, plugin)
            try:
                items = impl.function() or []
                items = list(items)
            except Exception as exc:
                if plugin in BUILTIN_PLUGINS:
                    raise
                log.warning("plugin %s failed in %s and was skipped: %s", plugin, hook_name, exc)
                reg.broken.append((plugin, package, f"{hook_name}: {type(exc).__name__}: {exc}"))
                continue
            for item in items:
                _add(reg, kind, item, plugin, package)


def _add(reg: Registry, kind: str, item: object, plugin: str, package: str) -> None:
    if kind == "trainer":
        if not isinstance(item, Trainer):
            reg.broken.append((plugin, package, f"drift_trainers returned {type(item).__name__}, not Trainer"))
        elif item.name in reg.trainers:
            reg.clashes["trainer", item.name] = (reg.trainers[item.name][1], package)
        else:
            reg.trainers[item.name] = (item, package)
        return
    if kind == "preset":
        if not isinstance(item, Preset):
            reg.broken.append((plugin, package, f"drift_presets returned {type(item).__name__}, not Preset"))
            return
        table, value = reg.presets, (item, package)
        key = ("preset", item.name)
        if item.name in table:
            reg.clashes[key] = (table[item.name][1], package)
            log.warning("preset %r is registered by both %s and %s", item.name, table[item.name][1], package)
            return
        table[item.name] = value
        return
    if not isinstance(item, Component):
        reg.broken.append((plugin, package, f"{KIND_HOOKS[kind]} returned {type(item).__name__}, not Component"))
        return
    table = reg.components[kind]
    if item.name in table:
        reg.clashes[kind, item.name] = (table[item.name].package, package)
        log.warning("%s %r is registered by both %s and %s", kind, item.name, table[item.name].package, package)
        return
    table[item.name] = Entry(item, plugin, package)


_lock = threading.Lock()
_registry: Registry | None = None


def get_registry(*, reload: bool = False) -> Registry:
    """Load the plugins on first use and return the shared :class:`Registry`."""
    global _registry
    with _lock:
        if _registry is None or reload:
            pm = _new_plugin_manager()
            reg = Registry(pm)
            _load_plugins(pm, reg)
            _collect(pm, reg)
            _registry = reg
        return _registry


def plugin_manager() -> pluggy.PluginManager:
    """The pluggy plugin manager (the loop calls observer hooks through it)."""
    return get_registry().plugin_manager


def plugin_versions() -> dict[str, str]:
    """Package → version of every loaded plugin, from its distribution's metadata (stored in run files)."""
    return dict(get_registry().versions)
