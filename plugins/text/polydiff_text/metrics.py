"""Metrics of generated text: BLEU, slot recall and hallucinated values, diversity, copy rate, an n-gram LM.

* :func:`bleu`: corpus BLEU-4 with every reference of an item, brevity penalty against the closest reference
  length, no smoothing, on the "13a" tokenization of mteval (sacrebleu's default); it agrees with
  ``sacrebleu.corpus_bleu`` (tests/benchmarks check it where sacrebleu is installed);
* :func:`slots`: for sentences with an E2E MR, the fraction of MR values realised and of sentences that
  mention a value the MR does not hold (name, near, eatType, food, area), found with patterns in the spirit
  of the E2E challenge's slot-error scripts: approximate, the same patterns for every system compared (the
  references themselves score slot recall 0.92 and a hallucination rate of 0.03 on the development split,
  0.90 and 0.04 on the test split: human writers leave values out and add some);
* :func:`diversity`: distinct-1/2, duplicate rate, self-BLEU; :func:`copy_rate`: sentences found verbatim in
  the training text; :func:`repeat_rate`: sentences with a word or mark written twice in a row ("of of",
  ",,"), the slip parallel decoding makes when neighbouring positions are revealed at once;
* :class:`KneserNey`: an interpolated Kneser-Ney n-gram language model (modified discounts), for fluency as
  perplexity.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Optional, Sequence

from . import mr as mrs

__all__ = ["tokenize_13a", "bleu", "slot_errors", "slots", "diversity", "copy_rate", "repeat_rate", "slips",
           "slip_rate", "KneserNey", "evaluate"]


def tokenize_13a(line: str) -> List[str]:
    s = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    s = s.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    s = f" {s} "
    s = re.sub(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", r" \1 ", s)
    s = re.sub(r"([^0-9])([\.,])", r"\1 \2 ", s)
    s = re.sub(r"([\.,])([^0-9])", r" \1 \2", s)
    s = re.sub(r"([0-9])(-)", r"\1 \2 ", s)
    return s.split()


def _ngrams(toks: Sequence[str], n: int) -> Counter:
    return Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))


def bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Corpus BLEU (0-100) of ``hypotheses`` against their lists of references."""
    if len(hypotheses) != len(references):
        raise ValueError("one list of references per hypothesis")
    match = [0] * max_n
    total = [0] * max_n
    hyp_len = ref_len = 0
    for h, refs in zip(hypotheses, references):
        ht = tokenize_13a(h)
        rts = [tokenize_13a(r) for r in refs]
        hyp_len += len(ht)
        ref_len += min((abs(len(r) - len(ht)), len(r)) for r in rts)[1]
        for n in range(1, max_n + 1):
            hc = _ngrams(ht, n)
            best: Counter = Counter()
            for r in rts:
                best |= _ngrams(r, n)
            match[n - 1] += sum(min(c, best[g]) for g, c in hc.items())
            total[n - 1] += max(len(ht) - n + 1, 0)
    if min(match) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(match, total)) / max_n
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    return 100.0 * bp * math.exp(log_p)


