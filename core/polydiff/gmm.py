"""Isotropic Gaussian mixtures with a closed-form denoiser: ground truth for samplers and metrics.

A mixture ``p(x0) = sum_k w_k N(x0; mu_k, s_k^2 I)`` stays a mixture under the forward process
``x_sigma = x0 + sigma * eps``: every component is widened to variance ``v_k = s_k^2 + sigma^2``,

    p_sigma(x) = sum_k w_k N(x; mu_k, v_k I).

Everything a diffusion sampler needs then has a closed form.

* **Responsibilities** ``r_k(x) = w_k N(x; mu_k, v_k I) / p_sigma(x)`` — computed from log densities
  with a softmax, so they stay finite even far from every mean and at tiny sigma.
* **Posterior mean (the ideal denoiser).** Within component k, x0 and x are jointly Gaussian, so
  ``E[x0 | x, k] = mu_k + a_k (x - mu_k)`` with the shrinkage ``a_k = s_k^2 / v_k``. Averaging over k:

      D(x, sigma) = E[x0 | x_sigma = x] = sum_k r_k(x) * (mu_k + a_k (x - mu_k)).

  This is the minimiser of the denoising loss, i.e. what a perfectly trained network would output.
* **Score** ``grad_x log p_sigma(x) = sum_k r_k(x) (mu_k - x) / v_k``, which equals
  ``(D(x, sigma) - x) / sigma^2`` for sigma > 0 (Tweedie's formula) and stays defined at sigma = 0.
* **Log density** ``log p_sigma(x) = logsumexp_k [log w_k - d/2 log(2 pi v_k) - |x - mu_k|^2 / (2 v_k)]``.

The object itself is a denoiser, ``gmm(x, sigma, **cond) -> x0_hat``, so it can be handed to any sampler
in :mod:`polydiff.samplers`. Inputs of any shape ``[n, *event]`` with ``prod(event) == d`` are accepted;
the arithmetic is done in float64 and the result is returned in the input's dtype.
"""
from __future__ import annotations

import math
from typing import Union

import torch

__all__ = ["GaussianMixture"]

Number = Union[float, int]


