"""Molecule benchmark: QM9 checkpoints' samples against QM9, side by side, with published anchors and targets.

    .venv/bin/python benchmarks/molecules.py --model qm9,qm9_discrete -n 1000 --seed 0 --runs 1 --json
    .venv/bin/python benchmarks/molecules.py --sweep                 # also other samplers and step counts
    .venv/bin/python benchmarks/molecules.py -n 100 --no-fcd         # a quick look

Protocol:

* each model of ``--model`` (comma-separated; ``NAME@unconstrained``: the model's sampling defaults without
  the valence rule, where its bundle samples with it) in turn, in the same run: ``--runs`` sampling runs with seeds
  ``seed, seed + 1, ...`` of ``-n`` molecules each, with the model's default sampler (the sigma-space
  ``qm9`` checkpoint: heun, 32 Karras steps, 63 network evaluations; the categorical ``qm9_discrete``:
  ancestral unmasking, 32 steps), sampled in batches of ``--batch-size`` from one seeded generator on the
  CPU with ``torch.set_num_threads(--threads)`` (2 by default); every batch is decoded twice, ``raw``
  (argmax atoms and bonds, invalid samples count as invalid) and ``valence`` (bonds added by confidence
  within valence limits, fragments joined into one molecule);
* metrics (``polydiff_molecule.metrics``, the same code as ``polydiff evaluate molecule``): validity,
  validity counting a sample of several fragments as invalid (``valid_connected``), uniqueness, novelty
  against all 131,954 molecules of ``qm9_canonical_neutral.csv``, fraction connected, fragments per
  molecule, atom-type and ring-size total-variation distances and FCD against a seeded 10,000-molecule
  split of that file (rows ``sorted(numpy.random.default_rng(0).permutation(131954)[:10000])``); the
  categorical checkpoint was trained without those rows (the ``qm9_train`` dataset), so for it the split is
  held out; **the sigma-space checkpoint was trained on all 131,954 molecules, so for it the split is not**;
* molecules per second = n / (sampling seconds + decoding seconds) of a run (valence decoding for the
  target), the median over runs; reference loading and ChemNet are not timed;
* with ``--sweep``, the same for other samplers and step counts (informative; the checks use the default
  sampler only).

Anchors (published QM9 results with implicit hydrogens unless noted; other models, other protocols) are
printed next to the numbers. FCD needs the optional ``fcd`` package; without it FCD is null and its check
fails with the reason, it is never estimated another way.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu_name, pin_precision  # noqa: E402

TARGETS = {"raw_validity": 0.97, "valence_validity": 1.0, "valence_connected": 1.0, "uniqueness": 0.95, "fcd": 1.0,
           "molecules_per_s": 200.0}
ANCHORS = [
    {"model": "DiGress", "paper": "Vignac et al., ICLR 2023", "setting": "QM9, implicit H",
     "validity": 0.990, "uniqueness": 0.962, "fcd": None},
    {"model": "GDSS", "paper": "Jo et al., ICML 2022", "setting": "QM9, implicit H, validity without correction",
     "validity": 0.957, "uniqueness": None, "fcd": 2.90},
    {"model": "EDM", "paper": "Hoogeboom et al., ICML 2022", "setting": "QM9, 3-D with explicit H",
     "validity": 0.919, "uniqueness": None, "fcd": None},
]
#: ``NAME@unconstrained``: the model with its sampling defaults but without the modality's token rule
UNCONSTRAINED = "unconstrained"
SWEEP = (("heun", 16), ("heun", 32), ("dpmpp_2m", 10), ("dpmpp_2m", 20))
CATEGORICAL_SWEEP = (("ancestral", 16), ("ancestral", 32), ("ancestral", 64), ("confidence", 16), ("confidence", 32))
KEYS = ("validity", "uniqueness", "novelty", "connected", "valid_connected", "fragments_per_molecule",
        "atom_type_tv", "ring_size_tv", "rings_per_molecule", "fcd")


def versions():
    import polydiff
    import rdkit

    v = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
         "rdkit": rdkit.__version__, "polydiff": polydiff.__version__, "fcd": None}
    try:
        import fcd

        v["fcd"] = getattr(fcd, "__version__", "unknown")
    except ImportError:
        pass
    return v


def mean_or_none(values):
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if len(vals) == len(values) and vals else None


def run_setting(model, reference, sampler, steps, args, with_fcd, sampler_args=None):
    """All runs of one sampler setting: per-run metrics and their mean, median molecules/s."""
    from polydiff_molecule.metrics import evaluate_model

    runs, samples0 = [], None
    for r in range(args.runs):
        doc = evaluate_model(model, args.n, args.seed + r, sampler, steps, args.batch_size, ("raw", "valence"),
                             reference, with_fcd, sampler_args)
        samples = doc.pop("samples")
        if samples0 is None:
            samples0 = samples
        runs.append(doc)
        v = doc["results"]["valence"]
        print(f"{doc['sampler']} {doc['steps']} seed {args.seed + r}: raw validity {doc['results']['raw']['validity']:.4f}, "
              f"uniqueness {v['uniqueness']:.4f}, fcd {v['fcd'] if v['fcd'] is None else round(v['fcd'], 3)}, "
              f"{doc['generation']['molecules_per_s']['valence']:.1f} molecules/s", file=sys.stderr, flush=True)
    first = runs[0]
    mean = {m: {k: mean_or_none([d["results"][m][k] for d in runs]) for k in KEYS} for m in ("raw", "valence")}
    for m in mean:
        reasons = {d["results"][m]["fcd_reason"] for d in runs if d["results"][m]["fcd_reason"]}
        mean[m]["fcd_reason"] = "; ".join(sorted(reasons)) or None
    mps = {m: statistics.median(d["generation"]["molecules_per_s"][m] for d in runs) for m in ("raw", "valence")}
    return {"sampler": first["sampler"], "steps": first["steps"], "nfe": first["nfe"], "n": args.n,
            "seeds": [args.seed + r for r in range(args.runs)], "mean": mean, "molecules_per_s": mps,
            "sampling_s": [d["generation"]["sampling_s"] for d in runs],
            "runs": [{"seed": d["seed"], "results": d["results"], "generation": d["generation"]} for d in runs]}, samples0


def check(value, target, below=False, reason=None):
    c = {"value": value, "target": target}
    if below:
        c["below"] = True
    c["pass"] = value is not None and (value <= target if below else value >= target)
    if value is None and reason:
        c["reason"] = reason
    return c


def measure_model(name, reference, args, with_fcd) -> dict:
    """The default setting (and the sweep) of one model, with its checks."""
    from polydiff.model import Model

    base, _, variant = name.partition("@")
    if variant not in ("", UNCONSTRAINED):
        sys.exit(f"error: unknown model variant {variant!r} in {name!r}; use NAME@{UNCONSTRAINED}")
    model = Model.load(base, modality="molecule", device=args.device)
    precision = pin_precision(model, args.precision)
    sargs = {"constrain": False} if variant else None
    sc = model.config.get("sample", {})
    stored = sc.get("sampler_args", {})
    out = {"model": str(model.path), "name": name, "precision": precision,
           "method": "categorical" if model.categorical else "sigma-space", "step": model.meta.get("step"),
           "schedule": sc.get("schedule"), "schedule_args": sc.get("schedule_args"),
           "constrained": bool(stored.get("constrain")) and not variant}
    default, samples = run_setting(model, reference, None, None, args, with_fcd, sargs)
    out["default"] = default
    if args.grid:
        from polydiff_molecule.draw import grid

        path = args.grid if len(args.model.split(",")) == 1 else args.grid.replace(".png", f"_{Path(name).stem}.png")
        grid(samples["valence"][:32], path, n_cols=8)
        out["grid"] = path
    if args.sweep:
        out["sweep"] = []
        for sampler, steps in (SWEEP if not model.categorical else CATEGORICAL_SWEEP):
            if sampler == default["sampler"] and steps == default["steps"]:
                out["sweep"].append({k: v for k, v in default.items()})
                continue
            out["sweep"].append(run_setting(model, reference, sampler, steps, args, with_fcd, sargs)[0])
    raw, val = default["mean"]["raw"], default["mean"]["valence"]
    out["checks"] = {
        "raw_validity": check(raw["validity"], TARGETS["raw_validity"]),
        "valence_validity": check(val["validity"], TARGETS["valence_validity"]),
        "valence_connected": check(val["valid_connected"], TARGETS["valence_connected"]),
        "uniqueness": check(val["uniqueness"], TARGETS["uniqueness"]),
        "fcd": check(val["fcd"], TARGETS["fcd"], below=True, reason="--no-fcd" if args.no_fcd else val.get("fcd_reason")),
        "molecules_per_s": check(default["molecules_per_s"]["valence"], TARGETS["molecules_per_s"]),
    }
    out["checks"]["uniqueness"]["decode"] = out["checks"]["fcd"]["decode"] = "valence"
    out["checks"]["valence_connected"]["note"] = "valid and one connected fragment, valence decoding"
    out["checks"]["molecules_per_s"]["note"] = (f"sampling + valence decoding, {args.threads} torch thread(s) on "
                                               f"{args.device}, {precision}, median over {args.runs} run(s)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qm9", help="pretrained names or .safetensors bundles, comma-separated: "
                                                   "each is measured in turn in the same run [qm9]")
    ap.add_argument("-n", type=int, default=1000, help="molecules per run [1000]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=1, help="sampling runs (seeds seed, seed+1, ...) per setting [1]")
    ap.add_argument("--threads", type=int, default=2, help="torch threads [2]")
    ap.add_argument("--batch-size", type=int, default=200, help="molecules sampled per batch [200]")
    ap.add_argument("--device", default="cpu", help="where to sample [cpu]; molecules/s targets are for 2 CPU cores")
    ap.add_argument("--reference", default="qm9", help="qm9, qm9_sample or a molecule file [qm9]")
    ap.add_argument("--test-size", type=int, default=10_000, help="size of the QM9 split for FCD [10000]")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--sweep", action="store_true", help="also heun 16/32 and dpmpp_2m 10/20 steps (categorical "
                                                         "models: ancestral 16/32/64, confidence 16/32)")
    ap.add_argument("--no-fcd", action="store_true", help="skip FCD (reported as null)")
    ap.add_argument("--precision", default=None,
                    help="network arithmetic while sampling: fp32, bf16 or auto [the model's default, else fp32]")
    ap.add_argument("--grid", help="draw the first 32 valence-decoded molecules of the default setting (PNG)")
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    args = ap.parse_args(argv)
    if args.n < 1 or args.runs < 1 or args.threads < 1 or args.batch_size < 1:
        sys.exit("error: -n, --runs, --threads and --batch-size must be at least 1")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    from polydiff_molecule.metrics import load_chemnet, load_reference

    doc = {"benchmark": "molecules",
           "command": " ".join([os.path.basename(sys.executable), "benchmarks/molecules.py"] + sys.argv[1:]),
           "machine": {"platform": platform.platform(), "cpu": cpu_name(), "cpus": os.cpu_count(),
                       "threads": args.threads, "device": args.device},
           "versions": versions()}
    t0 = time.perf_counter()
    reference = load_reference(args.reference, args.test_size, args.split_seed)
    with_fcd = not args.no_fcd
    fcd_reason = None
    if with_fcd:
        try:
            reference.fcd_stats(load_chemnet())
        except Exception as e:  # no fcd package, or the weights cannot be read: FCD is null with the reason
            fcd_reason = " ".join(str(e).split())
    doc["reference"] = reference.to_dict()
    doc["reference"]["load_s"] = time.perf_counter() - t0
    doc.update({"n": args.n, "runs": args.runs, "batch_size": args.batch_size,
                "fcd": {"computed": with_fcd and fcd_reason is None,
                        "reason": fcd_reason if with_fcd else "--no-fcd",
                        "weights": "fcd package ChemNet_v0.13_pretrained.pt read with torch.load(weights_only=True)"},
                "anchors": ANCHORS, "targets": TARGETS, "models": []})
    for name in [m.strip() for m in args.model.split(",") if m.strip()]:
        doc["models"].append(measure_model(name, reference, args, with_fcd))
    doc["wall_s"] = time.perf_counter() - t_start
    if args.json:
        print(json.dumps(doc, indent=1))
        return
    print(f"{args.n} molecules x {args.runs} run(s); {args.threads} thread(s) on {args.device}")
    print(f"reference {reference.name}: {reference.description}")
    if reference.note:
        print(f"  note: {reference.note}")
    head = "model, setting".ljust(34) + "".join(k.rjust(11) for k in (
        "raw valid", "val valid", "connected", "unique", "novel", "atom TV", "ring TV", "FCD", "mol/s"))
    print(head)
    f = lambda x, p=True: "-" if x is None else (f"{100 * x:.2f}" if p else f"{x:.3f}")  # noqa: E731
    for m in doc["models"]:
        default = m["default"]
        rows = [default] + [s for s in m.get("sweep", []) if (s["sampler"], s["steps"]) != (default["sampler"], default["steps"])]
        for s in rows:
            r, v = s["mean"]["raw"], s["mean"]["valence"]
            print(f"{m['name']}, {s['sampler']} {s['steps']} ({s['nfe']} NFE)".ljust(34) + "".join(x.rjust(11) for x in (
                f(r["validity"]), f(v["validity"]), f(v["valid_connected"]), f(v["uniqueness"]), f(v["novelty"]),
                f(v["atom_type_tv"], False), f(v["ring_size_tv"], False), f(v["fcd"], False),
                f"{s['molecules_per_s']['valence']:.1f}")))
    print("anchors (published, other models):")
    for a in ANCHORS:
        parts = [f"validity {100 * a['validity']:.1f}"] + ([f"uniqueness {100 * a['uniqueness']:.1f}"] if a["uniqueness"] else []) \
            + ([f"FCD {a['fcd']:.2f}"] if a["fcd"] else [])
        print(f"  {a['model']} ({a['paper']}; {a['setting']}): {', '.join(parts)}")
    for m in doc["models"]:
        for name, c in m["checks"].items():
            val_s = "null" if c["value"] is None else f"{c['value']:.4g}"
            print(f"{m['name']}: {name}: {val_s} (target {'<=' if c.get('below') else '>='} {c['target']}) "
                  f"{'PASS' if c['pass'] else 'FAIL'}" + (f" ({c['reason']})" if c.get("reason") else ""))


if __name__ == "__main__":
    main()
