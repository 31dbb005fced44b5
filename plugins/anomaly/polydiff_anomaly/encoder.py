"""The tabular encoder: numeric tables <-> standardised float tensors, with the column names and scaling
statistics kept in the model so that a scoring table is checked and scaled exactly like the training one."""
from __future__ import annotations

import io
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from polydiff.checkpoint import atomic_write_text
from polydiff.errors import InputError

from .table import Table, align_columns, check_finite, read_table

__all__ = ["TableEncoder", "configure"]


class TableEncoder:
    """Standardises each column to mean 0 and std ``scale`` (the model's sigma_data).

    ``impute="median"`` fills NaN with the training medians (stored); without it NaN is an error.
    Constant columns keep a unit scale so they encode to 0 instead of dividing by zero.
    """

    def __init__(self, columns=(), mean=(), std=(), median=(), scale: float = 0.5, impute: Optional[str] = None):
        self.columns: List[str] = list(columns)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.median = np.asarray(median, dtype=np.float64)
        self.scale = float(scale)
        if impute not in (None, "median"):
            raise InputError(f"impute must be 'median' or None, got {impute!r}")
        self.impute = impute

    @classmethod
    def from_metadata(cls, meta: Optional[dict] = None) -> "TableEncoder":
        return cls(**meta) if meta else cls()

    def metadata(self) -> dict:
        return {"columns": self.columns, "mean": self.mean.tolist(), "std": self.std.tolist(),
                "median": self.median.tolist(), "scale": self.scale, "impute": self.impute}

    def sample_shape(self):
        return (len(self.columns),)

    # ------------------------------------------------------------------ files
    def read(self, path) -> Table:
        return read_table(path)

    def write(self, items: Table, path) -> List[Path]:
        """Write the table as CSV (atomically); a folder gets ``rows.csv``."""
        path = Path(path)
        if path.suffix.lower() != ".csv":
            path = path / "rows.csv"
        buf = io.StringIO()
        buf.write(",".join(items.columns) + "\n")
        np.savetxt(buf, items.values, delimiter=",", fmt="%.9g")
        atomic_write_text(path, buf.getvalue())
        return [path]

    # ------------------------------------------------------------------ tensors
    def fit(self, items) -> "TableEncoder":
        table = read_table(items)
        v = table.values
        if len(v) < 2:
            raise InputError(f"{table.source}: need at least 2 rows to fit, got {len(v)} sample{'' if len(v) == 1 else 's'}")
        finite = np.where(np.isfinite(v), v, np.nan)
        self.median = np.nan_to_num(np.nanmedian(finite, axis=0)) if self.impute == "median" else np.zeros(v.shape[1])
        v = check_finite(table, self.median if self.impute == "median" else None)
        self.columns = list(table.columns)
        self.mean = v.mean(0)
        std = v.std(0)
        self.std = np.where(std > 1e-12, std, 1.0)
        return self

    def transform(self, items) -> np.ndarray:
        """Standardised float32 values of a table with the training columns (reordered by name if needed)."""
        table = align_columns(read_table(items), self.columns)
        v = check_finite(table, self.median if self.impute == "median" else None)
        return standardize(v, self.mean, self.scale / self.std)

    def encode(self, items):
        return torch.from_numpy(self.transform(items)), {}

    def decode(self, x: torch.Tensor, cond: dict) -> Table:
        v = x.detach().cpu().double().numpy() / self.scale * self.std + self.mean
        return Table(v, list(self.columns), "generated")


def standardize(v: np.ndarray, mean: np.ndarray, factor: np.ndarray, block: Optional[int] = None) -> np.ndarray:
    """float32 ``(v - mean) * factor``: the subtraction in float64 (no cancellation for columns far from 0),
    in row blocks of about 256 KiB that stay in the CPU cache, through one reused buffer."""
    v = np.ascontiguousarray(v, dtype=np.float64)
    out = np.empty(v.shape, np.float32)
    src, dst = torch.from_numpy(v), torch.from_numpy(out)
    m, f = torch.from_numpy(np.asarray(mean, np.float64)), torch.from_numpy(np.asarray(factor, np.float64))
    block = int(block or max(64, 32768 // max(v.shape[1] if v.ndim == 2 else 1, 1)))
    buf = torch.empty((min(block, len(v)),) + tuple(v.shape[1:]), dtype=torch.float64)
    for i in range(0, len(v), block):
        part = src[i:i + block]
        b = buf[:len(part)]
        torch.sub(part, m, out=b).mul_(f)
        dst[i:i + block] = b
    return out


def configure(config: dict, encoder: TableEncoder) -> dict:
    """The network's input width is the number of columns of the training table."""
    return {**config, "network": {**config.get("network", {}), "dim": len(encoder.columns)}}
