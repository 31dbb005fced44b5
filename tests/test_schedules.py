"""Sampling ladders of polydiff.schedules: shape, monotonicity, end points, closed forms, argument checks."""
import math

import pytest
import torch

from polydiff import schedules as S

CASES = [
    ("karras", {}), ("karras", {"sigma_min": 0.01, "sigma_max": 10.0, "rho": 3.0}),
    ("exponential", {}), ("exponential", {"sigma_min": 0.1, "sigma_max": 5.0}),
    ("vp_linear", {}), ("cosine", {}),
    ("ddpm_discrete", {"spacing": "trailing"}), ("ddpm_discrete", {"spacing": "leading"}),
]
NS = [1, 2, 3, 10, 18, 61, 103, 250, 999, 1000]


@pytest.mark.parametrize("name,kw", CASES)
def test_ladder_shape_order_and_zero(name, kw):
    fn = S.LADDERS[name]
    for n in NS:
        s = fn(n, **kw)
        assert s.shape == (n + 1,), (name, n)
        assert s.dtype == torch.float32
        assert s[-1].item() == 0.0
        assert (s[:-1] > 0).all()
        assert (s[:-1] > s[1:]).all(), (name, n, s)


def test_ddpm_trailing_every_step_count():
    # every n from 1 to num_train_steps: n + 1 values, strictly decreasing, first = last training step
    sig_last = S.ddpm_discrete(1)[0]
    for n in range(1, 1001):
        s = S.ddpm_discrete(n)
        assert s.shape == (n + 1,), n
        assert (s[:-1] > s[1:]).all(), n
        assert s[0] == sig_last, n


def test_ladder_registry():
    assert set(S.LADDERS) == {"karras", "exponential", "vp_linear", "cosine", "ddpm_discrete", "fitted"}


def _f32(v):
    return torch.tensor(v, dtype=torch.float64).to(torch.float32).item()


def test_karras_end_points():
    for n in (2, 5, 40):
        s = S.karras(n, sigma_min=0.002, sigma_max=80.0)
        assert s[0].item() == 80.0
        assert s[-2].item() == pytest.approx(_f32(0.002), rel=1e-6)
    s = S.karras(7, sigma_min=0.03, sigma_max=14.6)
    assert s[0].item() == pytest.approx(_f32(14.6), rel=1e-6)
    assert s[-2].item() == pytest.approx(_f32(0.03), rel=1e-6)
    assert torch.equal(S.karras(1, sigma_max=80.0), torch.tensor([80.0, 0.0]))


@pytest.mark.parametrize("n,smin,smax,rho", [(10, 0.002, 80.0, 7.0), (25, 0.02, 20.0, 3.0), (4, 0.1, 1.0, 1.0)])
def test_karras_closed_form(n, smin, smax, rho):
    # Karras et al. 2022, eq. 5: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho
    expected = [(smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho for i in range(n)]
    torch.testing.assert_close(S.karras(n, smin, smax, rho), torch.tensor(expected + [0.0]), rtol=1e-6, atol=0)


def test_karras_rho_one_is_linear():
    torch.testing.assert_close(S.karras(5, 1.0, 5.0, rho=1.0), torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0]))


def test_exponential_closed_form():
    s = S.exponential(5, sigma_min=0.01, sigma_max=100.0)
    torch.testing.assert_close(s, torch.tensor([100.0, 10.0, 1.0, 0.1, 0.01, 0.0]), rtol=1e-6, atol=0)
    ratios = S.exponential(30)[:-1].double().log().diff()
    torch.testing.assert_close(ratios, torch.full_like(ratios, ratios[0].item()), rtol=1e-4, atol=1e-6)


def test_vp_linear_end_points():
    s = S.vp_linear(20, beta_min=0.1, beta_max=20.0, eps_t=1e-3)
    assert s[0].item() == pytest.approx(math.sqrt(math.expm1(0.5 * 19.9 + 0.1)), rel=1e-6)  # t = 1: ~152
    assert s[-2].item() == pytest.approx(math.sqrt(math.expm1(0.5 * 19.9e-6 + 1e-4)), rel=1e-5)
    t = torch.linspace(1.0, 1e-3, 20, dtype=torch.float64)
    torch.testing.assert_close(s[:-1], S.vp_linear_sigma(t).float())


