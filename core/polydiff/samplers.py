"""Samplers: plain functions that walk a denoiser down a sigma ladder.

Every sampler has the signature ::

    fn(D, x, sigmas, *, cond=None, generator=None, callback=None, **options) -> x

* ``D(x, sigma, **cond) -> x0_hat`` is a denoiser (see :mod:`polydiff.precond`); ``sigma`` is passed as
  a 1-D tensor of shape [batch]. Every item of a sampler's batch has the same noise level, and the
  samplers say so in the tensor's form: a 0-stride view of one value (``sigma.expand(batch)``). That form is
  part of the denoiser contract: the adapters read such a sigma as one number and compute their scalings
  once (the fast path of :mod:`polydiff.precond`), and a wrapper that grows the batch keeps the form
  (:func:`polydiff.precond.repeat_sigma`, as classifier-free guidance does); per-item sigmas (training,
  scoring) are an ordinary tensor and take the general path.
* ``x`` is the starting point, already at noise level ``sigmas[0]`` (usually ``sigmas[0] * randn``).
* ``sigmas`` is a decreasing 1-D ladder of n + 1 values; when it ends in 0 the last step returns the
  denoiser's estimate, so the result lands exactly on sigma = 0.
* ``cond`` is passed to D on every call; a padding mask ``cond["mask"]`` also masks the fresh noise of
  stochastic samplers.
* ``generator`` drives the fresh noise of stochastic samplers (ddpm, ddim with eta > 0).
* ``callback(info)`` is called after every step with a dict: ``i``, ``x`` (the new state), ``sigma``,
  ``sigma_next``, ``denoised`` (the x0 estimate used in the step).

There is no hidden per-step state: a sampler's only memory is local to one call.
The samplers follow the formulations in k-diffusion (Crowson) and the cited papers; all of them
work in sigma-space, where ``x_sigma = x0 + sigma * eps``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

__all__ = ["euler", "heun", "ddim", "ddpm", "dpmpp_2m", "unipc", "SAMPLERS", "ancestral_step", "euler_step",
           "trapezoid_step"]


def _prep(x: torch.Tensor, sigmas: torch.Tensor):
    """Python floats of the ladder and a [steps+1, batch] view of it (no allocation per step)."""
    sig = sigmas.to(device=x.device, dtype=x.dtype)
    return sig.tolist(), sig[:, None].expand(-1, x.shape[0])


def _noise(x: torch.Tensor, generator, cond) -> torch.Tensor:
    n = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    mask = cond.get("mask") if cond else None
    return n * mask if mask is not None else n


def _lincomb(*terms) -> torch.Tensor:
    """sum(c * t for c, t in terms) with one full-size operation per term (c: Python float, t: tensor)."""
    (c0, t0), *rest = terms
    out = t0 * c0
    for c, t in rest:
        out.add_(t, alpha=c)
    return out


# The two ODE steps below are the samplers' only speed tricks: each is the paper's formula, rearranged so
# that it costs one fused tensor operation per input (tests/test_samplers.py checks them against the
# formulas as written).
def euler_step(x: torch.Tensor, den: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One Euler step of dx/dsigma = (x - den) / sigma: ``x + (sigma_next - sigma) * (x - den) / sigma``,
    computed as ``lerp(den, x, sigma_next / sigma)`` (the same value, one operation)."""
    return torch.lerp(den, x, sigma_next / sigma)


def trapezoid_step(x: torch.Tensor, den: torch.Tensor, den2: torch.Tensor, sigma: float,
                   sigma_next: float) -> torch.Tensor:
    """Heun's corrector: ``x + (d + d2) / 2 * dt`` with ``d = (x - den) / sigma``, ``dt = sigma_next - sigma``,
    ``d2 = (x2 - den2) / sigma_next`` and ``x2`` the Euler predictor ``x + d * dt``. Substituting ``x2``
    makes it a weighted sum of ``x``, ``den`` and ``den2`` whose weights sum to 1, computed in three
    operations."""
    dt = sigma_next - sigma
    w_den2 = -dt / (2 * sigma_next)
    w_den = dt / (2 * sigma_next) - dt / sigma
    return _lincomb((sigma_next / sigma, x), (w_den, den), (w_den2, den2))


