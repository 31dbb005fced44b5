"""Slips a reader notices at once: words written twice, articles that disagree, "the The Golden Curry".
The metric that counts them, the token rule that keeps parallel decoding from writing them, the ranking of
templates and required words by them, and required words that draw an MR holding their values."""
import pytest
import torch

from polydiff.discrete import Process
from polydiff.errors import InputError
from polydiff_text import datasets, mr as mrs
from polydiff_text.encoder import TextEncoder, rank, repeat_rule
from polydiff_text.metrics import repeat_rate, repeated, slip_rate, slips
from polydiff_text.tasks import conditions


@pytest.fixture(scope="module")
def enc():
    return TextEncoder().fit(datasets.e2e_sample())


def test_slips_count_repeats_and_disagreeing_articles():
    assert slips("The Eagle is an Italian pub near the river.") == 0
    assert slips("It is a family friendly place with an average rating, a one-star venue.") == 0
    assert slips("It has a rating of of 5 out of 5..") == 2          # "of of" and ".."
    assert slips("The the Eagle is a Indian pub.") == 2              # case ignored; "a Indian"
    assert slips("It is a an Indian pub.") == 1                      # "a an", then "an Indian" is right
    assert slips("It is an cheap pub, a .") == 2
    assert repeated("It is near near the river.") and not repeated("It is near the river.")
    assert repeat_rate(["a b", "a a", "b c", "c c"]) == 0.5
    assert repeat_rate([]) != repeat_rate([])  # nan: nothing to count
    assert slip_rate(["an Indian pub", "a Indian pub", "of of", "a pub"]) == 0.5


def test_a_name_with_its_own_article_replaces_the_one_written_before_it():
    mr = {"name": "The Golden Curry", "near": "The Six Bells"}
    assert mrs.lexicalise("The <name> is near the <near>.", mr) == "The Golden Curry is near The Six Bells."
    assert mrs.lexicalise("<name> is near <near>.", mr) == "The Golden Curry is near The Six Bells."
    plain = {"name": "Wildwood", "near": "Café Rouge"}  # a name without an article keeps the one written
    assert mrs.lexicalise("The <name> is near the <near>.", plain) == "The Wildwood is near the Café Rouge."


def _ids(enc, words):
    return torch.tensor([[enc.tokenizer.index[w] for w in words]])


def test_the_repeat_rule_masks_a_token_revealed_next_to_the_same_word(enc):
    proc = Process("absorbing", enc.vocab_size)
    rule = repeat_rule(enc, {}, proc)
    M = proc.mask_id
    new = _ids(enc, ["The", "▁pub", "▁is", "▁near", "▁near", "▁the", "▁the", "▁the"])
    # positions 4 and 5 revealed at this step: 4 repeats its older left neighbour, 5 is the first of a new
    # run of "the" whose right neighbours came at the same step too
    prev = new.clone()
    prev[0, 4] = M
    prev[0, 5:] = M
    out = rule(prev, new, False, None)
    assert out[0, :4].tolist() == new[0, :4].tolist()
    assert out[0, 4] == M and out[0, 5] == new[0, 5] and bool((out[0, 6:] == M).all())
    # a token revealed now next to an older identical one on its right: the new (left) one goes back
    prev2 = new.clone()
    prev2[0, 3] = M
    out2 = rule(prev2, new, False, None)
    assert out2[0, 3] == M
    # the space mark and case do not matter: "The" then "▁the" is a repeat
    pair = _ids(enc, ["The", "▁the"])
    assert rule(torch.tensor([[pair[0, 0], M]]), pair, False, None)[0, 1] == M
    # at the last step nothing may stay masked: the repeated token becomes padding, which decoding leaves out
    last = rule(prev, new, True, None)
    assert last[0, 4] == 0 and last[0, 5] == new[0, 5] and bool((last[0, 6:] == 0).all())
    assert enc.tokenizer.decode(last[0].tolist()) == "The pub is near the"
    # ... except where the sentence's length was asked for: the length holds
    held = repeat_rule(enc, {"exact_length": torch.tensor([True])}, proc)
    assert torch.equal(held(prev, new, True, None), new)
    assert held(prev, new, False, None)[0, 4] == M  # before the last step it masks all the same
    # known tokens never change
    keep = torch.zeros_like(new, dtype=torch.bool)
    keep[0, 4] = True
    assert rule(prev, new, False, keep)[0, 4] == new[0, 4]
    with pytest.raises(InputError, match="masked"):
        repeat_rule(enc, {}, Process("uniform", enc.vocab_size))