def test_cosine_end_points():
    t_max, eps_t = 0.9946, 1e-3
    s = S.cosine(12, t_max=t_max, eps_t=eps_t)
    t = torch.linspace(t_max, eps_t, 12, dtype=torch.float64)
    torch.testing.assert_close(s[:-1], S.cosine_sigma(t).float())
    assert s[0].item() == pytest.approx(S.cosine_sigma(torch.tensor(t_max, dtype=torch.float64)).item(), rel=1e-6)


def _ddpm_sigmas(num=1000, b0=1e-4, b1=0.02):
    betas = torch.linspace(b0, b1, num, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    return ((1 - ab) / ab).sqrt()


def test_ddpm_discrete_indices():
    sig = _ddpm_sigmas()
    # trailing: steps 999, 666, 332 for n = 3; leading: 666, 333, 0
    torch.testing.assert_close(S.ddpm_discrete(3, spacing="trailing"), torch.tensor([sig[999], sig[666], sig[332], 0.0]).float())
    torch.testing.assert_close(S.ddpm_discrete(3, spacing="leading"), torch.tensor([sig[666], sig[333], sig[0], 0.0]).float())
    torch.testing.assert_close(S.ddpm_discrete(1000)[:-1], sig.flip(0).float())
    torch.testing.assert_close(S.ddpm_discrete(1000, spacing="leading")[:-1], sig.flip(0).float())
    # trailing starts at the last training step (sigma ~ 157 for the linear DDPM betas)
    assert S.ddpm_discrete(50)[0].item() == pytest.approx(sig[-1].item(), rel=1e-6)
    assert 150 < sig[-1].item() < 160
    # the last nonzero step of 'leading' is training step 0
    assert S.ddpm_discrete(50, spacing="leading")[-2].item() == pytest.approx(sig[0].item(), rel=1e-6)


def test_alpha_bar_sigma_round_trip():
    ab = torch.tensor([1e-4, 0.01, 0.3, 0.5, 0.9, 0.9999], dtype=torch.float64)
    torch.testing.assert_close(S.sigma_to_alpha_bar(S.alpha_bar_to_sigma(ab)), ab, rtol=1e-10, atol=0)
    sig = torch.tensor([0.002, 0.1, 1.0, 10.0, 80.0], dtype=torch.float64)
    torch.testing.assert_close(S.alpha_bar_to_sigma(S.sigma_to_alpha_bar(sig)), sig, rtol=1e-8, atol=0)
    # known values: alpha_bar = 1/2 <-> sigma = 1; alpha_bar = 1/5 <-> sigma = 2
    torch.testing.assert_close(S.alpha_bar_to_sigma(torch.tensor([0.5, 0.2])), torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(S.sigma_to_alpha_bar(torch.tensor([1.0, 2.0])), torch.tensor([0.5, 0.2]))


@pytest.mark.parametrize("call,match", [
    (lambda: S.karras(0), "at least 1 step, got 0"),
    (lambda: S.karras(-3), "at least 1 step, got -3"),
    (lambda: S.karras(10, sigma_min=0.0), "0 < sigma_min < sigma_max"),
    (lambda: S.karras(10, sigma_min=-1.0), "sigma_min=-1.0"),
    (lambda: S.karras(10, sigma_min=5.0, sigma_max=1.0), "sigma_min=5.0, sigma_max=1.0"),
    (lambda: S.karras(10, sigma_min=2.0, sigma_max=2.0), "0 < sigma_min < sigma_max"),
    (lambda: S.exponential(0), "at least 1 step"),
    (lambda: S.exponential(5, sigma_min=3.0, sigma_max=1.0), "0 < sigma_min < sigma_max"),
    (lambda: S.vp_linear(0), "at least 1 step, got 0"),
    (lambda: S.cosine(0), "at least 1 step, got 0"),
    (lambda: S.ddpm_discrete(0), r"need 1 <= n <= 1000, got 0"),
    (lambda: S.ddpm_discrete(1001), r"need 1 <= n <= 1000, got 1001"),
    (lambda: S.ddpm_discrete(20, num_train_steps=10), r"need 1 <= n <= 10, got 20"),
    (lambda: S.ddpm_discrete(10, spacing="linspace"), "spacing must be 'trailing' or 'leading', got 'linspace'"),
])
def test_invalid_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
