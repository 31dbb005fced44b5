"""Parameterisations: small adapters that turn a network into a denoiser ``D(x, sigma, **cond) -> x0_hat``.

A network ``net(x_in, c_noise, **cond)`` predicts whatever it was trained to predict. Each adapter scales
the input, maps sigma to the network's noise input, and converts the output to an estimate of x_0:

=================  ============================  ==========================================
adapter            network predicts              x0_hat
=================  ============================  ==========================================
``EDM``            F (Karras et al. 2022, eq. 7)  c_skip * x + c_out * F(c_in * x, c_noise)
``EpsPrediction``  eps (Ho et al. 2020)           x - sigma * eps(c_in * x, t)
``VPrediction``    v (Salimans & Ho 2022)         c_skip * x - c_out * v(c_in * x, t)
``X0Prediction``   x0                             x0(c_in * x, t)
=================  ============================  ==========================================

For ``EpsPrediction``, ``VPrediction`` and ``X0Prediction`` the input is scaled VP-style,
``c_in = 1 / sqrt(sigma^2 + sigma_data^2)``, so a network trained on a VP schedule sees exactly the
inputs it was trained on. ``sigma_to_t`` maps sigma to the network's noise input (a continuous
``log(sigma) / 4`` by default; pass a function to feed e.g. integer DDPM timesteps).

A padding mask in ``cond["mask"]`` (1 = real element, 0 = padding, broadcastable to x) zeroes the
padding in the output, so padded positions stay exactly 0 through every sampler.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

__all__ = ["Denoiser", "EDM", "EpsPrediction", "VPrediction", "X0Prediction", "PARAMETERISATIONS",
           "make_denoiser", "default_c_noise", "append_dims"]


def append_dims(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """View a [batch] tensor as [batch, 1, 1, ...] with ``ndim`` dimensions in all."""
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def default_c_noise(sigma: torch.Tensor) -> torch.Tensor:
    """The EDM noise input: log(sigma) / 4."""
    return sigma.clamp(min=1e-20).log() / 4


def _shared_sigma(sigma: torch.Tensor) -> Optional[float]:
    """sigma as a Python float when every item of the batch has it by construction (a 0-stride view of one
    value, as the samplers pass), on the CPU where reading it costs no device synchronisation; else None."""
    if sigma.device.type != "cpu" or sigma.ndim != 1 or sigma.numel() == 0:
        return None
    if sigma.numel() == 1 or sigma.stride(0) == 0:
        return float(sigma[0])
    return None


def repeat_sigma(sigma: torch.Tensor, times: int) -> torch.Tensor:
    """``sigma`` for a batch repeated ``times`` over (as ``torch.cat([sigma] * times)``), keeping the
    one-sigma-for-the-batch form: a 0-stride view stays a 0-stride view, so the adapter's fast path
    (:func:`_shared_sigma`) still applies to the larger batch. Wrappers that grow the batch (guidance) use it."""
    sigma = torch.as_tensor(sigma)
    if sigma.ndim == 1 and sigma.numel() > 0 and (sigma.numel() == 1 or sigma.stride(0) == 0):
        return sigma[:1].expand(sigma.numel() * times)
    return torch.cat([sigma] * times)


class Denoiser(nn.Module):
    """Base adapter. Subclasses define :meth:`scalings` returning (c_skip, c_out, c_in)."""

    #: the sign of c_out in x0_hat = c_skip * x + sign * c_out * out
    out_sign = 1.0

    def __init__(self, net: nn.Module, sigma_data: float = 1.0, sigma_to_t: Optional[Callable] = None):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)
        self.sigma_to_t = sigma_to_t or default_c_noise

    def scalings(self, sigma):
        """(c_skip, c_out, c_in) for ``sigma``: a [batch] tensor or a Python float. Write them with
        arithmetic operators only (no tensor methods), so one definition serves both; a constant may be
        returned as a plain number."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        shared = _shared_sigma(sigma)
        if shared is not None:
            # every item has the same sigma (the samplers' case): the scalings are Python floats, so the
            # step costs two full-size tensor operations around the network and no per-item arithmetic
            c_skip, c_out, c_in = self.scalings(shared)
            if self.sigma_to_t is default_c_noise:
                c_noise = sigma.new_full(sigma.shape, math.log(max(shared, 1e-20)) / 4)
            else:
                c_noise = self.sigma_to_t(sigma)
            out = self.net(x * c_in, c_noise, **cond).to(x.dtype)
        else:
            c_skip, c_out, c_in = (append_dims(c, x.ndim) if torch.is_tensor(c) else c for c in self.scalings(sigma))
            out = self.net(x * c_in, self.sigma_to_t(sigma), **cond).to(x.dtype)
        x0 = self.combine(x, out, c_skip, c_out)
        mask = cond.get("mask")
        return x0 * mask if mask is not None else x0

    def combine(self, x: torch.Tensor, out: torch.Tensor, c_skip, c_out) -> torch.Tensor:
        """x0_hat = c_skip * x + sign * c_out * out (coefficients: [batch, 1, ...] tensors or floats)."""
        if torch.is_tensor(c_out):
            return (x * c_skip).addcmul_(c_out, out, value=self.out_sign)
        return torch.add(x * c_skip, out, alpha=self.out_sign * c_out)

    # training-side helper: the network's own regression target, for losses in the network's space
    def network_target(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The value the raw network should output for clean ``x0`` noised with ``sigma * noise``."""
        c_skip, c_out, _ = (append_dims(c, x0.ndim) if torch.is_tensor(c) else c for c in self.scalings(sigma))
        x = x0 + append_dims(sigma, x0.ndim) * noise
        return (x0 - c_skip * x) / (self.out_sign * c_out)


class EDM(Denoiser):
    """EDM preconditioning (Karras et al. 2022, table 1): unit-variance inputs and targets at every sigma."""

    def scalings(self, sigma):
        sd2 = self.sigma_data**2
        c_in = (sigma**2 + sd2) ** -0.5
        return sd2 / (sigma**2 + sd2), sigma * self.sigma_data * c_in, c_in


class EpsPrediction(Denoiser):
    """Noise prediction (Ho et al. 2020, DDPM): x0_hat = x - sigma * eps_hat."""

    out_sign = -1.0

    def scalings(self, sigma):
        return 1.0, sigma, (sigma**2 + self.sigma_data**2) ** -0.5

    def combine(self, x, out, c_skip, c_out):
        if torch.is_tensor(c_out):
            return torch.addcmul(x, c_out, out, value=-1.0)  # x - sigma * eps_hat
        return torch.add(x, out, alpha=-c_out)


class VPrediction(Denoiser):
    """Velocity prediction (Salimans & Ho 2022, "Progressive distillation"): v = alpha * eps - s * x0."""

    out_sign = -1.0

    def scalings(self, sigma):
        sd2 = self.sigma_data**2
        c_in = (sigma**2 + sd2) ** -0.5
        return sd2 / (sigma**2 + sd2), sigma * self.sigma_data * c_in, c_in


class X0Prediction(Denoiser):
    """Direct x0 prediction: the network's output is the estimate."""

    def scalings(self, sigma):
        return 0.0, 1.0, (sigma**2 + self.sigma_data**2) ** -0.5

    def combine(self, x, out, c_skip, c_out):
        return out


PARAMETERISATIONS = {"edm": EDM, "eps": EpsPrediction, "v": VPrediction, "x0": X0Prediction}


def make_denoiser(net: nn.Module, parameterisation: str = "edm", sigma_data: float = 1.0,
                  sigma_to_t: Optional[Callable] = None) -> Denoiser:
    """Wrap ``net`` in the adapter named ``parameterisation`` (edm, eps, v or x0)."""
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(f"unknown parameterisation {parameterisation!r}; known: {', '.join(PARAMETERISATIONS)}")
    return PARAMETERISATIONS[parameterisation](net, sigma_data=sigma_data, sigma_to_t=sigma_to_t)


def denoiser_for(net: nn.Module, config: dict) -> nn.Module:
    """The denoiser a model config asks for: a :class:`polydiff.discrete.CategoricalDenoiser` when the config
    names a categorical ``process``, else the sigma-space adapter named by ``parameterisation``."""
    from .discrete import CategoricalDenoiser, process_of

    proc = process_of(config)
    if proc is not None:
        return CategoricalDenoiser(net, proc, level_free=bool(config["process"].get("level_free", False)))
    return make_denoiser(net, config.get("parameterisation", "edm"), float(config.get("sigma_data", 1.0)))
