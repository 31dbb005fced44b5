"""What the text model is asked to write: meaning representations, lengths, words it must contain, templates.

:func:`conditions` turns those requests into the sampling run's conditions (``mask``, ``mr``, ``lex``,
``mr_drawn``, ``ranked``, ``exact_length``) and a :class:`polydiff.sampling.Known` control: padding after the sentence's length, and every
given word (a template's words, ``contains`` phrases) as known tokens, which categorical sampling keeps
exactly. A sentence asked for without an MR or a template is written from an MR drawn from the training MRs
(as often as the training sentences use each, names likewise): unconditional text is an ancestral sample of
p(MR) p(sentence | MR), and the MR it was written from goes out with it. Required words that name MR values
("Italian", "riverside", "pub") draw from the training MRs holding those values; where none holds them all,
the sentence is written without an MR.
"""
from __future__ import annotations

import math
import re
from typing import List, Sequence, Union

import torch

from polydiff.errors import InputError
from polydiff.sampling import Known

from . import encoder as encoder_module
from . import mr as mrs
from .tokenizer import SPACE, split

__all__ = ["BLANK", "conditions", "parse_template", "contains_phrases"]

BLANK = "___"


def _as_list(value, n: int, what: str) -> List:
    if value is None or isinstance(value, (str, int)):
        return [value] * n
    value = list(value)
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise InputError(f"{len(value)} {what} for {n} sentences; give one, or one per sentence")
    return value


def parse_template(text: str) -> List[Union[str, None]]:
    """A template as pieces: token strings (with their space marks) and None for each ``___`` (one or more
    words to write)."""
    if text is None or not str(text).strip():
        raise InputError("empty template; write e.g. 'The ___ is a ___ coffee shop near ___ .'")
    if BLANK not in text:
        raise InputError(f"the template {text[:40]!r} has no {BLANK}: mark each gap to fill with {BLANK}")
    out: List[Union[str, None]] = []
    for k, part in enumerate(re.split(r"_{3,}", str(text))):
        if k:
            out.append(None)
        out.extend(split(part) if part.strip() else [])
    return out


def contains_phrases(contains) -> List[str]:
    """``"Italian, coffee shop"`` or a list -> the phrases a sentence must contain."""
    if contains is None:
        return []
    items = contains.split(",") if isinstance(contains, str) else list(contains)
    out = [str(p).strip() for p in items if str(p).strip()]
    if not out:
        raise InputError("--contains needs at least one word")
    return out


def _ids(encoder, pieces: Sequence[str], what: str) -> List[int]:
    ids = []
    unknown = []
    for p in pieces:
        i = encoder.tokenizer.index.get(p)
        if i is None:  # the same piece with the other spacing ("near ___ ." for "near ___.")
            i = encoder.tokenizer.index.get(p[1:] if p.startswith(SPACE) else SPACE + p)
        if i is None:
            unknown.append(p.lstrip(SPACE))
            i = 2 if p.startswith(SPACE) else 1
        ids.append(i)
    if unknown:
        if encoder.strict:
            raise InputError(f"{what}: words outside the vocabulary: {', '.join(unknown[:8])}")
        import warnings

        warnings.warn(f"{what}: words outside the vocabulary written as <unk>: {', '.join(unknown[:8])}", stacklevel=4)
    return ids


def _phrase_ids(encoder, phrase: str, first: bool) -> List[int]:
    pieces = split(phrase)
    if not first:
        pieces[0] = SPACE + pieces[0].lstrip(SPACE)
    return _ids(encoder, pieces, f"--contains {phrase!r}")


def draw_offset(draw: int) -> int:
    """The length offset of best-of draw ``draw`` around the typical length: 0, +1, -1, +2, -2, ..."""
    return (draw + 1) // 2 * (1 if draw % 2 else -1)


