"""Audio files: reading any WAV / FLAC / OGG file soundfile supports, writing them atomically.

Every problem with an input file is one :class:`~polydiff.errors.InputError` line naming the file: missing,
a folder where a file was expected, an unsupported extension, a file libsndfile cannot decode (corrupt or
not audio), zero frames.

Two ways to read a file:

* :func:`read_audio` gives float32 samples in [-1, 1], what the encoder and the models use;
* :func:`read_audio_native` gives the samples in the integer type that holds the file's sample format
  exactly (int16 for 8/16-bit PCM and mu-/A-law, int32 for 24/32-bit PCM; float64 otherwise) together
  with that format (``"PCM_16"``, ...). Writing such an array back with :func:`write_audio` and the same
  ``subtype`` reproduces every sample bit for bit, whatever libsndfile's float scaling convention is; the
  gap filler uses it to keep everything outside the gap exactly.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from polydiff.checkpoint import give_final_mode
from polydiff.errors import InputError

__all__ = ["SUPPORTED", "read_audio", "read_audio_native", "to_float", "from_float", "write_audio",
           "list_audio"]

#: file extensions read and written (soundfile / libsndfile formats)
SUPPORTED = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}

#: libsndfile sample formats whose samples an integer array holds exactly (soundfile's dtype for them)
_NATIVE_DTYPE = {"PCM_S8": "int16", "PCM_U8": "int16", "PCM_16": "int16", "ULAW": "int16", "ALAW": "int16",
                 "PCM_24": "int32", "PCM_32": "int32"}
#: what an integer sample of each dtype is worth in [-1, 1] units (libsndfile reads int16 v as v / 2**15)
_FULL_SCALE = {np.dtype("int16"): 2.0 ** 15, np.dtype("int32"): 2.0 ** 31}
#: the sample format written when none is asked for, or when the format cannot store the one asked for
_DEFAULT_SUBTYPE = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}


def _soundfile():
    import soundfile

    return soundfile


def _checked(path) -> Path:
    """``path`` as a Path if it names an existing file with a supported extension; else an InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an audio file")
    if path.suffix.lower() not in SUPPORTED:
        raise InputError(f"{path}: unsupported audio format {path.suffix or '(no extension)'!r}; "
                         f"use {', '.join(SUPPORTED)}")
    return path


def _read(path: Path, dtype: str):
    """soundfile.read with every decoding problem as one InputError line; returns ([frames, channels], sr)."""
    sf = _soundfile()
    try:
        data, sr = sf.read(str(path), dtype=dtype, always_2d=True)
    except Exception as e:  # libsndfile's errors (LibsndfileError, RuntimeError, ...) for corrupt files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: cannot decode audio ({msg})") from None
    if data.shape[0] == 0:
        raise InputError(f"{path}: zero-length audio (no samples)")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise InputError(f"{path}: audio contains NaN or infinite samples")
    return data, int(sr)


def read_audio(path) -> Tuple[np.ndarray, int]:
    """``(samples [channels, frames] float32 in [-1, 1], sample_rate)`` of one audio file."""
    path = _checked(path)
    data, sr = _read(path, "float32")
    return np.ascontiguousarray(data.T), sr


def read_audio_native(path) -> Tuple[np.ndarray, int, str]:
    """``(samples [channels, frames], sample_rate, subtype)`` with the samples in the dtype that holds the
    file's sample format exactly (see the module docstring); :func:`to_float` gives the float32 view."""
    path = _checked(path)
    sf = _soundfile()
    try:
        subtype = sf.info(str(path)).subtype
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: cannot decode audio ({msg})") from None
    data, sr = _read(path, _NATIVE_DTYPE.get(subtype, "float64"))
    return np.ascontiguousarray(data.T), sr, subtype


def to_float(samples: np.ndarray) -> np.ndarray:
    """Samples from :func:`read_audio_native` as float32 in [-1, 1], equal to what :func:`read_audio` gives."""
    x = np.asarray(samples)
    scale = _FULL_SCALE.get(x.dtype)
    return (x / scale).astype(np.float32) if scale else x.astype(np.float32)


def from_float(values: np.ndarray, dtype) -> np.ndarray:
    """Float samples in [-1, 1] as ``dtype`` (the inverse of :func:`to_float`: rounded, clipped to range)."""
    dtype = np.dtype(dtype)
    v = np.nan_to_num(np.asarray(values, dtype=np.float64))
    scale = _FULL_SCALE.get(dtype)
    if scale is None:
        return np.clip(v, -1.0, 1.0).astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(v * scale), info.min, info.max).astype(dtype)


def write_audio(path, samples: np.ndarray, sample_rate: int, subtype: Optional[str] = None) -> Path:
    """Write ``samples`` ([frames] or [channels, frames]) to ``path`` atomically (a temporary file in the
    same folder, then a rename). The format follows the extension.

    Float samples are in [-1, 1] (clipped, except for a FLOAT/DOUBLE ``subtype``, which stores any value);
    integer samples (from :func:`read_audio_native`) are written as they are. ``subtype`` is the sample
    format (``"PCM_24"``, ...); when it is not given, or the format cannot store it (FLOAT in FLAC, anything
    but VORBIS in OGG), WAV and FLAC get 16-bit PCM and OGG gets Vorbis."""
    path = Path(path)
    fmt = SUPPORTED.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unsupported audio format {path.suffix or '(no extension)'!r}; "
                         f"use {', '.join(SUPPORTED)}")
    sf = _soundfile()
    if subtype is None or not sf.check_format(fmt, subtype):
        subtype = _DEFAULT_SUBTYPE[fmt]
    x = np.asarray(samples)
    if x.dtype.kind != "i":
        x = np.nan_to_num(x.astype(np.float32 if x.dtype != np.float64 else np.float64))
        if subtype not in ("FLOAT", "DOUBLE"):
            x = np.clip(x, -1.0, 1.0)
    x = np.ascontiguousarray(x.T if x.ndim == 2 else x)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{path.suffix}.tmp", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, x, int(sample_rate), format=fmt, subtype=subtype)
        give_final_mode(tmp, path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def list_audio(folder) -> list:
    """Every supported audio file under ``folder`` (recursively), sorted; hidden files (names starting with
    a dot, such as the temporary files of an interrupted write) are left out."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED
                  and not p.name.startswith("."))
