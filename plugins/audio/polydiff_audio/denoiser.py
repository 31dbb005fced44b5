"""The audio network: a 1-D U-Net over frames of the waveform.

    net(x_in [B, 1, L], c_noise [B], label=None) -> F [B, 1, L]     # the EDM adapter turns F into x0_hat

The waveform is cut into frames of ``frame`` samples, which become channels ([B, frame, L / frame]), so the
convolutions run at 1/frame of the sample rate: diffusion still happens on the waveform itself (reshaping is
orthonormal, the noise stays white), and a second of 8 kHz audio is 200 positions instead of 8,000. The
U-Net has residual blocks with dilated convolutions, the noise level and class enter every block as a
scale and shift of the normalized activations (FiLM), and a self-attention layer runs at the coarsest level.

Read top to bottom: config, embeddings, blocks, network.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from polydiff.errors import PolydiffError


@dataclass
class FrameUNetConfig:
    clip_samples: int = 8000           # waveform length
    frame: int = 40                    # samples per frame (channels of the network input)
    channels: Tuple[int, ...] = (128, 192, 256, 320)   # width per level; each level halves the time axis
    blocks: int = 2                    # residual blocks per level
    emb: int = 256                     # noise / class embedding size
    num_classes: int = 0               # 0: unconditional; labels 0..k-1, -1 = no label (guidance)
    attention: bool = True             # self-attention at the coarsest level
    dropout: float = 0.0
    skip_filters: int = 0              # linear filters from input to output frames, mixed per noise level

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        steps = self.clip_samples // self.frame
        if self.clip_samples % self.frame or steps % (2 ** (len(self.channels) - 1)):
            raise PolydiffError(f"clip_samples {self.clip_samples} must be frame ({self.frame}) x a multiple of "
                                f"{2 ** (len(self.channels) - 1)}")


class FourierEmbedding(nn.Module):
    def __init__(self, size: int, scale: float = 4.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(size // 2, generator=torch.Generator().manual_seed(0)) * scale)

    def forward(self, c):
        ang = c.float()[:, None] * self.freqs[None] * (2 * math.pi)
        return torch.cat([ang.cos(), ang.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> dilated conv -> FiLM(emb) -> GroupNorm -> SiLU -> conv, plus a skip path."""

    def __init__(self, cin: int, cout: int, emb: int, dilation: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(32, cin // 4), cin)
        self.conv1 = nn.Conv1d(cin, cout, 3, padding=dilation, dilation=dilation)
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(min(32, cout // 4), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, h, e):
        y = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.film(e)[:, :, None].chunk(2, dim=1)
        y = self.norm2(y) * (1 + scale) + shift
        y = self.conv2(self.drop(F.silu(y)))
        return self.skip(h) + y


class Attention(nn.Module):
    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(min(32, ch // 4), ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.out = nn.Conv1d(ch, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.heads = heads

    def forward(self, h):
        b, c, t = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b, 3, self.heads, c // self.heads, t).unbind(1)
        y = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return h + self.out(y.transpose(-1, -2).reshape(b, c, t))


class FrameUNet(nn.Module):
    def __init__(self, cfg: FrameUNetConfig):
        super().__init__()
        self.cfg = cfg
        e = cfg.emb
        self.noise_emb = nn.Sequential(FourierEmbedding(e), nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        # one extra row for "no label": classifier-free guidance drops the condition to it
        self.label_emb = nn.Embedding(cfg.num_classes + 1, e) if cfg.num_classes else None
        ch = cfg.channels
        self.inp = nn.Conv1d(cfg.frame, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        skips = []
        c = ch[0]
        for i, cout in enumerate(ch):
            level = nn.ModuleList()
            for j in range(cfg.blocks):
                level.append(ResBlock(c, cout, e, dilation=2 ** j, dropout=cfg.dropout))
                c = cout
                skips.append(c)
            self.down.append(level)
            self.pool.append(nn.Conv1d(c, c, 4, stride=2, padding=1) if i < len(ch) - 1 else nn.Identity())
        self.mid1 = ResBlock(c, c, e, dilation=1, dropout=cfg.dropout)
        self.attn = Attention(c) if cfg.attention else nn.Identity()
        self.mid2 = ResBlock(c, c, e, dilation=2, dropout=cfg.dropout)
        self.up = nn.ModuleList()
        self.unpool = nn.ModuleList()
        for i, cout in reversed(list(enumerate(ch))):
            level = nn.ModuleList()
            for j in range(cfg.blocks):
                level.append(ResBlock(c + skips.pop(), cout, e, dilation=2 ** j, dropout=cfg.dropout))
                c = cout
            self.up.append(level)
            self.unpool.append(nn.ConvTranspose1d(c, c, 4, stride=2, padding=1) if i > 0 else nn.Identity())
        self.out_norm = nn.GroupNorm(min(32, c // 4), c)
        self.out = nn.Conv1d(c, cfg.frame, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if cfg.skip_filters:
            # A direct linear path from the input frames to the output frames. At low noise levels the
            # output must carry the noise itself, sample by sample, amplified by 1 / sigma (EDM: where the
            # signal is weak, x0 = x - noise needs F = -noise / c_out), which the U-Net's features pass on
            # poorly: generated clips kept a hiss in their pauses. The path is a bank of filters whose mix
            # depends on the noise level and, frame by frame, on the U-Net's last features (a pause wants the
            # noise removed, speech wants its own detail kept), scaled by 1 / sigma with sigma = exp(4 c_noise)
            # (EDM's noise conditioning; configure refuses other parameterisations). The filters start at
            # zero, so an existing network is unchanged until it is fine-tuned.
            self.skip_conv = nn.Conv1d(cfg.frame, cfg.skip_filters * cfg.frame, 3, padding=1)
            nn.init.zeros_(self.skip_conv.weight)
            nn.init.zeros_(self.skip_conv.bias)
            self.skip_mix = nn.Linear(e, cfg.skip_filters)
            nn.init.zeros_(self.skip_mix.weight)
            nn.init.constant_(self.skip_mix.bias, 1.0 / cfg.skip_filters)
            self.skip_gate = nn.Conv1d(c, cfg.skip_filters, 1)
            nn.init.zeros_(self.skip_gate.weight)
            nn.init.zeros_(self.skip_gate.bias)

    @classmethod
    def from_config(cls, config: dict) -> "FrameUNet":
        known = {f.name for f in fields(FrameUNetConfig)}
        return cls(FrameUNetConfig(**{k: v for k, v in (config or {}).items() if k in known}))

    def config_dict(self) -> dict:
        d = asdict(self.cfg)
        d["channels"] = list(d["channels"])
        return d

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, label=None, **unused) -> torch.Tensor:
        cfg = self.cfg
        b = x_in.shape[0]
        if x_in.shape[1:] != (1, cfg.clip_samples):
            raise PolydiffError(f"x has shape {list(x_in.shape)}, expected [B, 1, {cfg.clip_samples}]")
        c_noise = torch.as_tensor(c_noise, device=x_in.device)
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(b)
        e = self.noise_emb(c_noise)
        if self.label_emb is not None:
            lab = torch.full((b,), -1, dtype=torch.long, device=x_in.device) if label is None else \
                torch.as_tensor(label, device=x_in.device).long().reshape(b)
            lab = torch.where(lab < 0, torch.full_like(lab, cfg.num_classes), lab)
            e = e + self.label_emb(lab)
        e = F.silu(e)
        # [B, 1, L] -> [B, frame, L / frame]: sample t*frame + k becomes channel k at position t
        frames = x_in.reshape(b, -1, cfg.frame).transpose(1, 2)
        h = self.inp(frames)
        skips = []
        for level, pool in zip(self.down, self.pool):
            for blk in level:
                h = blk(h, e)
                skips.append(h)
            h = pool(h)
        h = self.mid2(self.attn(self.mid1(h, e)), e)
        for level, unpool in zip(self.up, self.unpool):
            for blk in level:
                h = blk(torch.cat([h, skips.pop()], dim=1), e)
            h = unpool(h)
        h = F.silu(self.out_norm(h))
        y = self.out(h)
        if cfg.skip_filters:
            paths = self.skip_conv(frames).reshape(b, cfg.skip_filters, cfg.frame, -1)
            # per frame: the noise level's mix plus the U-Net's own weights (silence and speech want different
            # filters), all x 1 / sigma
            mix = (self.skip_mix(e)[:, :, None] + self.skip_gate(h)) * torch.exp(-4 * c_noise.to(e.dtype))[:, None, None]
            y = y + torch.einsum("bkt,bkft->bft", mix, paths)
        return y.transpose(1, 2).reshape(b, 1, cfg.clip_samples)
