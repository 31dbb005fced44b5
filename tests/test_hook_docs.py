"""Every plugin hook is described, documented in docs/plugins.md with its signature, and tested."""
from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path

import pytest

from polydiff import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"
TESTS = Path(__file__).resolve().parent


def _hookspecs():
    specs = {name: fn for name, fn in vars(hookspecs).items()
             if inspect.isfunction(fn) and hasattr(fn, "polydiff_spec")}
    assert "register_modalities" in specs  # sanity: the spec marker is the one looked for
    return dict(sorted(specs.items()))


SPECS = _hookspecs()


def _signature(fn) -> str:
    return f"{fn.__name__}({', '.join(inspect.signature(fn).parameters)})"


@functools.lru_cache(maxsize=None)
def _docs_text() -> str:
    return DOCS.read_text(encoding="utf-8")


def docs_text() -> str:
    if not DOCS.exists():
        pytest.fail(f"{DOCS.relative_to(ROOT)} is missing: it must document every plugin hook with its "
                    f"signature ({', '.join(_signature(f) for f in SPECS.values())})", pytrace=False)
    return _docs_text()


@pytest.mark.parametrize("name", SPECS)
def test_hookspec_has_a_one_line_docstring(name):
    doc = (SPECS[name].__doc__ or "").strip()
    assert doc, f"hookspec {name} has no docstring"
    assert "\n" not in doc, f"hookspec {name}: the docstring should be one line"


@pytest.mark.parametrize("name", SPECS)
def test_hookspec_is_documented_with_its_signature(name):
    text = docs_text()
    sig = _signature(SPECS[name])
    assert sig in text, f"docs/plugins.md does not show the signature {sig}"
    # a heading or a code line: "## register_x(register)", "`register_x(register)`" or "def register_x(register):"
    pattern = re.compile(rf"^(#+\s*`?|.*`|\s*def\s+){re.escape(sig)}", re.MULTILINE)
    assert pattern.search(text), f"docs/plugins.md mentions {sig} but not as a heading or code line"


@pytest.mark.parametrize("name", SPECS)
def test_hookspec_is_implemented_by_a_test_plugin(name):
    """Some plugin under tests/ (a test module or a fixture plugin) implements the hook: a function of that name
    decorated with ``hookimpl`` (a mention in a comment or a string does not count)."""
    import ast

    def decorated(fn):
        return any("hookimpl" in ast.unparse(d) for d in fn.decorator_list)

    users = []
    for path in TESTS.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        users += [path.name for node in ast.walk(tree)
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name and decorated(node)]
    assert users, f"no plugin under tests/ implements the hook {name}"


# ------------------------------------------------------------------------------------------ Modality fields
def _modality_fields():
    import dataclasses

    from polydiff.modality import Modality

    return [f.name for f in dataclasses.fields(Modality)]


@pytest.mark.parametrize("field", _modality_fields())
def test_every_modality_field_is_documented_and_read_by_the_core(field):
    """Each field of the Modality record has a row in docs/plugins.md and is read by core code (a field nothing
    reads is dead weight a plugin author would fill in vain)."""
    assert re.search(rf"^\| `{field}` \|", docs_text(), re.M), f"docs/plugins.md has no row for Modality.{field}"
    import ast

    readers = []
    for path in sorted((ROOT / "core" / "polydiff").glob("*.py")):
        readers += [f"{path.name}:{node.lineno}" for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Attribute) and node.attr == field]
    assert readers, f"nothing in the core reads Modality.{field}"
