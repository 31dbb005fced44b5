"""Anomaly benchmark: polydiff's diffusion detectors next to PyOD's KNN, IForest, ECOD and LOF on ADBench.

    python benchmarks/anomaly.py --data-dir ../shared/data/adbench_classical --protocol semi --seeds 5 --json
    python benchmarks/anomaly.py --protocol unsup --methods dte-np,IForest,ECOD --seeds 5
    python benchmarks/anomaly.py --throughput-only --json       # scoring rows/s and fit seconds only

Protocol (ADBench, Han et al. 2022; DTE, Livernoche et al. 2024):

* every dataset (an ``.npz`` with ``X`` and ``y``) is capped at ``--max-rows`` rows (50,000, as in DTE's code)
  by a seeded random subsample;
* ``semi``: fit on a random 50% of the normal rows, test on the other normal rows plus every anomaly;
  polydiff detectors are told their training rows are clean (``novelty=True``);
* ``unsup``: fit and score all rows (anomalies included), ``novelty=False``;
* features are standardized with the training rows' mean and std for every method;
* AUROC and AUPRC (average precision) per dataset and seed; fit and score seconds; mean over datasets of
  the per-dataset mean over seeds.

PyOD is a benchmark-only dependency (``pip install pyod scikit-learn``); a missing method is reported, not
faked. Per-(method, dataset, seed) results are cached in ``--cache`` so an interrupted run continues.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import statistics
import sys
import time
import warnings

import numpy as np
import torch

POLYDIFF_METHODS = ("dte-np", "dte", "elbo", "reconstruction")
PYOD_METHODS = ("KNN", "IForest", "ECOD", "LOF")
TARGETS = {"semi_over_knn": 1.0, "unsup_vs_iforest": 0.0, "rows_per_s": 100_000, "fit_s": 60.0}


def dataset_names(data_dir):
    names = [os.path.splitext(os.path.basename(f))[0] for f in glob.glob(os.path.join(data_dir, "*.npz"))]
    return sorted(names, key=lambda s: (int(re.match(r"\d+", s).group()) if re.match(r"\d+", s) else 10**9, s))


#: the image novelty suite: each class of a test set in turn is normal, the other classes are anomalies
IMAGE_DATA = ("mnist", "cifar10")
IMAGE_FEATURES = ("pixels", "pca32")
_IMAGES = {}


def image_task_names(data=IMAGE_DATA, features=IMAGE_FEATURES):
    return [f"{d}-{c}-{f}" for d in data for f in features for c in range(10)]


def _image_arrays(data):
    """(float32 [N, pixels] in [0, 1], labels) of a test set, read once per process."""
    if data not in _IMAGES:
        from polydiff_image.datasets import cifar10_arrays, mnist_arrays

        x, y = {"mnist": mnist_arrays, "cifar10": cifar10_arrays}[data]()
        _IMAGES[data] = (x.reshape(len(x), -1).astype(np.float32) / 255.0, y)
    return _IMAGES[data]


def image_split(name, seed):
    """One-class novelty task ``DATA-CLASS-FEATURES``: a random half of the class's images trains, the other
    half and every image of the other classes test (label 1 = another class). ``pixels``: the flattened image;
    ``pcaM``: its first M principal components, fitted on the training images only."""
    data, cls, feat = name.split("-")
    X, labels = _image_arrays(data)
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(labels == int(cls)))
    ntr = len(normal) // 2
    te = np.concatenate([normal[ntr:], np.flatnonzero(labels != int(cls))])
    Xtr, Xte, y = X[normal[:ntr]].astype(np.float64), X[te].astype(np.float64), (labels[te] != int(cls)).astype(int)
    if feat.startswith("pca"):
        mu = Xtr.mean(0)
        _, _, vt = np.linalg.svd(Xtr - mu, full_matrices=False)
        basis = vt[:int(feat[3:])].T
        Xtr, Xte = (Xtr - mu) @ basis, (Xte - mu) @ basis
    elif feat != "pixels":
        raise ValueError(f"unknown image features {feat!r}")
    return standardize(Xtr, Xte, y)


def standardize(Xtr, Xte, yte):
    """Every method sees features standardized with the training rows' mean and std."""
    mu, sd = Xtr.mean(0), Xtr.std(0)
    sd[sd < 1e-12] = 1.0
    return ((Xtr - mu) / sd).astype(np.float32), ((Xte - mu) / sd).astype(np.float32), yte


