"""Categorical diffusion against a closed form: an exact denoiser for a small joint distribution of short
token sequences, and every categorical sampler converging to that distribution.

The distribution: sequences of L = 3 tokens over V = 3 categories, 27 outcomes with correlated,
unequal probabilities. The exact ``p(x0_i | x_t)`` is Bayes' rule over the 27 outcomes. With N draws the
total variation between the empirical and the true distribution has a sampling floor of about
0.5 * sum_x sqrt(2 p(x) / (pi N)), 0.014 for N = 20,000; the bound each test states leaves room for that
floor and the sampler's own error, and the one-step check shows the bound can fail.
"""
import itertools
import math

import pytest
import torch

from polydiff import discrete, get_sampler
from polydiff.discrete import Process

L, V = 3, 3
OUTCOMES = torch.tensor(list(itertools.product(range(V), repeat=L)))  # [27, 3]


def joint() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    w = torch.rand(len(OUTCOMES), generator=g) ** 3  # unequal weights
    w[(OUTCOMES[:, 0] == OUTCOMES[:, 2])] *= 6.0      # correlation between the first and last token
    return w / w.sum()


P = joint()


class ExactNet(torch.nn.Module):
    """log p(x0_i | x_t) for the joint P under ``process``: the 'network' of an exact model."""

    def __init__(self, proc: Process, prob: torch.Tensor = P):
        super().__init__()
        self.proc, self.prob = proc, prob

    def forward(self, x, level, **cond):
        x = x.long()
        if self.proc.kind == "absorbing":
            seen = x != self.proc.mask_id                                   # [B, L]
            agree = (OUTCOMES[None] == x[:, None]) | ~seen[:, None]         # [B, 27, L]
            w = self.prob[None] * agree.all(-1)                              # [B, 27]
        else:
            pi = self.proc.pi()
            a = (1 - level.float()).reshape(-1, 1, 1)
            pi_x = pi.expand(x.shape + (V,)).gather(-1, x.unsqueeze(-1)).squeeze(-1)  # prior weight of x_t
            like = a * (OUTCOMES[None] == x[:, None]) + (1 - a) * pi_x[:, None]   # q(x_t | x0) per position
            w = self.prob[None] * like.prod(-1)
        w = w / w.sum(-1, keepdim=True)
        onehot = torch.nn.functional.one_hot(OUTCOMES, V).float()               # [27, L, V]
        marg = torch.einsum("bo,olv->blv", w, onehot)
        return marg.clamp_min(1e-30).log()


def denoiser(kind: str, prior=None, groups=None) -> discrete.CategoricalDenoiser:
    proc = Process(kind, V, prior, groups)
    return discrete.CategoricalDenoiser(ExactNet(proc), proc, level_free=(kind == "absorbing"))


def tv(samples: torch.Tensor, target: torch.Tensor = P) -> float:
    idx = (samples * torch.tensor([V * V, V, 1])).sum(-1)
    emp = torch.bincount(idx, minlength=len(OUTCOMES)).float() / len(samples)
    return 0.5 * float((emp - target).abs().sum())


def draw(sampler: str, D, steps: int, n: int = 20000, seed: int = 0, keep=None, start=None, **options):
    g = torch.Generator().manual_seed(seed)
    x = discrete.prior_sample(D.process, (n, L), g) if start is None else start
    return get_sampler(sampler)(D, x, discrete.linear(steps), generator=g, keep=keep, **options)


@pytest.mark.parametrize("kind, sampler, steps, bound", [
    ("absorbing", "ancestral", 200, 0.03),
    ("absorbing", "confidence", 3, 0.03),      # one token per step: exact
    ("uniform", "ancestral", 200, 0.035),
    ("marginal", "ancestral", 200, 0.035),
])
def test_samplers_converge_to_the_exact_distribution(kind, sampler, steps, bound):
    D = denoiser(kind, prior=[0.6, 0.3, 0.1] if kind == "marginal" else None)
    assert tv(draw(sampler, D, steps)) < bound


