"""Samplers of polydiff.samplers against ground truth: an exact Gaussian-mixture denoiser.

The first tests check the ground truth itself (polydiff.gmm, polydiff.metrics); the rest check the
samplers: convergence in distribution, convergence order on a problem with an exact ODE solution,
landing exactly on sigma = 0, seeded noise, and the DDIM family identities. The cross-checks against
diffusers' schedulers live in test_samplers_vs_diffusers.py (diffusers is a benchmark-only dependency).
"""
import math

import numpy as np
import pytest
import torch

from polydiff import samplers as S
from polydiff import schedules as L
from polydiff.gmm import GaussianMixture
from polydiff.metrics import fit_gaussian, frechet_distance, frechet_distance_from_stats, sliced_wasserstein, wasserstein_1d

NAMES = ["euler", "heun", "ddim", "ddpm", "dpmpp_2m", "unipc"]
STOCHASTIC = {"ddpm": {}, "ddim": {"eta": 0.5}}
RING = GaussianMixture.ring(k=8, radius=2.0, std=0.2)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_registry_lists_every_sampler():
    assert sorted(S.SAMPLERS) == sorted(NAMES)
    assert S.nfe("heun", 10) == 19 and S.nfe("euler", 10) == 10


# ------------------------------------------------------------------------------------------------
# ground truth: the mixture's closed forms and the distances
# ------------------------------------------------------------------------------------------------
def test_gmm_denoiser_matches_numerical_posterior_mean():
    """E[x0 | x_sigma = x] by quadrature over x0 (1-D mixture) equals the closed form."""
    gmm = GaussianMixture(means=[[-1.5], [0.4], [2.0]], stds=[0.15, 0.3, 0.2], weights=[0.3, 0.3, 0.4])
    grid = torch.linspace(-6, 6, 200_001, dtype=torch.float64)
    prior = gmm.log_prob(grid[:, None]).exp()
    for sigma in (0.05, 0.4, 3.0):
        x = torch.tensor([-2.0, -0.3, 0.9, 1.7, 4.0], dtype=torch.float64)
        lik = torch.exp(-((x[:, None] - grid[None]) ** 2) / (2 * sigma**2))
        post = prior[None] * lik
        expected = torch.trapezoid(post * grid, grid, dim=1) / torch.trapezoid(post, grid, dim=1)
        got = gmm.denoise(x[:, None], sigma)[:, 0]
        assert torch.allclose(got, expected, atol=1e-7), (sigma, got, expected)
        # the noised marginal integrates to one
        wide = grid * 8
        dens = gmm.log_prob(wide[:, None], sigma=sigma).exp()
        assert abs(torch.trapezoid(dens, wide).item() - 1) < 1e-6


def test_gmm_score_logprob_and_tweedie_agree():
    g = gen(0)
    x = torch.randn(16, 2, generator=g, dtype=torch.float64) * 3
    sigma = torch.rand(16, generator=g, dtype=torch.float64) * 4 + 0.01
    xr = x.clone().requires_grad_()
    RING.log_prob(xr, sigma).sum().backward()
    score = RING.score(x, sigma)
    assert torch.allclose(score, xr.grad, atol=1e-10)
    tweedie = (RING.denoise(x, sigma) - x) / sigma[:, None] ** 2
    assert torch.allclose(score, tweedie, atol=1e-9)
    # one shared sigma as a number, a 0-d tensor or a [batch] tensor gives the same answer
    a = RING(x.float(), 0.7)
    assert torch.equal(a, RING(x.float(), torch.tensor(0.7, dtype=torch.float64)))
    assert torch.allclose(a, RING(x.float(), torch.full((16,), 0.7)))
    assert a.dtype == torch.float32 and a.shape == x.shape


def test_gmm_is_stable_far_away_and_at_tiny_sigma():
    x = torch.tensor([[1e4, -1e4], [0.0, 0.0], [2.0, 1e-3]], dtype=torch.float32)
    for sigma in (1e-6, 1e-3, 80.0, 1e4):
        d = RING(x, torch.full((3,), sigma))
        assert torch.isfinite(d).all()
        assert torch.isfinite(RING.score(x, sigma)).all() and torch.isfinite(RING.log_prob(x, sigma)).all()
    # at huge sigma the posterior mean is the prior mean; at tiny sigma it is x itself
    assert torch.allclose(RING(x, 1e6), torch.zeros(3, 2), atol=1e-4)
    assert torch.allclose(RING(x[1:], 1e-6), x[1:], atol=1e-5)