def split(data_dir, name, seed, protocol, max_rows):
    """(X_train, X_test, y_test) standardized with the training rows' statistics."""
    if data_dir == "images":
        return image_split(name, seed)
    d = np.load(os.path.join(data_dir, name + ".npz"), allow_pickle=False)
    X, y = np.asarray(d["X"], np.float64), np.asarray(d["y"]).astype(int).ravel()
    rng = np.random.default_rng(seed)
    if len(y) > max_rows:
        idx = rng.choice(len(y), max_rows, replace=False)
        X, y = X[idx], y[idx]
    if protocol == "semi":
        normal = rng.permutation(np.flatnonzero(y == 0))
        ntr = int(round(0.5 * len(normal)))
        tr = normal[:ntr]
        te = np.concatenate([normal[ntr:], np.flatnonzero(y == 1)])
        Xtr, Xte, yte = X[tr], X[te], y[te]
    else:
        Xtr, Xte, yte = X, X, y
    return standardize(Xtr, Xte, yte)


def auroc(y, s):
    from scipy.stats import rankdata

    r = rankdata(s)
    pos = y == 1
    npos, nneg = int(pos.sum()), int((~pos).sum())
    return float((r[pos].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def auprc(y, s):
    """Average precision (ties broken pessimistically by a stable sort on -score)."""
    order = np.argsort(-np.asarray(s), kind="stable")
    yy = np.asarray(y)[order]
    tp = np.cumsum(yy)
    prec = tp / np.arange(1, len(yy) + 1)
    return float((prec * yy).sum() / max(yy.sum(), 1))


def make(method, seed, protocol):
    if method in POLYDIFF_METHODS:
        from polydiff_anomaly import DiffusionDetector

        return DiffusionDetector(method=method, novelty=(protocol == "semi"), random_state=seed, device="cpu")
    from pyod.models.ecod import ECOD
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.lof import LOF

    return {"KNN": lambda: KNN(), "IForest": lambda: IForest(random_state=seed), "ECOD": lambda: ECOD(),
            "LOF": lambda: LOF()}[method]()


def available(method):
    if method in POLYDIFF_METHODS:
        return True
    try:
        import pyod  # noqa: F401
        return True
    except ImportError:
        return False


_SHARED = {}  # (dataset, seed) -> (fitted elbo detector, fit seconds): reconstruction scores with the same model


def run_one(method, Xtr, Xte, y, seed, protocol, key=None):
    shared = _SHARED.get(key) if method in ("elbo", "reconstruction") else None
    if shared is not None:  # elbo and reconstruction score with the same trained denoiser
        import copy

        from polydiff_anomaly.detector import DenoiserScorer

        base, fit_s = shared
        det = copy.copy(base)
        det.method = method
        det.engine_ = DenoiserScorer(method, base.engine_.model)
        t0 = time.perf_counter()
        t1 = t0 + fit_s
    else:
        det = make(method, seed, protocol)
        t0 = time.perf_counter()
        det.fit(Xtr)
        t1 = time.perf_counter()
        if method in ("elbo", "reconstruction"):
            _SHARED.clear()
            _SHARED[key] = (det, t1 - t0)
    t_score = time.perf_counter()
    s = np.asarray(det.decision_function(Xte), np.float64)
    t2 = time.perf_counter()
    t1, t2 = t1, t1 + (t2 - t_score)
    if not np.all(np.isfinite(s)):
        raise RuntimeError(f"{method}: non-finite scores")
    return {"auroc": auroc(y, s), "auprc": auprc(y, s), "fit_s": t1 - t0, "score_s": t2 - t1,
            "n_train": int(len(Xtr)), "n_test": int(len(Xte))}


def throughput(dims=(16, 32, 64), n_train=20_000, n_score=200_000, runs=5):
    """Scoring rows/s on Gaussian data, median of ``runs``: dte-np in both modes, and the dte network (its
    scoring cost does not depend on training, so it is fitted with 200 steps here)."""
    from polydiff_anomaly import DiffusionDetector

    out = []
    rng = np.random.default_rng(0)
    for d in dims:
        Xtr = rng.normal(size=(n_train, d)).astype(np.float32)
        Xs = rng.normal(size=(n_score, d)).astype(np.float32)
        for method, novelty in (("dte-np", True), ("dte-np", False), ("dte", False)):
            det = DiffusionDetector(method=method, novelty=novelty, steps=200 if method == "dte" else None, device="cpu")
            t0 = time.perf_counter()
            det.fit(Xtr)
            fit_s = time.perf_counter() - t0
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                det.decision_function(Xs)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            out.append({"method": method, "novelty": novelty, "dim": d, "rows": n_score, "fit_s": fit_s,
                        "score_s": med, "rows_per_s": n_score / med})
            print(f"throughput {method} novelty={novelty} d={d}: {n_score / med:,.0f} rows/s (fit {fit_s:.2f} s)",
                  file=sys.stderr, flush=True)
    return out


def summarize(results, methods, names, seeds):
    table = {}
    for m in methods:
        per = {}
        for ds in names:
            rs = [results.get(f"{m}|{ds}|{s}") for s in seeds]
            rs = [r for r in rs if r]
            if len(rs) == len(seeds):
                per[ds] = {k: float(np.mean([r[k] for r in rs])) for k in ("auroc", "auprc", "fit_s", "score_s")}
                per[ds]["fit_s_max"] = float(max(r["fit_s"] for r in rs))
        complete = len(per) == len(names)
        table[m] = {"datasets": per, "complete": complete,
                    "mean_auroc": float(np.mean([v["auroc"] for v in per.values()])) if per else None,
                    "mean_auprc": float(np.mean([v["auprc"] for v in per.values()])) if per else None,
                    "max_fit_s": float(max(v["fit_s_max"] for v in per.values())) if per else None,
                    "n_datasets": len(per)}
    return table


def render_markdown(paths):
    """Markdown tables (mean AUROC / AUPRC per method, per-dataset AUROC) from saved --json outputs."""
    lines = []
    for path in paths:
        doc = json.load(open(path))
        ms = list(doc["methods"])
        lines.append(f"**{doc['protocol']}** ({'fit on half the normal rows, test on the rest + all anomalies' if doc['protocol'] == 'semi' else 'fit and score all rows'}), "
                     f"{len(doc['datasets'])} datasets, seeds {doc['seeds'][0]}..{doc['seeds'][-1]}; `{doc['command']}`\n")
        lines.append("| | " + " | ".join(ms) + " |")
        lines.append("|---|" + "---|" * len(ms))
        for k, label in (("mean_auroc", "mean AUROC"), ("mean_auprc", "mean AUPRC")):
            lines.append(f"| {label} | " + " | ".join(f"{100 * doc['methods'][m][k]:.2f}" if doc["methods"][m][k] is not None else "-" for m in ms) + " |")
        lines.append("| max fit s | " + " | ".join(f"{doc['methods'][m]['max_fit_s']:.1f}" if doc["methods"][m]["max_fit_s"] is not None else "-" for m in ms) + " |")
        wins = {m: sum(doc["methods"][m]["datasets"][ds]["auroc"] >= max(doc["methods"][o]["datasets"][ds]["auroc"] for o in ms if ds in doc["methods"][o]["datasets"]) - 1e-12
                       for ds in doc["datasets"] if ds in doc["methods"][m]["datasets"]) for m in ms}
        lines.append("| datasets won | " + " | ".join(str(wins[m]) for m in ms) + " |\n")
        lines.append("<details><summary>per-dataset AUROC</summary>\n")
        lines.append("| dataset | " + " | ".join(ms) + " |")
        lines.append("|---|" + "---|" * len(ms))
        for ds in doc["datasets"]:
            lines.append(f"| {ds} | " + " | ".join(f"{100 * doc['methods'][m]['datasets'][ds]['auroc']:.2f}" if ds in doc["methods"][m]["datasets"] else "-" for m in ms) + " |")
        lines.append("\n</details>\n")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                       "adbench_classical"))
    ap.add_argument("--protocol", choices=["semi", "unsup"], default="semi")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--methods", default=",".join(POLYDIFF_METHODS + PYOD_METHODS))
    ap.add_argument("--datasets", help="comma-separated dataset names (default: every .npz in --data-dir)")
    ap.add_argument("--max-rows", type=int, default=50_000)
    ap.add_argument("--cache", help="JSON file of per-run results to reuse and extend")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--np-novelty-refs", type=int, help="dte-np ablation: reference rows per view in novelty mode, at every width [4096, capped beyond 32 features]")
    ap.add_argument("--np-outlier-bags", type=int, help="dte-np ablation: number of 256-row bags in outlier mode [16]")
    ap.add_argument("--throughput-only", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    ap.add_argument("--render", nargs="+", metavar="RESULT.json", help="print markdown tables of saved results and exit")
    args = ap.parse_args(argv)
    if args.render:
        print(render_markdown(args.render))
        return
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    if args.np_novelty_refs or args.np_outlier_bags:  # ablations of the dte-np defaults (see docs/benchmarks.md)
        from polydiff_anomaly import nonparametric as NP

        if args.np_novelty_refs:
            NP.NOVELTY["bags"] = ((1, int(args.np_novelty_refs)),)
            NP.NOVELTY["ref_budget"] = None  # the same count at every width
        if args.np_outlier_bags:
            NP.OUTLIER["bags"] = ((int(args.np_outlier_bags), 256),)
    t_start = time.perf_counter()

    doc = {"benchmark": "anomaly", "command": " ".join([os.path.basename(sys.executable), "benchmarks/anomaly.py"] + sys.argv[1:]),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads},
           "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}}
    try:
        import pyod

        doc["versions"]["pyod"] = pyod.__version__
    except ImportError:
        pass
    if not args.throughput_only:
        if not os.path.isdir(args.data_dir):
            sys.exit(f"error: --data-dir {args.data_dir} is not a folder")
        names = args.datasets.split(",") if args.datasets else dataset_names(args.data_dir)
        if not names:
            sys.exit(f"error: no .npz datasets in {args.data_dir}")
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in POLYDIFF_METHODS + PYOD_METHODS]
        if unknown:
            sys.exit(f"error: unknown method(s) {', '.join(unknown)}; known: {', '.join(POLYDIFF_METHODS + PYOD_METHODS)}")
        missing = [m for m in methods if not available(m)]
        methods = [m for m in methods if m not in missing]
        seeds = list(range(args.seeds))
        results = {}
        if args.cache and os.path.exists(args.cache):
            results = json.load(open(args.cache))
        for ds in names:
            for s in seeds:
                Xtr, Xte, y = split(args.data_dir, ds, s, args.protocol, args.max_rows)
                for m in methods:
                    key = f"{m}|{ds}|{s}"
                    if key in results:
                        continue
                    torch.manual_seed(s)
                    results[key] = run_one(m, Xtr, Xte, y, s, args.protocol, key=(ds, s))
                    if args.cache:
                        tmp = args.cache + ".tmp"
                        with open(tmp, "w") as f:
                            json.dump(results, f)
                        os.replace(tmp, args.cache)
            line = " ".join(f"{m}={np.mean([results[f'{m}|{ds}|{s}']['auroc'] for s in seeds]):.4f}" for m in methods)
            print(f"{args.protocol} {ds}: {line}", file=sys.stderr, flush=True)
        table = summarize(results, methods, names, seeds)
        doc.update({"protocol": args.protocol, "seeds": seeds, "max_rows": args.max_rows, "datasets": names,
                    "missing_methods": missing, "methods": table})
        best = max((m for m in methods if m in POLYDIFF_METHODS and table[m]["complete"]),
                   key=lambda m: table[m]["mean_auroc"], default=None)
        checks = {}
        if best and "KNN" in table and args.protocol == "semi":
            checks["semi_auroc_over_knn"] = {"polydiff": best, "value": 100 * (table[best]["mean_auroc"] - table["KNN"]["mean_auroc"]),
                                             "target": TARGETS["semi_over_knn"]}
        if best and "IForest" in table and args.protocol == "unsup":
            checks["unsup_auroc_vs_iforest"] = {"polydiff": best, "value": 100 * (table[best]["mean_auroc"] - table["IForest"]["mean_auroc"]),
                                                "target": TARGETS["unsup_vs_iforest"]}
        if "dte-np" in table and table["dte-np"]["max_fit_s"] is not None:
            checks["dte_np_max_fit_s"] = {"value": table["dte-np"]["max_fit_s"], "target": TARGETS["fit_s"], "below": True}
        for c in checks.values():
            c["pass"] = (c["value"] <= c["target"]) if c.get("below") else (c["value"] >= c["target"])
        doc["checks"] = checks
    if not args.no_throughput:
        doc["throughput"] = tp = throughput()
        doc.setdefault("checks", {})["dte_np_rows_per_s_min"] = {
            "value": min(r["rows_per_s"] for r in tp if r["method"] == "dte-np"), "target": TARGETS["rows_per_s"]}
        doc["checks"]["dte_np_rows_per_s_min"]["pass"] = doc["checks"]["dte_np_rows_per_s_min"]["value"] >= TARGETS["rows_per_s"]
    doc["wall_s"] = time.perf_counter() - t_start
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        if "methods" in doc:
            ms = list(doc["methods"])
            print(f"protocol {doc['protocol']}, seeds {doc['seeds']}: mean AUROC / AUPRC over {len(doc['datasets'])} datasets")
            print("dataset".ljust(22) + "".join(m.rjust(16) for m in ms))
            for ds in doc["datasets"]:
                print(ds[:22].ljust(22) + "".join(
                    (f"{100 * doc['methods'][m]['datasets'][ds]['auroc']:.2f}" if ds in doc["methods"][m]["datasets"] else "-").rjust(16)
                    for m in ms))
            print("MEAN AUROC".ljust(22) + "".join(f"{100 * (doc['methods'][m]['mean_auroc'] or float('nan')):.2f}".rjust(16) for m in ms))
            print("MEAN AUPRC".ljust(22) + "".join(f"{100 * (doc['methods'][m]['mean_auprc'] or float('nan')):.2f}".rjust(16) for m in ms))
        for name, c in doc.get("checks", {}).items():
            print(f"{name}: {c['value']:.3f} (target {c['target']}) {'PASS' if c['pass'] else 'FAIL'}")


if __name__ == "__main__":
    main()
