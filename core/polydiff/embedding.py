"""Tokens embedded in sigma-space (Diffusion-LM, Li et al. 2022).

A model whose config has an ``embedding`` section keeps its data as integer tokens, like a categorical
model, but diffuses their **learned word embeddings** with the ordinary Gaussian forward process: the
network owns the embedding table (``net.embed(tokens) -> [..., dim]``) and a rounding head
(``net.round_logits(x0) -> [..., vocab]``, logits of each word for an embedding estimate). Then

* training (:func:`embedding_loss`): the sigma-space denoising loss on ``embed(tokens)``, with the embeddings
  trained by it, plus ``rounding`` times the cross-entropy of the tokens under ``round_logits`` of the
  denoiser's estimate: the term that keeps the embeddings apart, hence decodable (Diffusion-LM's L_e2e).
  With ``loss: "ce"`` (CDCD's score interpolation, Dieleman et al. 2022) the network's estimate is the
  probability-weighted mean of the word embeddings and the loss is the cross-entropy of the tokens under
  its logits alone (``D(x, sigma, logits=True)`` returns them); the network must then keep the embeddings'
  scale fixed, or they would grow until denoising is trivial;
* ``self_cond: true`` (self-conditioning, Chen et al. 2022): the network also reads an earlier estimate of
  the clean embeddings (``D(x, sigma, self_cond=x0_prev)``). Training passes, for a random half of the
  batch, the model's own estimate from the same noisy input (no gradient through it), zeros for the rest;
  sampling passes the previous step's estimate (:func:`self_conditioning`);
* sampling (:func:`polydiff.sampling.run`): any sigma-space sampler on ``[n, length, dim]``; with ``clamp``
  (Diffusion-LM's clamping trick) each estimate is replaced by the embedding of its nearest word; the result
  is rounded to tokens; known tokens (infilling) enter as their embeddings and come back exactly;
* scoring: the sigma-space ELBO of ``embed(tokens)``.

A padding mask ``cond["mask"]`` of shape ``[batch, length]`` is given a trailing axis for the embedding.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .noising import add_noise, loss_weight, masked_mean

__all__ = ["spec_of", "network_of", "embed", "lift_cond", "embedding_loss", "round_tokens", "clamping",
           "self_conditioning"]


def spec_of(config: dict) -> Optional[dict]:
    """The config's ``embedding`` section (``dim``, ``rounding``, ``clamp``, ``loss``, ``self_cond``), or None."""
    spec = (config or {}).get("embedding")
    return dict(spec) if spec else None


def network_of(net):
    """The network behind a denoiser or a DistributedDataParallel wrapper (the one with ``embed``)."""
    for _ in range(4):
        if hasattr(net, "embed") and hasattr(net, "round_logits"):
            return net
        net = getattr(net, "net", None) or getattr(net, "module", None)
        if net is None:
            break
    raise ValueError("an embedding model's network needs embed(tokens) and round_logits(x0)")


def embed(net, tokens: torch.Tensor) -> torch.Tensor:
    return network_of(net).embed(tokens.long())


def lift_cond(cond: Optional[dict], tokens_ndim: int) -> dict:
    """``cond`` with a padding mask shaped like the tokens given a trailing axis (for the embedding)."""
    out = dict(cond or {})
    m = out.get("mask")
    if m is not None and m.ndim == tokens_ndim:
        out["mask"] = m.unsqueeze(-1)
    return out


def embedding_loss(D: Callable, net, tokens: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                   cond: Optional[dict] = None, *, weighting: str = "edm", sigma_data: float = 1.0,
                   gamma: float = 5.0, rounding: float = 1.0, loss: str = "mse",
                   self_cond: bool = False) -> torch.Tensor:
    """Per-item loss ([batch]): weighted denoising error of the embeddings plus ``rounding`` x the rounding
    cross-entropy, both averaged over the valid positions; with ``loss="ce"`` the cross-entropy of the tokens
    under the network's logits alone. ``self_cond``: see the module's docstring (the random half comes from
    the global generator, which the trainer seeds per step)."""
    if loss not in ("mse", "ce"):
        raise ValueError(f"unknown embedding loss {loss!r}; known: mse, ce")
    cond = lift_cond(cond, tokens.ndim)
    mask = cond.get("mask")
    e0 = embed(net, tokens)
    x = add_noise(e0, sigma, noise, mask)
    if self_cond:
        with torch.no_grad():
            prev = D(x, sigma, **cond).float()
        half = (torch.rand(tokens.shape[0]) < 0.5).to(prev.device, prev.dtype)
        cond = dict(cond, self_cond=prev * half.reshape((-1,) + (1,) * (prev.ndim - 1)))
    if loss == "ce":
        logits = D(x, sigma, logits=True, **cond).float()
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, -2), tokens.flatten().long(), reduction="none")
        return masked_mean(ce.reshape(tokens.shape), None if mask is None else mask.squeeze(-1))
    x0_hat = D(x, sigma, **cond)
    err = masked_mean((x0_hat.float() - e0.float()) ** 2, mask)
    loss = loss_weight(sigma.float(), weighting, sigma_data, gamma) * err
    if rounding:
        logits = network_of(net).round_logits(x0_hat.float())
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, -2), tokens.flatten(), reduction="none")
        ce = masked_mean(ce.reshape(tokens.shape), None if mask is None else mask.squeeze(-1))
        loss = loss + float(rounding) * ce
    return loss


def round_tokens(net, x: torch.Tensor) -> torch.Tensor:
    """The nearest word of each embedding (argmax of the rounding logits)."""
    return network_of(net).round_logits(x.float()).argmax(-1)


def self_conditioning() -> Callable:
    """A ``wrap`` for the sampling run: each call passes the previous call's estimate (zeros at the first)."""
    def wrap(D):
        prev = [None]

        def conditioned(x, sigma, **cond):
            out = D(x, sigma, self_cond=prev[0], **cond) if prev[0] is not None else D(x, sigma, **cond)
            prev[0] = out.detach()
            return out
        return conditioned
    return wrap


def clamping(net) -> Callable:
    """A ``wrap`` for the sampling run: each estimate replaced by the embedding of its nearest word."""
    def wrap(D):
        def clamped(x, sigma, **cond):
            x0 = D(x, sigma, **cond)
            out = embed(net, round_tokens(net, x0)).to(x0.dtype)
            m = cond.get("mask")
            return out * m if m is not None else out
        return clamped
    return wrap
