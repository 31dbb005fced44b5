"""Guidance and masked conditioning: wrappers around a denoiser, so every sampler gets them for free.

* :func:`cfg_denoiser` — classifier-free guidance (Ho & Salimans 2022): ``D_u + w * (D_c - D_u)``,
  conditional and unconditional halves evaluated in one batched call, optionally only inside an
  interval of noise levels.
* :func:`drop_conditions` — the training half of CFG: replace a random fraction of condition values
  with their "null" value.
* :func:`masked_denoiser` / :func:`sample_masked` — masked conditioning: known values plus a mask
  (1 = known, keep; 0 = generate). The denoiser's estimate is replaced by the known values where the
  mask is 1. Because every sampler moves x towards the x0 estimate, the known region of x then stays
  on the forward process ``known + sigma * eps``, and the network sees it while it fills the unknown
  region; the result is pasted so the known values are kept bit-for-bit. Replacement alone only
  approximately follows the exact conditional when the two regions are strongly coupled;
  ``resample=r`` adds RePaint's resampling, which closes most of that gap for r times the cost. One
  mechanism serves image inpainting, audio gap filling, text infilling and molecular scaffolds.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import torch

from .precond import repeat_sigma

__all__ = ["cfg_denoiser", "drop_conditions", "masked_denoiser", "sample_masked", "NULL_LABEL"]

#: the conventional "no condition" value for integer class labels
NULL_LABEL = -1


def drop_conditions(cond: dict, p: float, null: Mapping[str, object], generator=None) -> dict:
    """Return a copy of ``cond`` where each sample's guided keys are set to their null value with probability p.

    ``null`` maps a condition key to its null value (e.g. ``{"label": -1}``). Keys not in ``null``
    (such as the padding mask) are never dropped.
    """
    if p <= 0 or not null:
        return cond
    out = dict(cond)
    for key, null_value in null.items():
        if key not in cond or cond[key] is None:
            continue
        v = cond[key]
        keep = torch.rand(v.shape[0], generator=generator, device="cpu").to(v.device) >= p
        keep = keep.reshape((-1,) + (1,) * (v.ndim - 1))
        out[key] = torch.where(keep, v, torch.as_tensor(null_value, dtype=v.dtype, device=v.device))
    return out


def cfg_denoiser(D: Callable, scale: float, null: Mapping[str, object],
                 interval: Optional[Sequence[float]] = None) -> Callable:
    """Classifier-free guidance: ``D_u + scale * (D_c - D_u)`` (Ho & Salimans 2022).

    ``scale = 1`` returns D itself (no extra cost); ``scale = 0`` is the unconditional model.
    The conditional and unconditional calls share one batch of size 2B.

    ``interval = (lo, hi)`` applies guidance only at noise levels ``lo < sigma <= hi`` and uses the
    conditional model alone elsewhere (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval
    improves sample and distribution quality in diffusion models"): guidance at high noise levels mostly
    pulls samples towards a few modes and at low ones does little, so limiting it keeps most of its gain
    in recognisability at a fraction of its cost (the unguided steps cost one evaluation of batch B, not
    2B). The level tested is the batch's largest sigma (samplers give every item the same one).
    """
    if scale == 1.0 or not null:
        return D
    lo, hi = (float(interval[0]), float(interval[1])) if interval is not None else (None, None)
    if interval is not None and not lo < hi:
        raise ValueError(f"the guidance interval must be (lo, hi) with lo < hi, got {tuple(interval)}")

    def guided(x, sigma, **cond):
        keys = [k for k in null if cond.get(k) is not None]
        if not keys:
            return D(x, sigma, **cond)
        if lo is not None:
            level = float(sigma.max()) if isinstance(sigma, torch.Tensor) else float(sigma)
            if not lo < level <= hi:
                return D(x, sigma, **cond)
        b = x.shape[0]
        both = {}
        for k, v in cond.items():
            if k in keys:
                both[k] = torch.cat([v, torch.full_like(v, null[k])])
            elif isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == b:
                both[k] = torch.cat([v, v])
            else:
                both[k] = v
        out = D(torch.cat([x, x]), repeat_sigma(sigma, 2), **both)
        # with a position selection (categorical samplers) the rows are the selected positions, in order
        half = int(cond["select"].sum()) if cond.get("select") is not None else b
        c, u = out[:half], out[half:]
        return torch.lerp(u, c, scale)

    return guided


def masked_denoiser(D: Callable, known: torch.Tensor, known_mask: torch.Tensor) -> Callable:
    """D with its estimate replaced by ``known`` where ``known_mask`` is 1 (mask broadcastable to x)."""
    keep = known_mask.to(known.dtype)

    def wrapped(x, sigma, **cond):
        return torch.lerp(D(x, sigma, **cond), known, keep)

    return wrapped


def sample_masked(sampler: Callable, D: Callable, x: torch.Tensor, sigmas: torch.Tensor, known: torch.Tensor,
                  known_mask: torch.Tensor, *, cond: Optional[dict] = None, generator=None, callback=None,
                  resample: int = 1, **options) -> torch.Tensor:
    """Run any sampler with masked conditioning; known values (mask == 1) are returned exactly.

    ``x`` is the starting noise ``sigmas[0] * eps``. The known region starts at ``known + x`` so it
    is already on the forward process.

    Replacing the estimate alone lets the unknown region drift from the exact conditional when the two
    regions are strongly coupled. ``resample = r > 1`` applies the resampling of RePaint (Lugmayr et al.
    2022): each step is taken r times, and between takes the state is pushed back up from sigma_next to
    sigma with fresh noise, so the unknown region keeps being harmonised with the known one. It costs
    r times the network evaluations; the sampler is then run one step at a time (multistep samplers fall
    back to their first-order step).
    """
    if resample < 1:
        raise ValueError(f"resample must be at least 1, got {resample}")
    keep = known_mask.to(x.dtype).expand_as(x)
    x = x + known * keep
    Dm = masked_denoiser(D, known, keep)
    if resample == 1:
        out = sampler(Dm, x, sigmas, cond=cond, generator=generator, callback=callback, **options)
        return torch.where(keep.bool(), known, out)
    mask = (cond or {}).get("mask")
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        pair = sigmas[i:i + 2]
        for r in range(resample):
            x_next = sampler(Dm, x, pair, cond=cond, generator=generator, **options)
            if r < resample - 1 and s[i + 1] < s[i]:
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                if mask is not None:
                    noise = noise * mask
                x = x_next + noise * (s[i] ** 2 - s[i + 1] ** 2) ** 0.5
            else:
                x = x_next
        if callback is not None:  # the estimate at the new state (one extra evaluation, only when asked)
            den = Dm(x, sigmas[i + 1].expand(x.shape[0]), **(cond or {})) if s[i + 1] > 0 else x
            callback({"i": i, "x": x, "sigma": s[i], "sigma_next": s[i + 1], "denoised": den})
    return torch.where(keep.bool(), known, x)
