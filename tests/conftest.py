"""Shared fixtures: an isolated plugin registry and fake installed plugin distributions."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

import polydiff.plugins

FIXTURE_PLUGINS = Path(__file__).parent / "fixtures" / "plugins"
_ENV_VARS = ("POLYDIFF_LOAD_PLUGINS", "POLYDIFF_DISABLE_PLUGIN_AUTOLOAD")


@pytest.fixture
def fresh_registry(monkeypatch):
    """A new Registry holding only the built-in plugin, installed as the process-wide registry for the
    test (autoload disabled); the previous process-wide registry is put back afterwards."""
    monkeypatch.setenv("POLYDIFF_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("POLYDIFF_LOAD_PLUGINS", raising=False)
    previous = polydiff.plugins._REGISTRY
    reg = polydiff.plugins.Registry()
    reg.load_builtins()
    polydiff.plugins.reset(reg)
    yield reg
    polydiff.plugins.reset(previous)


@pytest.fixture
def fixture_plugins(monkeypatch):
    """Make the plugin modules in tests/fixtures/plugins importable; forget them after the test."""
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(FIXTURE_PLUGINS))
    yield FIXTURE_PLUGINS
    for name in set(sys.modules) - before:
        if name.startswith(("polydiff_toy", "polydiff_fixture")):
            del sys.modules[name]


class FakeSite:
    """A temporary site folder on sys.path holding ``*.dist-info`` folders, so that importlib.metadata
    sees them as installed distributions with ``polydiff`` entry points."""

    def __init__(self, path: Path):
        self.path = path

    def add(self, dist: str, entry_points: dict, version: str = "0.0.1", group: str = "polydiff") -> Path:
        info = self.path / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
        importlib.invalidate_caches()
        return info

    def env(self, **extra: str) -> dict:
        """Environment for a subprocess that sees this site and the fixture plugin modules."""
        env = {k: v for k, v in os.environ.items() if k not in _ENV_VARS}
        parts = [str(self.path), str(FIXTURE_PLUGINS)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env["PYTHONPATH"] = os.pathsep.join(parts)
        env.update(extra)
        return env


@pytest.fixture
def fake_site(tmp_path, monkeypatch, fixture_plugins):
    """A :class:`FakeSite` on sys.path for this test only."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return FakeSite(site)