def test_gmm_samples_have_the_closed_form_moments():
    gmm = GaussianMixture.random(k=5, d=3, generator=gen(1))
    xs = gmm.sample(200_000, generator=gen(2), dtype=torch.float64)
    assert torch.allclose(xs.mean(0), gmm.mean(), atol=0.03)
    assert torch.allclose(torch.cov(xs.T), gmm.cov(), atol=0.06)
    with pytest.raises(ValueError):
        GaussianMixture([[0.0, 0.0]], stds=0.0)


def test_wasserstein_1d_is_exact_for_unequal_sizes():
    from scipy.stats import wasserstein_distance

    g = gen(3)
    u, v = torch.randn(37, generator=g), torch.randn(53, generator=g) * 2 + 1
    assert wasserstein_1d(u, v, p=1)[0] == pytest.approx(wasserstein_distance(u.numpy(), v.numpy()), rel=1e-12)
    # W2^2 by brute force on a fine grid of quantile levels
    t = (np.arange(400_000) + 0.5) / 400_000
    qu = np.sort(u.numpy().astype(np.float64))[np.ceil(t * 37).astype(int) - 1]
    qv = np.sort(v.numpy().astype(np.float64))[np.ceil(t * 53).astype(int) - 1]
    assert wasserstein_1d(u, v, p=2)[0] == pytest.approx(np.mean((qu - qv) ** 2), rel=1e-4)


def test_sliced_wasserstein_of_a_translation():
    """A shift by t moves every projection by theta.t, so SW2^2 = mean (theta.t)^2 -> |t|^2 / d."""
    a = RING.sample(3000, generator=gen(4))
    shift = torch.tensor([0.6, -0.8])
    sw = sliced_wasserstein(a, a + shift, n_projections=4000, generator=gen(5))
    assert sw == pytest.approx(1.0 / math.sqrt(2), rel=0.03)
    assert sliced_wasserstein(a, a.clone()) == 0.0
    # 1-D data: the exact W2
    x = torch.randn(500, 1, generator=gen(6))
    assert sliced_wasserstein(x, x + 0.25) == pytest.approx(0.25, rel=1e-6)
    with pytest.raises(ValueError):
        sliced_wasserstein(a, torch.randn(10, 3))


def test_frechet_distance_closed_form():
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    va, vb = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)
    assert frechet_distance_from_stats(mu_a, np.diag(va), mu_b, np.diag(vb)) == pytest.approx(expected, rel=1e-9)
    # rank-deficient covariances (fewer samples than dimensions) still give a finite, real value
    f = np.random.default_rng(0).normal(size=(5, 8))
    assert math.isfinite(frechet_distance(f, f[::-1] + 0.1))
    mu, cov = fit_gaussian(f)
    assert mu.shape == (8,) and cov.shape == (8, 8)
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------------
# (a) convergence in distribution at about 100 network evaluations
# ------------------------------------------------------------------------------------------------
# With 10000 samples, seed 0 and 128 fixed projections the measured distances are 0.039 (euler, heun,
# ddim, dpmpp_2m, unipc) and 0.046 (ddpm); over seeds 0-5 they stay within 0.021-0.065, and two fresh
# sets of true samples are 0.025-0.052 apart (the sampling-noise floor). A sampler that is clearly
# off, e.g. Euler with only 8 steps, scores 0.18. Bound: 0.09.
SWD_BOUND_100_NFE = 0.09


@pytest.mark.parametrize("name", NAMES)
def test_sampler_converges_to_the_mixture(name):
    n = 10_000
    g = gen(0)
    ref = RING.sample(n, generator=g)
    z = torch.randn(n, 2, generator=g)
    steps = 50 if name == "heun" else 100  # 99 or 100 network evaluations
    sigmas = L.karras(steps, sigma_min=0.002, sigma_max=80.0)
    x = S.SAMPLERS[name](RING, z * sigmas[0], sigmas, generator=gen(100))
    assert torch.isfinite(x).all()
    swd = sliced_wasserstein(x, ref, n_projections=128, generator=gen(0))
    assert swd < SWD_BOUND_100_NFE, (name, swd)


