"""The image encoder: files or arrays <-> channels-first float tensors in [-1, 1].

``uint8 [H, W, C]`` <-> ``float [C, H, W]`` with ``x = u / 127.5 - 1`` and ``u = round((x + 1) * 127.5)``
(clipped to 0-255), so decoding an encoded image gives it back exactly.

Channels. A model is grayscale (1 channel) or RGB (3). A grayscale image given to an RGB model is
repeated into three channels; an RGB image whose three channels are equal is accepted by a grayscale
model; any other RGB image given to a grayscale model is an error (the conversion would lose colour), as
is a channel count other than 1 or 3.

Size: the resize policy. The model's ``image_size`` is fixed when the encoder is fitted (the size of the
training images, or ``image_size`` if set). An image of another size is handled by ``resize``:

* ``"crop"`` (default): scale the shorter side to ``image_size`` (Lanczos), then cut the centre square;
* ``"stretch"``: scale both sides to ``image_size`` (the aspect ratio changes);
* ``"error"``: refuse it, naming the file and both sizes.

Tasks that keep pixels exactly (inpainting) or that are defined by a size (super-resolution) never
resize: they check sizes themselves.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from polydiff.errors import InputError

from . import io as image_io

__all__ = ["Images", "ImageEncoder", "make_cond", "configure", "RESIZE_POLICIES", "to_tensor", "from_tensor"]

RESIZE_POLICIES = ("crop", "stretch", "error")


@dataclass
class Images:
    """uint8 arrays [H, W, C], optional labels (-1 = none) with class names, and names (file names)."""

    arrays: List[np.ndarray]
    labels: Optional[List[int]] = None
    classes: List[str] = field(default_factory=list)
    names: List[str] = field(default_factory=list)

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        return self.arrays[i]

    def stack(self) -> np.ndarray:
        """[N, H, W, C] uint8 (all images must have one size)."""
        return np.stack(self.arrays)


def to_tensor(a: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, C] -> float32 [..., C, H, W] in [-1, 1]."""
    t = torch.from_numpy(np.array(a, dtype=np.float32)).div_(127.5).sub_(1.0)
    return t.movedim(-1, -3).contiguous()


def from_tensor(x: torch.Tensor) -> np.ndarray:
    """float [..., C, H, W] in [-1, 1] -> uint8 [..., H, W, C] (rounded, clipped; NaN becomes 0)."""
    x = torch.nan_to_num(torch.as_tensor(x).detach().float().cpu(), nan=-1.0)
    u = ((x + 1.0) * 127.5).round().clamp_(0, 255).to(torch.uint8)
    return u.movedim(-3, -1).numpy()


def resize_array(a: np.ndarray, size: int, policy: str, name="image") -> np.ndarray:
    """Bring uint8 [H, W, C] to [size, size, C] by ``policy`` (see the module docstring)."""
    h, w = a.shape[:2]
    if (h, w) == (size, size):
        return a
    if policy == "error":
        raise InputError(f"{name}: is {w}x{h} pixels; the model takes {size}x{size} images "
                         f"(resize it, or use the 'crop' or 'stretch' resize policy)")
    from PIL import Image

    im = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
    if policy == "stretch":
        im = im.resize((size, size), Image.LANCZOS)
    else:  # crop
        s = size / min(h, w)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        im = im.resize((nw, nh), Image.LANCZOS)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
    out = np.asarray(im)
    return out[:, :, None] if out.ndim == 2 else out


