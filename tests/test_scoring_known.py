"""The model scorers on a data distribution whose ideal denoiser is known in closed form.

For Gaussian data N(0, s^2 I) the ideal denoiser is D(x, sigma) = a x with a = s^2 / (s^2 + sigma^2), so the
ELBO-style score of a row is exactly mean_j |(a_j - 1) x + a_j sigma_j eps_j|^2 / (d sigma_j^2) over the
scorer's noise levels and its fixed noise: computed here by hand and compared. Both scorers then rank the
rows of a Gaussian mixture like its true negative log-density."""
from __future__ import annotations

import math

import torch

from polydiff import scoring
from polydiff.gmm import GaussianMixture


class _Exact:
    """What the scorers use of a Model: ``denoiser`` and ``config``."""

    def __init__(self, denoiser, sigma_data=1.0):
        self.denoiser = denoiser
        self.config = {"sigma_data": sigma_data}


def _spearman(a, b):
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def test_elbo_equals_its_closed_form_for_gaussian_data():
    s, d = 0.7, 3
    model = _Exact(lambda x, sigma, **_: x * (s**2 / (s**2 + sigma[:, None] ** 2)), sigma_data=s)
    x = torch.randn(50, d, generator=torch.Generator().manual_seed(0)) * 2
    got = scoring.elbo(model, x, n_sigmas=8, seed=3)
    want = torch.zeros(50, dtype=torch.float64)
    sigmas = torch.logspace(math.log10(0.02 * s), math.log10(5.0 * s), 8).tolist()
    for j, sig in enumerate(sigmas):
        eps = scoring.fixed_noise((d,), 3 * 1000 + j, x.device, x.dtype).double()
        a = s**2 / (s**2 + sig**2)
        err = ((a - 1) * x.double() + a * sig * eps) ** 2
        want += err.mean(1) / sig**2
    torch.testing.assert_close(got.double(), want / 8, rtol=1e-4, atol=1e-6)


def test_scores_rank_rows_like_the_true_density():
    gmm = GaussianMixture([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], [0.3, 0.5, 0.2], [0.5, 0.3, 0.2])
    g = torch.Generator().manual_seed(1)
    x = torch.cat([gmm.sample(300, generator=g), torch.rand(60, 2, generator=g) * 10 - 5])
    nll = -gmm.log_prob(x.double())
    model = _Exact(gmm, sigma_data=1.0)
    assert _spearman(scoring.elbo(model, x, n_sigmas=24), nll) > 0.9
    assert _spearman(scoring.reconstruction(model, x, steps=8), nll) > 0.8
