"""Text metrics: BLEU against sacrebleu, slot recall on human references, the Kneser-Ney LM."""
import random

import pytest

from polydiff_text import datasets, metrics
from polydiff_text.encoder import Sentence

needs_e2e = pytest.mark.skipif(datasets.e2e_dir() is None, reason="the E2E dataset is not in shared/data")


def _by_mr(rows):
    out = {}
    for r in rows:
        out.setdefault(r.mr, []).append(r.text)
    return out


@needs_e2e
def test_bleu_equals_sacrebleu_on_e2e_references():
    sacrebleu = pytest.importorskip("sacrebleu")
    by = _by_mr(datasets.e2e_test())
    hyp = [refs[0] for refs in by.values()]
    refs = [refs[1:] or refs for refs in by.values()]
    k = max(len(r) for r in refs)
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(k)]
    assert metrics.bleu(hyp, refs) == pytest.approx(sacrebleu.corpus_bleu(hyp, streams).score, abs=1e-9)
    assert metrics.bleu(["a b c d e"], [["a b c d e"]]) == pytest.approx(100.0)
    assert metrics.bleu(["x y z w"], [["a b c d"]]) == 0.0


def test_slot_recall_is_high_on_references_and_low_on_the_wrong_mr():
    rows = datasets.e2e_sample()
    right = metrics.slots(rows)
    shuffled = [r.mr for r in rows]
    random.Random(0).shuffle(shuffled)
    wrong = metrics.slots([Sentence(r.text, m) for r, m in zip(rows, shuffled)])
    assert right["slot_recall"] > 0.85 and wrong["slot_recall"] < right["slot_recall"] - 0.3
    assert wrong["hallucination_rate"] > right["hallucination_rate"] + 0.3


def test_kneser_ney_prefers_in_domain_text_and_normalises():
    train = [r.text for r in datasets.e2e_sample()]
    lm = metrics.KneserNey(train[:250], order=3)
    inside = lm.perplexity(train[250:])
    outside = lm.perplexity(["The committee postponed the vote on the budget until next spring.",
                             "Photosynthesis converts light energy into chemical energy in plants."])
    assert inside < outside / 3
    ctx = ("is", "a")
    total = sum(lm.prob(ctx, w) for w in lm.vocab) + lm.prob(ctx, "<unseen>") * 1  # unseen words share the rest
    assert 0.98 < sum(lm.prob(ctx, w) for w in lm.vocab) <= 1.0 + 1e-9 and total > 0


def test_diversity_and_copy_rate():
    d = metrics.diversity(["a pub.", "a pub.", "an inn by the river."])
    assert d["duplicate_rate"] == pytest.approx(1 / 3)
    assert metrics.copy_rate(["a  pub.", "new"], ["a pub."]) == 0.5
