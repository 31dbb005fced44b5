"""Tiny data, network and config shared by the training tests and their subprocess entry points."""
from __future__ import annotations

import time

import torch
from torch import nn


class TinyNet(nn.Module):
    """A small MLP ``net(x_in, c_noise, label=None, mask=None)`` for points of shape [..., dim].

    ``sleep`` slows every forward call (to give a test time to kill a run); ``nan_after`` makes the
    output NaN from that forward call on; ``seen_labels`` collects the labels the network was given.
    """

    def __init__(self, dim: int = 2, hidden: int = 32, n_labels: int = 0, sleep: float = 0.0,
                 nan_after: int | None = None):
        super().__init__()
        self.dim = dim
        self.inp = nn.Linear(dim + 1, hidden)
        self.mid = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, dim)
        self.emb = nn.Embedding(n_labels + 1, hidden) if n_labels else None
        self.sleep = sleep
        self.nan_after = nan_after
        self.calls = 0
        self.seen_labels = []

    def forward(self, x, c_noise, label=None, mask=None):
        self.calls += 1
        if self.sleep:
            time.sleep(self.sleep)
        c = c_noise.reshape((-1,) + (1,) * (x.ndim - 1)).expand(x.shape[:-1] + (1,)).to(x.dtype)
        h = self.inp(torch.cat([x, c], dim=-1))
        if self.emb is not None and label is not None:
            self.seen_labels.append(label.detach().cpu().clone())
            e = self.emb(label + 1)  # label -1 (null) -> row 0
            h = h + e.reshape((e.shape[0],) + (1,) * (h.ndim - 2) + (e.shape[-1],))
        h = self.mid(torch.nn.functional.silu(h))
        out = self.out(torch.nn.functional.silu(h))
        if self.nan_after is not None and self.calls > self.nan_after:
            out = out * float("nan")
        return out


def ring_data(n: int = 512, seed: int = 0, labels: bool = False):
    """Points on two rings (radius 0.5 and 1.0); with ``labels`` the ring index is the label."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.rand(n, generator=g) * 2 * torch.pi
    lab = torch.randint(0, 2, (n,), generator=g)
    r = 0.5 + 0.5 * lab.float()
    x = torch.stack([theta.cos(), theta.sin()], dim=1) * r[:, None] + 0.02 * torch.randn(n, 2, generator=g)
    return x, ({"label": lab} if labels else {})


def tiny_config(**train) -> dict:
    t = {"steps": 20, "batch_size": 64, "lr": 2e-3, "warmup": 5, "log_every": 1, "ckpt_every": 10,
         "cond_drop": 0.0}
    t.update(train)
    return {"parameterisation": "edm", "sigma_data": 0.5, "network": {"hidden": 32}, "train": t, "sample": {}}


def blob_data(n: int = 512, seed: int = 0):
    """Points in four tight clusters at (+-0.7, +-0.7): easy to learn, so a short run must improve."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.7, 0.7], [0.7, -0.7], [-0.7, 0.7], [-0.7, -0.7]])
    return centres[torch.randint(0, 4, (n,), generator=g)] + 0.05 * torch.randn(n, 2, generator=g), {}
