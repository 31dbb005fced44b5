"""Masking check: unlabelled tables holding one tight group of anomalies, the outlier mode's hardest case.

    python benchmarks/anomaly_masking.py --seeds 3 --json

A group of similar anomalies explains itself to a nearest-neighbour estimate (each member's nearest rows are
the other members), so kNN scores them as normal. The outlier mode of ``dte-np`` averages its estimate over
random bags of the table; the fewer members of the group share a bag, the less they explain each other. This
script measures that on synthetic tables (nothing here was used to choose a default): the shipped outlier
mode, the small-bag configurations of ``benchmarks/anomaly.py`` (``bags64``, ``bags32``), PyOD's IForest and KNN.

Tables (rows standardized, fit and score the whole table, AUROC in percent, mean and worst over seeds):

* ``cluster``: 600 rows of N(0, I_8) and 30 anomalies (4.8 %) around one point 10 units from the centre,
  spread 0.3;
* ``wide-cluster``: 5,000 rows of a Student-t (4 degrees of freedom) in 16 dimensions and 150 anomalies (2.9 %)
  around one point 6 units away, spread 0.5;
* ``scattered``: 2,000 rows of N(0, I_6) and 60 anomalies drawn uniformly from a box of side 16 (no group:
  the case small bags are not needed for).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import anomaly as bench  # noqa: E402  (the ADBench script: its candidate modes and AUROC)
from _common import cpu_name, log, versions  # noqa: E402

CANDIDATES = ("robust+marginal/2:k4:sub32:table-budget:bags64", "robust+marginal/2:k4:sub32:table-budget:bags32")


def table(kind: str, seed: int):
    r = np.random.default_rng(seed)
    if kind == "cluster":
        X, c, m, spread = r.normal(size=(600, 8)), r.normal(size=8), 30, 0.3
        c *= 10.0 / np.linalg.norm(c)
    elif kind == "wide-cluster":
        X, c, m, spread = r.standard_t(4, size=(5000, 16)), r.normal(size=16), 150, 0.5
        c *= 6.0 / np.linalg.norm(c)
    elif kind == "scattered":
        X = r.normal(size=(2000, 6))
        A = r.uniform(-8, 8, size=(60, 6))
        Z = np.vstack([X, A])
        return ((Z - Z.mean(0)) / Z.std(0)).astype(np.float32), np.r_[np.zeros(len(X)), np.ones(len(A))]
    else:
        raise ValueError(kind)
    A = c + spread * r.normal(size=(m, X.shape[1]))
    Z = np.vstack([X, A])
    return ((Z - Z.mean(0)) / Z.std(0)).astype(np.float32), np.r_[np.zeros(len(X)), np.ones(m)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        sys.exit("error: --seeds must be at least 1")
    try:
        from pyod.models.iforest import IForest
        from pyod.models.knn import KNN
    except ImportError:
        sys.exit("error: this benchmark compares with PyOD: pip install -r requirements-bench.txt")
    import torch

    from polydiff_anomaly import nonparametric as NP

    torch.set_num_threads(2)
    methods = {"dte-np (outlier default)": None}
    methods.update({f"dte-np@{c.rsplit(':', 1)[1]}": bench.candidate_mode(f"dte-np@{c}", "unsup") for c in CANDIDATES})
    t0 = time.perf_counter()
    out = {}
    for kind in ("cluster", "wide-cluster", "scattered"):
        res = {m: [] for m in list(methods) + ["IForest", "KNN"]}
        for s in range(args.seeds):
            X, y = table(kind, s)
            for name, mode in methods.items():
                est = NP.EmpiricalDTE.fit(X, seed=s, novelty=False, mode=mode)
                res[name].append(100 * bench.auroc(y, est.score(X)))
            for name, det in (("IForest", IForest(random_state=s)), ("KNN", KNN())):
                det.fit(X)
                res[name].append(100 * bench.auroc(y, det.decision_scores_))
        out[kind] = {m: {"mean": float(np.mean(v)), "worst": float(np.min(v)), "per_seed": v} for m, v in res.items()}
        log(f"{kind}: " + ", ".join(f"{m} {v['mean']:.1f}" for m, v in out[kind].items()))
    doc = {"benchmark": "anomaly_masking", "command": " ".join(["python", "benchmarks/anomaly_masking.py"] + (argv or sys.argv[1:])),
           "machine": {"cpu": cpu_name(), "cpus": os.cpu_count()}, "versions": versions(("pyod",)),
           "seeds": list(range(args.seeds)), "auroc": out, "wall_s": time.perf_counter() - t0}
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        ms = list(next(iter(out.values())))
        print("table".ljust(14) + "".join(m[-24:].rjust(26) for m in ms))
        for kind, r in out.items():
            print(kind.ljust(14) + "".join(f"{r[m]['mean']:.1f} ({r[m]['worst']:.1f})".rjust(26) for m in ms))


if __name__ == "__main__":
    main()
