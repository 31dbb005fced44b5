"""Evaluation protocol shared by every prototype and baseline (research scratch).

Follows ADBench (Han et al. 2022) / DTE (Livernoche et al. 2024):
* rows are capped at ``max_rows`` by a seeded random subsample without replacement (ADBench uses
  10,000; the DTE code raises this to 50,000; we follow DTE);
* semi-supervised: a random half of the normal rows is the training set, the test set is the other
  half of the normals plus every anomaly;
* unsupervised: fit and score on all (capped) rows;
* features are standardised with a scaler fit on the training rows (constant columns -> 0).
"""
from __future__ import annotations

import glob
import os
import re

import numpy as np

DATA_DIR = os.environ.get("ADBENCH_DIR", "/work/shared/data/adbench_classical")


def dataset_names(data_dir=DATA_DIR):
    files = glob.glob(os.path.join(data_dir, "*.npz"))
    names = [os.path.splitext(os.path.basename(f))[0] for f in files]
    return sorted(names, key=lambda s: int(re.match(r"(\d+)", s).group(1)) if re.match(r"\d+", s) else 0)


_CACHE = {}


def load(name, data_dir=DATA_DIR):
    key = (name, data_dir)
    if key not in _CACHE:
        d = np.load(os.path.join(data_dir, name + ".npz"))
        _CACHE[key] = (np.asarray(d["X"], dtype=np.float64), np.asarray(d["y"]).astype(int).ravel())
    return _CACHE[key]


def standardise(train, *others):
    mu = train.mean(0)
    sd = train.std(0)
    sd[sd < 1e-12] = 1.0
    out = [((train - mu) / sd).astype(np.float32)]
    for o in others:
        out.append(((o - mu) / sd).astype(np.float32))
    return out


def split(name, seed, protocol="semi", max_rows=50000, data_dir=DATA_DIR):
    """(X_train, X_test, y_test), standardised with train statistics."""
    X, y = load(name, data_dir)
    rng = np.random.default_rng(seed)
    if len(y) > max_rows:
        idx = rng.choice(len(y), max_rows, replace=False)
        X, y = X[idx], y[idx]
    if protocol == "semi":
        normal = np.flatnonzero(y == 0)
        perm = rng.permutation(normal)
        ntr = int(round(0.5 * len(normal)))
        tr, te_n = perm[:ntr], perm[ntr:]
        te = np.concatenate([te_n, np.flatnonzero(y == 1)])
        Xtr, Xte = standardise(X[tr], X[te])
        return Xtr, Xte, y[te]
    elif protocol == "unsup":
        (Xs,) = standardise(X)
        return Xs, Xs, y
    raise ValueError(protocol)