def euler(D: Callable, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Optional[dict] = None,
          generator=None, callback=None) -> torch.Tensor:
    """Euler's method on the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma.

    Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models", Alg. 1
    without the correction step. Identical to DDIM with eta = 0 (Song et al. 2021) in sigma-space.
    """
    cond = cond or {}
    s, sb = _prep(x, sigmas)
    for i in range(len(s) - 1):
        den = D(x, sb[i], **cond)
        x = euler_step(x, den, s[i], s[i + 1])
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s[i], "sigma_next": s[i + 1], "denoised": den})
    return x


def heun(D: Callable, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Optional[dict] = None,
         generator=None, callback=None) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 1): Euler plus a trapezoidal correction.

    Two network evaluations per step except the last one onto sigma = 0, which is a plain Euler step.
    """
    cond = cond or {}
    s, sb = _prep(x, sigmas)
    for i in range(len(s) - 1):
        den = D(x, sb[i], **cond)
        if s[i + 1] == 0:  # the last step onto sigma = 0 is Euler's, which lands on the estimate
            x = den
        else:
            x2 = euler_step(x, den, s[i], s[i + 1])  # predictor
            den2 = D(x2, sb[i + 1], **cond)
            x = trapezoid_step(x, den, den2, s[i], s[i + 1])  # corrector: the mean of both slopes
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s[i], "sigma_next": s[i + 1], "denoised": den})
    return x


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0):
    """Split a step from sigma to sigma_next into a deterministic part (sigma_down) and fresh noise (sigma_up).

    sigma_up = eta * sigma_next * sqrt(sigma^2 - sigma_next^2) / sigma is DDIM's sigma_t(eta) (Song et al.
    2021, eq. 16) rewritten in sigma-space; eta = 1 gives the DDPM posterior (Ho et al. 2020).
    """
    if sigma_next == 0 or eta == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(max(sigma_next**2 * (sigma**2 - sigma_next**2), 0.0)) / sigma)
    down = math.sqrt(max(sigma_next**2 - up**2, 0.0))
    return down, up


def ddim(D: Callable, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Optional[dict] = None,
         generator=None, callback=None, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models"), eq. 12 in sigma-space.

    ``eta = 0`` is deterministic (and equals :func:`euler`); ``eta = 1`` is ancestral DDPM sampling.
    """
    cond = cond or {}
    s, sb = _prep(x, sigmas)
    for i in range(len(s) - 1):
        den = D(x, sb[i], **cond)
        down, up = ancestral_step(s[i], s[i + 1], eta)
        x = torch.lerp(den, x, down / s[i])
        if up > 0:
            x.add_(_noise(x, generator, cond), alpha=up)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s[i], "sigma_next": s[i + 1], "denoised": den})
    return x


def ddpm(D: Callable, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Optional[dict] = None,
         generator=None, callback=None) -> torch.Tensor:
    """Ancestral sampling from the DDPM posterior q(x_{t-1} | x_t, x0_hat) (Ho et al. 2020, Algorithm 2).

    In sigma-space this is :func:`ddim` with eta = 1.
    """
    return ddim(D, x, sigmas, cond=cond, generator=generator, callback=callback, eta=1.0)


def dpmpp_2m(D: Callable, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Optional[dict] = None,
             generator=None, callback=None) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep solver in data prediction.

    Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
    Algorithm 2, with time variable lambda = -log(sigma). The first step and the step onto sigma = 0 are
    first order.
    """
    cond = cond or {}
    s, sb = _prep(x, sigmas)
    old_den, h_last = None, None
    for i in range(len(s) - 1):
        den = D(x, sb[i], **cond)
        if s[i + 1] == 0:
            x = den
        else:
            h = math.log(s[i] / s[i + 1])
            if old_den is None:
                den_d = den
            else:
                r = h_last / h
                den_d = torch.lerp(den, old_den, -1 / (2 * r))  # (1 + 1/2r) den - 1/2r old_den
            x = torch.lerp(den_d, x, s[i + 1] / s[i])
            h_last = h
        old_den = den
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s[i], "sigma_next": s[i + 1], "denoised": den})
    return x


def _unipc_coeffs(rks: list, hh: float, order: int):
    """R matrix and b vector of UniPC's B(h) = expm1(h) ('bh2') variant, data prediction."""
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = math.expm1(hh)
    fact = 1
    R, b = [], []
    for k in range(1, order + 1):
        R.append([r ** (k - 1) for r in rks])
        b.append(h_phi_k * fact / b_h)
        fact *= k + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    return h_phi_1, b_h, R, b


