"""Points encoder: CSV / .npy files <-> a [N, 2] tensor scaled to the model's sigma_data, plus labels."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from polydiff.checkpoint import atomic_write_text
from polydiff.errors import InputError

__all__ = ["PointSet", "PointsEncoder", "make_cond", "configure"]


@dataclass
class PointSet:
    """A set of 2-D points with optional integer class labels and class names."""

    xy: np.ndarray
    labels: Optional[np.ndarray] = None
    classes: List[str] = field(default_factory=list)

    def __len__(self):
        return len(self.xy)


class PointsEncoder:
    """Standardises coordinates to mean 0 and per-axis std ``scale`` (the model's sigma_data)."""

    def __init__(self, mean=(0.0, 0.0), std=(1.0, 1.0), scale: float = 0.5, classes=()):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.scale = float(scale)
        self.classes = list(classes)

    @classmethod
    def from_metadata(cls, meta: Optional[dict] = None) -> "PointsEncoder":
        return cls(**meta) if meta else cls()

    def metadata(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "scale": self.scale, "classes": self.classes}

    def sample_shape(self):
        return (2,)

    # ------------------------------------------------------------------ files
    def read(self, path) -> PointSet:
        """Read x,y[,label] rows from a CSV (header required) or an [N, 2] / [N, 3] .npy array."""
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a folder; give a .csv or .npy file of points")
        if path.suffix.lower() == ".npy":
            try:
                arr = np.load(path, allow_pickle=False)
            except ValueError as e:
                raise InputError(f"{path}: not a numeric .npy array ({e})") from None
            if arr.ndim != 2 or arr.shape[1] not in (2, 3) or not np.issubdtype(arr.dtype, np.number):
                raise InputError(f"{path}: expected a numeric array of shape [N, 2] or [N, 3], got {arr.shape}")
            xy = arr[:, :2].astype(np.float32)
            labels = arr[:, 2].astype(np.int64) if arr.shape[1] == 3 else None
            self._check_finite(path, xy, first_row=0)
            return PointSet(xy, labels)
        text = path.read_text(encoding="utf-8", errors="replace")
        rows = list(csv.reader(io.StringIO(text)))
        rows = [r for r in rows if any(c.strip() for c in r)]
        if not rows:
            raise InputError(f"{path}: empty file")
        header = [h.strip().lower() for h in rows[0]]
        if "x" not in header or "y" not in header:
            raise InputError(f"{path}: the header must name columns x and y (got {', '.join(header)})")
        if len(rows) == 1:
            raise InputError(f"{path}: header only, no points")
        ix, iy = header.index("x"), header.index("y")
        il = header.index("label") if "label" in header else None
        xy = np.empty((len(rows) - 1, 2), dtype=np.float32)
        raw_labels = []
        for n, r in enumerate(rows[1:]):
            line = n + 2
            try:
                xy[n] = (float(r[ix]), float(r[iy]))
            except (ValueError, IndexError):
                raise InputError(f"{path}: line {line}: x and y must be numbers, got {r!r}") from None
            if il is not None:
                raw_labels.append(r[il].strip() if il < len(r) else "")
        self._check_finite(path, xy, first_row=2)
        labels, classes = None, []
        if il is not None:
            classes = sorted(set(raw_labels))
            if all(c.lstrip("-").isdigit() for c in classes):
                labels = np.array([int(c) for c in raw_labels], dtype=np.int64)
                classes = []
            else:
                labels = np.array([classes.index(c) for c in raw_labels], dtype=np.int64)
        return PointSet(xy, labels, classes)

    @staticmethod
    def _check_finite(path, xy, first_row):
        bad = np.nonzero(~np.isfinite(xy).all(1))[0]
        if len(bad):
            where = ", ".join(str(int(b) + first_row) for b in bad[:5])
            raise InputError(f"{path}: NaN or infinite coordinates on {'line' if first_row else 'row'}s {where}")

    def write(self, items: PointSet, path) -> List[Path]:
        """Write x,y[,label] CSV (atomically) and a scatter picture next to it (same name, .png)."""
        path = Path(path)
        if path.suffix.lower() != ".csv":
            path = path / "points.csv"
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        has_labels = items.labels is not None
        w.writerow(["x", "y", "label"] if has_labels else ["x", "y"])
        names = items.classes or self.classes
        for i, (x, y) in enumerate(items.xy.tolist()):
            row = [f"{x:.6g}", f"{y:.6g}"]
            if has_labels:
                lab = int(items.labels[i])
                row.append(names[lab] if 0 <= lab < len(names) else str(lab))
            w.writerow(row)
        atomic_write_text(path, buf.getvalue())
        png = path.with_suffix(".png")
        from .demo import scatter

        scatter([items], png, titles=[f"{len(items)} points"], classes=names)
        return [path, png]

    # ------------------------------------------------------------------ tensors
    def fit(self, items: PointSet) -> "PointsEncoder":
        if len(items) < 2:
            raise InputError("need at least 2 points to fit the points encoder")
        self.mean = items.xy.mean(0).astype(np.float32)
        self.std = (items.xy.std(0) + 1e-8).astype(np.float32)
        self.classes = list(items.classes) if items.classes else (
            [str(i) for i in range(int(items.labels.max()) + 1)] if items.labels is not None else [])
        return self

    def encode(self, items: PointSet):
        x = torch.as_tensor((items.xy - self.mean) / self.std * self.scale, dtype=torch.float32)
        cond = {}
        if items.labels is not None and self.classes:
            labels = torch.as_tensor(items.labels, dtype=torch.long)
            if labels.min() < 0 or labels.max() >= len(self.classes):
                raise InputError(f"labels must be in 0..{len(self.classes) - 1}")
            cond["label"] = labels
        return x, cond

    def decode(self, x: torch.Tensor, cond: dict) -> PointSet:
        xy = x.detach().cpu().double().numpy() / self.scale * self.std + self.mean
        labels = cond.get("label")
        labels = labels.detach().cpu().numpy().astype(np.int64) if labels is not None else None
        return PointSet(xy.astype(np.float32), labels, list(self.classes))


def configure(config: dict, encoder: PointsEncoder) -> dict:
    """A labelled training set makes a class-conditional network with one class per label."""
    net = dict(config.get("network", {}))
    net["num_classes"] = len(encoder.classes)
    return {**config, "network": net}


def make_cond(encoder: PointsEncoder, n: int, label=None) -> dict:
    """``label``: a class name or index, 'all' (point i gets class i mod k; the default) or 'none' (the
    unconditional model); see :func:`polydiff.modality.labels_for`."""
    from polydiff.modality import labels_for

    labels = labels_for(encoder.classes, n, label)
    return {} if labels is None else {"label": labels}
