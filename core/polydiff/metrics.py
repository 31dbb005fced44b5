"""Distances between sample sets, shared by every modality's benchmarks.

* :func:`sliced_wasserstein` — the sliced Wasserstein-2 distance between two point clouds: project both
  onto random unit directions, take the exact 1-D Wasserstein-2 distance along each (by sorting), and
  combine them as ``sqrt(mean over directions of W2^2)``. Works directly on raw samples of any dimension.
* :func:`frechet_distance` — the Fréchet distance between Gaussians fitted to two feature sets
  (the quantity behind FID, Heusel et al. 2017): ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))``.
* :func:`fit_gaussian` — mean and covariance of a feature set.

Inputs may be torch tensors or numpy arrays of shape ``[n, ...]``; everything after the first axis is
flattened into one feature vector. All arithmetic is float64.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

__all__ = ["sliced_wasserstein", "wasserstein_1d", "unit_directions", "frechet_distance", "frechet_distance_from_stats", "fit_gaussian"]


def _as_2d(a) -> torch.Tensor:
    t = a.detach() if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    t = t.to(device="cpu", dtype=torch.float64)
    if t.ndim == 0:
        raise ValueError("expected a set of samples [n, ...], got a scalar")
    if t.ndim == 1:
        t = t[:, None]
    t = t.reshape(t.shape[0], -1)
    if t.shape[0] < 1:
        raise ValueError("expected at least one sample")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("samples contain NaN or infinite values")
    return t


def wasserstein_1d(u, v, p: int = 2) -> np.ndarray:
    """Exact W_p^p between the empirical distributions in each row of ``u`` [P, n] and ``v`` [P, m].

    In 1-D the optimal coupling matches quantiles, so ``W_p^p = int_0^1 |F_u^-1(t) - F_v^-1(t)|^p dt``.
    Both empirical quantile functions are step functions, constant between the breakpoints ``i / n``
    and ``j / m``; on the merged set of breakpoints the integral is a finite sum, which is exact for any
    pair of sizes (for n == m it reduces to the mean of ``|u_(i) - v_(i)|^p`` over sorted values).
    Accepts numpy arrays or tensors (1-D inputs are one row); returns ``[P]`` values of W_p^p (float64).
    """
    u = np.sort(np.atleast_2d(np.asarray(u, dtype=np.float64)), axis=-1)
    v = np.sort(np.atleast_2d(np.asarray(v, dtype=np.float64)), axis=-1)
    n, m = u.shape[-1], v.shape[-1]
    if n == m:
        return (np.abs(u - v) ** p).mean(-1)
    # breakpoints of both step functions, as integers: i/n = i*m / (n*m) and j/m = j*n / (n*m)
    ticks = np.union1d(np.arange(1, n + 1) * m, np.arange(1, m + 1) * n)  # sorted, ends at n*m
    lo = np.concatenate([[0], ticks[:-1]])
    widths = (ticks - lo) / (n * m)
    # on (lo, tick] the u-quantile is the value of rank ceil(t * n), i.e. index lo // m; likewise for v
    return (np.abs(u[:, lo // m] - v[:, lo // n]) ** p * widths).sum(-1)


def unit_directions(n: int, d: int, generator=None) -> torch.Tensor:
    """``n`` directions drawn uniformly on the unit sphere of ``R^d`` from ``generator`` (float64, [n, d])."""
    dirs = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return dirs / dirs.norm(dim=1, keepdim=True).clamp(min=1e-12)


def sliced_wasserstein(a, b, n_projections: int = 256, generator=None, p: int = 2) -> float:
    """Sliced Wasserstein-p distance (p = 2 by default) between sample sets ``a`` [n, ...] and ``b`` [m, ...].

    ``SW_p = (mean over random unit directions theta of W_p^p(theta . a, theta . b))^(1/p)``, with the
    directions drawn uniformly on the sphere from ``generator`` (a fixed seed gives a reproducible value
    and the same directions for every comparison) and each 1-D distance computed exactly by sorting
    (see :func:`wasserstein_1d`; sets of different sizes are compared through their quantile
    functions). The value is in the units of the data. For 1-D data the single direction is used and
    the result is the exact W_p.
    """
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    a, b = _as_2d(a), _as_2d(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"sample sets have different dimensions: {a.shape[1]} vs {b.shape[1]}")
    d = a.shape[1]
    if d == 1:
        dirs = torch.ones(1, 1, dtype=torch.float64)
    else:
        if n_projections < 1:
            raise ValueError(f"n_projections must be >= 1, got {n_projections}")
        dirs = unit_directions(n_projections, d, generator)
    dirs = dirs.numpy()
    wp = wasserstein_1d(dirs @ a.numpy().T, dirs @ b.numpy().T, p=p)
    return float(wp.mean() ** (1.0 / p))


def fit_gaussian(feats) -> Tuple[np.ndarray, np.ndarray]:
    """Mean ``[d]`` and unbiased covariance ``[d, d]`` (float64 numpy) of features ``[n, ...]``, n >= 2."""
    f = _as_2d(feats).numpy()
    if f.shape[0] < 2:
        raise ValueError("fitting a Gaussian needs at least 2 samples")
    mu = f.mean(0)
    centred = f - mu
    cov = centred.T @ centred / (f.shape[0] - 1)
    return mu, cov


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b):
    ``|mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^(1/2))`` (FID's and FCD's formula).

    ``tr((C_a C_b)^(1/2))`` is the sum of the square roots of the eigenvalues of the symmetric matrix
    ``C_a^(1/2) C_b C_a^(1/2)``, which has the eigenvalues of ``C_a C_b``; both come from symmetric
    eigendecompositions with round-off negatives clipped to 0. Unlike a general matrix square root of the
    non-symmetric product this is real for singular covariances (fewer samples than dimensions) and needs no
    regularisation. The one implementation every benchmark and metric of polydiff uses.
    """
    mu_a, mu_b = np.atleast_1d(np.asarray(mu_a, np.float64)), np.atleast_1d(np.asarray(mu_b, np.float64))
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, np.float64)), np.atleast_2d(np.asarray(cov_b, np.float64))
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (mu_a.size, mu_a.size):
        raise ValueError(f"mean and covariance shapes do not match: {mu_a.shape} {cov_a.shape} vs "
                         f"{mu_b.shape} {cov_b.shape}")
    cov_a, cov_b = (cov_a + cov_a.T) / 2, (cov_b + cov_b.T) / 2
    ra = _psd_sqrt(cov_a)
    m = ra @ cov_b @ ra
    cross = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross
    return float(max(value, 0.0))


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted (:func:`fit_gaussian`) to two feature sets ``[n, ...]``.

    This is the squared 2-Wasserstein distance between the two fitted Gaussians (FID's formula).
    """
    mu_a, cov_a = fit_gaussian(feats_a)
    mu_b, cov_b = fit_gaussian(feats_b)
    return frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b)
