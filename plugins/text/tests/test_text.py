"""The text plugin: tokenizer, meaning representations, templates, the conformance kit, infilling, the CLI."""
import json
import pytest
import torch
from click.testing import CliRunner

import polydiff
from polydiff import get_modality
from polydiff.cli import cli
from polydiff.errors import InputError
from polydiff.testing import check_modality
from polydiff_text import PRETRAINED, datasets, mr as mrs
from polydiff_text.encoder import Sentence, TextEncoder, read_lines
from polydiff_text.tasks import parse_template
from polydiff_text.tokenizer import Tokenizer, split

TINY = {"network": {"dim": 32, "depth": 1, "heads": 2, "mlp": 2, "dropout": 0.0}}


def test_tokenizer_round_trip_on_the_e2e_training_text():
    rows = datasets.e2e() if datasets.e2e_dir() else datasets.e2e_sample()
    texts = [r.text for r in rows]
    tok = Tokenizer.fit(texts, min_count=2)
    checked = 0
    for t in texts:
        ids, unknown = tok.encode(t)
        if unknown:
            continue
        assert tok.decode(ids) == " ".join(t.split()), t
        checked += 1
    assert checked > 0.9 * len(texts)


def test_tokenizer_keeps_prices_numbers_and_marks_spaces():
    assert split("Prices £20-25, rated 5 out of 5.") == ["Prices", "▁£20-25", ",", "▁rated", "▁5", "▁out", "▁of", "▁5", "."]
    assert split("family-friendly (Italian)") == ["family", "-", "friendly", "▁(", "Italian", ")"]
    tok = Tokenizer.fit(["It's a pub."])
    ids, unknown = tok.encode("It's a bar.")
    assert unknown == ["bar"] and tok.decode(ids) == "It's a <unk>."


def test_mr_parsing_and_its_errors():
    mr = mrs.parse("name[The Eagle], eatType[coffee shop], food[Italian], customer rating[5 out of 5]")
    assert mr == {"name": "The Eagle", "eatType": "coffee shop", "food": "Italian", "customer rating": "5 out of 5"}
    for bad, words in [("", "empty"), ("name[The Eagle] eatType[pub]", "expected ','"),
                       ("colour[red]", "unknown attribute"), ("name[A], name[B]", "twice"), ("name[]", "empty value"),
                       ("name[A],", "ends with a comma"), ("name The Eagle", "cannot read")]:
        with pytest.raises(InputError, match=words):
            mrs.parse(bad)


def test_delexicalisation_round_trip():
    mr = {"name": "The Eagle", "near": "Burger King"}
    text = "The Eagle is near Burger King."
    d = mrs.delexicalise(text, mr)
    assert d == "<name> is near <near>." and mrs.lexicalise(d, mr) == text


def test_templates_and_their_errors():
    assert parse_template("The ___ is a ___ pub.") == ["The", None, "▁is", "▁a", None, "▁pub", "."]
    with pytest.raises(InputError, match="no ___"):
        parse_template("The Eagle is a pub.")
    with pytest.raises(InputError, match="empty template"):
        parse_template("  ")