def test_marginal_process_with_a_prior_per_group_of_positions():
    """Positions 0 and 2 draw replacements from one prior, position 1 from another (a graph's atoms and its
    atom pairs): corruption follows each position's prior, and ancestral sampling still converges."""
    prior, groups = [[0.6, 0.3, 0.1], [0.05, 0.15, 0.8]], [0, 1, 0]
    proc = Process("marginal", V, prior, groups)
    assert proc.pi().shape == (L, V) and torch.allclose(proc.pi()[1], torch.tensor(prior[1]))
    assert discrete.process_of({"process": proc.to_config()}) == proc
    xt = discrete.corrupt(proc, torch.zeros(4000, L, dtype=torch.long), torch.full((4000,), 1.0),
                          torch.Generator().manual_seed(0))
    for i, g in enumerate(groups):
        freq = torch.bincount(xt[:, i], minlength=V).float() / len(xt)
        assert torch.allclose(freq, torch.tensor(prior[g]), atol=0.02)
    assert tv(draw("ancestral", denoiser("marginal", prior, groups), 200)) < 0.035
    with pytest.raises(ValueError, match="per group"):
        Process("marginal", V, [0.6, 0.3, 0.1], groups)
    with pytest.raises(ValueError, match="prior's 2 rows"):
        Process("marginal", V, prior, [0, 2, 0])
    with pytest.raises(ValueError, match="marginal"):
        Process("uniform", V, None, groups)


def test_one_step_misses_the_correlation_so_the_bound_can_fail():
    # one step reveals every token at once, independently: the product of the marginals, not P
    D = denoiser("absorbing")
    assert tv(draw("ancestral", D, 1)) > 0.08


def greedy_chain(prob: torch.Tensor = P) -> torch.Tensor:
    """Most certain position first, its most likely value, given the tokens fixed so far (exact marginals)."""
    x = torch.full((L,), -1)
    for _ in range(L):
        agree = ((OUTCOMES == x) | (x < 0)).all(-1)
        w = prob * agree
        marg = torch.stack([torch.bincount(OUTCOMES[:, j], weights=w, minlength=V) for j in range(L)]) / w.sum()
        marg[x >= 0] = -1.0
        j = int(marg.max(-1).values.argmax())
        x[j] = int(marg[j].argmax())
    return x


def test_temperature_zero_decodes_greedily():
    D = denoiser("absorbing")
    out = draw("confidence", D, L, n=8, temperature=0.0)
    assert torch.equal(out, greedy_chain().expand(8, L))
    anc = draw("ancestral", D, 6, n=64, temperature=0.0)
    assert not (anc == D.process.mask_id).any() and torch.isfinite(anc.float()).all()


def test_cache_reuses_evaluations_and_changes_nothing():
    D = denoiser("absorbing")
    calls = []
    counted = discrete.CategoricalDenoiser(ExactNet(D.process), D.process, level_free=True)
    counted.register_forward_hook(lambda *a: calls.append(1))
    a = draw("ancestral", counted, 100, n=4, seed=4, cache=True)
    used = len(calls)
    b = draw("ancestral", D, 100, n=4, seed=4, cache=False)
    assert torch.equal(a, b)
    assert used < 30  # most steps reveal nothing and reuse the last evaluation


@pytest.mark.parametrize("kind", ["absorbing", "uniform"])
def test_known_tokens_are_kept_and_the_rest_follows_the_conditional(kind):
    # absorbing: the exact conditional (a revealed token is exact evidence). uniform: kept exactly, and
    # conditioned only approximately (the denoiser reads the kept token as a noisy observation): the
    # samples are far closer to the conditional than unconditional samples are, but not on it
    D = denoiser(kind)
    n = 20000
    g = torch.Generator().manual_seed(1)
    x = discrete.prior_sample(D.process, (n, L), g)
    keep = torch.zeros(n, L, dtype=torch.bool)
    keep[:, 0] = True
    x[:, 0] = 2
    out = get_sampler("ancestral")(D, x, discrete.linear(200), generator=g, keep=keep)
    assert bool((out[:, 0] == 2).all())
    cond = P * (OUTCOMES[:, 0] == 2)
    cond = cond / cond.sum()
    if kind == "absorbing":
        assert tv(out, cond) < 0.035
    else:
        assert tv(out, cond) < 0.5 * 0.5 * float((P - cond).abs().sum())