def _solve(R, b):
    """Solve the small (at most 3 x 3) system R w = b: Gaussian elimination with partial pivoting."""
    n = len(b)
    a = [[float(v) for v in row] + [float(rhs)] for row, rhs in zip(R, b)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(a[r][c]))
        a[c], a[p] = a[p], a[c]
        for r in range(c + 1, n):
            f = a[r][c] / a[c][c]
            for k in range(c, n + 1):
                a[r][k] -= f * a[c][k]
    w = [0.0] * n
    for r in reversed(range(n)):
        w[r] = (a[r][n] - sum(a[r][k] * w[k] for k in range(r + 1, n))) / a[r][r]
    return w


def _unipc_combine(x, ratio: float, m0, h_phi_1: float, b_h: float, diffs):
    """``ratio * x - h_phi_1 * m0 - b_h * sum(c * (m - m0) for c, m in diffs)`` as one weighted sum."""
    w_m0 = -h_phi_1 + b_h * sum(c for c, _ in diffs)
    return _lincomb((ratio, x), (w_m0, m0), *((-b_h * c, m) for c, m in diffs))


def unipc(D: Callable, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Optional[dict] = None,
          generator=None, callback=None, order: int = 2, corrector: bool = True) -> torch.Tensor:
    """UniPC: unified predictor-corrector (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector
    Framework for Fast Sampling of Diffusion Models"), B(h) = e^h - 1 ("bh2"), data prediction.

    ``order`` is the predictor's multistep order (1-3); the corrector UniC reuses the model evaluation
    of the next step, so it costs no extra network call. The final step is first order.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"unipc order must be 1, 2 or 3, got {order}")
    cond = cond or {}
    s, sb = _prep(x, sigmas)
    n = len(s) - 1
    lam = [(-math.log(v) if v > 0 else math.inf) for v in s]
    hist: list = []  # model outputs (x0 estimates) of the last `order` steps, newest last
    last_x, last_order = None, 0
    for i in range(n):
        den = D(x, sb[i], **cond)
        if corrector and last_x is not None:
            # UniC: redo the step from last_x (sigma_{i-1}) to sigma_i, adding the new model output
            h = lam[i] - lam[i - 1]
            rks = [(lam[i - 1 - k] - lam[i - 1]) / h for k in range(1, last_order)] + [1.0]
            h_phi_1, b_h, R, b = _unipc_coeffs(rks, -h, last_order)
            rhos = [0.5] if last_order == 1 else _solve(R, b)
            diffs = [(rho / rk, hist[-1 - k]) for k, (rho, rk) in enumerate(zip(rhos[:-1], rks), start=1)]
            diffs.append((rhos[-1], den))
            x = _unipc_combine(last_x, s[i] / s[i - 1], hist[-1], h_phi_1, b_h, diffs)
        hist.append(den)
        if len(hist) > order:
            hist.pop(0)
        this_order = min(order, n - i, len(hist))
        if s[i + 1] == 0:
            x_next = den
        else:
            # UniP: multistep predictor from sigma_i to sigma_{i+1}
            h = lam[i + 1] - lam[i]
            rks = [(lam[i - k] - lam[i]) / h for k in range(1, this_order)] + [1.0]
            h_phi_1, b_h, R, b = _unipc_coeffs(rks, -h, this_order)
            if this_order == 1:
                rhos = []
            elif this_order == 2:
                rhos = [0.5]
            else:
                rhos = _solve([r[:-1] for r in R[:-1]], b[:-1])
            diffs = [(rho / rk, hist[-1 - k]) for k, (rho, rk) in enumerate(zip(rhos, rks), start=1)]
            x_next = _unipc_combine(x, s[i + 1] / s[i], den, h_phi_1, b_h, diffs)
        last_x, last_order = x, this_order
        x = x_next
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s[i], "sigma_next": s[i + 1], "denoised": den})
    return x


SAMPLERS = {"euler": euler, "heun": heun, "ddim": ddim, "ddpm": ddpm, "dpmpp_2m": dpmpp_2m, "unipc": unipc}


def nfe(name: str, steps: int) -> int:
    """Network evaluations a built-in sampler spends on a ladder of ``steps`` steps ending in 0."""
    return 2 * steps - 1 if name == "heun" else steps
