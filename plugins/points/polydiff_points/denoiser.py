"""The points network: an MLP with a Fourier noise embedding and an optional class embedding.

    net(x_in, c_noise, label=None) -> F      # [batch, 2]; the EDM adapter turns F into x0_hat

Read top to bottom: config, embedding, residual block, network.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class PointsNetConfig:
    dim: int = 2            # coordinates per point
    hidden: int = 256       # width of the residual MLP
    depth: int = 4          # number of residual blocks
    emb: int = 64           # size of the noise (and class) embedding
    num_classes: int = 0    # 0: unconditional; k: labels 0..k-1, and -1 means "no label" (for guidance)


class FourierEmbedding(nn.Module):
    """Random Fourier features of the scalar noise input c_noise (Tancik et al. 2020)."""

    def __init__(self, size: int, scale: float = 8.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(size // 2, generator=torch.Generator().manual_seed(0)) * scale)

    def forward(self, c):
        ang = c.float()[:, None] * self.freqs[None] * 2 * math.pi
        return torch.cat([ang.cos(), ang.sin()], dim=1)


class ResBlock(nn.Module):
    """Pre-norm residual MLP block with the embedding added after the first layer."""

    def __init__(self, hidden: int, emb: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h, e):
        y = self.fc1(nn.functional.silu(self.norm(h))) + self.emb(e)
        return h + self.fc2(nn.functional.silu(y))


class PointsNet(nn.Module):
    def __init__(self, cfg: PointsNetConfig):
        super().__init__()
        self.cfg = cfg
        self.noise_emb = nn.Sequential(FourierEmbedding(cfg.emb), nn.Linear(cfg.emb, cfg.emb), nn.SiLU())
        # one extra row for "no label" so classifier-free guidance can drop the condition
        self.label_emb = nn.Embedding(cfg.num_classes + 1, cfg.emb) if cfg.num_classes else None
        self.inp = nn.Linear(cfg.dim, cfg.hidden)
        self.blocks = nn.ModuleList(ResBlock(cfg.hidden, cfg.emb) for _ in range(cfg.depth))
        self.out = nn.Sequential(nn.LayerNorm(cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @classmethod
    def from_config(cls, config: dict) -> "PointsNet":
        return cls(PointsNetConfig(**config))

    def config(self) -> dict:
        return asdict(self.cfg)

    def forward(self, x, c_noise, label=None, **unused):
        e = self.noise_emb(c_noise)
        if self.label_emb is not None:
            if label is None:
                label = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
            e = e + self.label_emb(torch.where(label < 0, self.cfg.num_classes, label))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(h)
