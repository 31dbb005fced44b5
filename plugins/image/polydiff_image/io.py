"""Image files: read PNG / JPEG / BMP / TIFF / WebP (Pillow) and .npy / .npz arrays, write PNG atomically.

Every reader returns uint8 arrays shaped [H, W, C] (C = 1 or 3) and raises
:class:`polydiff.errors.InputError` with one line naming the file and the problem; nothing here
unpickles (``np.load(..., allow_pickle=False)``).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from polydiff.checkpoint import atomic_write_bytes
from polydiff.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "ARRAY_SUFFIXES", "list_images", "read_image", "read_array_file", "to_uint8",
           "write_png", "png_bytes", "grid"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ARRAY_SUFFIXES = (".npy", ".npz")
#: keys looked up in an .npz archive, in order
IMAGE_KEYS = ("images", "x", "X", "arr_0")
LABEL_KEYS = ("labels", "y", "Y", "arr_1")


def list_images(folder: Path) -> List[Path]:
    """Image files under ``folder`` (recursively), sorted by path; hidden files and folders skipped."""
    folder = Path(folder)
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(out)


def _channels(a: np.ndarray, path, keep_alpha: bool = False) -> np.ndarray:
    """[H, W] or [H, W, C] -> [H, W, 1 or 3]; an opaque alpha channel is dropped, a transparent one is an error."""
    if a.ndim == 2:
        return a[:, :, None]
    if a.ndim != 3:
        raise InputError(f"{path}: expected an image array [H, W] or [H, W, C], got shape {list(a.shape)}")
    c = a.shape[2]
    if c in (1, 3):
        return a
    if c == 2 or c == 4:  # gray + alpha, RGB + alpha
        alpha = a[:, :, -1]
        if alpha.min() < (255 if a.dtype == np.uint8 else 1.0):
            raise InputError(f"{path}: the image has transparent pixels (an alpha channel); flatten it onto a "
                             "background first")
        return a[:, :, :-1]
    raise InputError(f"{path}: images have 1 (grayscale) or 3 (RGB) channels, got {c}")


def to_uint8(a: np.ndarray, path="array") -> np.ndarray:
    """uint8 as is; floats in [0, 1] are scaled by 255 (anything outside [0, 1] is an error); other
    integer types must hold values 0-255."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError(f"{path}: the array holds NaN or infinite values")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{path}: float images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
        return np.round(a * 255.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 255):
            raise InputError(f"{path}: integer images must hold values 0-255, got {a.min()}-{a.max()}")
        return a.astype(np.uint8)
    raise InputError(f"{path}: unsupported array type {a.dtype}")


def read_image(path) -> np.ndarray:
    """One image file -> uint8 [H, W, 1 or 3]. Palette, 16-bit and CMYK images are converted; an opaque
    alpha channel is dropped."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("1", "L"):
                a = np.asarray(im.convert("L"))
            elif mode in ("I;16", "I;16B", "I;16L", "I"):
                a = (np.asarray(im, dtype=np.float64) / (65535.0 if mode.startswith("I;16") else max(np.asarray(im).max(), 1)) * 255).round().astype(np.uint8)
            elif mode == "LA":
                a = np.asarray(im)
            elif mode in ("RGBA", "PA") or (mode == "P" and "transparency" in im.info):
                a = np.asarray(im.convert("RGBA"))
            else:
                a = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: not a readable image ({msg})") from None
    return _channels(np.ascontiguousarray(a), path)


def read_array_file(path) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A .npy ([N, H, W], [N, H, W, C] or one [H, W(, C)] image) or .npz (``images``/``x`` and optional
    ``labels``/``y``) file -> (uint8 [N, H, W, C], labels or None)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: not a readable NumPy file ({msg})") from None
    labels = None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            key = next((k for k in IMAGE_KEYS if k in data.files), None)
            if key is None:
                raise InputError(f"{path}: no image array in the archive (looked for {', '.join(IMAGE_KEYS)}; "
                                 f"found {', '.join(data.files) or 'nothing'})")
            arr = data[key]
            lkey = next((k for k in LABEL_KEYS if k in data.files and k != key), None)
            labels = data[lkey] if lkey else None
    else:
        arr = data
    if arr.dtype == object:
        raise InputError(f"{path}: object arrays are not images")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[0] > 4):
        arr = arr[None]  # one image
    if arr.ndim == 3:
        arr = arr[:, :, :, None]
    if arr.ndim != 4:
        raise InputError(f"{path}: expected images shaped [N, H, W] or [N, H, W, C], got {list(arr.shape)}")
    if arr.shape[-1] not in (1, 3) and arr.shape[1] in (1, 3):
        arr = np.moveaxis(arr, 1, -1)  # channels-first input
    if arr.shape[-1] not in (1, 3):
        raise InputError(f"{path}: images have 1 (grayscale) or 3 (RGB) channels, got {arr.shape[-1]}")
    arr = to_uint8(arr, path)
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(arr):
            raise InputError(f"{path}: {len(labels)} labels for {len(arr)} images")
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"{path}: labels must be integers, got {labels.dtype}")
    return np.ascontiguousarray(arr), labels


def png_bytes(a: np.ndarray) -> bytes:
    """uint8 [H, W, 1 or 3] -> PNG bytes."""
    from PIL import Image

    a = np.asarray(a, dtype=np.uint8)
    im = Image.fromarray(a[:, :, 0], mode="L") if a.shape[2] == 1 else Image.fromarray(a, mode="RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_png(path, a: np.ndarray) -> Path:
    """Write uint8 [H, W, C] as PNG atomically (temporary file + rename)."""
    return atomic_write_bytes(path, png_bytes(a))


def grid(images: List[np.ndarray], cols: Optional[int] = None, pad: int = 2, scale: int = 1,
         background: int = 255) -> np.ndarray:
    """Tile uint8 [H, W, C] images (same size) into one image; ``scale`` enlarges each pixel."""
    if not images:
        raise InputError("no images to tile")
    h, w, c = images[0].shape
    n = len(images)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    hs, ws = h * scale, w * scale
    out = np.full((rows * hs + (rows + 1) * pad, cols * ws + (cols + 1) * pad, c), background, np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        big = np.repeat(np.repeat(im, scale, 0), scale, 1) if scale > 1 else im
        y, x = pad + r * (hs + pad), pad + k * (ws + pad)
        out[y:y + hs, x:x + ws] = big
    return out
