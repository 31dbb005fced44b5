"""The forward process and the training objective, in one place.

``x_sigma = x0 + sigma * eps`` (Karras et al. 2022). The loss is a weighted denoising error in data
space, ``w(sigma) * || D(x_sigma, sigma, **cond) - x0 ||^2``, averaged over real (unmasked) elements.
Training an eps- or v-network through its adapter with this loss is the same objective as the usual
eps- or v-MSE up to the weighting, which is why the weightings below are written in data space.
"""
from __future__ import annotations

from typing import Optional

import torch

from .precond import append_dims

__all__ = ["add_noise", "loss_weight", "denoising_loss", "masked_mean", "WEIGHTINGS"]


def add_noise(x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x_sigma = x0 + sigma * noise; padding (mask == 0) stays exactly zero."""
    x = x0 + append_dims(sigma, x0.ndim) * noise
    return x * mask if mask is not None else x


def loss_weight(sigma: torch.Tensor, weighting: str = "edm", sigma_data: float = 1.0, gamma: float = 5.0) -> torch.Tensor:
    """Per-sample weight of the data-space denoising error.

    * ``edm``: lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2 (Karras et al. 2022, eq. 8),
      which gives the EDM-preconditioned network a unit-variance target at every sigma.
    * ``min_snr``: min(SNR, gamma) with SNR = sigma_data^2 / sigma^2 (Hang et al. 2023, "Efficient
      Diffusion Training via Min-SNR Weighting Strategy"). Written in data space it is the same for eps-,
      v- and x0-networks; normalised by 1 / sigma_data^2.
    * ``snr``: SNR itself, i.e. the plain eps-MSE of DDPM (Ho et al. 2020).
    * ``uniform``: 1, i.e. plain x0-MSE.
    """
    sd2 = sigma_data**2
    if weighting == "edm":
        return (sigma**2 + sd2) / (sigma * sigma_data) ** 2
    snr = sd2 / sigma**2
    if weighting == "min_snr":
        return snr.clamp(max=gamma) / sd2
    if weighting == "snr":
        return snr / sd2
    if weighting == "uniform":
        return torch.ones_like(sigma)
    raise ValueError(f"unknown loss weighting {weighting!r}; known: {', '.join(WEIGHTINGS)}")


WEIGHTINGS = ("edm", "min_snr", "snr", "uniform")


def masked_mean(err: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-sample mean of ``err`` over real elements (mask == 1); returns a [batch] tensor."""
    dims = tuple(range(1, err.ndim))
    if mask is None:
        return err.mean(dim=dims) if dims else err
    mask = mask.expand_as(err).to(err.dtype)
    return (err * mask).sum(dim=dims) / mask.sum(dim=dims).clamp(min=1)


def denoising_loss(D, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, cond: Optional[dict] = None,
                   weighting: str = "edm", sigma_data: float = 1.0, gamma: float = 5.0) -> torch.Tensor:
    """Per-sample weighted denoising loss ([batch] tensor); take ``.mean()`` for a scalar."""
    cond = cond or {}
    mask = cond.get("mask")
    x = add_noise(x0, sigma, noise, mask)
    err = (D(x, sigma, **cond).float() - x0.float()) ** 2
    return loss_weight(sigma.float(), weighting, sigma_data, gamma) * masked_mean(err, mask)
