"""Forward process, loss weightings and the masked denoising loss of polydiff.noising, and the
training noise distributions of polydiff.schedules."""
import math

import pytest
import torch

from polydiff import schedules as S
from polydiff.noising import WEIGHTINGS, add_noise, denoising_loss, loss_weight, masked_mean


def _padded_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(3, 2, 6, generator=g)
    noise = torch.randn(3, 2, 6, generator=g)
    mask = torch.ones(3, 1, 6)
    mask[1, :, 4:] = 0
    mask[2, :, 2:] = 0
    return x0 * mask, noise, mask, g


def test_add_noise_formula_and_mask():
    x0, noise, mask, _ = _padded_batch()
    sigma = torch.tensor([0.1, 1.0, 20.0])
    plain = add_noise(x0, sigma, noise)
    torch.testing.assert_close(plain, x0 + sigma[:, None, None] * noise)
    masked = add_noise(x0, sigma, noise, mask)
    pad = (mask == 0).expand_as(masked)
    assert torch.equal(masked[pad], torch.zeros(int(pad.sum())))
    assert torch.equal(masked[~pad], plain[~pad])
    assert (plain[pad] != 0).all()  # the noise itself is not zero there


def test_loss_weight_known_values():
    sigma = torch.tensor([0.5, 1.0, 2.0])
    # edm: (sigma^2 + sd^2) / (sigma * sd)^2
    torch.testing.assert_close(loss_weight(sigma, "edm"), torch.tensor([5.0, 2.0, 1.25]))
    torch.testing.assert_close(loss_weight(sigma, "edm", sigma_data=0.5),
                               torch.tensor([8.0, 5.0, 4.25]))
    # snr = sd^2 / sigma^2 (normalised by 1/sd^2, i.e. 1/sigma^2)
    torch.testing.assert_close(loss_weight(sigma, "snr"), torch.tensor([4.0, 1.0, 0.25]))
    torch.testing.assert_close(loss_weight(sigma, "snr", sigma_data=0.5), torch.tensor([4.0, 1.0, 0.25]))
    # min_snr = min(SNR, gamma)
    torch.testing.assert_close(loss_weight(sigma, "min_snr", gamma=2.0), torch.tensor([2.0, 1.0, 0.25]))
    torch.testing.assert_close(loss_weight(sigma, "min_snr"), torch.tensor([4.0, 1.0, 0.25]))  # gamma = 5
    torch.testing.assert_close(loss_weight(torch.tensor([0.1]), "min_snr"), torch.tensor([5.0]))
    # with sigma_data = 0.5: SNR = 0.25 / sigma^2 = [1, 0.25, 0.0625]; min(SNR, 0.5) / 0.25
    torch.testing.assert_close(loss_weight(sigma, "min_snr", sigma_data=0.5, gamma=0.5),
                               torch.tensor([2.0, 1.0, 0.25]))
    torch.testing.assert_close(loss_weight(sigma, "uniform"), torch.ones(3))


def test_edm_weight_gives_unit_weight_on_edm_target():
    # lambda(sigma) * c_out(sigma)^2 = 1 (Karras et al. 2022, eq. 8 with the table-1 c_out)
    sigma = torch.tensor([0.01, 0.3, 1.0, 7.0, 80.0], dtype=torch.float64)
    for sd in (0.5, 1.0):
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        torch.testing.assert_close(loss_weight(sigma, "edm", sigma_data=sd) * c_out**2, torch.ones(5, dtype=torch.float64))


def test_unknown_weighting():
    assert set(WEIGHTINGS) == {"edm", "min_snr", "snr", "uniform"}
    with pytest.raises(ValueError, match="unknown loss weighting 'p2'.*min_snr"):
        loss_weight(torch.ones(2), "p2")


