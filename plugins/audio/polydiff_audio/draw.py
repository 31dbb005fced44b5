"""Spectrogram pictures of waveforms (torchaudio for the transform, matplotlib for the drawing)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch


def log_spectrogram(wave: np.ndarray, sample_rate: int, n_fft: int = 256) -> np.ndarray:
    """Power spectrogram in dB ([freq, time]), floored 80 dB below its peak."""
    import torchaudio.transforms as T

    w = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    if w.numel() < n_fft:
        w = torch.nn.functional.pad(w, (0, n_fft - w.numel()))
    spec = T.Spectrogram(n_fft=n_fft, hop_length=n_fft // 4, power=2.0)(w)
    db = 10 * torch.log10(spec + 1e-10)
    return torch.maximum(db, db.max() - 80).numpy()


def spectrogram_grid(waves: Sequence[np.ndarray], sample_rate: int, path, titles: Optional[List[str]] = None,
                     n_cols: int = 4) -> Path:
    """One spectrogram per waveform in a grid; written atomically as PNG. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from polydiff.checkpoint import atomic_writer

    n = max(len(waves), 1)
    cols = min(n_cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(waves):
            ax.axis("off")
            continue
        db = log_spectrogram(waves[k], sample_rate)
        dur = len(waves[k]) / sample_rate
        ax.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=(0, dur, 0, sample_rate / 2000))
        ax.set_title(titles[k] if titles and k < len(titles) else str(k), fontsize=9)
        ax.set_xlabel("s", fontsize=8)
        ax.set_ylabel("kHz", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return path


def draw_frames(encoder, frames: List[torch.Tensor], cond: dict, path, titles: Optional[List[str]] = None):
    """The trajectory of the first sample: one spectrogram per step's x0 estimate."""
    waves = [encoder.decode(f[:1].cpu(), {}).waves[0] for f in frames]
    return spectrogram_grid(waves, encoder.sample_rate, path, titles=titles, n_cols=6)