def test_masked_loss_is_the_elbo_and_matches_the_exact_entropy():
    # for the exact denoiser, E[loss] = the negative ELBO, which for absorbing data equals the entropy
    # of P (the bound is tight for the exact model): per token, H(P) / L
    D = denoiser("absorbing")
    x0 = OUTCOMES[torch.multinomial(P, 20000, replacement=True, generator=torch.Generator().manual_seed(2))]
    nelbo = discrete.elbo(D, D.process, x0, n_levels=64, seed=0).mean()
    entropy = float(-(P * P.log()).sum()) / L
    assert abs(float(nelbo) - entropy) < 0.02 * entropy


def test_uniform_elbo_bounds_the_entropy_and_tightens_with_steps():
    D = denoiser("uniform")
    x0 = OUTCOMES[torch.multinomial(P, 8000, replacement=True, generator=torch.Generator().manual_seed(2))]
    entropy = float(-(P * P.log()).sum()) / L
    coarse = float(discrete.elbo(D, D.process, x0, n_levels=4).mean())
    fine = float(discrete.elbo(D, D.process, x0, n_levels=64).mean())
    assert fine >= entropy - 0.02 and coarse >= fine - 0.02
    assert fine < entropy * 1.1


def test_posterior_is_a_distribution_and_reveals_at_the_ladder_rate():
    proc = Process("absorbing", V)
    x = torch.full((1, L), proc.mask_id)
    logp = torch.log(torch.tensor([0.5, 0.3, 0.2])).expand(1, L, V)
    post = discrete.posterior(proc, logp, x, 0.8, 0.6).exp()
    assert torch.allclose(post.sum(-1), torch.ones(1, L))
    assert math.isclose(float(post[0, 0, proc.mask_id]), 0.6 / 0.8, rel_tol=1e-6)
    u = Process("uniform", V)
    post = discrete.posterior(u, logp, torch.zeros(1, L, dtype=torch.long), 0.7, 0.2).exp()
    assert torch.allclose(post.sum(-1), torch.ones(1, L), atol=1e-6)


def test_corruption_rate_and_prior():
    proc = Process("absorbing", 5)
    x0 = torch.zeros(200, 100, dtype=torch.long)
    xt = discrete.corrupt(proc, x0, torch.full((200,), 0.3), torch.Generator().manual_seed(0))
    assert abs(float((xt == proc.mask_id).float().mean()) - 0.3) < 0.01
    m = Process("marginal", 3, [0.7, 0.2, 0.1])
    xt = discrete.corrupt(m, torch.zeros(400, 100, dtype=torch.long), torch.full((400,), 1.0), torch.Generator().manual_seed(0))
    freq = torch.bincount(xt.flatten(), minlength=3).float() / xt.numel()
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.01)


def test_bad_processes_and_ladders_are_refused():
    with pytest.raises(ValueError, match="unknown categorical process"):
        Process("gaussian", 4)
    with pytest.raises(ValueError, match="prior"):
        Process("marginal", 3, [1.0, 2.0])
    with pytest.raises(ValueError, match="decrease strictly"):
        get_sampler("ancestral")(denoiser("absorbing"), torch.zeros(2, L, dtype=torch.long), torch.tensor([0.5, 0.7, 0.0]))
    with pytest.raises(ValueError, match="absorbing"):
        draw("confidence", denoiser("uniform"), 3, n=4)
    with pytest.raises(ValueError, match="categorical ladder"):
        discrete.linear(4, start=1.5)
    with pytest.raises(ValueError, match="power must be positive"):
        discrete.power(4, power=0)
    assert get_sampler("ancestral").space == "categorical"


def test_sampling_fast_path_equals_the_general_one():
    proc = Process("absorbing", 7)

    class Net(torch.nn.Module):
        def forward(self, x, level, **cond):
            return torch.randn(x.shape + (7,), generator=torch.Generator().manual_seed(1))

    D = discrete.CategoricalDenoiser(Net(), proc, level_free=True)
    x = torch.randint(0, 8, (5, 9), generator=torch.Generator().manual_seed(2))  # tokens and masks (7)
    general = D(x, torch.ones(5))
    with torch.no_grad():
        fast = D(x, torch.ones(5))
    assert torch.equal(general, fast)