# ------------------------------------------------------------------------------------------------
# convergence order: one Gaussian, whose probability-flow ODE has a closed-form solution
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,order", [("euler", 1), ("ddim", 1), ("heun", 2), ("dpmpp_2m", 2), ("unipc", 2)])
def test_deterministic_samplers_reach_their_order(name, order):
    """Global error at sigma_min against the exact solution; doubling the steps divides it by ~2^order.

    The ladder stops at sigma_min = 0.05 (no final jump to 0), so the error is the integrator's alone.
    Measured slopes (32 -> 64 -> 128 steps): euler 1.00, heun 2.05, dpmpp_2m 2.05, unipc 2.3-4.2.
    """
    gmm = GaussianMixture.gaussian([1.0, -0.5], std=0.5)
    z = torch.randn(64, 2, generator=gen(7), dtype=torch.float64)
    errs = []
    for n in (32, 64, 128):
        sig = L.karras(n, sigma_min=0.05, sigma_max=20.0)[:-1].double()
        x0 = z * float(sig[0])
        x = S.SAMPLERS[name](gmm, x0, sig)
        errs.append((x - gmm.ode_solution(x0, float(sig[0]), float(sig[-1]))).abs().max().item())
    slopes = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert min(slopes) > order - 0.25, (name, errs, slopes)


# error at 80 steps (measured: 1.1e-3, 1.7e-2, 2.8e-5, 4.2e-4, 7.6e-5, 7.6e-5) and, where the
# asymptotic regime is reached by 40 steps, the observed order between 40 and 80 steps
UNIPC_CASES = [(1, True, 3e-3, 2), (1, False, 3e-2, 1), (2, True, 1e-4, None), (2, False, 1e-3, 2),
               (3, True, 2e-4, None), (3, False, 2e-4, None)]


@pytest.mark.parametrize("order,corrector,bound,rate", UNIPC_CASES)
def test_unipc_options(order, corrector, bound, rate):
    """Every predictor order with and without the corrector converges to the exact ODE solution.

    The final step is first order (as in the reference implementation), which caps the global order
    at 2; the corrector lifts order 1 to order 2.
    """
    gmm = GaussianMixture.gaussian([0.3], std=0.4)
    z = torch.randn(32, 1, generator=gen(8), dtype=torch.float64)
    errs = []
    for n in (40, 80):
        sig = L.karras(n, sigma_min=0.05, sigma_max=10.0)[:-1].double()
        x = S.unipc(gmm, z * float(sig[0]), sig, order=order, corrector=corrector)
        errs.append((x - gmm.ode_solution(z * float(sig[0]), float(sig[0]), float(sig[-1]))).abs().max().item())
    assert errs[1] < bound and errs[1] < errs[0], errs
    if rate is not None:
        assert math.log2(errs[0] / errs[1]) > rate - 0.25, errs
    with pytest.raises(ValueError):
        S.unipc(gmm, z, sig, order=4)


# ------------------------------------------------------------------------------------------------
# (b) the last step lands exactly on sigma = 0
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_last_step_lands_on_zero(name, steps):
    sigmas = L.karras(steps, sigma_min=0.01, sigma_max=10.0)
    calls, infos = [], []

    def D(x, sigma, **cond):
        assert sigma.shape == (x.shape[0],)
        calls.append(float(sigma[0]))
        return RING(x, sigma)

    x = torch.randn(64, 2, generator=gen(9)) * sigmas[0]
    out = S.SAMPLERS[name](D, x, sigmas, generator=gen(10), callback=infos.append)
    assert len(infos) == steps and len(calls) == S.nfe(name, steps)
    assert [i["i"] for i in infos] == list(range(steps))
    assert [i["sigma"] for i in infos] == sigmas[:-1].tolist()
    assert [i["sigma_next"] for i in infos] == sigmas[1:].tolist()
    assert infos[-1]["sigma_next"] == 0.0
    assert torch.equal(out, infos[-1]["denoised"])
    assert torch.equal(out, infos[-1]["x"])
    assert calls[-1] == sigmas[-2].item()  # the last evaluation is at the last nonzero sigma


