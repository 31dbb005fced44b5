"""The audio encoder: files or arrays <-> fixed-length mono waveforms at the model's sample rate.

Encoding a clip: downmix to mono, resample to ``sample_rate`` (torchaudio), normalize its loudness to
``rms`` (the RMS of the clip; silent clips stay silent, never NaN), take the ``clip_samples`` window with the
most energy when it is longer or pad it with silence at the end when it is shorter, and multiply by
``scale`` so the network sees unit-scale speech. ``cond["valid"]`` marks the real (not padded) samples and
``cond["label"]`` holds class indices when the clips have labels.

The sample rate, clip length, loudness target, scale and class names live in the checkpoint, so a 44.1 kHz
stereo file given to an 8 kHz model is converted on load, never rejected.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from polydiff.errors import InputError, PolydiffError

from . import io as audio_io

__all__ = ["Clips", "AudioEncoder", "make_cond", "configure", "FSDD_NAME"]

#: FSDD file names: {digit}_{speaker}_{take}.wav
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")


@dataclass
class Clips:
    """Mono waveforms at ``sample_rate`` (float32 arrays of any length), optional labels and names."""

    waves: List[np.ndarray]
    sample_rate: int
    labels: Optional[List[int]] = None
    classes: List[str] = field(default_factory=list)
    names: List[str] = field(default_factory=list)

    def __len__(self):
        return len(self.waves)

    def __getitem__(self, i):
        return self.waves[i]


def to_mono(samples: np.ndarray) -> np.ndarray:
    """[channels, frames] or [frames] -> [frames] (mean of the channels)."""
    x = np.asarray(samples, dtype=np.float32)
    return x.mean(0) if x.ndim == 2 else x


def resample(wave: np.ndarray, sr: int, target: int) -> np.ndarray:
    """Band-limited resampling with torchaudio (windowed sinc)."""
    if int(sr) == int(target):
        return np.asarray(wave, dtype=np.float32)
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), int(sr), int(target)).numpy()


#: the peak a clip louder than full scale is scaled down to when written (just below 1: no clipping)
PEAK = 0.99


def fit_full_scale(wave: np.ndarray) -> np.ndarray:
    """``wave`` scaled down to peak at :data:`PEAK` if its peak is above 1 (full scale), else unchanged."""
    wave = np.asarray(wave, dtype=np.float32)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    return wave * np.float32(PEAK / peak) if peak > 1.0 else wave


def loudest_window(wave: np.ndarray, n: int) -> int:
    """Start of the length-``n`` window with the most energy."""
    if len(wave) <= n:
        return 0
    c = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])
    return int(np.argmax(c[n:] - c[:-n]))


class AudioEncoder:
    def __init__(self, sample_rate: int = 8000, clip_samples: int = 8000, rms: float = 0.1, scale: float = 5.0,
                 classes: Sequence[str] = ()):
        self.sample_rate = int(sample_rate)
        self.clip_samples = int(clip_samples)
        self.rms = float(rms)
        self.scale = float(scale)
        self.classes = [str(c) for c in classes]

    @classmethod
    def from_metadata(cls, meta: Optional[dict] = None) -> "AudioEncoder":
        return cls(**meta) if meta else cls()

    def metadata(self) -> dict:
        return {"sample_rate": self.sample_rate, "clip_samples": self.clip_samples, "rms": self.rms,
                "scale": self.scale, "classes": list(self.classes)}

    def sample_shape(self):
        return (1, self.clip_samples)

    @property
    def seconds(self) -> float:
        return self.clip_samples / self.sample_rate

    # ------------------------------------------------------------------ files
    def load(self, path) -> np.ndarray:
        """One file as a mono waveform at the model's sample rate."""
        samples, sr = audio_io.read_audio(path)
        return resample(to_mono(samples), sr, self.sample_rate)

    def read(self, path, strict: bool = False) -> Clips:
        """A file, or every .wav/.flac/.ogg file under a folder. Labels come from FSDD-style names
        (``7_jackson_12.wav``) or, failing that, from the names of the sub-folders the files sit in (two or
        more). In a folder, a file that cannot be read is skipped with a warning that counts the skipped
        files and names the first (``strict=True``: the first one raises)."""
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        files = audio_io.list_audio(path) if path.is_dir() else [path]
        if path.is_dir() and not files:
            raise InputError(f"{path}: no {'/'.join(audio_io.SUPPORTED)} files in this folder")
        waves, names, skipped = [], [], []
        for f in files:
            try:
                waves.append(self.load(f))
                names.append(str(f.relative_to(path)) if path.is_dir() else f.name)
            except InputError as e:
                if strict or not path.is_dir():
                    raise
                skipped.append(str(e))
        if not waves:
            raise InputError(f"{path}: none of the {len(files)} audio files could be read (first: {skipped[0]})")
        if skipped:
            warnings.warn(f"{path}: skipped {len(skipped)} unreadable file(s), using {len(waves)} of {len(files)} "
                          f"(first: {skipped[0]})", stacklevel=2)
        labels, classes = _labels_of(names)
        return Clips(waves, self.sample_rate, labels, classes, names)

    def write(self, items, path) -> List[Path]:
        """Write clips as 16-bit WAV files and a spectrogram picture. ``path``: a folder (``sample_000.wav``,
        ..., ``spectrograms.png``) or, for one clip, a ``.wav``/``.flac``/``.ogg`` file (picture next to it).

        A clip whose peak exceeds full scale (speech at RMS ``rms`` = 0.1 can peak above 1) is scaled down
        to peak at :data:`PEAK` instead of being clipped: loudness is relative here (reading a file
        normalizes it again), so scaling keeps the clip, while clipping would distort it."""
        from .draw import spectrogram_grid

        clips = items if isinstance(items, Clips) else Clips(list(items), self.sample_rate)
        path = Path(path)
        out = []
        if path.suffix.lower() in audio_io.SUPPORTED:
            if len(clips) != 1:
                raise InputError(f"{path}: a file holds one clip, got {len(clips)}; give a folder")
            out.append(audio_io.write_audio(path, fit_full_scale(clips.waves[0]), clips.sample_rate))
            png = path.with_suffix(".png")
        else:
            path.mkdir(parents=True, exist_ok=True)
            for i, w in enumerate(clips.waves):
                out.append(audio_io.write_audio(path / f"sample_{i:03d}.wav", fit_full_scale(w), clips.sample_rate))
            if clips.labels is not None and (clips.classes or self.classes):
                from polydiff.modality import write_label_table

                out.append(write_label_table(path, out, clips.labels, list(clips.classes or self.classes)))
            png = path / "spectrograms.png"
        titles = [self._title(clips, i) for i in range(len(clips))]
        out.append(spectrogram_grid(clips.waves, clips.sample_rate, png, titles=titles))
        return out

    def _title(self, clips: Clips, i: int) -> str:
        if clips.labels is not None and clips.labels[i] is not None and clips.labels[i] >= 0:
            names = clips.classes or self.classes
            lab = clips.labels[i]
            return f"{i}: {names[lab] if lab < len(names) else lab}"
        return clips.names[i] if i < len(clips.names) else str(i)

    # ------------------------------------------------------------------ tensors
    def fit(self, items) -> "AudioEncoder":
        clips = self._as_clips(items)
        if len(clips) < 1:
            raise InputError("need at least one clip to fit the audio encoder")
        if clips.classes:
            self.classes = list(clips.classes)
        elif clips.labels is not None:
            self.classes = [str(i) for i in range(max(clips.labels) + 1)]
        return self

    def loudness_gain(self, wave: np.ndarray) -> float:
        """The gain that brings ``wave`` to RMS ``rms``; 0 for silence (RMS below 1e-6), never inf or NaN."""
        wave = np.asarray(wave)
        r = float(np.sqrt(np.mean(wave.astype(np.float64) ** 2))) if wave.size else 0.0
        return self.rms / r if r > 1e-6 else 0.0

    def normalize(self, wave: np.ndarray) -> np.ndarray:
        """Loudness to ``rms`` (a silent clip stays silent), then ``scale``."""
        wave = np.asarray(wave, dtype=np.float32)
        return wave * np.float32(self.loudness_gain(wave) * self.scale)

    def fix_length(self, wave: np.ndarray):
        """(clip of exactly clip_samples, number of real samples in it)."""
        n = self.clip_samples
        if len(wave) >= n:
            s = loudest_window(wave, n)
            return wave[s:s + n], n
        return np.pad(wave, (0, n - len(wave))), len(wave)

    def encode(self, items):
        clips = self._as_clips(items)
        if len(clips) == 0:
            raise InputError("no audio clips to encode")
        x = np.zeros((len(clips), 1, self.clip_samples), np.float32)
        valid = np.zeros_like(x)
        for i, w in enumerate(clips.waves):
            if clips.sample_rate != self.sample_rate:
                w = resample(w, clips.sample_rate, self.sample_rate)
            clip, n = self.fix_length(w)
            x[i, 0, :n] = self.normalize(clip[:n])  # loudness of the real part; the padding stays silent
            valid[i, 0, :n] = 1.0
        cond: Dict[str, torch.Tensor] = {"valid": torch.from_numpy(valid)}
        if clips.labels is not None and self.classes:
            names = clips.classes or self.classes
            idx = [self.classes.index(names[l]) if names[l] in self.classes else -1 for l in clips.labels]
            cond["label"] = torch.tensor(idx, dtype=torch.long)
        return torch.from_numpy(x), cond

    def decode(self, x: torch.Tensor, cond: Optional[Dict[str, Any]] = None) -> Clips:
        """[B, 1, L] -> Clips at the model's rate and loudness (``rms``), cut to ``cond["valid"]`` when given."""
        cond = cond or {}
        x = torch.as_tensor(x).detach().float().cpu().reshape(x.shape[0], -1) / self.scale
        valid = cond.get("valid")
        waves = []
        for i in range(x.shape[0]):
            w = x[i].numpy()
            if valid is not None:
                n = int(torch.as_tensor(valid)[i].reshape(-1).sum().item())
                w = w[:max(n, 1)]
            waves.append(np.nan_to_num(w).astype(np.float32))
        labels = cond.get("label")
        labels = [int(v) for v in torch.as_tensor(labels).reshape(-1)] if labels is not None else None
        return Clips(waves, self.sample_rate, labels, list(self.classes))

    def _as_clips(self, items) -> Clips:
        if isinstance(items, Clips):
            return items
        if isinstance(items, (str, Path)):
            return self.read(items)
        waves = [to_mono(w) for w in items]
        return Clips(waves, self.sample_rate)