class _RowNet(torch.nn.Module):
    """A level-free network whose logits depend on every token of the row and on a per-item condition
    ``bias`` [B, vocab]; it counts the rows it evaluates."""

    def __init__(self, vocab: int, length: int):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.pos = torch.randn(length, vocab, generator=g)
        self.emb = torch.randn(vocab + 1, vocab, generator=g)
        self.rows = 0

    def forward(self, x, level, bias=None, **_):
        self.rows += x.shape[0]
        mix = self.emb[x.long()].mean(1, keepdim=True)  # every token of the row moves every position
        return self.pos[None] + 2.0 * mix + bias[:, None, :]


@pytest.mark.parametrize("sampler,temperature", [("confidence", 0.0), ("confidence", 0.7), ("ancestral", 1.0),
                                                  ("ancestral", 0.7)])
def test_cache_evaluates_only_changed_rows_and_changes_nothing(sampler, temperature):
    """With the cache, an item none of whose tokens was revealed at the last step is not evaluated again
    (a row with fewer masked tokens than the ladder has steps reveals nothing at some steps); its per-item
    conditions are sliced with it. The samples are those of evaluating every row at every step."""
    vocab, length, n = 11, 8, 6
    proc = Process("absorbing", vocab)
    bias = torch.randn(n, vocab, generator=torch.Generator().manual_seed(6))
    keep = torch.arange(length)[None, :] < torch.arange(n)[:, None]  # row r knows its first r tokens
    known = torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(7))
    out, rows = [], []
    for cache in (False, True):
        net = _RowNet(vocab, length)
        D = discrete.CategoricalDenoiser(net, proc, level_free=True)
        x = torch.where(keep, known, torch.full((n, length), proc.mask_id))
        g = torch.Generator().manual_seed(8)
        out.append(get_sampler(sampler)(D, x, discrete.linear(12), cond={"bias": bias}, generator=g, keep=keep,
                                        temperature=temperature, cache=cache))
        rows.append(net.rows)
    assert torch.equal(out[0], out[1])
    assert not (out[1] == proc.mask_id).any() and torch.equal(out[1][keep], known[keep])
    assert rows[1] < rows[0] == 12 * n


def test_fast_path_reads_low_precision_logits_as_the_general_one():
    proc = Process("absorbing", 7)

    class Net(torch.nn.Module):
        def forward(self, x, level, **cond):
            return torch.randn(x.shape + (7,), generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)

    D = discrete.CategoricalDenoiser(Net(), proc, level_free=True)
    x = torch.randint(0, 8, (5, 9), generator=torch.Generator().manual_seed(2))
    general = D(x, torch.ones(5))
    with torch.no_grad():
        fast = D(x, torch.ones(5))
    assert fast.dtype == torch.float32 and torch.equal(general, fast)


class _SelectingRowNet(_RowNet):
    """:class:`_RowNet` that also computes its output for selected positions alone (``select``)."""

    selects = True

    def __init__(self, vocab, length):
        super().__init__(vocab, length)
        self.selected = 0

    def forward(self, x, level, bias=None, select=None, **_):
        out = super().forward(x, level, bias=bias)
        if select is None:
            return out
        self.selected += int(select.sum())
        return out[select]


@pytest.mark.parametrize("selects", [False, True])
def test_greedy_confidence_on_selected_positions_changes_nothing(selects):
    """Greedy decoding that asks the denoiser for the masked positions alone (``select``, what the sampling
    run turns on) writes the same tokens as evaluating every position, with a network that computes the
    selected positions alone and with one that is indexed after the fact; so does guidance, whose two
    halves then split at the selected rows."""
    vocab, length, n = 11, 8, 6
    proc = Process("absorbing", vocab)
    bias = torch.randn(n, vocab, generator=torch.Generator().manual_seed(6))
    keep = torch.arange(length)[None, :] < torch.arange(n)[:, None]
    known = torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(7))
    from polydiff.guidance import cfg_denoiser

    for scale in (1.0, 2.5):
        out = []
        for select in (False, True):
            net = _SelectingRowNet(vocab, length) if selects else _RowNet(vocab, length)
            D = cfg_denoiser(discrete.CategoricalDenoiser(net, proc, level_free=True), scale, {"bias": 0.0})
            x = torch.where(keep, known, torch.full((n, length), proc.mask_id))
            out.append(get_sampler("confidence")(D, x, discrete.linear(12), cond={"bias": bias}, keep=keep,
                                                 temperature=0.0, cache=scale == 1.0, select=select, process=proc))
            if selects and select:
                assert 0 < net.selected < net.rows * length  # only masked positions went through the head
        assert torch.equal(out[0], out[1])


