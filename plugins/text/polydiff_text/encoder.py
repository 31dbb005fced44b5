"""Sentences <-> token tensors: :class:`TextEncoder`, the ``text`` modality's encoder.

An item is a :class:`Sentence`: its text and, for data-to-text, its E2E meaning representation. Encoding
delexicalises the MR's ``name`` and ``near`` values (:mod:`polydiff_text.mr`), tokenizes
(:mod:`polydiff_text.tokenizer`) and pads to the model's ``max_len``:

* ``x``: token ids [N, max_len] (``<pad>`` = 0 after the sentence);
* ``cond["mask"]``: 1 on the sentence's tokens, 0 on padding [N, max_len];
* ``cond["mr"]``: one value index per E2E attribute [N, 8]: 0 absent, 1.. the attribute's values (``name``
  and ``near``: 1 = present); -1 everywhere for a sentence without an MR (the null condition that
  classifier-free guidance drops to);
* ``cond["lex"]``: the ``name`` and ``near`` values as UTF-8 bytes, zero-padded, [N, 2, NAME_BYTES] (uint8),
  which decoding writes back in place of the placeholders. They travel with the tensors (through Ray or
  torchrun workers and the parts files of a chunked job), so any process decodes them the same.

Lengths for generation, unless given: with an MR, the median training length for the same number of MR
attributes (moved by +1, -1, +2, ... in the further draws of best-of-k); without one, drawn from the
training sentences' lengths (stored in the bundle).
"""
from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from polydiff.errors import InputError

from . import mr as mrs
from .tokenizer import Tokenizer, split

__all__ = ["Sentence", "TextEncoder", "make_cond", "configure", "read_lines", "repeat_rule"]

N_ATTR = len(mrs.ATTRIBUTES)
NAME_BYTES = 64


def name_bytes(value: Optional[str]) -> List[int]:
    """A name as NAME_BYTES UTF-8 bytes, zero-padded (all zeros: no name)."""
    raw = (value or "").encode("utf-8")
    if len(raw) > NAME_BYTES:
        raise InputError(f"the name {value[:30]!r} is longer than {NAME_BYTES} bytes")
    return list(raw) + [0] * (NAME_BYTES - len(raw))


def bytes_name(row) -> Optional[str]:
    raw = bytes(int(v) for v in row).rstrip(b"\0")
    return raw.decode("utf-8", errors="replace") if raw else None


@dataclass(frozen=True)
class Sentence:
    """A sentence and the meaning representation it realises ("" when it has none)."""

    text: str
    mr: str = ""

    def __str__(self) -> str:
        return self.text


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}): convert it, e.g. iconv -t UTF-8") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None


