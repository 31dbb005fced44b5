"""E2E meaning representations: ``name[The Eagle], eatType[coffee shop], food[Italian]``.

An MR is a list of ``attribute[value]`` pairs over the eight E2E attributes. :func:`parse` reads one and
refuses what it cannot read with one line naming the problem. ``name`` and ``near`` are open (any
restaurant): texts are delexicalised for them (the value replaced by ``<name>`` / ``<near>``, as the E2E
challenge's baseline TGen does) and lexicalised back after generation, so a model writes about
restaurants it never saw. The other six attributes take the values the model was trained on.
"""
from __future__ import annotations

import re
from typing import Dict

from polydiff.errors import InputError

__all__ = ["ATTRIBUTES", "OPEN", "parse", "format_mr", "delexicalise", "lexicalise", "PLACEHOLDER"]

ATTRIBUTES = ("name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly", "near")
OPEN = ("name", "near")
PLACEHOLDER = {"name": "<name>", "near": "<near>"}
_PAIR = re.compile(r"\s*([A-Za-z][A-Za-z ]*?)\s*\[([^\[\]]*)\]\s*")


def parse(text: str) -> Dict[str, str]:
    """``attribute[value], ...`` -> {attribute: value}; every problem is a one-line :class:`InputError`."""
    if text is None or not str(text).strip():
        raise InputError("empty meaning representation; write e.g. 'name[The Eagle], eatType[coffee shop]'")
    s = str(text).strip()
    out: Dict[str, str] = {}
    pos = 0
    while pos < len(s):
        m = _PAIR.match(s, pos)
        if m is None:
            raise InputError(f"cannot read the meaning representation at {s[pos:pos + 30]!r}: "
                             "write attribute[value] pairs separated by commas")
        key, value = m.group(1), m.group(2).strip()
        if key not in ATTRIBUTES:
            raise InputError(f"unknown attribute {key!r} in the meaning representation; known: {', '.join(ATTRIBUTES)}")
        if key in out:
            raise InputError(f"attribute {key!r} appears twice in the meaning representation")
        if not value:
            raise InputError(f"attribute {key!r} has an empty value")
        out[key] = value
        pos = m.end()
        if pos < len(s):
            if s[pos] != ",":
                raise InputError(f"expected ',' after {key}[{value}] in the meaning representation")
            pos += 1
            if not s[pos:].strip():
                raise InputError("the meaning representation ends with a comma")
    return out


def format_mr(mr: Dict[str, str]) -> str:
    return ", ".join(f"{k}[{mr[k]}]" for k in ATTRIBUTES if k in mr)


def delexicalise(text: str, mr: Dict[str, str]) -> str:
    """``text`` with the MR's ``name`` and ``near`` values replaced by their placeholders (longest first,
    so a name that contains the other is replaced whole)."""
    for key in sorted((k for k in OPEN if k in mr), key=lambda k: -len(mr[k])):
        text = text.replace(mr[key], PLACEHOLDER[key])
    return text


_ARTICLE = re.compile(r"^the\s", re.IGNORECASE)


def lexicalise(text: str, mr: Dict[str, str]) -> str:
    """``text`` with the placeholders replaced by the MR's values. A value that starts with its own article
    ("The Golden Curry") takes the place of an article written before the placeholder ("The <name>" is how
    the references name "Wildwood" as "The Wildwood"), so no sentence says "the The Golden Curry"."""
    for key in OPEN:
        if key in mr:
            ph, value = PLACEHOLDER[key], mr[key]
            if _ARTICLE.match(value):
                text = re.sub(r"\b[Tt]he\s+" + re.escape(ph), lambda _m: value, text)
            text = text.replace(ph, value)
    return text