class GaussianMixture:
    """``sum_k w_k N(mu_k, s_k^2 I)`` in d dimensions.

    Args:
        means: ``[K, d]`` component means.
        stds: ``[K]`` component standard deviations (isotropic, all > 0), or one number for all.
        weights: ``[K]`` non-negative mixture weights (normalised here); uniform when omitted.
    """

    def __init__(self, means, stds, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim == 1:
            means = means[:, None]
        if means.ndim != 2 or means.shape[0] < 1:
            raise ValueError(f"means must have shape [K, d], got {tuple(means.shape)}")
        k = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if stds.ndim == 0:
            stds = stds.expand(k)
        stds = stds.reshape(-1).clone()
        if stds.shape[0] != k:
            raise ValueError(f"stds must have {k} entries, got {stds.shape[0]}")
        if not bool((stds > 0).all()):
            raise ValueError("all component stds must be > 0")
        if weights is None:
            weights = torch.ones(k, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if weights.shape[0] != k:
            raise ValueError(f"weights must have {k} entries, got {weights.shape[0]}")
        if bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError("weights must be non-negative and not all zero")
        self.means = means.contiguous()
        self.stds = stds
        self.weights = weights / weights.sum()
        self._log_w = self.weights.log()  # -inf for zero weights: those components never win
        self._mean_sq = (self.means**2).sum(-1)  # [K]
        self._var0 = self.stds**2

    # ----------------------------------------------------------------------------------------
    # factories
    # ----------------------------------------------------------------------------------------
    @classmethod
    def ring(cls, k: int = 8, radius: float = 2.0, std: float = 0.2) -> "GaussianMixture":
        """k equal-weight components evenly spaced on a circle of the given radius (2-D)."""
        ang = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
        return cls(torch.stack([ang.cos(), ang.sin()], -1) * radius, std)

    @classmethod
    def grid(cls, n: int = 5, spacing: float = 1.0, std: float = 0.05) -> "GaussianMixture":
        """n x n equal-weight components on a square grid centred on the origin (2-D)."""
        c = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * spacing
        gx, gy = torch.meshgrid(c, c, indexing="ij")
        return cls(torch.stack([gx.reshape(-1), gy.reshape(-1)], -1), std)

    @classmethod
    def random(cls, k: int = 10, d: int = 2, scale: float = 2.0, std: float = 0.2, generator=None) -> "GaussianMixture":
        """k components with means drawn from N(0, scale^2 I) in d dimensions and random (Dirichlet) weights."""
        means = torch.randn(k, d, generator=generator, dtype=torch.float64) * scale
        weights = -torch.rand(k, generator=generator, dtype=torch.float64).clamp(min=1e-12).log()
        return cls(means, std, weights)

    @classmethod
    def gaussian(cls, mean, std: float = 1.0) -> "GaussianMixture":
        """A single isotropic Gaussian, whose probability-flow ODE also has a closed-form solution."""
        return cls(torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1), std)

    # ----------------------------------------------------------------------------------------
    # basic properties
    # ----------------------------------------------------------------------------------------
    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def mean(self) -> torch.Tensor:
        """E[x0] = sum_k w_k mu_k."""
        return self.weights @ self.means

    def cov(self) -> torch.Tensor:
        """Cov[x0] = sum_k w_k (s_k^2 I + mu_k mu_k^T) - E[x0] E[x0]^T."""
        m = self.mean()
        second = (self.means.T * self.weights) @ self.means
        second = second + torch.eye(self.dim, dtype=torch.float64) * (self.weights @ self.stds**2)
        return second - torch.outer(m, m)

    def noised(self, sigma: Number) -> "GaussianMixture":
        """The mixture of x_sigma = x0 + sigma * eps (components widened to sqrt(s_k^2 + sigma^2))."""
        return GaussianMixture(self.means, (self.stds**2 + float(sigma) ** 2).sqrt(), self.weights)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, d={self.dim})"

    # ----------------------------------------------------------------------------------------
    # sampling
    # ----------------------------------------------------------------------------------------
    def sample(self, n: int, generator=None, dtype=torch.float32, sigma: Number = 0.0) -> torch.Tensor:
        """n independent draws, ``[n, d]``; with ``sigma > 0`` draws of x_sigma instead of x0."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        std = (self.stds[comp] ** 2 + float(sigma) ** 2).sqrt()
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[comp] + std[:, None] * noise).to(dtype)

    # ----------------------------------------------------------------------------------------
    # closed-form quantities at noise level sigma
    # ----------------------------------------------------------------------------------------
    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        flat = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1) if self.dim == 1 else x.reshape(1, -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"expected items with {self.dim} values, got shape {tuple(x.shape)}")
        return flat.to(torch.float64)

    def _variances(self, sigma, n: int) -> torch.Tensor:
        """v_k = s_k^2 + sigma^2, as ``[1, K]`` when every item shares one sigma, else ``[n, K]``."""
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
        if s.shape[0] not in (1, n):
            raise ValueError(f"sigma must be a number or have {n} entries, got {s.shape[0]}")
        if s.shape[0] > 1 and (s.stride(0) == 0 or bool((s == s[0]).all())):
            s = s[:1]  # the usual case inside a sampler: one noise level for the whole batch
        return self._var0[None, :] + (s * s)[:, None]

    def _log_joint(self, xf: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; mu_k, v_k I) as ``[n, K]``."""
        # |x - mu_k|^2 = |x|^2 + |mu_k|^2 - 2 x.mu_k; float64 keeps the cancellation error far below
        # the variances involved
        sq = torch.addmm((xf * xf).sum(-1, keepdim=True) + self._mean_sq, xf, self.means.T, alpha=-2.0)
        bias = self._log_w - 0.5 * self.dim * (2 * math.pi * v).log()
        return torch.addcmul(bias, sq, v.reciprocal(), value=-0.5)

    def responsibilities(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """Posterior component probabilities r_k(x) at noise level sigma, ``[n, K]`` (float64)."""
        xf = self._flat(x)
        v = self._variances(sigma, xf.shape[0])
        return torch.softmax(self._log_joint(xf, v), dim=-1)

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """The exact posterior mean E[x0 | x_sigma = x] (see the module docstring), same shape/dtype as x."""
        xf = self._flat(x)
        v = self._variances(sigma, xf.shape[0])
        r = torch.softmax(self._log_joint(xf, v), dim=-1)
        ra = r * (self._var0 / v)  # r_k * a_k, a_k = s_k^2 / v_k: shrinkage towards component k's mean
        # sum_k r_k (mu_k + a_k (x - mu_k)) = sum_k (r_k - r_k a_k) mu_k + (sum_k r_k a_k) x
        out = torch.addmm(ra.sum(-1, keepdim=True) * xf, r - ra, self.means)
        return out.reshape(x.shape).to(x.dtype)

    def __call__(self, x: torch.Tensor, sigma, **cond) -> torch.Tensor:
        """Denoiser interface ``D(x, sigma, **cond)``; conditions are ignored except a padding mask."""
        out = self.denoise(x, sigma)
        mask = cond.get("mask")
        return out * mask if mask is not None else out

    def score(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """grad_x log p_sigma(x) = sum_k r_k (mu_k - x) / v_k, same shape/dtype as x."""
        xf = self._flat(x)
        v = self._variances(sigma, xf.shape[0])
        rv = torch.softmax(self._log_joint(xf, v), dim=-1) / v
        out = torch.addmm(-rv.sum(-1, keepdim=True) * xf, rv, self.means)
        return out.reshape(x.shape).to(x.dtype)

    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """log p_sigma(x) for each item, ``[n]`` (float64)."""
        xf = self._flat(x)
        v = self._variances(sigma, xf.shape[0])
        return torch.logsumexp(self._log_joint(xf, v), dim=-1)

    def ode_solution(self, x: torch.Tensor, sigma_from: Number, sigma_to: Number) -> torch.Tensor:
        """Exact probability-flow ODE transport from sigma_from to sigma_to; single-component mixtures only.

        For one Gaussian, dx/dsigma = (x - D(x, sigma)) / sigma is linear and solved by
        ``x(sigma) = mu + (x - mu) * sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_from^2)``.
        """
        if self.n_components != 1:
            raise ValueError("the closed-form ODE solution is only available for a single Gaussian")
        xf = self._flat(x)
        s2 = float(self.stds[0]) ** 2
        ratio = math.sqrt((s2 + float(sigma_to) ** 2) / (s2 + float(sigma_from) ** 2))
        out = self.means[0] + (xf - self.means[0]) * ratio
        return out.reshape(x.shape).to(x.dtype)
