"""Plugin discovery and the registry of everything plugins provide.

Each entry point in the group ``polydiff`` is loaded on its own: a plugin that fails to import, misses a
dependency, declares an unknown (misspelled) hook or raises inside a hook is recorded with its name,
version, the reason and what to pip install, and contributes nothing; the others keep working. A plugin's
registrations are collected first and added to the registry only when all its hooks succeeded.

Environment variables:

* ``POLYDIFF_LOAD_PLUGINS=a,b`` loads only the named entry points;
* ``POLYDIFF_DISABLE_PLUGIN_AUTOLOAD=1`` loads no entry point at all (tests register plugins explicitly
  with :meth:`Registry.register_plugin`).

The built-in samplers, schedules and scorers register through the same hooks, as the plugin ``polydiff``.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Callable, Dict, List, Optional

import pluggy

from . import hookspecs
from .deps import pip_name_for
from .errors import UnknownName
from .modality import Modality

__all__ = ["Registry", "PluginRecord", "Scorer", "registry", "reset", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "polydiff"
_HOOKS = ("register_modalities", "register_samplers", "register_schedules", "register_scorers")
_SINGULAR = {"modalities": "modality", "samplers": "sampler", "schedules": "schedule", "scorers": "scorer"}


@dataclass
class PluginRecord:
    """What ``polydiff plugins`` shows for one plugin."""

    name: str
    distribution: Optional[str] = None
    version: Optional[str] = None
    status: str = "ok"  # ok | error | not-loaded
    error: Optional[str] = None
    hint: Optional[str] = None
    builtin: bool = False
    modalities: List[str] = field(default_factory=list)
    samplers: List[str] = field(default_factory=list)
    schedules: List[str] = field(default_factory=list)
    scorers: List[str] = field(default_factory=list)
    commands: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Scorer:
    """An anomaly scorer (higher = more anomalous).

    Two kinds. A *model scorer* is a function ``fn(model, x, cond, **options) -> Tensor[batch]`` that scores
    with any trained :class:`polydiff.model.Model`. A *fitted scorer* has its own state fitted on the
    training rows: ``fn`` is then a class with ``fn.fit(x, *, seed, **options) -> instance``,
    ``fn.load(tensors, meta) -> instance``, and instances with ``score(x) -> array[batch]`` and
    ``bundle() -> (tensors, meta)``; a modality's detector drives it.
    """

    name: str
    fn: Callable
    modalities: Optional[List[str]] = None  # None: any modality
    plugin: str = ""

    @property
    def fitted(self) -> bool:
        return all(callable(getattr(self.fn, a, None)) for a in ("fit", "load"))


class Registry:
    """Everything registered by the built-ins and the loaded plugins."""

    def __init__(self):
        self.pm = pluggy.PluginManager("polydiff")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: Dict[str, PluginRecord] = {}
        self.modalities: Dict[str, Modality] = {}
        self.samplers: Dict[str, Callable] = {}
        self.schedules: Dict[str, Callable] = {}
        self.scorers: Dict[str, Scorer] = {}
        self._owner: Dict[tuple, str] = {}

    # ---------------------------------------------------------------- loading
    def load_builtins(self):
        from . import _builtin

        self.register_plugin(_builtin, name="polydiff", builtin=True,
                             distribution="polydiff", version=_dist_version("polydiff"))

    def load_entry_points(self, only: Optional[List[str]] = None):
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        seen = set()
        for ep in sorted(eps, key=lambda e: e.name):
            if ep.name in seen:
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            rec = PluginRecord(name=ep.name, distribution=getattr(dist, "name", None),
                               version=getattr(dist, "version", None))
            if self.pm.get_plugin(ep.name) is not None:  # e.g. an entry point named "polydiff"
                self._name_taken(rec)
                continue
            if only is not None and ep.name not in only:
                rec.status = "not-loaded"
                rec.error = "not in POLYDIFF_LOAD_PLUGINS"
                self.plugins[ep.name] = rec
                continue
            try:
                module = ep.load()
            except ImportError as e:
                missing = getattr(e, "name", None)
                rec.status, rec.error = "error", f"import failed: {e}"
                if missing:
                    rec.hint = f"pip install {pip_name_for(missing)}"
                self.plugins[ep.name] = rec
                continue
            except Exception as e:  # a plugin's own bug must not break the host
                rec.status, rec.error = "error", f"import failed: {type(e).__name__}: {e}"
                self.plugins[ep.name] = rec
                continue
            self._register(module, rec, strict=False)
        if only is not None:
            for name in only:
                if name not in seen and name not in self.plugins:  # e.g. the built-in "polydiff"
                    import difflib

                    close = difflib.get_close_matches(name, sorted(seen), n=1, cutoff=0.6)
                    self.plugins[name] = PluginRecord(name=name, status="error",
                                                      error="no installed plugin of this name",
                                                      hint=f"did you mean {close[0]!r}?" if close else None)

    def register_plugin(self, plugin: Any, name: Optional[str] = None, *, builtin: bool = False,
                        distribution: Optional[str] = None, version: Optional[str] = None) -> PluginRecord:
        """Register a module or object holding ``@polydiff.hookimpl`` functions.

        An explicitly registered plugin with an unknown hook raises
        :class:`pluggy.PluginValidationError`; other failures are recorded like autoloaded ones and
        returned in the record. A name that is already taken by a registered plugin leaves that plugin
        and its record alone; the newcomer is recorded as an error under ``"NAME (DISTRIBUTION)"``.
        """
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        rec = PluginRecord(name=name, distribution=distribution, version=version, builtin=builtin)
        return self._register(plugin, rec, strict=True)

    def _name_taken(self, rec: PluginRecord) -> PluginRecord:
        """Record ``rec`` as an error under a free key; the plugin already holding its name stays as it is."""
        taken = rec.name
        base = f"{taken} ({rec.distribution or 'duplicate'})"
        key, i = base, 2
        while key in self.plugins:
            key, i = f"{base} #{i}", i + 1
        rec.name, rec.status = key, "error"
        rec.error = f"another plugin is already registered under the name {taken!r}"
        self.plugins[key] = rec
        return rec

    def _call_for(self, plugin, hook: str, **kwargs):
        """Call ``hook`` through pluggy for one plugin's implementations, with every plugin's wrappers around
        them (pluggy orders the calls: tryfirst / trylast, wrappers outermost). One plugin at a time, so that a
        failing plugin is recorded on its own while the others register."""
        caller = getattr(self.pm.hook, hook)
        keep = {id(plugin)} | {id(i.plugin) for i in caller.get_hookimpls() if i.hookwrapper or i.wrapper}
        others = [i.plugin for i in caller.get_hookimpls() if id(i.plugin) not in keep]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)(**kwargs) if others else caller(**kwargs)

    def _register(self, plugin, rec: PluginRecord, strict: bool) -> PluginRecord:
        if self.pm.get_plugin(rec.name) is not None:
            return self._name_taken(rec)
        self.plugins[rec.name] = rec
        try:
            self.pm.register(plugin, name=rec.name)
        except ValueError as e:  # pluggy: already registered
            rec.status, rec.error = "error", str(e)
            return rec
        except pluggy.PluginValidationError as e:
            rec.status, rec.error = "error", f"invalid hook implementation: {e}"
            if strict:
                raise
            warnings.warn(f"polydiff plugin {rec.name!r}: {rec.error}", stacklevel=2)
            return rec
        unknown = [hc.name for hc in (self.pm.get_hookcallers(plugin) or []) if hc.spec is None]
        if unknown:
            self.pm.unregister(plugin)
            known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
            msg = f"unknown hook {', '.join(sorted(unknown))} (misspelled? known hooks: {known})"
            rec.status, rec.error = "error", msg
            if strict:
                raise pluggy.PluginValidationError(plugin, f"plugin {rec.name!r}: {msg}")
            warnings.warn(f"polydiff plugin {rec.name!r}: {msg}", stacklevel=2)
            return rec

        staged = {"modalities": {}, "samplers": {}, "schedules": {}, "scorers": {}}

        def reg_modality(m: Modality):
            if not isinstance(m, Modality):
                raise TypeError(f"register() takes a polydiff.modality.Modality, got {type(m).__name__}")
            staged["modalities"][m.name] = m

        def reg_named(kind):
            def register(name: str, fn: Callable):
                if not callable(fn):
                    raise TypeError(f"{kind} {name!r} is not callable")
                staged[kind][name] = fn
            return register

        def reg_scorer(name: str, fn: Callable, modalities=None):
            if not callable(fn):
                raise TypeError(f"scorer {name!r} is not callable")
            staged["scorers"][name] = Scorer(name, fn, list(modalities) if modalities else None, rec.name)

        callbacks = {"register_modalities": reg_modality, "register_samplers": reg_named("samplers"),
                     "register_schedules": reg_named("schedules"), "register_scorers": reg_scorer}
        try:
            for hook in _HOOKS:
                self._call_for(plugin, hook, register=callbacks[hook])
            for kind, table in staged.items():
                for key in table:
                    owner = self._owner.get((kind, key))
                    if owner is not None and owner != rec.name:
                        raise ValueError(f"{_SINGULAR[kind]} {key!r} is already registered by plugin {owner!r}")
        except Exception as e:
            self.pm.unregister(plugin)
            rec.status, rec.error = "error", f"{type(e).__name__} in hook: {e}"
            hint = getattr(e, "name", None) if isinstance(e, ImportError) else None
            if hint:
                rec.hint = f"pip install {pip_name_for(hint)}"
            elif "pip install" in str(e):
                rec.hint = "pip install " + str(e).split("pip install", 1)[1].strip().split()[0]
            return rec

        for name, m in staged["modalities"].items():
            m.plugin = rec.name
            self.modalities[name] = m
        self.samplers.update(staged["samplers"])
        self.schedules.update(staged["schedules"])
        self.scorers.update(staged["scorers"])
        for kind, table in staged.items():
            for key in table:
                self._owner[(kind, key)] = rec.name
        rec.modalities = sorted(staged["modalities"])
        rec.samplers = sorted(staged["samplers"])
        rec.schedules = sorted(staged["schedules"])
        rec.scorers = sorted(staged["scorers"])
        rec.status, rec.error = "ok", None
        return rec

    def add_commands(self, cli) -> None:
        """Let every loaded plugin add CLI commands; a failing plugin is recorded, the CLI still works."""
        plugins = []
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):  # pluggy's call order
            if not (impl.hookwrapper or impl.wrapper) and impl.plugin not in plugins:
                plugins.append(impl.plugin)
        for plugin in plugins:
            name = self.pm.get_name(plugin)
            rec = self.plugins.get(name)
            before = _command_paths(cli)
            try:
                self._call_for(plugin, "register_commands", cli=cli)
            except Exception as e:
                if rec is not None:
                    rec.status, rec.error = "error", f"{type(e).__name__} in register_commands: {e}"
                continue
            if rec is not None:
                rec.commands = sorted(_command_paths(cli) - before)

    # ---------------------------------------------------------------- lookup
    def modality(self, name: str) -> Modality:
        if name in self.modalities:
            return self.modalities[name]
        raise UnknownName(self._unknown_modality(name))

    def _unknown_modality(self, name: str) -> str:
        """Why ``name`` is not a modality here, and the nearest thing that is: a pretrained model of a
        modality, an installed plugin that was not loaded, a close spelling, a plugin that failed to load."""
        import difflib

        owners = sorted(m.name for m in self.modalities.values() if name in m.pretrained)
        if owners:
            return (f"{name!r} is a pretrained {owners[0]} model, not a modality: "
                    f"polydiff sample {owners[0]} --model {name}")
        msg = f"unknown modality {name!r}"
        close = difflib.get_close_matches(name, list(self.modalities), n=1, cutoff=0.6)
        if close:
            msg += f"; did you mean {close[0]!r}?"
        msg += f" (installed: {', '.join(sorted(self.modalities)) or 'none'})"
        try:
            names = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
        except Exception:  # a broken environment must not hide the message itself
            names = set()
        idle = sorted(n for n in names if n not in self.plugins or self.plugins[n].status == "not-loaded")
        if idle:
            why = ("POLYDIFF_DISABLE_PLUGIN_AUTOLOAD is set" if not any(not r.builtin for r in self.plugins.values())
                   else "not in POLYDIFF_LOAD_PLUGINS")
            msg += f"; installed but not loaded ({why}): {', '.join(idle)}"
        for r in (r for r in self.plugins.values() if r.status == "error"):
            msg += f"; plugin {r.name!r} failed to load ({r.error}{'; ' + r.hint if r.hint else ''})"
        return msg

    def scorer(self, name: str, modality: Optional[str] = None) -> Scorer:
        if name not in self.scorers:
            raise UnknownName(f"unknown scoring method {name!r}; known: {', '.join(sorted(self.scorers))}")
        sc = self.scorers[name]
        if modality and sc.modalities and modality not in sc.modalities:
            raise UnknownName(f"scoring method {name!r} works on {', '.join(sc.modalities)}, not {modality!r}")
        return sc

    def model_scorer(self, name: str, modality: Optional[str] = None) -> Scorer:
        """A scorer that works on a trained model (not a fitted scorer, which needs a detector)."""
        sc = self.scorer(name, modality)
        if sc.fitted:
            raise UnknownName(f"scoring method {name!r} fits its own state and cannot score with a trained model; "
                              f"fit a detector with it instead (polydiff score DATA --method {name})")
        return sc

    def records(self) -> List[PluginRecord]:
        return [self.plugins[k] for k in sorted(self.plugins, key=lambda k: (not self.plugins[k].builtin, k))]


def _command_paths(cli, prefix: str = "") -> set:
    """Every command under ``cli`` as its path without the program name ("plugins", "inpaint image"): a group
    counts through its subcommands, so a plugin that adds ``image`` to another plugin's ``inpaint`` group is
    credited with ``inpaint image``."""
    paths = set()
    for name, cmd in getattr(cli, "commands", {}).items():
        sub = getattr(cmd, "commands", None)
        if sub:
            paths |= _command_paths(cmd, f"{prefix}{name} ")
        else:
            paths.add(f"{prefix}{name}")
    return paths


def _dist_version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


_REGISTRY: Optional[Registry] = None


def registry() -> Registry:
    """The process-wide registry, built on first use (built-ins, then entry points per the environment)."""
    global _REGISTRY
    if _REGISTRY is None:
        reg = Registry()
        reg.load_builtins()
        if os.environ.get("POLYDIFF_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() in ("", "0", "false", "no"):
            only = os.environ.get("POLYDIFF_LOAD_PLUGINS")
            names = [s.strip() for s in only.split(",") if s.strip()] if only is not None else None
            reg.load_entry_points(names)
        _REGISTRY = reg
    return _REGISTRY


def reset(registry_: Optional[Registry] = None) -> None:
    """Forget the process-wide registry (the next :func:`registry` call rebuilds it), or install one."""
    global _REGISTRY
    _REGISTRY = registry_
