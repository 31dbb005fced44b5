"""The tabular network: a residual MLP with a sigma embedding.

    net(x_in, c_noise) -> F      # [batch, columns]; the adapter turns F into x0_hat

Read top to bottom: config, noise embedding, residual block, network.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class TabularNetConfig:
    dim: int = 1            # number of columns (set from the training table)
    hidden: int = 256       # width of the residual MLP
    depth: int = 3          # number of residual blocks
    emb: int = 64           # size of the noise embedding
    dropout: float = 0.0    # dropout inside the blocks


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of c_noise at geometrically spaced frequencies, then a small MLP."""

    def __init__(self, size: int):
        super().__init__()
        half = size // 2
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(1000.0), half)))
        self.mlp = nn.Sequential(nn.Linear(2 * half, size), nn.SiLU(), nn.Linear(size, size))

    def forward(self, c):
        ang = c.float()[:, None] * self.freqs[None]
        return self.mlp(torch.cat([ang.sin(), ang.cos()], dim=1))


class ResBlock(nn.Module):
    def __init__(self, hidden: int, emb: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h, e):
        y = self.fc1(nn.functional.silu(self.norm(h))) + self.emb(e)
        return h + self.fc2(self.drop(nn.functional.silu(y)))


class TabularNet(nn.Module):
    def __init__(self, cfg: TabularNetConfig):
        super().__init__()
        self.cfg = cfg
        self.noise_emb = NoiseEmbedding(cfg.emb)
        self.inp = nn.Linear(cfg.dim, cfg.hidden)
        self.blocks = nn.ModuleList(ResBlock(cfg.hidden, cfg.emb, cfg.dropout) for _ in range(cfg.depth))
        self.out = nn.Sequential(nn.LayerNorm(cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @classmethod
    def from_config(cls, config: dict) -> "TabularNet":
        return cls(TabularNetConfig(**config))

    def config(self) -> dict:
        return asdict(self.cfg)

    def forward(self, x, c_noise, **unused):
        e = self.noise_emb(c_noise)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(h)
