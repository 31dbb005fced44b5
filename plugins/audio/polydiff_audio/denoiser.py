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
    skip_bands: int = 0                # octave bands in which the network may turn EDM's skip connection down
    sigma_data: float = 0.5            # the model's sigma_data (used by skip_bands; configure fills it in)

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        steps = self.clip_samples // self.frame
        if self.clip_samples % self.frame or steps % (2 ** (len(self.channels) - 1)):
            raise PolydiffError(f"clip_samples {self.clip_samples} must be frame ({self.frame}) x a multiple of "
                                f"{2 ** (len(self.channels) - 1)}")


def octave_bank(bands: int, taps: int = 127) -> torch.Tensor:
    """``[bands, 1, taps]`` FIR filters splitting a signal into octave bands that sum back to it exactly:
    the top band is everything above half the Nyquist frequency, the next one octave below, ..., the last
    everything below. Differences of windowed-sinc low-pass filters (Hamming window, unit gain at DC)."""
    n = torch.arange(taps, dtype=torch.float64) - taps // 2
    window = torch.hamming_window(taps, periodic=False, dtype=torch.float64)
    lows = [torch.zeros(taps, dtype=torch.float64)]                    # low-pass at 0: nothing
    for i in range(bands - 1, 0, -1):                                  # cutoffs Nyquist / 2^i, low to high
        fc = 0.5 / 2 ** i                                              # cycles per sample
        h = 2 * fc * torch.special.sinc(2 * fc * n) * window
        lows.append(h / h.sum())
    delta = torch.zeros(taps, dtype=torch.float64)
    delta[taps // 2] = 1.0
    lows.append(delta)                                                 # "low-pass" at Nyquist: everything
    bank = torch.stack([lows[i + 1] - lows[i] for i in range(bands)])
    return bank[:, None, :].float()


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
        if cfg.skip_bands:
            # EDM's denoiser is D = c_skip x + c_out F. Where the input is mostly noise (a pause; the weak
            # high frequencies of speech at a moderate noise level) D should drop it, which needs F =
            # -c_skip x / c_out there: a copy of the input noise amplified by sigma_data / sigma, sample by
            # sample, which the U-Net's features pass on poorly (generated clips kept a hiss in their pauses
            # and above the speech). So the input is split into octave bands (fixed filters that sum to the
            # identity) and the U-Net's last features give a mask per band and output sample: F gets
            # -sum_b m_b band_b(x) c_skip / c_out, i.e. D = c_skip (x - sum_b m_b band_b(x)) + c_out F, a
            # learned, time-varying gain on each band of the skip connection. sigma = exp(4 c_noise) is EDM's
            # noise conditioning (configure refuses other parameterisations). The masks start at zero, so
            # an existing network is unchanged until it is fine-tuned.
            bank = octave_bank(cfg.skip_bands)[:, 0]                                        # [nb, taps]
            # filtering by FFT (2.5x faster than conv1d with 127 taps here); the filters are symmetric, so
            # convolution and conv1d's correlation agree
            n_fft = 2 ** math.ceil(math.log2(cfg.clip_samples + bank.shape[1] - 1))   # no wrap-around; a fast size
            self.band_fft = (n_fft, bank.shape[1] // 2)                                   # (length, delay)
            self.register_buffer("band_response", torch.fft.rfft(bank, n=self.band_fft[0]), persistent=False)
            self.skip_mask = nn.Conv1d(c, cfg.skip_bands * cfg.frame, 3, padding=1)
            nn.init.zeros_(self.skip_mask.weight)
            nn.init.zeros_(self.skip_mask.bias)

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
        if cfg.skip_bands:
            nb, (n_fft, delay), L = cfg.skip_bands, self.band_fft, cfg.clip_samples
            spec = torch.fft.rfft(x_in[:, 0].float(), n=n_fft)[:, None] * self.band_response
            bands = torch.fft.irfft(spec, n=n_fft)[..., delay:delay + L]                    # [B, nb, L]
            bands = bands.reshape(b, nb, -1, cfg.frame).transpose(2, 3)                       # [B, nb, frame, T]
            masks = self.skip_mask(h).reshape(b, nb, cfg.frame, -1)
            sigma = torch.exp(4 * c_noise.float())[:, None, None]
            # c_skip / (c_in c_out) = sigma_data / sigma, and x_in = c_in x
            y = y - (masks * bands).sum(1) * (cfg.sigma_data / sigma)
        return y.transpose(1, 2).reshape(b, 1, cfg.clip_samples)