def _labels_of(names: Sequence[str]):
    """(labels, classes) from FSDD-style file names or sub-folder names; (None, []) when neither applies."""
    stems = [Path(n).stem for n in names]
    m = [FSDD_NAME.match(s) for s in stems]
    if m and all(m):
        raw = [x.group(1) for x in m]
    else:
        parents = [Path(n).parent.name for n in names]
        if len(set(parents)) < 2 or any(p == "" for p in parents):
            return None, []
        raw = parents
    classes = sorted(set(raw), key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
    return [classes.index(r) for r in raw], classes


def make_cond(encoder: AudioEncoder, n: int, label=None, generator: Optional[torch.Generator] = None,
              **_) -> Dict[str, torch.Tensor]:
    """The sampling cond for n clips: ``label`` a class (name or index) for every clip, ``"all"`` (default)
    to cycle through the classes, or ``"none"`` for unconditional generation
    (:func:`polydiff.modality.labels_for`)."""
    from polydiff.modality import labels_for

    cond: Dict[str, torch.Tensor] = {"valid": torch.ones(n, 1, encoder.clip_samples)}
    labels = labels_for(encoder.classes, n, label)
    if labels is not None:
        cond["label"] = labels
    return cond


def configure(config: dict, encoder: AudioEncoder) -> dict:
    """The network's clip length and number of classes come from the fitted encoder."""
    if config.get("network", {}).get("skip_bands") and config.get("parameterisation", "edm") != "edm":
        raise PolydiffError("network.skip_bands reads the noise level from EDM's noise conditioning; "
                            f"it cannot be used with the {config.get('parameterisation')!r} parameterisation")
    net = {**config.get("network", {}), "clip_samples": encoder.clip_samples, "num_classes": len(encoder.classes)}
    if net.get("skip_bands"):
        net["sigma_data"] = float(config.get("sigma_data", 0.5))
    return {**config, "network": net}