# ------------------------------------------------------------------------------------------------
# (c) seeded determinism of the stochastic samplers
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(STOCHASTIC))
def test_stochastic_samplers_are_seeded(name):
    fn, opts = S.SAMPLERS[name], STOCHASTIC[name]
    sigmas = L.karras(12)
    x = torch.randn(256, 2, generator=gen(11)) * sigmas[0]
    a = fn(RING, x, sigmas, generator=gen(1), **opts)
    b = fn(RING, x, sigmas, generator=gen(1), **opts)
    c = fn(RING, x, sigmas, generator=gen(2), **opts)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "unipc"])
def test_deterministic_samplers_ignore_the_generator(name):
    sigmas = L.karras(8)
    x = torch.randn(128, 2, generator=gen(12)) * sigmas[0]
    fn = S.SAMPLERS[name]
    assert torch.equal(fn(RING, x, sigmas, generator=gen(1)), fn(RING, x, sigmas, generator=gen(2)))


def test_fresh_noise_respects_the_padding_mask():
    sigmas = L.karras(10)
    mask = torch.ones(64, 2)
    mask[::3, 1] = 0
    x = torch.randn(64, 2, generator=gen(13)) * sigmas[0] * mask
    out = S.ddpm(RING, x, sigmas, cond={"mask": mask}, generator=gen(3))
    assert (out[mask == 0] == 0).all()


# ------------------------------------------------------------------------------------------------
# (d) the DDIM family
# ------------------------------------------------------------------------------------------------
def test_ddim_eta0_is_euler_and_eta1_is_ddpm():
    sigmas = L.karras(15)
    x = torch.randn(512, 2, generator=gen(14)) * sigmas[0]
    assert torch.equal(S.ddim(RING, x, sigmas, eta=0.0), S.euler(RING, x, sigmas))
    assert torch.equal(S.ddim(RING, x, sigmas, eta=1.0, generator=gen(4)), S.ddpm(RING, x, sigmas, generator=gen(4)))


def test_ddpm_step_is_the_textbook_posterior():
    """One ddpm step equals Ho et al. 2020, eq. 6-7, written on the VP side with alpha_bar = 1 / (1 + sigma^2)."""
    s, s_next = 3.0, 1.2
    x = torch.randn(1000, 2, generator=gen(15), dtype=torch.float64) * s
    out = S.ddpm(RING, x, torch.tensor([s, s_next], dtype=torch.float64), generator=gen(5))
    noise = torch.randn(x.shape, generator=gen(5), dtype=torch.float64)

    ab, ab_prev = 1 / (1 + s**2), 1 / (1 + s_next**2)
    beta = 1 - ab / ab_prev
    x_t = x * math.sqrt(ab)
    x0 = RING.denoise(x, s)
    mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x_t
    var = (1 - ab_prev) / (1 - ab) * beta
    expected_vp = mean + math.sqrt(var) * noise
    assert torch.allclose(out * math.sqrt(ab_prev), expected_vp, atol=1e-12)


def test_ancestral_step_split():
    for s, sn in [(10.0, 5.0), (1.0, 0.3), (0.5, 0.0)]:
        for eta in (0.0, 0.5, 1.0):
            down, up = S.ancestral_step(s, sn, eta)
            assert down**2 + up**2 == pytest.approx(sn**2)
            if eta == 1.0 and sn > 0:  # the DDPM posterior std in sigma-space
                assert up == pytest.approx(sn * math.sqrt(s**2 - sn**2) / s)


def test_the_fused_ode_steps_are_the_papers_formulas():
    """euler_step and trapezoid_step (the samplers' only rearranged formulas) equal Euler's step and Heun's
    trapezoidal corrector as Karras et al. 2022 (Algorithm 1) write them."""
    from polydiff.samplers import euler_step, trapezoid_step

    g = torch.Generator().manual_seed(0)
    x, den, den2 = (torch.randn(64, 3, generator=g, dtype=torch.float64) for _ in range(3))
    for s, sn in ((80.0, 40.0), (2.5, 0.7), (0.1, 0.002)):
        d = (x - den) / s
        torch.testing.assert_close(euler_step(x, den, s, sn), x + (sn - s) * d, rtol=1e-12, atol=1e-12)
        x2 = x + (sn - s) * d
        d2 = (x2 - den2) / sn
        torch.testing.assert_close(trapezoid_step(x, den, den2, s, sn), x + (sn - s) * (d + d2) / 2,
                                   rtol=1e-10, atol=1e-10)