# ---------------------------------------------------------------------------------------------- slots
_VALUE_PATTERNS = {
    "eatType": {"coffee shop": r"coffee ?shop|caf[eé]", "pub": r"\bpub", "restaurant": r"restaurant|eatery|diner"},
    "food": {"Chinese": r"chinese", "English": r"english|british", "Fast food": r"fast ?food",
             "French": r"french", "Indian": r"indian", "Italian": r"italian", "Japanese": r"japanese|sushi"},
    "priceRange": {"cheap": r"cheap|inexpensive|low[- ]?(cost|price)|affordable|budget",
                   "moderate": r"moderate|average[- ]?pric|mid[- ]?(range|pric)|reasonabl",
                   "high": r"high[- ]?(end|pric|cost)|expensive|pricey|premium|costly|exclusive",
                   "less than £20": r"(less|under|lower) than £?20|£20|cheap|low[- ]?pric|inexpensive",
                   "£20-25": r"£?20\s*(-|to|and)\s*£?25|£20|£25|moderate|average[- ]?pric",
                   "more than £30": r"(more|over|above|higher) than £?30|£30|expensive|high[- ]?pric"},
    "customer rating": {"low": r"\blow|\b1\b[^.]{0,12}\b5\b|one ?star|\b1 ?star|poor",
                        "average": r"average|\b3\b[^.]{0,12}\b5\b|three ?star|\b3 ?star|mediocre|medium",
                        "high": r"high|\b5\b[^.]{0,12}\b5\b|five ?star|\b5 ?star|excellent|great",
                        "1 out of 5": r"\b1\b[^.]{0,12}\b5\b|one ?star|\b1 ?star|\blow",
                        "3 out of 5": r"\b3\b[^.]{0,12}\b5\b|three ?star|\b3 ?star|average",
                        "5 out of 5": r"\b5\b[^.]{0,12}\b5\b|five ?star|\b5 ?star|high"},
    "area": {"riverside": r"river", "city centre": r"city|cent(re|er)|downtown"},
}
# stricter patterns for values a sentence mentions without its MR holding them ("restaurant" is generic)
_MENTION_PATTERNS = {
    "eatType": {"coffee shop": r"coffee ?shop", "pub": r"\bpub\b"},
    "food": _VALUE_PATTERNS["food"],
    "area": {"riverside": r"riverside|river ?side|by the river|on the river",
             "city centre": r"city cent(re|er)|cent(re|er) of (the )?(city|town)|downtown"},
}
_FAMILY = r"famil|kid|child|children"
_NEG = r"\bnot?\b|n't|\bno\b|non|adults?[- ]only|\bun(?=famil|suit)"
_HALLUCINATION_ATTRS = ("eatType", "food", "area")


def _realised(attr: str, value: str, text: str, lowered: str) -> bool:
    if attr in mrs.OPEN:
        return value in text
    if attr == "familyFriendly":
        if not re.search(_FAMILY, lowered):
            return False
        neg = bool(re.search(_NEG, lowered))
        return neg if value == "no" else not neg
    pat = _VALUE_PATTERNS.get(attr, {}).get(value)
    return bool(re.search(pat, lowered)) if pat else value.lower() in lowered


def slot_errors(text: str, mr, names: Optional[Dict[str, Sequence[str]]] = None) -> dict:
    """One sentence against its MR (a string or a parsed dict): ``realised`` (attribute -> whether its value
    is in the text), ``missing`` (values not realised) and ``hallucinated`` (whether the text names an
    eatType, food or area the MR does not hold, or a restaurant from ``names`` other than its own)."""
    m = mrs.parse(mr) if isinstance(mr, str) else dict(mr)
    lowered = text.lower()
    realised = {a: _realised(a, v, text, lowered) for a, v in m.items()}
    bad = False
    rest = mrs.delexicalise(text, m).lower()  # "Raja Indian Cuisine" names a place, not a food
    for a in _HALLUCINATION_ATTRS:
        for v, pat in _MENTION_PATTERNS[a].items():
            if m.get(a) != v and re.search(pat, rest):
                bad = True
    for a in mrs.OPEN:
        for other in (names or {}).get(a, []):
            if other != m.get(a) and other not in m.values() and other in text:
                bad = True
    return {"realised": realised, "missing": sum(not ok for ok in realised.values()), "hallucinated": bad}