def test_the_rule_makes_an_article_agree_with_the_word_after_it(enc):
    proc = Process("absorbing", enc.vocab_size)
    rule = repeat_rule(enc, {}, proc)
    M = proc.mask_id
    words = ["The", "▁pub", "▁is", "▁a", "▁Indian", "▁pub", "▁near", "▁an", "▁cheap", "▁place"]
    new = _ids(enc, words)
    prev = torch.full_like(new, M)
    prev[0, :4] = new[0, :4]  # "a" written at an earlier step, the rest now
    out = rule(prev, new, False, None)
    # a written article takes the other form, whenever its word came
    assert enc.tokenizer.decode(out[0].tolist()) == "The pub is an Indian pub near a cheap place"
    assert torch.equal(rule(prev, new, True, None), out)
    # a template's own article is kept: the word revealed after it goes back to the mask, and at the last
    # step it stays (the template asked for that article)
    keep = torch.zeros_like(new, dtype=torch.bool)
    keep[0, :4] = True
    held = rule(prev, new, False, keep)
    assert held[0, 4] == M and held[0, 3] == new[0, 3]
    assert rule(prev, new, True, keep)[0, 4] == new[0, 4]
    # an agreeing pair, a capitalised article and marks are left as they are
    fine = _ids(enc, ["A", "▁family", "▁friendly", "▁pub", "▁with", "▁an", "▁average", "▁rating", "."])
    assert torch.equal(rule(torch.full_like(fine, M), fine, False, None), fine)
    cap = _ids(enc, ["A", "▁Indian", "▁pub", "."])
    assert enc.tokenizer.decode(rule(torch.full_like(cap, M), cap, False, None)[0].tolist()) == "An Indian pub."


def test_required_words_draw_an_mr_that_holds_their_values(enc):
    assert enc.values_in(["Italian food", "riverside"]) == {"food": "Italian", "area": "riverside"}
    assert enc.values_in(["italian"]) == {"food": "Italian"}         # case ignored
    assert enc.values_in(["Italian", "French"]) is None                # no MR holds two foods
    assert enc.values_in(["Italianate"]) == {}                         # whole words only
    cond, known = conditions(enc, 30, contains="Italian", generator=torch.Generator().manual_seed(0))
    food = mrs.ATTRIBUTES.index("food")
    assert bool(cond["mr_drawn"].all()) and bool(cond["ranked"].all())
    assert set(cond["mr"][:, food].tolist()) == {1 + enc.values["food"].index("Italian")}
    italian = enc.tokenizer.index["▁Italian"]
    assert bool(((known.values == italian) & known.mask).any(1).all())  # and the word itself is kept
    # a word no MR value names: any training MR; two values no MR holds together: no MR
    assert bool(conditions(enc, 4, contains="located")[0]["mr_drawn"].all())
    none, _ = conditions(enc, 4, contains="Italian, French")
    assert bool((none["mr"] == -1).all()) and not bool(none["mr_drawn"].any())


def test_templates_and_required_words_are_ranked_by_their_slips(enc):
    good = "The <name> is an Italian pub."
    bad = "The <name> is a Italian pub pub."
    x = torch.zeros(2, enc.max_len, dtype=torch.long)
    for i, t in enumerate([good, bad]):
        ids = enc.tokens(t)
        x[i, :len(ids)] = torch.tensor(ids)
    lex = torch.stack([enc.lex_row({"name": "Wildwood"})] * 2)
    cond = {"mask": (x != 0).float(), "mr": torch.full((2, len(mrs.ATTRIBUTES)), -1), "lex": lex,
            "mr_drawn": torch.zeros(2, dtype=torch.bool), "ranked": torch.ones(2, dtype=torch.bool)}
    assert rank(enc, x, cond) == [0.0, -2.0]
    assert rank(enc, x, dict(cond, ranked=torch.zeros(2, dtype=torch.bool))) is None  # unconditional: unranked