def test_masked_mean_values():
    err = torch.arange(12.0).reshape(2, 1, 6)
    mask = torch.tensor([[[1, 1, 1, 0, 0, 0]], [[1, 1, 1, 1, 1, 1]]], dtype=torch.float32)
    torch.testing.assert_close(masked_mean(err, mask), torch.tensor([1.0, 8.5]))
    torch.testing.assert_close(masked_mean(err, None), torch.tensor([2.5, 8.5]))
    # a mask broadcast over channels
    err2 = torch.cat([err, 10 * err], dim=1)
    torch.testing.assert_close(masked_mean(err2, mask), torch.tensor([(3 + 30) / 6, (51 + 510) / 12]))
    # an all-padding sample gives 0, not nan
    torch.testing.assert_close(masked_mean(err, torch.zeros_like(mask)), torch.zeros(2))


def _linear_D(x, sigma, **cond):
    out = 0.7 * x + 0.1
    mask = cond.get("mask")
    return out * mask if mask is not None else out


@pytest.mark.parametrize("weighting", ["edm", "min_snr", "snr", "uniform"])
def test_denoising_loss_ignores_padding(weighting):
    x0, noise, mask, g = _padded_batch(1)
    sigma = torch.tensor([0.3, 1.0, 4.0])
    base = denoising_loss(_linear_D, x0, sigma, noise, {"mask": mask}, weighting=weighting)
    pad = (mask == 0).expand_as(x0)
    x0b, noiseb = x0.clone(), noise.clone()
    x0b[pad] = 100 * torch.randn(int(pad.sum()), generator=g)
    noiseb[pad] = 100 * torch.randn(int(pad.sum()), generator=g)
    other = denoising_loss(_linear_D, x0b, sigma, noiseb, {"mask": mask}, weighting=weighting)
    assert base.shape == (3,)
    torch.testing.assert_close(other, base)
    # ... while changing a real element does change it
    x0c = x0.clone()
    x0c[1, 0, 0] += 1.0
    changed = denoising_loss(_linear_D, x0c, sigma, noise, {"mask": mask}, weighting=weighting)
    assert changed[1] != base[1]
    torch.testing.assert_close(changed[[0, 2]], base[[0, 2]])


def test_denoising_loss_value():
    x0, noise, mask, _ = _padded_batch(2)
    sigma = torch.tensor([0.5, 1.0, 2.0])
    x = (x0 + sigma[:, None, None] * noise) * mask
    err = ((0.7 * x + 0.1) * mask - x0) ** 2
    m = mask.expand_as(err)
    per = (err * m).sum(dim=(1, 2)) / m.sum(dim=(1, 2))
    loss = denoising_loss(_linear_D, x0, sigma, noise, {"mask": mask}, weighting="edm")
    torch.testing.assert_close(loss, torch.tensor([5.0, 2.0, 1.25]) * per)


@pytest.mark.parametrize("weighting", ["edm", "min_snr", "snr", "uniform"])
def test_denoising_loss_zero_for_perfect_denoiser(weighting):
    x0, noise, mask, _ = _padded_batch(3)
    sigma = torch.tensor([0.01, 1.0, 80.0])

    def perfect(x, s, **cond):
        assert torch.equal(s, sigma)
        return x - s[:, None, None] * noise * cond["mask"]

    loss = denoising_loss(perfect, x0, sigma, noise, {"mask": mask}, weighting=weighting)
    torch.testing.assert_close(loss, torch.zeros(3), atol=1e-8, rtol=0)
    # a denoiser that is off by 0.1 everywhere has a mean squared error of 0.01
    off = denoising_loss(lambda x, s, **c: (perfect(x, s, **c) + 0.1) * c["mask"], x0, sigma, noise,
                         {"mask": mask}, weighting=weighting)
    torch.testing.assert_close(off, 0.01 * loss_weight(sigma, weighting), rtol=1e-3, atol=0)


# ------------------------------------------------------------------------------------------------
# training noise distributions
# ------------------------------------------------------------------------------------------------
N = 100_000


def _draw(fn, **kw):
    s = fn(N, generator=torch.Generator().manual_seed(11), **kw).double()
    assert s.shape == (N,)
    assert torch.isfinite(s).all() and (s > 0).all()
    return s