def slots(items: Sequence, names: Optional[Dict[str, Sequence[str]]] = None) -> dict:
    """Slot recall (values realised / values in the MRs) and the hallucination rate (sentences that name
    an eatType, food or area the MR does not hold, or a restaurant from ``names`` other than its own), over
    the items with an MR (:func:`slot_errors` per sentence)."""
    realised = total = 0
    halluc = 0
    per_attr: Dict[str, List[int]] = defaultdict(lambda: [0, 0])
    counted = 0
    for s in items:
        if not getattr(s, "mr", ""):
            continue
        e = slot_errors(s.text, s.mr, names)
        counted += 1
        for a, ok in e["realised"].items():
            realised += ok
            total += 1
            per_attr[a][0] += ok
            per_attr[a][1] += 1
        halluc += e["hallucinated"]
    return {"sentences": counted, "slot_recall": realised / total if total else float("nan"),
            "hallucination_rate": halluc / counted if counted else float("nan"),
            "per_attribute": {a: c[0] / c[1] for a, c in sorted(per_attr.items())}}


# ---------------------------------------------------------------------------------------------- diversity
def diversity(texts: Sequence[str], self_bleu_n: int = 200) -> dict:
    toks = [tokenize_13a(t) for t in texts]
    uni = Counter(g for t in toks for g in _ngrams(t, 1))
    bi = Counter(g for t in toks for g in _ngrams(t, 2))
    dup = 1 - len(set(texts)) / len(texts) if texts else float("nan")
    k = min(self_bleu_n, len(texts))
    sb = float("nan")
    if k >= 2:
        sub = list(texts[:k])
        sb = bleu(sub, [sub[:i] + sub[i + 1:] for i in range(k)])
    return {"distinct_1": len(uni) / max(sum(uni.values()), 1), "distinct_2": len(bi) / max(sum(bi.values()), 1),
            "duplicate_rate": dup, "self_bleu": sb}


def copy_rate(texts: Sequence[str], train: Iterable[str]) -> float:
    seen = {" ".join(t.split()) for t in train}
    return sum(" ".join(t.split()) in seen for t in texts) / len(texts) if texts else float("nan")


def _lowered(text: str) -> List[str]:
    return [t.lower() for t in tokenize_13a(text)]


def repeated(text: str) -> bool:
    """Whether ``text`` writes a token twice in a row (13a tokens, case ignored: "The the", "of of", "..")."""
    toks = _lowered(text)
    return any(a == b for a, b in zip(toks, toks[1:]))


_VOWEL_SOUND = re.compile(r"^(?!one\b|once\b|uni|use|usu|eu)[aeiou]|^(hour|honest|honou?r)", re.IGNORECASE)
_NO_NOUN = {"a", "an", "the", ".", ",", "!", "?", ";", ":"}


def slips(text: str) -> int:
    """Slips of ``text`` a reader notices at once: a token written twice in a row ("of of"), and an
    indefinite article that disagrees with the word after it ("a Indian", "an cheap") or stands before
    another article or a mark ("a an", "a ."). The best-of ranking of templates and MRs counts them."""
    toks = _lowered(text)
    out = sum(a == b for a, b in zip(toks, toks[1:]))
    for a, b in zip(toks, toks[1:]):
        if a in ("a", "an"):
            if b in _NO_NOUN:
                out += a != b  # "a a" is counted as a repeat already
            elif b[0].isalpha() and (a == "an") != bool(_VOWEL_SOUND.match(b)):
                out += 1
    return out


def repeat_rate(texts: Sequence[str]) -> float:
    """The fraction of ``texts`` with a token written twice in a row (:func:`repeated`); the E2E training
    references: 0.4 %."""
    return sum(repeated(t) for t in texts) / len(texts) if texts else float("nan")


def slip_rate(texts: Sequence[str]) -> float:
    """The fraction of ``texts`` with at least one slip (:func:`slips`)."""
    return sum(slips(t) > 0 for t in texts) / len(texts) if texts else float("nan")