def conditions(encoder, n: int, *, generator=None, mr=None, length=None, contains=None, template=None,
               draw: int = 0):
    """(cond, Known) for ``n`` sentences. ``mr``: an MR string (or one per sentence); ``length``: tokens per
    sentence [with an MR: the median training length for the MR's size, offset by :func:`draw_offset` in
    best-of draw ``draw``; without one: drawn from the training lengths]; ``contains``: phrases that must
    appear (placed at drawn positions, kept exactly); ``template``: a text with ``___`` gaps (every given
    word kept, each gap one or more drawn words). See the module docstring."""
    encoder._need_fit()
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    L = encoder.max_len
    mrs_in = _as_list(mr, n, "meaning representations")
    lengths_in = _as_list(length, n, "lengths")
    templates = _as_list(template, n, "templates")
    phrases = contains_phrases(contains)
    required = encoder.values_in(phrases)  # None: no MR holds the values the words name
    x = torch.zeros(n, L, dtype=torch.long)
    keep = torch.zeros(n, L, dtype=torch.bool)
    mask = torch.zeros(n, L)
    mr_t = torch.zeros(n, len(mrs.ATTRIBUTES), dtype=torch.long)
    lex = torch.zeros(n, len(mrs.OPEN), encoder_module.NAME_BYTES, dtype=torch.uint8)
    mr_drawn = torch.zeros(n, dtype=torch.bool)  # the MR was drawn here, not asked for: no slot errors counted
    # a template or required words: best-of ranks the draws (gap sizes, places of the words) by their slips
    ranked = torch.zeros(n, dtype=torch.bool)
    exact = torch.zeros(n, dtype=torch.bool)  # a length asked for: the token rule deletes no word
    for i in range(n):
        m = mrs.parse(mrs_in[i]) if mrs_in[i] else None
        if m is None and templates[i] is None:  # unconditional: an MR from the training MRs (holding the values
            # the required words name: "Italian" draws from the Italian restaurants' MRs)
            m = encoder.draw_mr(g, require=required) if required is not None else None
            mr_drawn[i] = m is not None
        mr_t[i] = torch.tensor(encoder.mr_index(m))
        fill = dict(m or {})
        for a in mrs.OPEN:  # a sentence without an MR names restaurants drawn from the training ones
            if a not in fill and m is None and encoder.names.get(a):
                fill[a] = encoder.names[a][int(torch.randint(len(encoder.names[a]), (1,), generator=g))]
        lex[i] = encoder.lex_row(fill)
        ln = lengths_in[i]
        if ln is not None:
            exact[i] = True
            ln = int(ln)
            if not 1 <= ln <= L:
                raise InputError(f"length {ln}: the model writes 1 to {L} tokens")
        if templates[i] is not None:
            ln = _template(encoder, templates[i], ln, m, x[i], keep[i], g)
            ranked[i] = True
        else:
            if ln is None and m:  # data-to-text: a typical length (chosen on the development split)
                ln = min(max(encoder.typical_length(len(m)) + draw_offset(int(draw)), 1), L)
            elif ln is None:
                ln = max(encoder.draw_length(None, g), 1)
            need = sum(len(split(p)) for p in phrases)
            if need > ln:
                if lengths_in[i] is not None:
                    raise InputError(f"--contains needs {need} tokens, more than the length {ln}")
                ln = min(L, need + 2)
            if phrases:
                _place(encoder, phrases, ln, x[i], keep[i], g)
                ranked[i] = True
        mask[i, :ln] = 1
        keep[i, ln:] = True  # padding: <pad> (id 0), kept
    return {"mask": mask, "mr": mr_t, "lex": lex, "mr_drawn": mr_drawn, "ranked": ranked,
            "exact_length": exact}, Known(x, keep)


def _template(encoder, text, ln, m, x_row, keep_row, g) -> int:
    pieces = parse_template(mrs.delexicalise(text, m) if m else text)
    words = [p for p in pieces if p is not None]
    blanks = pieces.count(None)
    L = encoder.max_len
    given = len(words)
    if given + blanks > L:
        raise InputError(f"the template needs at least {given + blanks} tokens, the model's maximum is {L}")
    if ln is None:  # each gap a short phrase: 1 + a geometric number of tokens (mean 2; names are one token)
        u = torch.rand(blanks, generator=g).clamp_min(1e-12)
        sizes = (1 + torch.floor(torch.log(u) / math.log(0.5)).long()).clamp(max=8).tolist()
        while given + sum(sizes) > L:  # the model's maximum: take tokens back from the longest gaps
            sizes[sizes.index(max(sizes))] -= 1
        ln = given + sum(sizes)
    else:
        if ln < given + blanks:
            raise InputError(f"length {ln} is shorter than the template's {given} words and {blanks} gaps")
        # a given length: each gap gets one token, the rest spread at random
        extra = torch.multinomial(torch.ones(blanks), ln - given - blanks, replacement=True, generator=g) \
            if ln - given - blanks > 0 else torch.zeros(0, dtype=torch.long)
        sizes = (1 + torch.bincount(extra, minlength=blanks)).tolist()
    ids = _ids(encoder, words, "template")
    pos, w, b = 0, 0, 0
    for p in pieces:
        if p is None:
            pos += sizes[b]
            b += 1
        else:
            x_row[pos] = ids[w]
            keep_row[pos] = True
            pos += 1
            w += 1
    return ln


def _place(encoder, phrases, ln, x_row, keep_row, g):
    for phrase in phrases:
        for _ in range(100):
            ids = _phrase_ids(encoder, phrase, first=False)
            hi = ln - len(ids)  # leave the last token (usually the full stop) free
            start = int(torch.randint(1, max(hi, 1) + 1, (1,), generator=g)) if hi >= 1 else 0
            if start == 0:
                ids = _phrase_ids(encoder, phrase, first=True)
            span = slice(start, start + len(ids))
            if start + len(ids) <= ln and not bool(keep_row[span].any()):
                x_row[span] = torch.tensor(ids)
                keep_row[span] = True
                break
        else:
            raise InputError(f"cannot place {phrase!r} in a sentence of {ln} tokens with the other phrases")
