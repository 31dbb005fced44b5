"""`polydiff demo` for tables: unsupervised anomaly scoring of the breast-cancer data."""
from __future__ import annotations

from pathlib import Path

import numpy as np

FEATURES = [f"{stat} {name}" for stat in ("mean", "se", "worst") for name in (
    "radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity", "concave points",
    "symmetry", "fractal dimension")]


def breast_cancer(anomaly_fraction: float = 0.05, seed: int = 0):
    """(DataFrame of 30 features, labels with 1 = malignant): all benign rows and a seeded random sample of
    malignant rows making up ``anomaly_fraction`` of the table. Data: see data/SOURCE.md."""
    import pandas as pd

    raw = np.loadtxt(Path(__file__).parent / "data" / "breast_cancer.csv", delimiter=",", skiprows=1)
    X, target = raw[:, :30], raw[:, 30].astype(int)
    benign, malignant = np.flatnonzero(target == 1), np.flatnonzero(target == 0)
    n_anom = int(round(anomaly_fraction * len(benign) / (1 - anomaly_fraction)))
    keep = np.sort(np.concatenate([benign, np.random.default_rng(seed).choice(malignant, n_anom, replace=False)]))
    return pd.DataFrame(X[keep], columns=FEATURES), (target[keep] == 0).astype(int)


def auroc(y, s) -> float:
    from scipy.stats import rankdata

    r, pos = rankdata(s), np.asarray(y) == 1
    return float((r[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def run(out: Path, echo=print, device=None):
    from polydiff.viz import plot_histogram

    from .detector import DiffusionDetector

    X, y = breast_cancer()
    csv = Path(out) / "breast_cancer_5pct.csv"
    X.assign(malignant=y).to_csv(csv, index=False)
    det = DiffusionDetector(contamination=0.05, device=device).fit(X)  # no labels, no clean training set
    s = det.decision_scores_
    a = auroc(y, s)
    flagged = det.labels_.astype(bool)
    hits = int((flagged & (y == 1)).sum())
    pos = y == 1
    plot_histogram(s, det.threshold_, Path(out) / "scores.png",
                   title=f"{det.method} scores: {len(y)} tumours, {int(pos.sum())} malignant (AUROC {a:.3f})",
                   groups={"benign": s[~pos], "malignant": s[pos]})
    echo(f"breast cancer (Wisconsin diagnostic): {len(y)} rows, {int(pos.sum())} malignant kept as ~5% anomalies; "
         f"unsupervised {det.method} detector")
    echo(f"  AUROC {a:.3f}; {int(flagged.sum())} rows flagged at contamination 0.05, {hits} of them malignant")
    echo(f"  table: {csv.name}, score histogram: scores.png  (same as: polydiff score {csv.name} --out scores.csv)")
    return {"auroc": a, "flagged": int(flagged.sum()), "hits": hits}
