"""A word-level tokenizer fitted on training text, exactly invertible up to runs of white space.

Text is split into words (cased, with their apostrophes: ``It's``, ``don't``), numbers and £ prices kept
whole (``£20``, ``£20-25``, ``3``, ``5.50``), placeholders (``<name>``, ``<near>``) and single punctuation
marks. Each token remembers whether a space came before it, as sentencepiece and GPT-2 do (``"▁" + word``
after a space, the bare word after none), so decoding restores ``family-friendly`` and ``(Italian)``
exactly. Words seen fewer than ``min_count`` times in the training text become ``<unk>``.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Dict, Iterable, List, Sequence, Tuple

__all__ = ["Tokenizer", "split", "PAD", "UNK", "SPACE"]

PAD, UNK = "<pad>", "<unk>"
SPACE = "\u2581"  # the mark of a token that follows a space
SPECIALS = (PAD, UNK)
_PIECE = re.compile(
    r"<[a-z_]+>"                                   # placeholders
    r"|£\d+(?:[.,]\d+)*(?:\s?-\s?£?\d+(?:[.,]\d+)*)?"  # prices and price ranges: £20, £20-25, £20-£25
    r"|\d+(?:[.,]\d+)*"                            # numbers
    r"|[^\W\d_]+(?:['’][^\W\d_]+)*"                # words with inner apostrophes
    r"|\S",                                        # any other single mark
)


def split(text: str) -> List[str]:
    """``text`` as token strings, each with :data:`SPACE` in front when a space precedes it."""
    out = []
    for m in _PIECE.finditer(text):
        spaced = m.start() > 0 and text[m.start() - 1].isspace()
        out.append((SPACE if spaced else "") + m.group(0))
    return out


def _join(pieces: Iterable[str]) -> str:
    return "".join((" " + p[1:]) if p.startswith(SPACE) else p for p in pieces).strip()


class Tokenizer:
    """Token strings <-> ids. Ids 0 and 1 are ``<pad>`` and ``<unk>`` (an unknown piece keeps its space
    as ``▁<unk>``, id 2)."""

    def __init__(self, vocab: Sequence[str]):
        self.vocab = list(vocab)
        if self.vocab[:3] != [PAD, UNK, SPACE + UNK]:
            raise ValueError("a vocabulary starts with <pad>, <unk>, ▁<unk>")
        self.index: Dict[str, int] = {t: i for i, t in enumerate(self.vocab)}
        if len(self.index) != len(self.vocab):
            raise ValueError("the vocabulary holds a token twice")

    @classmethod
    def fit(cls, texts: Iterable[str], min_count: int = 1) -> "Tokenizer":
        counts = Counter(p for t in texts for p in split(t))
        words = sorted((p for p, c in counts.items() if c >= min_count and p not in (PAD, UNK)),
                       key=lambda p: (-counts[p], p))
        return cls([PAD, UNK, SPACE + UNK] + words)

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return 0

    def encode(self, text: str) -> Tuple[List[int], List[str]]:
        """(ids, unknown pieces) of ``text``."""
        ids, unknown = [], []
        for p in split(text):
            i = self.index.get(p)
            if i is None:
                unknown.append(p.lstrip(SPACE))
                i = 2 if p.startswith(SPACE) else 1
            ids.append(i)
        return ids, unknown

    def decode(self, ids: Iterable[int]) -> str:
        return _join(self.vocab[int(i)] for i in ids if int(i) != 0)

    def words(self, ids: Iterable[int]) -> List[str]:
        """The tokens of ``ids`` without their space marks (padding left out)."""
        return [self.vocab[int(i)].lstrip(SPACE) for i in ids if int(i) != 0]
