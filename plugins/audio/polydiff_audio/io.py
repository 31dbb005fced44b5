"""Audio files: reading any WAV / FLAC / OGG file soundfile supports, writing them atomically.

Every problem with an input file is one :class:`~polydiff.errors.InputError` line naming the file: missing,
a folder where a file was expected, an unsupported extension, a file libsndfile cannot decode (corrupt or
not audio), zero frames.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Tuple

import numpy as np

from polydiff.errors import InputError

__all__ = ["SUPPORTED", "read_audio", "write_audio", "list_audio"]

#: file extensions read and written (soundfile / libsndfile formats)
SUPPORTED = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def _soundfile():
    import soundfile

    return soundfile


def read_audio(path) -> Tuple[np.ndarray, int]:
    """``(samples [channels, frames] float32 in [-1, 1], sample_rate)`` of one audio file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an audio file")
    if path.suffix.lower() not in SUPPORTED:
        raise InputError(f"{path}: unsupported audio format {path.suffix or '(no extension)'!r}; "
                         f"use {', '.join(SUPPORTED)}")
    sf = _soundfile()
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile's errors (LibsndfileError, RuntimeError, ...) for corrupt files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: cannot decode audio ({msg})") from None
    if data.shape[0] == 0:
        raise InputError(f"{path}: zero-length audio (no samples)")
    if not np.isfinite(data).all():
        raise InputError(f"{path}: audio contains NaN or infinite samples")
    return np.ascontiguousarray(data.T), int(sr)


def write_audio(path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write ``samples`` ([frames] or [channels, frames], float in [-1, 1], clipped) to ``path`` atomically
    (a temporary file in the same folder, then a rename). The format follows the extension; WAV and FLAC
    are 16-bit PCM."""
    path = Path(path)
    fmt = SUPPORTED.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unsupported audio format {path.suffix!r}; use {', '.join(SUPPORTED)}")
    x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    x = x.T if x.ndim == 2 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
        _soundfile().write(tmp, x, int(sample_rate), format=fmt, subtype=subtype)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def list_audio(folder) -> list:
    """Every supported audio file under ``folder`` (recursively), sorted."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED)
