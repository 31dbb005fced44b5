"""Classifier-free guidance, condition dropout, masked conditioning and padding through every sampler."""
import pytest
import torch

from polydiff import schedules
from polydiff.guidance import NULL_LABEL, cfg_denoiser, drop_conditions, masked_denoiser, sample_masked
from polydiff.samplers import SAMPLERS


class LabelDenoiser:
    """D(x, sigma, label) = x / (1 + sigma) + label-dependent offset; counts its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, **cond):
        self.calls.append({"batch": x.shape[0], "sigma": sigma.clone(), **cond})
        label = cond["label"].to(x.dtype)
        offset = torch.where(label == NULL_LABEL, torch.full_like(label, -0.25), torch.sin(label) + 0.5 * label)
        out = x / (1 + sigma[:, None, None]) + offset[:, None, None] * torch.linspace(1, 2, x.shape[-1])
        mask = cond.get("mask")
        return out * mask if mask is not None else out


def _batch(seed=0, b=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 2, 5, generator=g)
    sigma = torch.rand(b, generator=g) * 3 + 0.1
    label = torch.tensor([0, 3, 7, 2])[:b]
    return x, sigma, label


def test_cfg_scale_one_is_identity():
    D = LabelDenoiser()
    assert cfg_denoiser(D, 1.0, {"label": NULL_LABEL}) is D
    assert cfg_denoiser(D, 3.0, {}) is D


@pytest.mark.parametrize("scale", [0.0, 0.5, 2.0, 7.5, -1.0])
def test_cfg_formula_in_one_batched_call(scale):
    D = LabelDenoiser()
    x, sigma, label = _batch()
    mask = torch.ones(4, 1, 5)
    mask[1, :, 3:] = 0
    guided = cfg_denoiser(D, scale, {"label": NULL_LABEL})
    out = guided(x, sigma, label=label, mask=mask, temperature=0.3)
    assert len(D.calls) == 1
    call = D.calls[0]
    assert call["batch"] == 8
    assert torch.equal(call["label"], torch.cat([label, torch.full_like(label, NULL_LABEL)]))
    assert torch.equal(call["mask"], torch.cat([mask, mask]))
    assert torch.equal(call["sigma"], torch.cat([sigma, sigma]))
    assert call["temperature"] == 0.3  # non-batched condition passed through unchanged

    ref = LabelDenoiser()
    d_c = ref(x, sigma, label=label, mask=mask)
    d_u = ref(x, sigma, label=torch.full_like(label, NULL_LABEL), mask=mask)
    assert not torch.allclose(d_c, d_u)
    torch.testing.assert_close(out, d_u + scale * (d_c - d_u))
    if scale == 0.0:
        assert torch.equal(out, d_u)


def test_cfg_without_the_guided_key_is_plain_call():
    calls = []

    def D(x, sigma, **cond):
        calls.append(x.shape[0])
        return x * 2

    x, sigma, _ = _batch()
    out = cfg_denoiser(D, 4.0, {"label": NULL_LABEL})(x, sigma)
    assert calls == [4]
    assert torch.equal(out, x * 2)


def test_cfg_inside_a_sampler():
    D = LabelDenoiser()
    x, _, label = _batch(1)
    sigmas = schedules.karras(6, sigma_max=10.0)
    out = SAMPLERS["euler"](cfg_denoiser(D, 3.0, {"label": NULL_LABEL}), x * 10, sigmas, cond={"label": label})
    assert [c["batch"] for c in D.calls] == [8] * 6
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_cfg_interval_guides_only_inside_it():
    D = LabelDenoiser()
    x, _, label = _batch(1)
    sigmas = schedules.karras(10, sigma_min=0.01, sigma_max=10.0)
    lo, hi = 0.3, 3.0
    guided = cfg_denoiser(D, 3.0, {"label": NULL_LABEL}, interval=(lo, hi))
    SAMPLERS["euler"](guided, x * 10, sigmas, cond={"label": label})
    levels = sigmas[:-1].tolist()
    inside = [lo < s <= hi for s in levels]
    assert 0 < sum(inside) < len(levels)
    assert [c["batch"] for c in D.calls] == [8 if i else 4 for i in inside]
    # outside the interval the call is the plain conditional one; inside it the guided formula
    ref = LabelDenoiser()
    sig = torch.full((4,), 5.0)
    torch.testing.assert_close(guided(x, sig, label=label), ref(x, sig, label=label))
    sig = torch.full((4,), 1.0)
    d_c, d_u = ref(x, sig, label=label), ref(x, sig, label=torch.full_like(label, NULL_LABEL))
    torch.testing.assert_close(guided(x, sig, label=label), d_u + 3.0 * (d_c - d_u))
    with pytest.raises(ValueError, match="lo < hi"):
        cfg_denoiser(D, 3.0, {"label": NULL_LABEL}, interval=(2.0, 1.0))


def test_drop_conditions_rate_and_null_value():
    n, p = 20_000, 0.3
    label = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(0))
    emb = torch.randn(n, 3, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(n, 1, 4)
    cond = {"label": label, "emb": emb, "mask": mask}
    out = drop_conditions(cond, p, {"label": NULL_LABEL, "emb": 0.0}, generator=torch.Generator().manual_seed(2))
    dropped = out["label"] == NULL_LABEL
    # binomial(n, p): standard deviation sqrt(p (1 - p) / n) ~ 0.0032
    assert abs(dropped.float().mean().item() - p) < 0.02
    assert torch.equal(out["label"][~dropped], label[~dropped])
    emb_dropped = (out["emb"] == 0).all(dim=1)
    assert abs(emb_dropped.float().mean().item() - p) < 0.02
    assert torch.equal(out["emb"][emb_dropped], torch.zeros(int(emb_dropped.sum()), 3))
    assert torch.equal(out["emb"][~emb_dropped], emb[~emb_dropped])
    assert out["mask"] is mask and torch.equal(mask, torch.ones(n, 1, 4))  # never touched
    assert torch.equal(cond["label"], label)  # the input dict is not modified
    assert out["label"].dtype == label.dtype


def test_drop_conditions_never_drops_mask_even_if_listed_elsewhere():
    mask = torch.ones(100, 3)
    cond = {"label": torch.arange(100), "mask": mask}
    out = drop_conditions(cond, 1.0, {"label": NULL_LABEL})
    assert torch.equal(out["label"], torch.full((100,), NULL_LABEL))
    assert out["mask"] is mask


def test_drop_conditions_edge_cases():
    cond = {"label": torch.arange(8)}
    assert torch.equal(drop_conditions(cond, 0.0, {"label": NULL_LABEL})["label"], torch.arange(8))
    assert torch.equal(drop_conditions(cond, 0.5, {})["label"], torch.arange(8))
    # a key that is absent or None is skipped
    out = drop_conditions({"label": None, "x": torch.ones(2)}, 1.0, {"label": NULL_LABEL, "other": 0})
    assert out["label"] is None and "other" not in out
    a = drop_conditions(cond, 0.5, {"label": NULL_LABEL}, generator=torch.Generator().manual_seed(9))
    b = drop_conditions(cond, 0.5, {"label": NULL_LABEL}, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a["label"], b["label"])


# ------------------------------------------------------------------------------------------------
# masked conditioning
# ------------------------------------------------------------------------------------------------
def line_denoiser(x, sigma, **cond):
    """Exact E[x0 | x] for x0 = [a, a], a ~ N(0, 1): both coordinates (x_1 + x_2) / (sigma^2 + 2)."""
    m = x.sum(dim=1, keepdim=True) / (sigma[:, None] ** 2 + 2)
    return m.expand_as(x).clone()


SAMPLER_CASES = [(name, {}) for name in SAMPLERS] + [("ddim", {"eta": 0.5}), ("unipc", {"order": 3})]


def test_masked_denoiser_replaces_known_values():
    known = torch.tensor([[1.5, -2.0, 0.25]])
    km = torch.tensor([[1.0, 0.0, 1.0]])
    D = masked_denoiser(lambda x, s, **c: x * 0.5, known, km)
    out = D(torch.tensor([[4.0, 4.0, 4.0]]), torch.tensor([1.0]))
    assert torch.equal(out, torch.tensor([[1.5, 2.0, 0.25]]))


@pytest.mark.parametrize("name,opts", SAMPLER_CASES)
def test_sample_masked_keeps_known_and_fills_consistently(name, opts):
    g = torch.Generator().manual_seed(1)
    b = 256
    sigmas = schedules.karras(30, sigma_min=1e-3, sigma_max=80.0)
    v = torch.randn(b, generator=g) * 1.5 + 0.123456789
    known = torch.stack([v, torch.full((b,), 123.0)], dim=1)  # the unknown slot holds junk
    km = torch.tensor([1.0, 0.0]).expand(b, 2)
    x = torch.randn(b, 2, generator=g) * sigmas[0]
    seen = []
    out = sample_masked(SAMPLERS[name], line_denoiser, x, sigmas, known, km, generator=g,
                        callback=lambda info: seen.append(info["denoised"]), **opts)
    assert torch.equal(out[:, 0], v)
    assert len(seen) == 30 and all(torch.equal(d[:, 0], v) for d in seen)
    # the exact conditional of coordinate 2 given coordinate 1 = v is v itself; an unconditional
    # sample would be ~ N(0, 1), i.e. about 1.6 away from v on average
    err = (out[:, 1] - v).abs()
    assert err.mean().item() < 0.1, err.mean().item()
    assert err.max().item() < 0.4, err.max().item()
    assert torch.corrcoef(torch.stack([out[:, 1], v]))[0, 1].item() > 0.99


@pytest.mark.parametrize("name,opts", SAMPLER_CASES)
def test_sample_masked_ladder_not_ending_in_zero(name, opts):
    # the sampler stops at sigma = 0.5, so x is still noisy: the known values are pasted back bit-for-bit
    g = torch.Generator().manual_seed(7)
    sigmas = schedules.karras(8, sigma_min=0.5, sigma_max=20.0)[:-1]
    x = torch.randn(16, 2, generator=g) * sigmas[0]
    known = torch.randn(16, 2, generator=g) + 0.1
    km = torch.tensor([[1.0, 0.0]]).expand(16, 2)
    inputs = []

    def D(x_in, sigma, **cond):
        inputs.append(x_in.clone())
        return line_denoiser(x_in, sigma)

    out = sample_masked(SAMPLERS[name], D, x, sigmas, known, km, generator=g, **opts)
    assert torch.equal(out[:, 0], known[:, 0])
    assert not torch.equal(out[:, 1], known[:, 1])
    # the known region starts on the forward process: known + the starting noise
    assert torch.equal(inputs[0][:, 0], x[:, 0] + known[:, 0])
    assert torch.equal(inputs[0][:, 1], x[:, 1])


def test_sample_masked_all_unknown_equals_plain_sampler():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 2, generator=g) * 80
    sigmas = schedules.karras(10)
    plain = SAMPLERS["heun"](line_denoiser, x, sigmas)
    masked = sample_masked(SAMPLERS["heun"], line_denoiser, x, sigmas, torch.randn(8, 2, generator=g), torch.zeros(8, 2))
    assert torch.equal(masked, plain)


def _padded_case(seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(3, 1, 8)
    mask[0, :, 6:] = 0
    mask[2, :, 3:] = 0

    def D(x, sigma, **cond):
        # a smooth nonlinear denoiser that mixes positions, then honours the padding mask
        out = torch.tanh(x / (1 + sigma[:, None, None])) + 0.3 * x.mean(dim=-1, keepdim=True) + 0.2
        return out * cond["mask"]

    return g, mask, D


@pytest.mark.parametrize("name,opts", SAMPLER_CASES + [("ddim", {"eta": 1.0})])
def test_padding_stays_zero_through_samplers(name, opts):
    g, mask, D = _padded_case(3)
    sigmas = schedules.karras(12, sigma_max=20.0)
    x = torch.randn(3, 2, 8, generator=g) * sigmas[0] * mask
    pad = (mask == 0).expand_as(x)
    states = []
    out = SAMPLERS[name](D, x, sigmas, cond={"mask": mask}, generator=g,
                         callback=lambda info: states.append(info["x"]), **opts)
    for state in states + [out]:
        assert torch.equal(state[pad], torch.zeros(int(pad.sum())))
    assert (out[~pad] != 0).all()


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_stochastic_samplers_add_noise_only_to_real_elements(name):
    # with a zero denoiser, everything a stochastic sampler produces before the last step is its own noise
    _, mask, _ = _padded_case(4)
    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.0])
    states = []
    SAMPLERS[name](lambda x, s, **c: torch.zeros_like(x), torch.zeros(3, 2, 8), sigmas, cond={"mask": mask},
                   generator=torch.Generator().manual_seed(0), callback=lambda info: states.append(info["x"]),
                   **({"eta": 1.0} if name == "ddim" else {}))
    pad = (mask == 0).expand(3, 2, 8)
    assert (states[0][~pad] != 0).all()
    assert torch.equal(states[0][pad], torch.zeros(int(pad.sum())))


@pytest.mark.parametrize("name,opts", SAMPLER_CASES)
def test_masked_conditioning_with_padding(name, opts):
    g, mask, D = _padded_case(5)
    sigmas = schedules.karras(10, sigma_max=20.0)
    x = torch.randn(3, 2, 8, generator=g) * sigmas[0] * mask
    known = torch.randn(3, 2, 8, generator=g) * mask
    km = torch.zeros(3, 1, 8)
    km[:, :, :2] = 1
    out = sample_masked(SAMPLERS[name], D, x, sigmas, known, km, cond={"mask": mask}, generator=g, **opts)
    keep = (km == 1).expand_as(out)
    pad = (mask == 0).expand_as(out)
    assert torch.equal(out[keep], known[keep])
    assert torch.equal(out[pad], torch.zeros(int(pad.sum())))


def test_resampling_moves_masked_samples_towards_the_exact_conditional():
    """RePaint-style resampling: for a correlated Gaussian, the generated coordinate's conditional mean
    gets much closer to the exact value than plain replacement, and known values stay exact."""
    from polydiff.guidance import sample_masked
    from polydiff.samplers import euler
    from polydiff.schedules import karras

    rho = 0.8
    C = torch.tensor([[1.0, rho], [rho, 1.0]])

    def D(x, sig, **_):
        M = C[None] @ torch.linalg.inv(C[None] + sig[:, None, None] ** 2 * torch.eye(2)[None])
        return (M @ x[:, :, None])[:, :, 0]

    n = 8000
    known = torch.zeros(n, 2)
    known[:, 0] = 1.5
    m = torch.zeros(n, 2)
    m[:, 0] = 1
    exact = rho * 1.5  # E[x1 | x0 = 1.5]
    errs = {}
    for r in (1, 8):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 2, generator=g) * 80
        out = sample_masked(euler, D, x, karras(30, 0.002, 80), known, m, generator=g, resample=r)
        assert torch.equal(out[:, 0], known[:, 0])
        errs[r] = abs(out[:, 1].mean().item() - exact)
    assert errs[8] < 0.25 and errs[8] < errs[1] / 2, errs


def test_model_sample_keeps_known_values_given_by_cond():
    """Model.sample runs masked conditioning when cond carries 'known' and 'known_mask' (inpainting,
    molecular scaffolds), with any sampler."""
    import torch

    from polydiff.model import Model
    from polydiff.modality import Modality

    class Enc:
        def sample_shape(self):
            return (6,)

        def metadata(self):
            return {}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, c_noise, **cond):
            return x * self.w

    mod = Modality(name="toy", description="", encoder=lambda meta=None: Enc(), network=lambda cfg: Net())
    model = Model(mod, Net(), Enc(), {"parameterisation": "edm", "sigma_data": 1.0}, device="cpu")
    known = torch.arange(6.0).expand(3, 6)
    mask = torch.tensor([1.0, 1, 0, 0, 1, 0]).expand(3, 6)
    for sampler in ("euler", "heun", "ddpm"):
        x, cond = model.sample(3, sampler=sampler, steps=5, seed=0, cond={"known": known, "known_mask": mask})
        assert torch.equal(x[:, [0, 1, 4]], known[:, [0, 1, 4]]) and "known" not in cond


def test_model_sigma_range_and_sigmas_from():
    """The ladder of tasks that start from a partly noised input: Karras from the start level to 0 with the
    model's sigma_min (at most half the start) and rho; the model's own range otherwise defaults."""
    import pytest
    import torch

    from polydiff.errors import PolydiffError
    from polydiff.model import Model
    from polydiff.modality import Modality
    from polydiff.schedules import karras

    class Enc:
        def sample_shape(self):
            return (2,)

        def metadata(self):
            return {}

    mod = Modality(name="toy", description="", encoder=lambda meta=None: Enc(), network=lambda cfg: torch.nn.Identity())
    plain = Model(mod, torch.nn.Identity(), Enc(), {"parameterisation": "edm", "sigma_data": 1.0}, device="cpu")
    assert plain.sigma_range() == (0.002, 80.0)
    cfg = {"parameterisation": "edm", "sigma_data": 1.0,
           "sample": {"steps": 7, "schedule": "karras", "schedule_args": {"sigma_min": 0.01, "sigma_max": 20.0, "rho": 5.0}}}
    model = Model(mod, torch.nn.Identity(), Enc(), cfg, device="cpu")
    assert model.sigma_range() == (0.01, 20.0)
    assert torch.equal(model.sigmas_from(1.5), karras(7, sigma_min=0.01, sigma_max=1.5, rho=5.0))
    low = model.sigmas_from(0.012, 3)
    assert len(low) == 4 and low[0].item() == pytest.approx(0.012) and low[-2].item() == pytest.approx(0.006)
    assert low[-1].item() == 0
    for bad, steps in ((0.0, 3), (1.0, -1)):
        with pytest.raises(PolydiffError):
            model.sigmas_from(bad, steps)


def test_labels_for_is_the_one_meaning_of_a_sampling_label():
    import pytest as _pytest

    from polydiff.errors import InputError
    from polydiff.modality import label_option, labels_for

    classes = ["a", "b", "c"]
    assert labels_for(classes, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]  # 'all' (the default): i mod k
    assert labels_for(classes, 4, "ALL").tolist() == [0, 1, 2, 0]
    assert labels_for(classes, 2, "b").tolist() == [1, 1] and labels_for(classes, 2, 2).tolist() == [2, 2]
    assert labels_for(classes, 2, "none").tolist() == [-1, -1]  # the null label of guidance
    with _pytest.raises(InputError, match=r"^label 'd' is not one of this model's classes \(a, b, c\)$"):
        labels_for(classes, 2, "d")
    assert labels_for([], 3) is None and labels_for([], 3, "none") is None
    with _pytest.raises(InputError, match=r"^label 'a': this model was trained without labels$"):
        labels_for([], 3, "a")
    opt = label_option("letters")
    assert opt.name == "label" and "(letters)" in opt.help and "i mod k" in opt.help


def test_guidance_keeps_the_one_sigma_for_the_batch_form():
    """The samplers pass one sigma for the whole batch as a 0-stride view; guidance doubles the batch and must
    pass the same form on, so that the adapter still takes its fast path (scalings computed once)."""
    from polydiff.guidance import cfg_denoiser
    from polydiff.precond import _shared_sigma, repeat_sigma

    seen = []

    def D(x, sigma, **cond):
        seen.append((sigma.shape[0], _shared_sigma(sigma)))
        return x * 0.5

    guided = cfg_denoiser(D, 3.0, {"label": -1})
    x = torch.randn(4, 2)
    guided(x, torch.tensor(0.7).expand(4), label=torch.tensor([0, 1, 0, 1]))
    assert seen == [(8, _shared_sigma(torch.tensor([0.7])))]
    per_item = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert torch.equal(repeat_sigma(per_item, 2), torch.cat([per_item, per_item]))
    assert repeat_sigma(torch.tensor(2.0).expand(3), 2).stride(0) == 0
