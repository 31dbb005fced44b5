"""Noise levels in sigma-space.

Everything in polydiff uses the variance-exploding convention of Karras et al. 2022
("Elucidating the Design Space of Diffusion-Based Generative Models"): ``x_sigma = x_0 + sigma * eps``.
A variance-preserving (VP) model with cumulative signal ``alpha_bar`` is the same process seen through
``sigma = sqrt((1 - alpha_bar) / alpha_bar)`` and an input scaling ``1 / sqrt(1 + sigma**2)``.

Two kinds of plain functions live here:

* **training distributions** ``sample_*(n, generator=None, ...) -> Tensor[n]`` draw the noise levels a
  training step uses;
* **sampling ladders** ``karras / exponential / vp_linear / cosine(n, ...) -> Tensor[n + 1]`` give the
  decreasing noise levels a sampler walks down; they always end in exactly 0.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "karras", "exponential", "vp_linear", "cosine", "ddpm_discrete", "fitted",
    "sample_lognormal", "sample_vp_linear", "sample_vp_cosine", "sample_loguniform",
    "vp_linear_sigma", "cosine_sigma", "alpha_bar_to_sigma", "sigma_to_alpha_bar",
    "LADDERS", "TRAINING_DISTRIBUTIONS", "get_ladder", "get_training_distribution",
]


def _append_zero(s: torch.Tensor) -> torch.Tensor:
    return torch.cat([s, s.new_zeros(1)])


def _check(n: int, sigma_min: float, sigma_max: float) -> None:
    if int(n) < 1:
        raise ValueError(f"a sigma ladder needs at least 1 step, got {n}")
    if not (0 < sigma_min < sigma_max):
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")


# --------------------------------------------------------------------------------------------
# VP <-> sigma
# --------------------------------------------------------------------------------------------
def alpha_bar_to_sigma(alpha_bar: torch.Tensor) -> torch.Tensor:
    """sigma = sqrt((1 - alpha_bar) / alpha_bar): the VE noise level of a VP marginal."""
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def sigma_to_alpha_bar(sigma: torch.Tensor) -> torch.Tensor:
    """alpha_bar = 1 / (1 + sigma^2): the inverse of :func:`alpha_bar_to_sigma`."""
    return 1.0 / (1.0 + sigma**2)


def vp_linear_sigma(t: torch.Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> torch.Tensor:
    """sigma(t) of the continuous VP-SDE with linear beta(t) (Song et al. 2021), t in (0, 1]."""
    return torch.sqrt(torch.expm1(0.5 * (beta_max - beta_min) * t**2 + beta_min * t))


def cosine_sigma(t: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """sigma(t) of the cosine schedule (Nichol & Dhariwal 2021), t in (0, 1)."""
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    alpha_bar = (f / f0).clamp(min=1e-12, max=1.0)
    return alpha_bar_to_sigma(alpha_bar)


# --------------------------------------------------------------------------------------------
# Sampling ladders: n + 1 values, strictly decreasing, last one exactly 0
# --------------------------------------------------------------------------------------------
def karras(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, device="cpu") -> torch.Tensor:
    """The EDM ladder (Karras et al. 2022, eq. 5): uniform steps in sigma^(1/rho), then 0."""
    _check(n, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + ramp * (lo - hi)) ** rho
    if n == 1:
        sig = torch.tensor([sigma_max], dtype=torch.float64)
    return _append_zero(sig).to(torch.float32).to(device)


def exponential(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, device="cpu") -> torch.Tensor:
    """Uniform steps in log sigma (the 'exponential' ladder), then 0."""
    _check(n, sigma_min, sigma_max)
    sig = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp()
    return _append_zero(sig).to(torch.float32).to(device)


def vp_linear(n: int, beta_min: float = 0.1, beta_max: float = 20.0, eps_t: float = 1e-3, device="cpu") -> torch.Tensor:
    """VP-SDE linear-beta ladder (Song et al. 2021): t uniform from 1 down to eps_t, mapped to sigma, then 0."""
    if int(n) < 1:
        raise ValueError(f"a sigma ladder needs at least 1 step, got {n}")
    t = torch.linspace(1.0, eps_t, n, dtype=torch.float64)
    return _append_zero(vp_linear_sigma(t, beta_min, beta_max)).to(torch.float32).to(device)


def cosine(n: int, s: float = 0.008, t_max: float = 0.9946, eps_t: float = 1e-3, device="cpu") -> torch.Tensor:
    """Cosine-schedule ladder (Nichol & Dhariwal 2021): t uniform from t_max (sigma ~ 119 at the default) down to eps_t, then 0."""
    if int(n) < 1:
        raise ValueError(f"a sigma ladder needs at least 1 step, got {n}")
    t = torch.linspace(t_max, eps_t, n, dtype=torch.float64)
    return _append_zero(cosine_sigma(t, s)).to(torch.float32).to(device)


def ddpm_discrete(n: int, num_train_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                  spacing: str = "trailing", device="cpu") -> torch.Tensor:
    """The discrete DDPM schedule (Ho et al. 2020: linear betas over 1000 steps) subsampled to n steps.

    ``spacing='trailing'`` starts at the last training step (Lin et al. 2024, "Common diffusion noise
    schedules and sample steps are flawed"); ``'leading'`` reproduces the original DDIM spacing.
    """
    if int(n) < 1 or n > num_train_steps:
        raise ValueError(f"need 1 <= n <= {num_train_steps}, got {n}")
    betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float64)
    sig_all = alpha_bar_to_sigma(torch.cumprod(1 - betas, 0))
    if spacing == "trailing":
        # round(num_train_steps * j / n) - 1 for j = n, ..., 1, computed from exact integers: a float-step
        # arange(num_train_steps, 0, -num_train_steps / n) can yield n + 1 values (the extra one rounds to
        # index -1, the noisiest step, appended after the quietest)
        idx = torch.round(torch.arange(n, 0, -1, dtype=torch.float64) * num_train_steps / n).long() - 1
    elif spacing == "leading":
        idx = (torch.arange(0, n, dtype=torch.float64) * (num_train_steps // n)).round().long().flip(0)
    else:
        raise ValueError(f"spacing must be 'trailing' or 'leading', got {spacing!r}")
    return _append_zero(sig_all[idx]).to(torch.float32).to(device)


def fitted(n: int, sigmas=None, device="cpu") -> torch.Tensor:
    """A ladder fitted to one model (:func:`polydiff.tuning.fit_ladder`; a bundle stores its levels as
    ``schedule_args.sigmas``), then 0. ``n`` equal to the number of stored levels gives them exactly; any
    other ``n`` interpolates log sigma linearly over the stored levels' positions (as Sabour et al. 2024,
    "Align Your Steps", carry a fitted schedule to other step counts)."""
    if int(n) < 1:
        raise ValueError(f"a sigma ladder needs at least 1 step, got {n}")
    if sigmas is None:
        raise ValueError("the 'fitted' ladder needs its levels (schedule_args.sigmas): fit one with "
                         "polydiff.tuning.fit_ladder or `polydiff ladder`")
    knots = torch.as_tensor([float(v) for v in sigmas], dtype=torch.float64)
    if len(knots) and knots[-1] == 0:
        knots = knots[:-1]  # a ladder's final 0 may be stored with its levels
    if len(knots) < 2 or not bool((knots[1:] < knots[:-1]).all()) or not bool((knots > 0).all()):
        raise ValueError(f"fitted ladder levels must be at least two strictly decreasing positive values, got {list(sigmas)}")
    n = int(n)
    if n == len(knots):
        sig = knots
    elif n == 1:
        sig = knots[:1]
    else:
        pos = torch.linspace(0, 1, len(knots), dtype=torch.float64)
        t = torch.linspace(0, 1, n, dtype=torch.float64)
        log_k = knots.log()
        j = torch.searchsorted(pos, t, right=True).clamp(1, len(knots) - 1)
        w = (t - pos[j - 1]) / (pos[j] - pos[j - 1])
        sig = (log_k[j - 1] + w * (log_k[j] - log_k[j - 1])).exp()
    return _append_zero(sig).to(torch.float32).to(device)


LADDERS = {"karras": karras, "exponential": exponential, "vp_linear": vp_linear, "cosine": cosine,
           "ddpm_discrete": ddpm_discrete, "fitted": fitted}


def get_ladder(name: str):
    """Look up a sampling ladder by name; unknown names raise a ValueError listing the known ones."""
    from . import plugins
    from .errors import UnknownName

    table = plugins.registry().schedules
    if name not in table:
        raise UnknownName(f"unknown sigma schedule {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


# --------------------------------------------------------------------------------------------
# Training distributions: Tensor[n] of noise levels
# --------------------------------------------------------------------------------------------
def sample_lognormal(n: int, p_mean: float = -1.2, p_std: float = 1.2, generator=None, device="cpu") -> torch.Tensor:
    """EDM training noise: ln(sigma) ~ N(p_mean, p_std^2) (Karras et al. 2022, sec. 5)."""
    return (torch.randn(n, generator=generator, device=device) * p_std + p_mean).exp()


def sample_loguniform(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, generator=None, device="cpu") -> torch.Tensor:
    """ln(sigma) uniform between ln(sigma_min) and ln(sigma_max)."""
    u = torch.rand(n, generator=generator, device=device)
    return (math.log(sigma_min) + u * (math.log(sigma_max) - math.log(sigma_min))).exp()


def sample_vp_linear(n: int, beta_min: float = 0.1, beta_max: float = 20.0, eps_t: float = 1e-5,
                     generator=None, device="cpu") -> torch.Tensor:
    """VP training noise: t ~ U(eps_t, 1) mapped through the linear-beta VP-SDE (Song et al. 2021)."""
    t = torch.rand(n, generator=generator, device=device) * (1 - eps_t) + eps_t
    return vp_linear_sigma(t, beta_min, beta_max)


def sample_vp_cosine(n: int, s: float = 0.008, eps_t: float = 1e-5, t_max: float = 0.9946,
                     generator=None, device="cpu") -> torch.Tensor:
    """Cosine-schedule training noise: t ~ U(eps_t, t_max) mapped through the cosine schedule (Nichol & Dhariwal 2021)."""
    t = torch.rand(n, generator=generator, device=device) * (t_max - eps_t) + eps_t
    return cosine_sigma(t, s)


TRAINING_DISTRIBUTIONS = {"lognormal": sample_lognormal, "loguniform": sample_loguniform,
                          "vp_linear": sample_vp_linear, "vp_cosine": sample_vp_cosine}


def get_training_distribution(name: str):
    """Look up a training noise distribution by name."""
    if name not in TRAINING_DISTRIBUTIONS:
        raise ValueError(f"unknown training sigma distribution {name!r}; known: {', '.join(sorted(TRAINING_DISTRIBUTIONS))}")
    return TRAINING_DISTRIBUTIONS[name]