class ImageEncoder:
    """Images <-> tensors. ``image_size`` / ``channels`` None: taken from the training data by :meth:`fit`."""

    def __init__(self, image_size: Optional[int] = None, channels: Optional[int] = None, resize: str = "crop",
                 classes: Sequence[str] = ()):
        if resize not in RESIZE_POLICIES:
            raise InputError(f"resize policy must be one of {', '.join(RESIZE_POLICIES)}, got {resize!r}")
        self.image_size = int(image_size) if image_size else None
        self.channels = int(channels) if channels else None
        self.resize = resize
        self.classes = [str(c) for c in classes]

    @classmethod
    def from_metadata(cls, meta: Optional[dict] = None) -> "ImageEncoder":
        return cls(**meta) if meta else cls()

    def metadata(self) -> dict:
        return {"image_size": self.image_size, "channels": self.channels, "resize": self.resize,
                "classes": list(self.classes)}

    def sample_shape(self):
        self._need_fit()
        return (self.channels, self.image_size, self.image_size)

    def _need_fit(self):
        if not self.image_size or not self.channels:
            raise InputError("the image encoder is not fitted: it has no image size or channel count yet")

    # ------------------------------------------------------------------ files
    def read(self, path, strict: bool = False) -> Images:
        """An image file, a .npy/.npz array file, or a folder of image files (recursively). In a folder,
        labels come from the names of the sub-folders (two or more: ``train/cat/1.png``); a file that
        cannot be read is skipped with a warning that counts the skipped files and names the first
        (``strict=True``: the first one raises). A ``grid.png`` next to ``sample_000.png`` (what
        :meth:`write` makes) is skipped, so a folder of written samples reads back as those samples."""
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.is_file() and path.suffix.lower() in image_io.ARRAY_SUFFIXES:
            arr, labels = image_io.read_array_file(path)
            lab = [int(v) for v in labels] if labels is not None else None
            classes = [str(i) for i in range(max(lab) + 1)] if lab and max(lab) >= 0 else []
            return Images(list(arr), lab, classes, [f"{path.name}[{i}]" for i in range(len(arr))])
        if path.is_file():
            if path.suffix.lower() not in image_io.IMAGE_SUFFIXES:
                raise InputError(f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; use "
                                 f"{', '.join(image_io.IMAGE_SUFFIXES + image_io.ARRAY_SUFFIXES)}")
            return Images([image_io.read_image(path)], None, [], [path.name])
        # the grid.png that write() puts beside sample_000.png ... is a picture of the samples, not one of them
        files = [f for f in image_io.list_images(path)
                 if not (f.name == "grid.png" and (f.parent / "sample_000.png").exists())]
        if not files:
            raise InputError(f"{path}: no image files in this folder ({', '.join(image_io.IMAGE_SUFFIXES)})")
        arrays, names, skipped = [], [], []
        for f in files:
            try:
                arrays.append(image_io.read_image(f))
                names.append(str(f.relative_to(path)))
            except InputError as e:
                if strict:
                    raise
                skipped.append(str(e))
        if not arrays:
            raise InputError(f"{path}: none of the {len(files)} image files could be read (first: {skipped[0]})")
        if skipped:
            warnings.warn(f"{path}: skipped {len(skipped)} unreadable file(s), using {len(arrays)} of {len(files)} "
                          f"(first: {skipped[0]})", stacklevel=2)
        parents = [Path(n).parent for n in names]
        labels, classes = None, []
        if all(p != Path(".") for p in parents) and len(set(parents)) >= 2:
            classes = sorted({str(p) for p in parents})
            labels = [classes.index(str(p)) for p in parents]
        return Images(arrays, labels, classes, names)

    def write(self, items, path) -> List[Path]:
        """Write images as PNG. ``path``: a folder (``sample_000.png``, ... and ``grid.png``), a ``.png`` file
        for one image, or an ``.npz`` file (``images`` uint8 [N, H, W, C] and ``labels``) for many."""
        imgs = self._as_images(items)
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            import io as _io

            from polydiff.checkpoint import atomic_write_bytes

            buf = _io.BytesIO()
            labels = np.asarray(imgs.labels if imgs.labels is not None else [-1] * len(imgs), np.int64)
            np.savez_compressed(buf, images=imgs.stack(), labels=labels)
            return [atomic_write_bytes(path, buf.getvalue())]
        if suffix in image_io.IMAGE_SUFFIXES:
            if suffix != ".png":
                raise InputError(f"{path}: images are written as PNG; use a .png name or a folder")
            if len(imgs) != 1:
                raise InputError(f"{path}: a file holds one image, got {len(imgs)}; give a folder or an .npz file")
            return [image_io.write_png(path, imgs.arrays[0])]
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: exists and is not a folder")
        path.mkdir(parents=True, exist_ok=True)
        out = [image_io.write_png(path / f"sample_{i:03d}.png", a) for i, a in enumerate(imgs.arrays)]
        if imgs.labels is not None and (imgs.classes or self.classes):
            from polydiff.modality import write_label_table

            out.append(write_label_table(path, out, imgs.labels, list(imgs.classes or self.classes)))
        k = len(imgs.classes or self.classes)
        cols = k if imgs.labels is not None and 2 <= k <= len(imgs) and k <= 16 else None  # a column per class
        out.append(image_io.write_png(path / "grid.png",
                                      image_io.grid(imgs.arrays, cols=cols, scale=self._grid_scale(imgs))))
        return out

    @staticmethod
    def _grid_scale(imgs: Images) -> int:
        side = max(imgs.arrays[0].shape[:2])
        return max(1, 64 // side)

    # ------------------------------------------------------------------ tensors
    def fit(self, items) -> "ImageEncoder":
        """Take the image size (the most common one; or ``image_size`` when set), the channel count (3 if any
        image has colour) and the class names from training images."""
        imgs = self._as_images(items)
        if len(imgs) < 1:
            raise InputError("need at least one image to fit the image encoder")
        if not self.image_size:
            sizes = [min(a.shape[:2]) for a in imgs.arrays]
            self.image_size = int(max(set(sizes), key=sizes.count))
        if not self.channels:
            self.channels = 3 if any(a.shape[2] == 3 and not _is_gray(a) for a in imgs.arrays) else 1
        if imgs.classes:
            self.classes = list(imgs.classes)
        elif imgs.labels is not None and max(imgs.labels) >= 0:
            self.classes = [str(i) for i in range(max(imgs.labels) + 1)]
        return self

    def prepare(self, a: np.ndarray, name="image", resize: Optional[str] = None) -> np.ndarray:
        """One uint8 [H, W, C] image at the model's channels and size (policy ``resize`` or the encoder's)."""
        self._need_fit()
        a = self.match_channels(a, name)
        return resize_array(a, self.image_size, resize or self.resize, name)

    def match_channels(self, a: np.ndarray, name="image") -> np.ndarray:
        """uint8 [H, W, C] with C the model's channel count (see the module docstring) or an InputError."""
        self._need_fit()
        c = a.shape[2]
        if c == self.channels:
            return a
        if c == 1 and self.channels == 3:
            return np.repeat(a, 3, axis=2)
        if c == 3 and self.channels == 1:
            if _is_gray(a):
                return a[:, :, :1]
            raise InputError(f"{name}: a colour (RGB) image, but the model takes grayscale (1-channel) images; "
                             "convert it to grayscale first")
        raise InputError(f"{name}: has {c} channels; the model takes {self.channels}")

    def encode(self, items):
        imgs = self._as_images(items)
        if len(imgs) == 0:
            raise InputError("no images to encode")
        arr = np.stack([self.prepare(a, imgs.names[i] if i < len(imgs.names) else f"image {i}")
                        for i, a in enumerate(imgs.arrays)])
        cond: Dict[str, torch.Tensor] = {}
        if imgs.labels is not None and self.classes:
            names = imgs.classes or self.classes
            idx = [self.classes.index(names[l]) if 0 <= l < len(names) and names[l] in self.classes else -1
                   for l in imgs.labels]
            cond["label"] = torch.tensor(idx, dtype=torch.long)
        return to_tensor(arr), cond

    def decode(self, x: torch.Tensor, cond: Optional[Dict[str, Any]] = None) -> Images:
        cond = cond or {}
        arr = from_tensor(x)
        labels = cond.get("label")
        labels = [int(v) for v in torch.as_tensor(labels).reshape(-1)] if labels is not None else None
        return Images(list(arr), labels, list(self.classes), [f"sample_{i:03d}" for i in range(len(arr))])

    def _as_images(self, items) -> Images:
        if isinstance(items, Images):
            return items
        if isinstance(items, (str, Path)):
            return self.read(items)
        if isinstance(items, np.ndarray) and items.ndim in (3, 4):
            arr = items[..., None] if items.ndim == 3 else items
            arr = image_io.to_uint8(arr)
            return Images(list(arr))
        return Images([image_io._channels(image_io.to_uint8(np.asarray(a)), "image") for a in items])



def _is_gray(a: np.ndarray) -> bool:
    return a.shape[2] == 1 or (np.array_equal(a[:, :, 0], a[:, :, 1]) and np.array_equal(a[:, :, 0], a[:, :, 2]))


def make_cond(encoder: ImageEncoder, n: int, label=None, generator: Optional[torch.Generator] = None,
              **_) -> Dict[str, torch.Tensor]:
    """The sampling cond for n images: ``label`` a class (name or index) for every image, ``"all"``
    (default) to cycle through the classes, or ``"none"`` for unconditional generation
    (:func:`polydiff.modality.labels_for`)."""
    from polydiff.modality import labels_for

    labels = labels_for(encoder.classes, n, label)
    return {} if labels is None else {"label": labels}


def configure(config: dict, encoder: ImageEncoder) -> dict:
    """The network's image size, channels and number of classes come from the fitted encoder (a
    super-resolution network, with ``lowres_factors``, takes no class)."""
    net = config.get("network", {})
    net = {**net, "image_size": encoder.image_size, "image_channels": encoder.channels,
           "num_classes": 0 if net.get("lowres_factors") else len(encoder.classes)}
    return {**config, "network": net}
