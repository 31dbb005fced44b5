"""The image network: a U-Net over channels-first images.

    net(x_in [B, C, H, W], c_noise [B], label=None) -> F [B, C, H, W]    # the EDM adapter turns F into x0_hat

Levels halve the resolution; each has ``blocks`` residual blocks in which the noise level and the class
enter as a scale and shift of the normalized activations (FiLM). Self-attention runs at the resolutions
listed in ``attention`` and in the middle. The class embedding has one extra row, "no label" (index -1),
which condition dropout trains and classifier-free guidance uses.

``lowres_factors`` non-empty makes it a super-resolution network: it also takes ``lowres``, the
low-resolution image replicated back to full size (every pixel a ``f x f`` block, :func:`lowres_input`),
as extra input channels, for any factor ``f`` in the list; training draws the factor per image
(:func:`augment`). Such a network has no class embedding: the low-resolution image says what it is.

``patch`` > 1 folds ``patch x patch`` pixel blocks into channels first (space-to-depth, an orthonormal
reshaping: the noise stays white), so the first level runs at 1/patch of the resolution; the last layer
unfolds them again. It trades a little sharpness for speed.

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

__all__ = ["UNetConfig", "UNet", "lowres_input", "config_lowres_factors", "augment"]


@dataclass
class UNetConfig:
    image_size: int = 32                 # height = width of the model's images
    image_channels: int = 3              # 1 (grayscale) or 3 (RGB)
    channels: Tuple[int, ...] = (64, 128, 128)   # width per level; each level halves the resolution
    blocks: int = 2                      # residual blocks per level (down path; the up path has the same)
    attention: Tuple[int, ...] = ()      # resolutions (in pixels, after patching) with self-attention
    emb: int = 256                       # noise / class embedding size
    num_classes: int = 0                 # 0: unconditional; labels 0..k-1, -1 = no label (guidance)
    patch: int = 1                       # space-to-depth factor of the input
    dropout: float = 0.0
    heads: int = 4
    lowres_factors: Tuple[int, ...] = ()  # super-resolution: conditioned on a 1/f-size copy, f in this list

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        self.attention = tuple(int(a) for a in self.attention)
        self.lowres_factors = tuple(int(f) for f in self.lowres_factors)
        for f in self.lowres_factors:
            if f < 2 or self.image_size % f:
                raise PolydiffError(f"lowres_factors: {f} must be 2 or more and divide image_size {self.image_size}")
        if self.lowres_factors:
            self.num_classes = 0
        if self.image_channels < 1:
            raise PolydiffError(f"image_channels must be at least 1, got {self.image_channels}")
        side = self.image_size // self.patch
        if self.image_size % self.patch or side % (2 ** (len(self.channels) - 1)):
            raise PolydiffError(f"image_size {self.image_size} must be patch ({self.patch}) x a multiple of "
                                f"{2 ** (len(self.channels) - 1)} for {len(self.channels)} levels")


def lowres_input(x: torch.Tensor, factor: int) -> torch.Tensor:
    """The network's ``lowres`` input for images ``x`` [B, C, H, W] seen at 1/factor of their size: every
    ``factor x factor`` block replaced by its mean, rounded to the 256 pixel levels as an 8-bit file holds it."""
    y = F.avg_pool2d(x, factor)
    y = torch.round((y.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1
    return F.interpolate(y, scale_factor=factor, mode="nearest")


def config_lowres_factors(config: dict) -> Tuple[int, ...]:
    """The factors of a model config's super-resolution network (``network.lowres_factors``); () for a
    generation network."""
    return tuple(int(f) for f in ((config or {}).get("network") or {}).get("lowres_factors") or ())


def augment(x0: torch.Tensor, cond: dict, config: dict, generator: torch.Generator) -> dict:
    """The training batch's ``lowres`` condition when the network is a super-resolution one: a factor
    drawn per image from ``network.lowres_factors``. Other networks' conditions pass through."""
    factors = config_lowres_factors(config)
    if not factors:
        return cond
    pick = torch.randint(len(factors), (x0.shape[0],), generator=generator).to(x0.device)
    low = torch.zeros_like(x0)
    for i, f in enumerate(factors):
        low = torch.where((pick == i)[:, None, None, None], lowres_input(x0, f), low)
    return {**cond, "lowres": low}


