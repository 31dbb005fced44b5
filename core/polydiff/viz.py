"""Pictures the core draws for any modality."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["plot_histogram"]


def plot_histogram(scores, threshold: Optional[float], path, title: str = "anomaly scores",
                   groups: Optional[dict] = None) -> Path:
    """A histogram of the scores (log-scaled counts) with the threshold marked; written atomically.

    ``groups`` (name -> scores) draws one stacked histogram per group instead, e.g. known normal rows and
    known anomalies."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from polydiff.checkpoint import atomic_write_bytes

    scores = np.asarray(scores, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    lo, hi = np.quantile(scores, [0.0, 0.999]) if len(scores) > 1000 else (scores.min(), scores.max())
    if groups:
        names = list(groups)
        ax.hist([np.clip(np.asarray(groups[n], np.float64), lo, hi) for n in names], bins=60, stacked=True,
                label=names, color=["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"][:len(names)], alpha=0.85)
    else:
        ax.hist(np.clip(scores, lo, hi), bins=80, color="#1f77b4", alpha=0.85)
    ax.set_yscale("log")
    if threshold is not None:
        ax.axvline(threshold, color="#d62728", lw=1.5, label=f"threshold {threshold:.4g}")
    if threshold is not None or groups:
        ax.legend()
    ax.set_xlabel("score (higher = more anomalous)")
    ax.set_ylabel("rows")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
