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
def test_hookspec_is_used_in_a_test(name):
    this = Path(__file__).resolve()
    files = [p for p in TESTS.rglob("test_*.py") if p.resolve() != this]
    users = [p.name for p in files if re.search(rf"\b{name}\b", p.read_text(encoding="utf-8"))]
    assert users, f"no test under tests/ mentions the hook {name}"