# ---------------------------------------------------------------------------------------------- n-gram LM
class KneserNey:
    """Interpolated modified Kneser-Ney n-gram LM (Chen & Goodman 1998) over 13a tokens, fitted on
    ``sentences``; :meth:`perplexity` is per token, the end-of-sentence token included."""

    def __init__(self, sentences: Iterable[str], order: int = 4):
        self.n = int(order)
        self.counts = [defaultdict(Counter) for _ in range(self.n + 1)]  # counts[k][context][word]
        for s in sentences:
            toks = ["<s>"] * (self.n - 1) + tokenize_13a(s) + ["</s>"]
            for i in range(self.n - 1, len(toks)):
                self.counts[self.n][tuple(toks[i - self.n + 1:i])][toks[i]] += 1
        # lower orders use continuation counts: the number of distinct left contexts of each n-gram
        for k in range(self.n, 1, -1):
            for ctx, words in self.counts[k].items():
                for w in words:
                    self.counts[k - 1][ctx[1:]][w] += 1
        self.vocab = set(self.counts[1][()]) | {"</s>"}
        self.d = {}
        for k in range(1, self.n + 1):
            cc = Counter(c for words in self.counts[k].values() for c in words.values())
            n1, n2, n3, n4 = (cc.get(i, 0) for i in (1, 2, 3, 4))
            y = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5
            self.d[k] = tuple(max(0.0, min(float(i), i - (i + 1) * y * nx / max(ny, 1)))
                              for i, ny, nx in ((1, n1, n2), (2, n2, n3), (3, n3, n4)))
        self._totals = [{ctx: sum(w.values()) for ctx, w in self.counts[k].items()} for k in range(self.n + 1)]
        self._kinds = [{ctx: Counter(min(c, 3) for c in w.values()) for ctx, w in self.counts[k].items()}
                       for k in range(self.n + 1)]

    def prob(self, ctx: tuple, w: str) -> float:
        p = 1.0 / (len(self.vocab) + 1)  # the unigram distribution is interpolated with a uniform one
        for k in range(1, self.n + 1):
            c = ctx[len(ctx) - (k - 1):] if k > 1 else ()
            total = self._totals[k].get(c)
            if not total:
                continue
            words = self.counts[k][c]
            cnt = words.get(w, 0)
            d = self.d[k][min(cnt, 3) - 1] if cnt else 0.0
            kinds = self._kinds[k][c]
            gamma = sum(self.d[k][i - 1] * kinds.get(i, 0) for i in (1, 2, 3)) / total
            p = max(cnt - d, 0.0) / total + gamma * p
        return p

    def perplexity(self, sentences: Iterable[str]) -> float:
        logp, n = 0.0, 0
        for s in sentences:
            toks = ["<s>"] * (self.n - 1) + tokenize_13a(s) + ["</s>"]
            for i in range(self.n - 1, len(toks)):
                logp += math.log(self.prob(tuple(toks[i - self.n + 1:i]), toks[i]))
                n += 1
        return math.exp(-logp / max(n, 1))


def evaluate(items: Sequence, references: Optional[Sequence] = None, train: Optional[Sequence[str]] = None) -> dict:
    """The metrics of ``polydiff evaluate text`` (see the module docstring)."""
    texts = [s.text for s in items]
    if not texts:
        raise ValueError("no sentences to evaluate")
    out = {"sentences": len(texts), "mean_words": sum(len(t.split()) for t in texts) / len(texts)}
    if any(getattr(s, "mr", "") for s in items):
        out.update({k: v for k, v in slots(items).items() if k != "sentences"})
    if references is not None:
        by_mr: Dict[str, List[str]] = defaultdict(list)
        for r in references:
            by_mr[" ".join(r.mr.split())].append(r.text)
        pairs = [(s.text, by_mr.get(" ".join(s.mr.split()))) for s in items]
        missing = sum(r is None for _, r in pairs)
        if missing:
            raise ValueError(f"{missing} generated sentences have an MR with no reference in the references file")
        out["bleu"] = bleu([h for h, _ in pairs], [r for _, r in pairs])
    out.update(diversity(texts))
    out["repeat_rate"] = repeat_rate(texts)
    if train is not None:
        out["copy_rate"] = copy_rate(texts, train)
    return out