def test_reading_files(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("One sentence.\n\nAnother one.\n", encoding="utf-8")
    assert [s.text for s in read_lines(p)] == ["One sentence.", "Another one."]
    latin = tmp_path / "b.txt"
    latin.write_bytes("Caf\xe9 near the river.".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_lines(latin)
    empty = tmp_path / "c.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(InputError, match="no sentences"):
        read_lines(empty)


def test_encoder_refuses_unknown_values_long_text_and_strict_unknown_words():
    enc = TextEncoder().fit(datasets.e2e_sample())
    with pytest.raises(InputError, match="never saw"):
        enc.encode([Sentence("A Thai place.", "name[X], food[Thai]")])
    with pytest.raises(InputError, match="maximum"):
        enc.encode([Sentence(" ".join(["pub"] * (enc.max_len + 1)))])
    enc.strict = True
    with pytest.raises(InputError, match="outside the vocabulary"):
        enc.encode([Sentence("A zyzzyva pub.")])


@pytest.fixture(scope="module", params=["masked", "embedding"])
def tiny_model(request, tmp_path_factory):
    """A two-step model of each method, through the conformance kit."""
    from polydiff.model import merge_config
    from polydiff_text import EMBEDDING

    tmp = tmp_path_factory.mktemp("text")
    items = datasets.e2e_sample()[:64]
    config = TINY if request.param == "masked" else merge_config(EMBEDDING, TINY)
    return check_modality(get_modality("text"), items, tmp, config=config, write_suffix=".csv")


def test_conformance(tiny_model):
    method = tiny_model.config["network"]["method"]
    assert tiny_model.categorical == (method == "masked")
    assert (tiny_model.config.get("embedding") is not None) == (method == "embedding")


def test_infilling_keeps_every_given_word(tiny_model):
    template = "The ___ is a ___ coffee shop near ___ ."
    cond, known = tiny_model.conditions(6, template=template, generator=torch.Generator().manual_seed(0))
    x, _ = tiny_model.sample(6, template=template, seed=0, best_of=1)  # the first draw: these conditions
    keep = known.mask.bool()
    assert bool(keep.any()) and torch.equal(x[keep], known.values[keep])
    for s in tiny_model.generate(6, template=template, seed=0):
        pos = 0
        for w in ["The", "is", "a", "coffee", "shop", "near", "."]:  # the given words, in order
            pos = s.text.index(w, pos) + len(w)


def test_contains_and_length_hold(tiny_model):
    opts = dict(contains="Italian", length=12, mr="name[The Eagle], food[Italian]")
    x, cond = tiny_model.sample(8, seed=1, **opts)
    assert bool((cond["mask"].sum(1) == 12).all())
    assert bool((x[:, 12:] == 0).all()) and bool((x[:, :12] != 0).all())  # 12 tokens, then padding
    italian = tiny_model.encoder.tokenizer.index["▁Italian"]
    assert x.dtype == torch.long
    assert bool(((x == italian).sum(1) >= 1).all())
    for s in tiny_model.generate(8, seed=1, **opts):
        assert "Italian" in s.text


def test_same_seed_same_sentences(tiny_model):
    a = tiny_model.generate(4, seed=3, mr="name[The Eagle], eatType[pub]")
    b = tiny_model.generate(4, seed=3, mr="name[The Eagle], eatType[pub]")
    assert a == b


def test_elbo_scores_are_per_sentence_and_repeat(tiny_model):
    items = [Sentence("The Eagle is a pub."), Sentence("The pub is near the river.")]
    a = tiny_model.score(items)
    assert a.shape == (2,) and torch.isfinite(a).all()
    assert torch.equal(a, tiny_model.score(items))


def test_cli_sample_and_errors(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "tiny.safetensors")
    r = CliRunner().invoke(cli, ["sample", "text", "--model", str(path), "-n", "3", "--out", str(tmp_path / "s.txt"),
                                 "--mr", "name[The Eagle], eatType[pub]", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["n"] == 3
    assert len((tmp_path / "s.txt").read_text(encoding="utf-8").splitlines()) == 3
    r = CliRunner().invoke(cli, ["sample", "text", "--model", str(path), "-n", "3", "--out", str(tmp_path / "t.txt"),
                                 "--mr", "name[The Eagle] food[Thai]"])
    assert r.exit_code != 0 and "expected ','" in r.output and not (tmp_path / "t.txt").exists()
    r = CliRunner().invoke(cli, ["sample", "text", "--help"])
    assert r.exit_code == 0 and "--contains" in r.output and "--mr" in r.output


def test_reading_reports_and_strict_refuses_unknown_words(tmp_path):
    enc = TextEncoder().fit(datasets.e2e_sample())
    p = tmp_path / "s.txt"
    p.write_text("The zyzzyva pub is near the river.\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="zyzzyva"):
        assert len(enc.read(p)) == 1
    with pytest.raises(InputError, match="outside the vocabulary: zyzzyva"):
        enc.read(p, strict=True)


def test_names_travel_with_the_tensors_to_any_process():
    # decoding in another process (a Ray worker's chunk decoded by the driver) has only the tensors and
    # the bundle's metadata: the names written back must come from the tensors themselves
    enc = TextEncoder().fit(datasets.e2e_sample())
    items = [Sentence("The Golden Fork is a pub near Café Sicilia.", "name[The Golden Fork], eatType[pub], near[Café Sicilia]")]
    x, cond = enc.encode(items)
    fresh = TextEncoder.from_metadata(json.loads(json.dumps(enc.metadata())))
    assert fresh.decode(x, cond)[0].text == items[0].text
    assert "<name>" in enc.tokenizer.decode(x[0].tolist())


@pytest.mark.parametrize("tiny_model", ["masked"], indirect=True)  # the masked network bans placeholders
def test_a_name_the_mr_lacks_is_never_written(tiny_model):
    ph = tiny_model.config["network"]["placeholders"]
    assert ph[0] and ph[1]
    x, _ = tiny_model.sample(16, seed=2, mr="name[The Eagle], eatType[pub]")  # no near
    assert not any(bool((x == t).any()) for t in ph[1])


@pytest.mark.parametrize("tiny_model", ["masked"], indirect=True)
def test_best_of_keeps_the_draw_with_fewest_slot_errors(tiny_model):
    from polydiff_text.encoder import rank

    mr = ["name[The Eagle], eatType[pub], food[Italian], area[riverside]"] * 12
    plain_x, plain_c = tiny_model.sample(12, seed=5, mr=mr, best_of=1)
    best_x, best_c = tiny_model.sample(12, seed=5, mr=mr, best_of=4)
    again_x, _ = tiny_model.sample(12, seed=5, mr=mr)          # the text default is best of 4
    assert torch.equal(best_x, again_x)                       # same seed, same sentences
    # draw 1 of best-of-k is the plain sample: an item kept from it is unchanged
    kept = (best_x == plain_x).all(1)
    assert bool(kept.any()) or bool((torch.tensor(rank(tiny_model.encoder, plain_x, plain_c)) < 0).all())
    before = torch.tensor(rank(tiny_model.encoder, plain_x, plain_c))
    after = torch.tensor(rank(tiny_model.encoder, best_x, best_c))
    assert bool((after >= before).all()) and bool((after <= 0).all())
    # the kept sentences still hold their conditions: padding after each sentence's length (inside it, the
    # token rule may leave padding where it wrote a repeated word once)
    assert bool((best_x[~best_c["mask"].bool()] == 0).all())
    # nothing to rank without an MR: the plain sample
    u, _ = tiny_model.sample(4, seed=6, best_of=1)
    assert torch.equal(u, tiny_model.sample(4, seed=6, best_of=4)[0])


@pytest.mark.parametrize("tiny_model", ["masked"], indirect=True)
def test_data_to_text_takes_the_typical_length_and_best_of_draws_move_it(tiny_model):
    """With an MR and no length, a sentence is the median training length for the MR's size; best-of draw j
    gets that +0, +1, -1, +2 (the core passes the draw index to the text make_cond); without an MR the
    length is drawn."""
    from polydiff_text.tasks import conditions, draw_offset

    enc = tiny_model.encoder
    mr = "name[The Eagle], eatType[pub], food[Italian]"
    counts = enc.lengths["3"]
    typical = next(i for i in range(len(counts)) if sum(counts[: i + 1]) >= sum(counts) / 2)
    assert enc.typical_length(3) == typical
    assert [draw_offset(j) for j in range(5)] == [0, 1, -1, 2, -2]
    for j in range(4):
        cond, _ = conditions(enc, 3, mr=mr, draw=j)
        assert cond["mask"].sum(1).tolist() == [typical + draw_offset(j)] * 3
    seen = []
    tiny_model.modality.make_cond, orig = (lambda *a, **k: seen.append(k.get("draw")) or orig(*a, **k)), \
        tiny_model.modality.make_cond
    try:
        tiny_model.sample(2, seed=1, mr=[mr] * 2, best_of=3)
    finally:
        tiny_model.modality.make_cond = orig
    assert seen[0] == 0 and seen == list(range(len(seen)))  # one call per draw taken, in order
    free = conditions(enc, 64, generator=torch.Generator().manual_seed(0))[0]["mask"].sum(1)
    assert len(set(free.tolist())) > 1  # unconditional lengths are drawn


@pytest.mark.parametrize("tiny_model", ["masked"], indirect=True)
def test_unconditional_sentences_are_written_from_a_drawn_training_mr(tiny_model):
    """Asked for nothing, a sentence draws its MR from the training MRs (stored in the bundle with their
    counts) and goes out with it; the draw repeats from the seed; best-of does not rank a drawn MR; an
    encoder without the prior writes without an MR."""
    from polydiff_text.encoder import rank
    from polydiff_text.tasks import conditions

    enc = tiny_model.encoder
    assert enc.mr_prior and sum(r[-1] for r in enc.mr_prior) > 0
    rows = {tuple(r[:-1]) for r in enc.mr_prior}
    cond, _ = conditions(enc, 40, generator=torch.Generator().manual_seed(3))
    assert bool(cond["mr_drawn"].all()) and all(tuple(r) in rows for r in cond["mr"].tolist())
    again, _ = conditions(enc, 40, generator=torch.Generator().manual_seed(3))
    assert torch.equal(cond["mr"], again["mr"]) and torch.equal(cond["lex"], again["lex"])
    assert len({tuple(r) for r in cond["mr"].tolist()}) > 1
    out = tiny_model.generate(6, seed=4)
    assert all(o.mr for o in out) and all(mrs.parse(o.mr) for o in out)
    x, c = tiny_model.sample(6, seed=4, best_of=1)
    assert rank(enc, x, c) is None  # nothing the user asked for to rank
    # asked for an MR: no drawn MR; asked for words: an MR holding the values they name
    asked, _ = conditions(enc, 2, mr="name[The Eagle], eatType[pub]")
    assert not bool(asked["mr_drawn"].any())
    pub, _ = conditions(enc, 4, contains="pub")
    eat = mrs.ATTRIBUTES.index("eatType")
    assert bool(pub["mr_drawn"].all()) and set(pub["mr"][:, eat].tolist()) == {1 + enc.values["eatType"].index("pub")}
    old = TextEncoder.from_metadata({k: v for k, v in enc.metadata().items() if k not in ("mr_prior", "name_counts")})
    bare, _ = conditions(old, 4, generator=torch.Generator().manual_seed(3))
    assert bool((bare["mr"] == -1).all()) and not bool(bare["mr_drawn"].any())


@pytest.mark.parametrize("tiny_model", ["masked"], indirect=True)
def test_cli_sampler_args_reach_the_sampler(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "tiny.safetensors")
    outs = []
    for i, args in enumerate(['{"temperature": 0.0}', '{"temperature": 0.0}', '{"temperature": 1.0}']):
        out = tmp_path / f"s{i}.txt"
        r = CliRunner().invoke(cli, ["sample", "text", "--model", str(path), "-n", "6", "--seed", str(i),
                                     "--sampler", "confidence", "--sampler-args", args, "--length", "8",
                                     "--mr", "name[The Eagle], eatType[pub]", "--out", str(out)])
        assert r.exit_code == 0, r.output
        outs.append(out.read_text(encoding="utf-8"))
    # greedy with the length and the names given: nothing is left to chance, so two seeds agree; drawn, they differ
    assert outs[0] == outs[1] != outs[2]
    r = CliRunner().invoke(cli, ["sample", "text", "--model", str(path), "-n", "2", "--sampler-args", "[1]",
                                 "--out", str(tmp_path / "bad.txt")])
    assert r.exit_code != 0 and "--sampler-args must be a JSON object" in r.output


def test_best_of_errors(tmp_path):
    r = CliRunner().invoke(cli, ["sample", "text", "-n", "2", "--best-of", "0", "--out", str(tmp_path / "a.txt")])
    assert r.exit_code != 0 and "--best-of must be at least 1" in r.output
    r = CliRunner().invoke(cli, ["sample", "points", "-n", "2", "--best-of", "2", "--out", str(tmp_path / "p.csv")])
    assert r.exit_code != 0 and "has no ranking of its samples" in r.output and not (tmp_path / "p.csv").exists()


def test_length_groups_give_each_sentence_its_own_result(monkeypatch):
    import polydiff_text.network as net

    torch.manual_seed(0)
    m = net.TextTransformer(net.TextConfig(vocab=50, max_len=20, dim=32, depth=2, heads=2, dropout=0.0)).eval()
    x = torch.randint(0, 51, (80, 20))
    lens = torch.randint(3, 20, (80,))
    mask = (torch.arange(20)[None] < lens[:, None]).float()
    mr = torch.randint(0, 2, (80, 8))
    with torch.no_grad():
        grouped = m(x, torch.ones(80), mask=mask, mr=mr)
        monkeypatch.setattr(net, "BUCKET", 10 ** 6)
        whole = m(x, torch.ones(80), mask=mask, mr=mr)
    valid = mask.bool()
    assert torch.allclose(grouped[valid], whole[valid], atol=1e-5)


@pytest.mark.parametrize("batch", [20, 80])  # one trimmed pass; groups of similar length
def test_selected_positions_are_the_full_outputs_at_those_positions(batch):
    """``select``: the output head on the selected positions alone, [N, vocab] in row-major order, equal to
    the full output there (placeholder bans included, per sentence); a selection in the padding is refused."""
    import polydiff_text.network as net

    torch.manual_seed(0)
    cfg = net.TextConfig(vocab=50, max_len=20, dim=32, depth=2, heads=2, dropout=0.0, placeholders=[[7], [9]])
    m = net.TextTransformer(cfg).eval()
    x = torch.randint(0, 51, (batch, 20))
    lens = torch.randint(3, 20, (batch,))
    mask = (torch.arange(20)[None] < lens[:, None]).float()
    mr = torch.randint(0, 2, (batch, 8))
    select = mask.bool() & (torch.rand(batch, 20) < 0.5)
    with torch.no_grad():
        full = m(x, torch.ones(batch), mask=mask, mr=mr)
        some = m(x, torch.ones(batch), mask=mask, mr=mr, select=select)
        assert some.shape == (int(select.sum()), 50)
        assert torch.allclose(some, full[select], atol=1e-5)
        assert torch.equal(some[:, 7] == -1e4, (mr[:, 0] == 0)[select.nonzero()[:, 0]])
        with pytest.raises(ValueError, match="inside the sentences"):
            m(x, torch.ones(batch), mask=mask, mr=mr, select=select | (torch.arange(20) == lens.min()))


OTHER_DOMAIN = [
    "The train to Leeds leaves from platform four at noon.",
    "Heavy rain is expected in the north by the weekend.",
    "She scored twice in the second half of the match.",
    "Restart the router and wait for the light to turn green.",
    "The committee will publish its report in March.",
    "Add two cups of flour and stir until smooth.",
    "The museum is closed on Mondays for repairs.",
    "He bought a second hand bicycle from his neighbour.",
    "The battery lasts about ten hours on a single charge.",
    "Prices of oil fell sharply after the announcement.",
    "The children built a snowman in the garden.",
    "Please sign the form and return it by Friday.",
]


@pytest.mark.skipif(not any(PRETRAINED.glob("*.safetensors")), reason="needs the bundled text model")
def test_the_bundled_model_scores_other_domains_higher(tmp_path):
    # ELBO per sentence: sentences about other things are less likely under the restaurant model
    model = polydiff.load("text")
    rows = datasets.e2e_test()
    e2e = [Sentence(r.text) for r in rows[::97][: len(OTHER_DOMAIN)]]
    a = model.score(e2e)
    b = model.score([Sentence(t) for t in OTHER_DOMAIN])
    auroc = float((b[:, None] > a[None, :]).float().mean())
    assert auroc > 0.8 and float(b.mean()) > float(a.mean()) + 1.0, (auroc, a.mean(), b.mean())  # 0.89; 5.2 vs 3.4


def _embedding_net(**kw):
    from polydiff_text.network import TextConfig, TextTransformer

    cfg = TextConfig(vocab=30, max_len=10, mr_values=[2] * 8, dim=32, depth=1, heads=2, mlp=2, dropout=0.0,
                     method="embedding", embed_dim=8, **kw)
    return TextTransformer(cfg).eval()


def test_interpolating_embedding_head_and_self_conditioning():
    torch.manual_seed(0)
    net = _embedding_net(embed_head="interpolate", embed_norm=True, self_cond=True)
    w = net.table()
    assert torch.allclose(w.norm(dim=1), torch.full((30,), 8 ** 0.5), atol=1e-5)  # fixed length sqrt(dim)
    assert torch.allclose(net.embed(torch.tensor([3, 7])), w[[3, 7]])
    x, level = torch.randn(4, 10, 8), torch.zeros(4)
    mask = torch.ones(4, 10)
    mask[1, 6:] = 0
    with torch.no_grad():
        logits = net(x, level, mask=mask, logits=True)
        est = net(x, level, mask=mask)
        assert logits.shape == (4, 10, 30) and est.shape == (4, 10, 8)
        assert torch.allclose(est, torch.softmax(logits, -1) @ w, atol=1e-5)  # the probability-weighted mean
        prev = torch.randn(4, 10, 8)
        assert torch.equal(net(x, level, mask=mask, self_cond=torch.zeros_like(x)), est)  # absent = zeros
        assert not torch.allclose(net(x, level, mask=mask, self_cond=prev), est)  # the estimate is read


def test_embedding_losses():
    from polydiff.embedding import embedding_loss
    from polydiff.precond import make_denoiser

    tokens = torch.randint(1, 30, (4, 10))
    mask = torch.ones(4, 10)
    sigma, noise = torch.full((4,), 0.5), torch.randn(4, 10, 8)
    for head, loss in [("interpolate", "ce"), ("regress", "mse")]:
        torch.manual_seed(0)
        net = _embedding_net(embed_head=head, embed_norm=head == "interpolate", self_cond=head == "interpolate")
        D = make_denoiser(net, "x0")
        out = embedding_loss(D, net, tokens, sigma, noise, {"mask": mask}, loss=loss,
                             self_cond=head == "interpolate")
        assert out.shape == (4,) and bool(torch.isfinite(out).all())
        out.mean().backward()
        assert net.words.weight.grad is not None and float(net.words.weight.grad.abs().sum()) > 0
        if loss == "ce":  # exactly the tokens' cross-entropy under the network's logits (no self-conditioning)
            with torch.no_grad():
                plain = embedding_loss(D, net, tokens, sigma, noise, {"mask": mask}, loss="ce")
                x = net.embed(tokens) + 0.5 * noise
                logits = D(x, sigma, mask=mask.unsqueeze(-1), logits=True)
                ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 30), tokens.reshape(-1), reduction="none")
                assert torch.allclose(plain, ce.reshape(4, 10).mean(1), atol=1e-5)
    with pytest.raises(ValueError, match="unknown embedding loss"):
        embedding_loss(D, net, tokens, sigma, noise, {"mask": mask}, loss="l1")


def test_self_conditioning_passes_the_previous_estimate():
    from polydiff.embedding import self_conditioning

    seen = []

    def D(x, sigma, **cond):
        seen.append(cond.get("self_cond"))
        return x * sigma

    wrapped = self_conditioning()(D)
    x = torch.ones(2, 3)
    first = wrapped(x, 2.0)
    second = wrapped(x, 3.0)
    assert seen[0] is None and torch.equal(seen[1], first) and torch.equal(second, x * 3.0)


def test_word_table_loads_from_its_earlier_name():
    net = _embedding_net()
    state = {("embed.weight" if k == "words.weight" else k): v.clone() for k, v in net.state_dict().items()}
    other = _embedding_net()
    other.load_state_dict(state)
    assert torch.equal(other.words.weight, net.words.weight)
