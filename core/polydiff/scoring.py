"""Modality-agnostic anomaly scores from any trained model: how hard is this input to denoise?

A scorer is ``fn(model, x, cond, *, generator=None, **options) -> Tensor[batch]``, higher = more
anomalous, where ``model`` is a :class:`polydiff.model.Model` and (x, cond) come from its encoder.

* :func:`elbo` — the denoising error averaged over a fixed grid of noise levels, weighted as in the
  diffusion ELBO (Ho et al. 2020; Kingma et al. 2021): ``mean_sigma ||D(x + sigma*eps, sigma) - x||^2 / sigma^2``
  on log-spaced sigmas. One network evaluation per row and noise level.
* :func:`reconstruction` — noise each row to a few levels, run a short deterministic sampler back to
  sigma = 0 (SDEdit, Meng et al. 2022) and measure the reconstruction error (Graham et al. 2023 use the
  same idea for images).

Both use fixed, seeded noise, so a row's score does not depend on the other rows of its batch; run them
through :func:`rowwise` and it does not depend on them bit for bit either.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from .errors import PolydiffError

from .noising import add_noise, masked_mean
from .schedules import karras

__all__ = ["elbo", "reconstruction", "fixed_noise", "rowwise"]


def rowwise(fn, x: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """``fn`` (rows -> one value per row) over blocks of exactly ``block`` rows, the last one zero-padded.

    A matrix product may run another kernel for another number of rows, and round differently in the last
    bits; with every call the same shape, a row's value does not depend on which rows, or how many, were
    scored with it. Same rows, same bytes, in one process or split across workers."""
    n = len(x)
    if n == 0:
        return fn(x[:0])
    out = []
    for i in range(0, n, block):
        part = x[i:i + block]
        m = len(part)
        if m < block:
            part = torch.cat([part, part.new_zeros((block - m,) + tuple(x.shape[1:]))])
        out.append(fn(part)[:m])
    return torch.cat(out)


def fixed_noise(shape, seed: int, device, dtype) -> torch.Tensor:
    """Noise that depends only on ``seed`` and ``shape`` (so scores are reproducible row by row)."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g).to(device=device, dtype=dtype)


def _sigma_grid(model, n: int, lo: Optional[float], hi: Optional[float]) -> torch.Tensor:
    sd = float(model.config.get("sigma_data", 1.0))
    lo = lo if lo is not None else 0.02 * sd
    hi = hi if hi is not None else 5.0 * sd
    return torch.logspace(math.log10(lo), math.log10(hi), n)


@torch.no_grad()
def elbo(model, x: torch.Tensor, cond: Optional[dict] = None, *, n_sigmas: int = 16, sigma_min: Optional[float] = None,
         sigma_max: Optional[float] = None, seed: int = 0, generator=None) -> torch.Tensor:
    """ELBO-style score: SNR-weighted denoising error averaged over ``n_sigmas`` log-spaced noise levels.
    For categorical data, the negative ELBO in nats per token over ``n_sigmas`` levels
    (:func:`polydiff.discrete.elbo`)."""
    cond = cond or {}
    if getattr(model, "categorical", False):
        from .discrete import elbo as categorical_elbo

        return categorical_elbo(model.denoiser, model.denoiser.process, x, cond, n_levels=n_sigmas, seed=seed)
    from .embedding import embed, lift_cond, spec_of

    if spec_of(model.config) is not None:  # tokens: score their embeddings
        cond = lift_cond(cond, x.ndim)
        x = embed(model.net, x)
    mask = cond.get("mask")
    D = model.denoiser
    total = torch.zeros(x.shape[0], device=x.device)
    for j, s in enumerate(_sigma_grid(model, n_sigmas, sigma_min, sigma_max).tolist()):
        sig = torch.full((x.shape[0],), s, device=x.device, dtype=x.dtype)
        noise = fixed_noise(x.shape[1:], seed * 1000 + j, x.device, x.dtype).expand_as(x)
        err = (D(add_noise(x, sig, noise, mask), sig, **cond) - x) ** 2
        total += masked_mean(err, mask).float() / s**2
    return total / n_sigmas


@torch.no_grad()
def reconstruction(model, x: torch.Tensor, cond: Optional[dict] = None, *, levels: Sequence[float] = (0.1, 0.3, 1.0),
                   steps: int = 4, seed: int = 0, generator=None) -> torch.Tensor:
    """Reconstruction score: noise to each level (times sigma_data), denoise with ``steps`` Euler steps, error."""
    from .samplers import euler

    if getattr(model, "categorical", False):
        raise PolydiffError("the reconstruction score works on continuous data; use elbo for categorical data")
    cond = cond or {}
    mask = cond.get("mask")
    sd = float(model.config.get("sigma_data", 1.0))
    D = model.denoiser
    total = torch.zeros(x.shape[0], device=x.device)
    for j, lvl in enumerate(levels):
        s = lvl * sd
        sigmas = karras(steps, sigma_min=min(0.002, s / 2), sigma_max=s).to(x.device)
        noise = fixed_noise(x.shape[1:], seed * 1000 + j, x.device, x.dtype).expand_as(x)
        xs = add_noise(x, torch.full((x.shape[0],), s, device=x.device, dtype=x.dtype), noise, mask)
        rec = euler(D, xs, sigmas, cond=cond)
        total += masked_mean((rec - x) ** 2, mask).float()
    return total / len(levels)