def read_lines(path) -> List[Sentence]:
    """Sentences from a file: ``.csv`` with a ``ref`` (or ``text``) column and optionally ``mr`` (E2E's
    format), a ``.csv`` with an ``mr`` column only (meaning representations to realise: empty texts), or
    plain text with one sentence per line (blank lines skipped)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: a folder; give a .txt or .csv file")
    raw = _read_text(p)
    if p.suffix.lower() == ".csv":
        rows = list(csv.reader(io.StringIO(raw)))
        if not rows:
            raise InputError(f"{p}: empty file")
        head = [h.strip().lower() for h in rows[0]]
        col_t = next((head.index(h) for h in ("ref", "text") if h in head), None)
        col_m = head.index("mr") if "mr" in head else None
        if col_t is None and col_m is None:
            raise InputError(f"{p}: a CSV needs a 'ref' (or 'text') column, an 'mr' column, or both")
        out = []
        for i, r in enumerate(rows[1:], start=2):
            if not any(c.strip() for c in r):
                continue
            if len(r) < len(head):
                raise InputError(f"{p}, line {i}: {len(r)} fields, the header has {len(head)}")
            out.append(Sentence(r[col_t].strip() if col_t is not None else "", r[col_m].strip() if col_m is not None else ""))
    else:
        out = [Sentence(line.strip()) for line in raw.splitlines() if line.strip()]
    if not out:
        raise InputError(f"{p}: no sentences")
    return out


class TextEncoder:
    """See the module docstring. ``max_len``: tokens per sentence [the longest training sentence's];
    ``min_count``: a word seen fewer times in the training text becomes ``<unk>``."""

    def __init__(self, max_len: Optional[int] = None, min_count: int = 2):
        self.max_len = int(max_len) if max_len else None  # None: the longest training sentence
        self.min_count = int(min_count)
        self.tokenizer: Optional[Tokenizer] = None
        self.values: Dict[str, List[str]] = {}      # attribute -> its closed set of values
        self.lengths: Dict[str, List[int]] = {}     # number of MR attributes ("none": no MR) -> length counts
        self.names: Dict[str, List[str]] = {}       # name / near -> the training values (for sentences without MR)
        self.name_counts: Dict[str, List[int]] = {}  # name / near -> how often each of those values occurs
        #: the training MRs as value-index rows with their sentence counts, [[i_1 .. i_8, count], ...]: the
        #: distribution an unconditional sentence draws its MR from
        self.mr_prior: List[List[int]] = []
        self.strict = False

    # ------------------------------------------------------------------ files
    def read(self, path, strict: bool = False) -> List[Sentence]:
        """Sentences of a file (:func:`read_lines`). A fitted encoder reports the words its vocabulary lacks
        (they are read as ``<unk>``); with ``strict`` it refuses them."""
        items = read_lines(path)
        if self.tokenizer is not None:
            unknown = self.unknown_words(items)
            if unknown and (strict or self.strict):
                raise InputError(f"{path}: {len(unknown)} words outside the vocabulary: {', '.join(unknown[:8])}")
            if unknown:
                import warnings

                warnings.warn(f"{path}: {len(unknown)} words outside the vocabulary read as <unk>: "
                              f"{', '.join(unknown[:8])}", stacklevel=2)
        return items

    def write(self, items: Sequence, path, **options) -> List[Path]:
        """``.csv`` (columns mr, ref) or ``.txt`` (one sentence per line); any other path is a folder that
        gets ``samples.csv``. Written to a temporary file, then moved."""
        p = Path(path)
        if p.suffix.lower() not in (".csv", ".txt") or p.is_dir():
            p = p / "samples.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        items = [s if isinstance(s, Sentence) else Sentence(str(s)) for s in items]
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name + ".", suffix=".part")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                if p.suffix.lower() == ".csv":
                    w = csv.writer(f)
                    w.writerow(["mr", "ref"])
                    for s in items:
                        w.writerow([s.mr, s.text])
                else:
                    for s in items:
                        f.write(s.text.replace("\n", " ") + "\n")
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return [p]

    # ------------------------------------------------------------------ fitting
    def fit(self, items: Sequence) -> "TextEncoder":
        items = [s if isinstance(s, Sentence) else Sentence(str(s)) for s in items]
        if not items:
            raise InputError("no training sentences")
        parsed = [mrs.parse(s.mr) if s.mr else None for s in items]
        texts = [mrs.delexicalise(s.text, m) if m else s.text for s, m in zip(items, parsed)]
        self.tokenizer = Tokenizer.fit(texts, self.min_count)
        if self.max_len is None:
            self.max_len = max(len(split(t)) for t in texts)
        values: Dict[str, set] = {a: set() for a in mrs.ATTRIBUTES if a not in mrs.OPEN}
        names: Dict[str, Dict[str, int]] = {a: {} for a in mrs.OPEN}
        lengths: Dict[str, Dict[int, int]] = {}
        for t, m in zip(texts, parsed):
            n = len(split(t))
            if n > self.max_len:
                continue
            key = str(len(m)) if m else "none"
            lengths.setdefault(key, {})
            lengths[key][n] = lengths[key].get(n, 0) + 1
            for a, v in (m or {}).items():
                if a in mrs.OPEN:
                    names[a][v] = names[a].get(v, 0) + 1
                else:
                    values[a].add(v)
        self.values = {a: sorted(v) for a, v in values.items()}
        self.names = {a: sorted(v, key=lambda k: (-v[k], k)) for a, v in names.items()}
        self.name_counts = {a: [names[a][k] for k in self.names[a]] for a in self.names}
        prior: Dict[Tuple[int, ...], int] = {}
        for t, m in zip(texts, parsed):
            if m and len(split(t)) <= self.max_len:
                key = tuple(self.mr_index(m))
                prior[key] = prior.get(key, 0) + 1
        self.mr_prior = [list(k) + [c] for k, c in sorted(prior.items())]
        self.lengths = {k: [c.get(i, 0) for i in range(self.max_len + 1)] for k, c in sorted(lengths.items())}
        if not self.lengths:
            raise InputError(f"every training sentence is longer than max_len = {self.max_len} tokens")
        return self

    def _need_fit(self):
        if self.tokenizer is None:
            raise InputError("the text encoder has not been fitted")

    # ------------------------------------------------------------------ tensors
    def mr_index(self, mr: Optional[Dict[str, str]]) -> List[int]:
        """One value index per attribute (see the module docstring); unknown values are refused."""
        if mr is None:
            return [-1] * N_ATTR
        if not any(self.values.values()) and not any(self.names.values()):
            raise InputError("this model was trained on sentences without meaning representations: "
                             "it cannot realise one")
        out = []
        for a in mrs.ATTRIBUTES:
            if a not in mr:
                out.append(0)
            elif a in mrs.OPEN:
                out.append(1)
            else:
                known = self.values.get(a, [])
                if mr[a] not in known:
                    raise InputError(f"{a}[{mr[a]}]: a value the model never saw; it knows {a} "
                                     f"{', '.join(known) or 'no values'}")
                out.append(1 + known.index(mr[a]))
        return out

    def lex_row(self, mr: Optional[Dict[str, str]]) -> torch.Tensor:
        """The ``lex`` row of one sentence: its name and near values as bytes [2, NAME_BYTES]."""
        return torch.tensor([name_bytes((mr or {}).get(a)) for a in mrs.OPEN], dtype=torch.uint8)

    def tokens(self, text: str, mr: Optional[Dict[str, str]] = None, what: str = "sentence") -> List[int]:
        """Token ids of one text (delexicalised for ``mr``); unknown words are ``<unk>`` (refused when
        :attr:`strict`), a text longer than ``max_len`` tokens is refused."""
        self._need_fit()
        ids, unknown = self.tokenizer.encode(mrs.delexicalise(text, mr) if mr else text)
        if unknown and self.strict:
            raise InputError(f"{what} {text[:40]!r}: words outside the vocabulary: {', '.join(sorted(set(unknown))[:8])}")
        if len(ids) > self.max_len:
            raise InputError(f"{what} {text[:40]!r}: {len(ids)} tokens, the model's maximum is {self.max_len}")
        return ids

    def unknown_words(self, items: Sequence) -> List[str]:
        self._need_fit()
        out = set()
        for s in items:
            s = s if isinstance(s, Sentence) else Sentence(str(s))
            m = mrs.parse(s.mr) if s.mr else None
            out |= set(self.tokenizer.encode(mrs.delexicalise(s.text, m) if m else s.text)[1])
        return sorted(out)

    def encode(self, items: Sequence) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        self._need_fit()
        items = [s if isinstance(s, Sentence) else Sentence(str(s)) for s in items]
        x = torch.zeros(len(items), self.max_len, dtype=torch.long)
        mask = torch.zeros(len(items), self.max_len)
        mr_t = torch.zeros(len(items), N_ATTR, dtype=torch.long)
        lex = torch.zeros(len(items), len(mrs.OPEN), NAME_BYTES, dtype=torch.uint8)
        for i, s in enumerate(items):
            if not s.text.strip():
                raise InputError(f"sentence {i + 1} is empty")
            m = mrs.parse(s.mr) if s.mr else None
            ids = self.tokens(s.text, m, what=f"sentence {i + 1}")
            x[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, : len(ids)] = 1
            mr_t[i] = torch.tensor(self.mr_index(m))
            lex[i] = self.lex_row(m)
        return x, {"mask": mask, "mr": mr_t, "lex": lex}

    def decode(self, x: torch.Tensor, cond: Dict[str, torch.Tensor], **options) -> List[Sentence]:
        self._need_fit()
        mask = cond.get("mask")
        lex = cond.get("lex")
        mr_t = cond.get("mr")
        out = []
        for i in range(x.shape[0]):
            ids = x[i] if mask is None else x[i][mask[i].bool()]
            text = self.tokenizer.decode(ids.tolist())
            fill = {}
            if lex is not None:
                for j, a in enumerate(mrs.OPEN):
                    v = bytes_name(lex[i, j].tolist())
                    if v is not None:
                        fill[a] = v
            text = mrs.lexicalise(text, fill)
            out.append(Sentence(text, self.mr_text(mr_t[i].tolist(), fill) if mr_t is not None else ""))
        return out

    def mr_text(self, index: Sequence[int], fill: Dict[str, str]) -> str:
        """The MR string of a value-index row (with the names of ``fill``); "" for the null row."""
        if all(int(v) < 0 for v in index):
            return ""
        mr = {}
        for a, v in zip(mrs.ATTRIBUTES, index):
            v = int(v)
            if v <= 0:
                continue
            mr[a] = fill.get(a, mrs.PLACEHOLDER.get(a, "")) if a in mrs.OPEN else self.values[a][v - 1]
        return mrs.format_mr(mr)

    def sample_shape(self) -> Tuple[int, ...]:
        return (self.max_len,)

    @property
    def vocab_size(self) -> int:
        self._need_fit()
        return len(self.tokenizer)

    # ------------------------------------------------------------------ bundle state
    def metadata(self) -> dict:
        self._need_fit()
        return {"max_len": self.max_len, "min_count": self.min_count, "vocab": self.tokenizer.vocab,
                "values": self.values, "names": self.names, "lengths": self.lengths,
                "name_counts": self.name_counts, "mr_prior": self.mr_prior}

    @classmethod
    def from_metadata(cls, meta: Optional[dict]) -> "TextEncoder":
        if meta is None:
            return cls()
        enc = cls(meta.get("max_len"), meta.get("min_count", 2))
        enc.tokenizer = Tokenizer(meta["vocab"])
        enc.values = {k: list(v) for k, v in meta.get("values", {}).items()}
        enc.names = {k: list(v) for k, v in meta.get("names", {}).items()}
        enc.lengths = {k: list(v) for k, v in meta.get("lengths", {}).items()}
        enc.name_counts = {k: list(v) for k, v in meta.get("name_counts", {}).items()}
        enc.mr_prior = [list(r) for r in meta.get("mr_prior", [])]
        return enc

    def values_in(self, phrases: Sequence[str]) -> Optional[Dict[str, str]]:
        """The closed MR values (food, area, eatType, ...) that ``phrases`` name as whole words, case ignored:
        ``["Italian food", "riverside"]`` -> ``{"food": "Italian", "area": "riverside"}``; None when they
        name two values of one attribute (no MR holds both)."""
        if not phrases:
            return {}
        found: Dict[str, set] = {}
        for a, vals in self.values.items():
            for v in vals:
                pat = re.compile(r"(?<!\w)" + re.escape(v) + r"(?!\w)", re.IGNORECASE)
                if any(pat.search(p) for p in phrases):
                    found.setdefault(a, set()).add(v)
        if any(len(v) > 1 for v in found.values()):
            return None
        return {a: next(iter(v)) for a, v in found.items()}

    def draw_mr(self, generator, require: Optional[Dict[str, str]] = None) -> Optional[Dict[str, str]]:
        """An MR drawn from the training MRs (:attr:`mr_prior`, as often as the training sentences use each),
        its ``name`` and ``near`` drawn as often as the training sentences use them; ``require``: closed
        values the MR must hold (the draw is then from the training MRs that hold them). None for an encoder
        without the prior (fitted before it was stored, or on sentences without MRs), or when no training MR
        holds the required values."""
        if not self.mr_prior:
            return None
        rows = self.mr_prior
        if require:
            need = [(mrs.ATTRIBUTES.index(a), 1 + self.values[a].index(v)) for a, v in require.items()
                    if v in self.values.get(a, [])]
            rows = [r for r in rows if all(r[j] == v for j, v in need)]
            if not rows:
                return None
        w = torch.tensor([r[-1] for r in rows], dtype=torch.float64)
        row = rows[int(torch.multinomial(w, 1, generator=generator))]
        mr = {}
        for a, v in zip(mrs.ATTRIBUTES, row):
            if v <= 0:
                continue
            if a not in mrs.OPEN:
                mr[a] = self.values[a][v - 1]
            elif self.names.get(a):
                c = torch.tensor(self.name_counts.get(a) or [1] * len(self.names[a]), dtype=torch.float64)
                mr[a] = self.names[a][int(torch.multinomial(c, 1, generator=generator))]
        return mr

    # ------------------------------------------------------------------ generation
    def typical_length(self, n_attr: Optional[int]) -> int:
        """The median training length for ``n_attr`` MR attributes (all training lengths for a size never seen)."""
        counts = self._length_counts(n_attr)
        half, acc = sum(counts) / 2.0, 0
        for i, c in enumerate(counts):
            acc += c
            if acc >= half:
                return i
        return self.max_len

    def _length_counts(self, n_attr: Optional[int]) -> List[int]:
        key = "none" if n_attr is None else str(n_attr)
        counts = self.lengths.get(key)
        if counts is None or not sum(counts):  # an MR size never seen: all training lengths
            counts = [sum(c[i] for c in self.lengths.values()) for i in range(self.max_len + 1)]
        return counts

    def draw_length(self, n_attr: Optional[int], generator) -> int:
        w = torch.tensor(self._length_counts(n_attr), dtype=torch.float64)
        return int(torch.multinomial(w, 1, generator=generator))


def configure(config: dict, encoder: TextEncoder) -> dict:
    """Fill the vocabulary and value counts into the network config and the categorical process."""
    net = dict(config.get("network", {}))
    net["vocab"] = encoder.vocab_size
    net["max_len"] = encoder.max_len
    net["mr_values"] = [1 + (1 if a in mrs.OPEN else len(encoder.values.get(a, []))) for a in mrs.ATTRIBUTES]
    index = encoder.tokenizer.index
    net["placeholders"] = [[index[v] for v in (p, "\u2581" + p) if v in index]
                           for p in (mrs.PLACEHOLDER["name"], mrs.PLACEHOLDER["near"])]
    emb = config.get("embedding") or {}
    if emb.get("dim"):
        net["embed_dim"] = int(emb["dim"])
    if emb.get("loss") == "ce":  # score interpolation: a logits head, and word vectors of a fixed length
        net.update(embed_head="interpolate", embed_norm=True)
    if emb.get("self_cond"):
        net["self_cond"] = True
    out = dict(config, network=net)
    sample = dict(out.get("sample") or {})
    if net.get("method", "masked") == "masked" and "sampler_args" not in sample:
        # greedy confidence decoding that also reveals every position at least 60 % certain, with the token
        # rule that no word is revealed next to the same word (:func:`repeat_rule`), chosen on the E2E
        # development split (an embedding model's sigma-space sampler takes none of them, so this default is
        # the masked method's alone)
        sample["sampler_args"] = {"temperature": 0.0, "threshold": 0.6, "constrain": True}
        out["sample"] = sample
    if out.get("process"):
        out["process"] = dict(out["process"], vocab=encoder.vocab_size)
    return out


def make_cond(encoder: TextEncoder, n: int, generator=None, mr=None, length=None, contains=None, template=None,
              draw: int = 0):
    """Conditions and known tokens for ``n`` generated sentences (see :mod:`polydiff_text.tasks`); ``draw``:
    the index of a best-of-k draw (it moves the typical length of data-to-text sentences)."""
    from .tasks import conditions

    return conditions(encoder, n, generator=generator, mr=mr, length=length, contains=contains, template=template,
                      draw=draw)


def rank(encoder: TextEncoder, x: torch.Tensor, cond: Dict[str, torch.Tensor]):
    """Scores of generated sentences for best-of-k sampling (the ``rank`` hook), 0 the best: for a sentence
    with an MR it was asked for, minus its slot errors (values of the MR it leaves out, plus one if it names
    a value the MR does not hold; :func:`polydiff_text.metrics.slot_errors`) and its slips (a word written
    twice in a row, an article that disagrees with the next word: :func:`polydiff_text.metrics.slips`); for
    a filled template or a sentence with required words (``cond["ranked"]``), minus its slips (and slot
    errors with an MR): its draws differ in the gaps' sizes or the words' places, and the ranking keeps one
    that reads right. 0 for unconditional sentences (their draws are not compared: one draw, the speed of
    unconditional text). None when no sentence of the batch is ranked."""
    from .metrics import slips, slot_errors

    b = x.shape[0]
    mr_t = cond.get("mr")
    drawn = cond.get("mr_drawn")
    asked = (mr_t >= 0).all(-1) if mr_t is not None else torch.zeros(b, dtype=torch.bool)
    if drawn is not None:
        asked = asked & ~drawn.bool()
    ranked = cond.get("ranked")
    ranked = asked | (ranked.bool() if ranked is not None else torch.zeros(b, dtype=torch.bool))
    if not bool(ranked.any()):
        return None
    out = []
    for s, a, r in zip(encoder.decode(x, cond), asked.tolist(), ranked.tolist()):
        if not r:
            out.append(0.0)
            continue
        e = slot_errors(s.text, s.mr) if a and s.mr else {"missing": 0, "hallucinated": 0}
        out.append(-float(e["missing"] + e["hallucinated"] + slips(s.text)))
    return out


def repeat_rule(encoder: TextEncoder, cond: Dict[str, torch.Tensor], process):
    """The text modality's token rule (the core's ``constrain`` hook): no word or mark is revealed next to
    the same one ("of of", "The the", ",,"; case and the space before a token ignored). Parallel decoding
    reveals several positions in one step, each from the same evaluation, so two neighbours sure of the same
    word both write it; the training references do that in 0.4 % of sentences, generated sentences far more
    often without the rule (docs/benchmarks.md, "Text").

    After each step's draw, a token revealed at this step that equals its left neighbour goes back to the
    mask, or, where the left one was revealed at this step and the right one was there before, the left one
    does: drawn again at a later step from a denoiser that then sees its neighbour. At the last step nothing
    may stay masked: such a token becomes padding instead, which decoding leaves out (the word is written
    once: "a a high rating" -> "a high rating"), except in a sentence whose length was asked for
    (``cond["exact_length"]``): the length holds.

    An indefinite article agrees with the word after it: an article the model wrote takes the other form
    ("a Indian" -> "an Indian", "An cheap" -> "A cheap"), whenever either token came; after a known article
    (a template's) a word revealed at this step that disagrees goes back to the mask, and at the last step it
    stays. Known tokens (a template's words, padding) never change. Deterministic."""
    encoder._need_fit()
    if process is None or process.kind != "absorbing":
        raise InputError("the text token rule needs a masked (absorbing) model")
    mask_id = int(process.mask_id)
    vocab = encoder.tokenizer.vocab
    canon: Dict[str, int] = {}
    word = torch.tensor([canon.setdefault(t.lstrip("\u2581").lower(), len(canon)) for t in vocab] + [-1],
                        dtype=torch.long)  # the mask (id len(vocab)) is no word
    word[0] = -2  # padding repeats freely

    pad = encoder.tokenizer.pad_id
    exact = cond.get("exact_length") if cond else None
    # indefinite articles and the words they stand before: ``other`` maps "a" to "an" and back (the same case
    # and space mark; -1 where the vocabulary lacks the other form), ``sound`` is 1 for a word that starts
    # with a vowel sound, 0 for one that does not, -1 for anything else (marks, numbers, padding, the mask)
    from .metrics import _VOWEL_SOUND

    index = encoder.tokenizer.index
    n_tok = len(vocab) + 1
    other = torch.full((n_tok,), -1, dtype=torch.long)
    article = torch.zeros(n_tok, dtype=torch.long)  # 1: "a", 2: "an"
    sound = torch.full((n_tok,), -1, dtype=torch.long)
    for i, t in enumerate(vocab):
        bare = t.lstrip("\u2581")
        if bare.lower() in ("a", "an"):
            article[i] = 1 if bare.lower() == "a" else 2
            swapped = t[: len(t) - len(bare)] + (bare + "n" if bare.lower() == "a" else bare[:-1])
            other[i] = index.get(swapped, -1)
        elif bare[:1].isalpha():
            sound[i] = 1 if _VOWEL_SOUND.match(bare) else 0
    article[0] = 0

    def rule(prev: torch.Tensor, new: torch.Tensor, last: bool, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        w = word.to(new.device)[new.clamp(0, len(word) - 1)]
        fresh = (new != prev) & (prev == mask_id)
        kept = keep.expand(new.shape) if keep is not None else torch.zeros_like(fresh)
        fresh = fresh & ~kept
        same = (w[..., 1:] == w[..., :-1]) & (w[..., 1:] >= 0)  # positions i, i + 1 hold the same word
        back = torch.zeros_like(fresh)
        back[..., 1:] |= same & fresh[..., 1:]                # the right one was revealed now: it goes back
        back[..., :-1] |= same & fresh[..., :-1] & ~fresh[..., 1:]  # else the left one, if it was
        # an article that disagrees with the word after it ("a Indian", "an cheap"): a written article takes
        # the other form; after a template's own article the word goes back to the mask (at the last step it
        # stays: the template asked for that article)
        ids = new.clamp(0, n_tok - 1)
        art, snd, oth = article.to(new.device)[ids], sound.to(new.device)[ids], other.to(new.device)[ids]
        disagree = torch.zeros_like(fresh)
        disagree[..., :-1] = ((art[..., :-1] == 1) & (snd[..., 1:] == 1)) | ((art[..., :-1] == 2) & (snd[..., 1:] == 0))
        disagree[..., :-1] &= ~(back[..., :-1] | back[..., 1:])  # a repeat goes back as above
        swap = disagree & ~kept & (oth >= 0)
        out = torch.where(swap, oth, new)
        word_back = torch.zeros_like(fresh)
        word_back[..., 1:] = disagree[..., :-1] & ~swap[..., :-1] & fresh[..., 1:]
        if last:  # nothing may stay masked: written once (padding), or twice where the length is fixed
            if exact is not None:
                back = back & ~exact.to(new.device).bool().reshape((-1,) + (1,) * (new.dim() - 1))
            return torch.where(back, torch.full_like(new, pad), out)
        return torch.where(back | word_back, torch.full_like(new, mask_id), out)

    return rule