def test_confidence_threshold_reveals_certain_positions_at_once():
    """With a threshold, every masked position at least that certain is revealed beyond the ladder's count:
    an exact model of a distribution that fixes every token finishes in one evaluation; the threshold is
    checked."""
    proc = Process("absorbing", V)
    prob = torch.zeros(len(OUTCOMES))
    prob[5] = 1.0  # one outcome only: every position is certain
    calls = []
    D = discrete.CategoricalDenoiser(ExactNet(proc, prob), proc, level_free=True)
    x = torch.full((4, L), proc.mask_id)
    out = get_sampler("confidence")(D, x, discrete.linear(16), temperature=0.0, threshold=0.9,
                                    callback=lambda info: calls.append(info["i"]))
    assert torch.equal(out, OUTCOMES[5].expand(4, L)) and calls == [0]
    without = get_sampler("confidence")(D, x, discrete.linear(16), temperature=0.0, callback=lambda info: calls.append(1))
    assert torch.equal(without, out) and len(calls) > 2
    with pytest.raises(ValueError, match="threshold is a probability"):
        get_sampler("confidence")(D, x, discrete.linear(4), threshold=1.0)


@pytest.mark.parametrize("sampler", ["ancestral", "confidence"])
def test_a_token_rule_holds_in_every_sample_and_never_touches_known_tokens(sampler):
    # the rule: category 1 may not stand at the middle position (back to the mask before the last step,
    # else category 0); the first position is known
    D = denoiser("absorbing")
    m = D.process.mask_id
    seen_last = []

    def rule(prev, new, last, keep):
        seen_last.append(last)
        bad = new[:, 1] == 1
        out = new.clone()
        out[:, 1] = torch.where(bad, torch.full_like(new[:, 1], m if not last else 0), new[:, 1])
        return out

    n = 4000
    g = torch.Generator().manual_seed(5)
    x = discrete.prior_sample(D.process, (n, L), g)
    keep = torch.zeros(n, L, dtype=torch.bool)
    keep[:, 0] = True
    x[:, 0] = 1
    out = get_sampler(sampler)(D, x, discrete.linear(12), generator=g, keep=keep, constrain=rule)
    assert bool((out[:, 0] == 1).all()) and bool((out[:, 1] != 1).all()) and bool((out != m).all())
    assert not any(seen_last[:-1]) and (seen_last[-1] or sampler == "confidence")  # confidence may end early
    free = get_sampler(sampler)(D, x, discrete.linear(12), generator=torch.Generator().manual_seed(5), keep=keep)
    assert bool((free[:, 1] == 1).any())  # without the rule the category does appear
    with pytest.raises(ValueError, match="changed a known"):
        get_sampler(sampler)(D, x, discrete.linear(4), generator=g, keep=keep,
                             constrain=lambda p, nw, last, k: torch.zeros_like(nw))


def test_power_ladder_is_linear_at_one_and_front_loads_above_one():
    from polydiff.schedules import get_ladder

    assert torch.allclose(get_ladder("power_levels")(8), discrete.linear(8))
    lv = get_ladder("power_levels")(8, power=2.0)
    assert float(lv[0]) == 1.0 and float(lv[-1]) == 0.0 and bool((lv[1:] < lv[:-1]).all())
    steps = lv[:-1] - lv[1:]  # the fraction of tokens each step reveals: more first, fewer last
    assert bool((steps[1:] < steps[:-1]).all())
    # the exact denoiser still samples its distribution on this ladder
    D = denoiser("absorbing")
    g = torch.Generator().manual_seed(0)
    x = discrete.prior_sample(D.process, (20000, L), g)
    assert tv(get_sampler("ancestral")(D, x, get_ladder("power_levels")(200, power=1.5), generator=g)) < 0.03
