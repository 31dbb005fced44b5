"""The core is modality-agnostic: no string in its code names a plugin, a modality, a plugin package or one of a
plugin's own packages; what a plugin needs (demo order, score options, decode options, what to install) comes
from the plugin through its Modality and hooks."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "core" / "polydiff"
PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def _plugin_words():
    """Plugin packages and distributions (polydiff_x, polydiff-x) and their modality names (``name="..."`` in
    ``Modality(...)`` calls)."""
    words = set()
    for folder in sorted(p for p in PLUGINS.iterdir() if (p / "pyproject.toml").exists()):
        for src in folder.glob("polydiff_*/__init__.py"):
            words.update({src.parent.name, src.parent.name.replace("_", "-")})
            words.update(re.findall(r'Modality\(\s*name="(\w+)"', src.read_text()))
    return words


def _strings(tree):
    """Every string constant of a module that is not a docstring."""
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docs.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node


def test_the_plugin_words_are_found():
    words = _plugin_words()
    assert {"tabular", "points", "image", "polydiff_anomaly"} <= words, words


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_code_names_no_plugin(path):
    words = _plugin_words()
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, words))) + r")\b")
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in _strings(tree):
        for m in pattern.finditer(node.value):
            found.append(f"line {node.lineno}: {m.group(1)!r} in {node.value[:60]!r}")
    for node in ast.walk(tree):  # imports and attribute names too
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if getattr(node, "module", None) else [])
            found += [f"line {node.lineno}: import {n}" for n in names if pattern.search(n)]
        elif isinstance(node, ast.Attribute) and node.attr in words:
            found.append(f"line {node.lineno}: attribute .{node.attr}")
    assert not found, f"{path.name} names plugins: " + "; ".join(found)