def _groups(c: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if c % g == 0 and c // g >= 2:
            return g
    return 1


class FourierEmbedding(nn.Module):
    def __init__(self, size: int, scale: float = 4.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(size // 2, generator=torch.Generator().manual_seed(0)) * scale)

    def forward(self, c):
        ang = c.float()[:, None] * self.freqs[None] * (2 * math.pi)
        return torch.cat([ang.cos(), ang.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv -> FiLM(emb) -> GroupNorm -> SiLU -> conv, plus a skip path."""

    def __init__(self, cin: int, cout: int, emb: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, h, e):
        y = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.film(e)[:, :, None, None].chunk(2, dim=1)
        y = self.norm2(y) * (1 + scale) + shift
        y = self.conv2(self.drop(F.silu(y)))
        return self.skip(h) + y


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, with a residual connection."""

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.heads = heads if ch % heads == 0 else 1

    def forward(self, h):
        b, c, hh, ww = h.shape
        t = hh * ww
        q, k, v = self.qkv(self.norm(h)).reshape(b, 3, self.heads, c // self.heads, t).unbind(1)
        y = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return h + self.out(y.transpose(-1, -2).reshape(b, c, hh, ww))


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        e = cfg.emb
        self.noise_emb = nn.Sequential(FourierEmbedding(e), nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.label_emb = nn.Embedding(cfg.num_classes + 1, e) if cfg.num_classes else None
        ch = cfg.channels
        cin = cfg.image_channels * cfg.patch ** 2
        self.inp = nn.Conv2d(cin * (2 if cfg.lowres_factors else 1), ch[0], 3, padding=1)
        res = cfg.image_size // cfg.patch
        self.down, self.down_attn, self.pool = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        skips, c = [ch[0]], ch[0]
        for i, cout in enumerate(ch):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.blocks):
                blocks.append(ResBlock(c, cout, e, cfg.dropout))
                attns.append(Attention(cout, cfg.heads) if res in cfg.attention else nn.Identity())
                c = cout
                skips.append(c)
            self.down.append(blocks)
            self.down_attn.append(attns)
            if i < len(ch) - 1:
                self.pool.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
                res //= 2
            else:
                self.pool.append(nn.Identity())
        self.mid1 = ResBlock(c, c, e, cfg.dropout)
        self.mid_attn = Attention(c, cfg.heads)
        self.mid2 = ResBlock(c, c, e, cfg.dropout)
        self.up, self.up_attn, self.unpool = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, cout in reversed(list(enumerate(ch))):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.blocks + 1):
                blocks.append(ResBlock(c + skips.pop(), cout, e, cfg.dropout))
                attns.append(Attention(cout, cfg.heads) if res in cfg.attention else nn.Identity())
                c = cout
            self.up.append(blocks)
            self.up_attn.append(attns)
            if i > 0:
                self.unpool.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                 nn.Conv2d(c, c, 3, padding=1)))
                res *= 2
            else:
                self.unpool.append(nn.Identity())
        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out = nn.Conv2d(c, cin, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @classmethod
    def from_config(cls, config: dict) -> "UNet":
        known = {f.name for f in fields(UNetConfig)}
        return cls(UNetConfig(**{k: v for k, v in (config or {}).items() if k in known}))

    def config_dict(self) -> dict:
        d = asdict(self.cfg)
        d["channels"], d["attention"] = list(d["channels"]), list(d["attention"])
        d["lowres_factors"] = list(d["lowres_factors"])
        return d

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, label=None, lowres=None,
                **unused) -> torch.Tensor:
        cfg = self.cfg
        b = x_in.shape[0]
        want = (cfg.image_channels, cfg.image_size, cfg.image_size)
        if tuple(x_in.shape[1:]) != want:
            raise PolydiffError(f"x has shape {list(x_in.shape)}, expected [B, {', '.join(map(str, want))}]")
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
        if cfg.lowres_factors:
            if lowres is None:
                raise PolydiffError("this is a super-resolution network: it needs the low-resolution image "
                                    "(use `polydiff upscale image`, not `polydiff sample image`)")
            lowres = torch.as_tensor(lowres, device=x_in.device, dtype=x_in.dtype)
            if lowres.shape != x_in.shape:
                raise PolydiffError(f"lowres has shape {list(lowres.shape)}, expected {list(x_in.shape)}")
            x_in = torch.cat([x_in, lowres], dim=1)
        h = F.pixel_unshuffle(x_in, cfg.patch) if cfg.patch > 1 else x_in
        h = self.inp(h)
        skips = [h]
        for blocks, attns, pool in zip(self.down, self.down_attn, self.pool):
            for blk, att in zip(blocks, attns):
                h = att(blk(h, e))
                skips.append(h)
            if not isinstance(pool, nn.Identity):
                h = pool(h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, e)), e)
        for blocks, attns, unpool in zip(self.up, self.up_attn, self.unpool):
            for blk, att in zip(blocks, attns):
                h = att(blk(torch.cat([h, skips.pop()], dim=1), e))
            h = unpool(h)
        y = self.out(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(y, cfg.patch) if cfg.patch > 1 else y