@pytest.mark.parametrize("p_mean,p_std", [(-1.2, 1.2), (0.5, 0.3)])
def test_lognormal_statistics(p_mean, p_std):
    ls = _draw(S.sample_lognormal, p_mean=p_mean, p_std=p_std).log()
    # standard errors: p_std / sqrt(N) for the mean, ~p_std / sqrt(2N) for the std
    assert abs(ls.mean().item() - p_mean) < 5 * p_std / math.sqrt(N)
    assert abs(ls.std().item() - p_std) < 5 * p_std / math.sqrt(2 * N)


def test_lognormal_defaults_are_edm():
    ls = _draw(S.sample_lognormal).log()
    assert abs(ls.mean().item() + 1.2) < 0.02 and abs(ls.std().item() - 1.2) < 0.02


def test_loguniform_statistics():
    lo, hi = 0.01, 50.0
    ls = _draw(S.sample_loguniform, sigma_min=lo, sigma_max=hi).log()
    a, b = math.log(lo), math.log(hi)
    assert ls.min().item() >= a - 1e-5 and ls.max().item() <= b + 1e-5
    assert abs(ls.mean().item() - (a + b) / 2) < 5 * (b - a) / math.sqrt(12 * N)
    assert abs(ls.var().item() - (b - a) ** 2 / 12) < 0.02 * (b - a) ** 2 / 12
    # uniform in log: a quarter of the draws in each quarter of [a, b]
    counts = torch.histc(ls, bins=4, min=a, max=b)
    assert (abs(counts / N - 0.25) < 0.01).all()


def test_vp_linear_distribution():
    s = _draw(S.sample_vp_linear)
    # sigma(t) is increasing in t with t ~ U(eps_t, 1): P(sigma <= sigma(q)) = q
    for q in (0.1, 0.5, 0.9):
        sq = S.vp_linear_sigma(torch.tensor(q, dtype=torch.float64)).item()
        assert abs((s <= sq).double().mean().item() - q) < 0.01
    assert s.max().item() <= S.vp_linear_sigma(torch.tensor(1.0)).item() * (1 + 1e-5)


def test_vp_cosine_distribution():
    t_max = 0.9946
    s = _draw(S.sample_vp_cosine, t_max=t_max)
    for q in (0.1, 0.5, 0.9):
        t = 1e-5 + q * (t_max - 1e-5)
        sq = S.cosine_sigma(torch.tensor(t, dtype=torch.float64)).item()
        assert abs((s <= sq).double().mean().item() - q) < 0.01
    assert s.max().item() <= S.cosine_sigma(torch.tensor(t_max, dtype=torch.float64)).item() * (1 + 1e-4)


def test_vp_sigma_functions_known_values():
    # linear VP-SDE: alpha_bar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 / 2)
    t = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)
    alpha_bar = torch.exp(-0.1 * t - 0.5 * 19.9 * t**2)
    torch.testing.assert_close(S.vp_linear_sigma(t), ((1 - alpha_bar) / alpha_bar).sqrt())
    # cosine: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t + s) / (1 + s) * pi / 2); alpha_bar(1/2) at s = 0 is 1/2
    torch.testing.assert_close(S.cosine_sigma(torch.tensor([0.5], dtype=torch.float64), s=0.0),
                               torch.tensor([1.0], dtype=torch.float64))


def test_get_training_distribution():
    assert S.get_training_distribution("lognormal") is S.sample_lognormal
    assert set(S.TRAINING_DISTRIBUTIONS) == {"lognormal", "loguniform", "vp_linear", "vp_cosine"}
    with pytest.raises(ValueError, match="unknown training sigma distribution 'normal'"):
        S.get_training_distribution("normal")


def test_distributions_are_reproducible():
    for fn in S.TRAINING_DISTRIBUTIONS.values():
        a = fn(16, generator=torch.Generator().manual_seed(5))
        b = fn(16, generator=torch.Generator().manual_seed(5))
        assert torch.equal(a, b)
