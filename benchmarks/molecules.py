"""Molecule benchmark: the bundled QM9 checkpoint's samples against QM9, with published anchors and targets.

    .venv/bin/python benchmarks/molecules.py --model qm9 -n 1000 --seed 0 --runs 1 --json
    .venv/bin/python benchmarks/molecules.py --sweep                 # also heun 16/32, dpmpp_2m 10/20
    .venv/bin/python benchmarks/molecules.py -n 100 --no-fcd         # a quick look

Protocol:

* ``--runs`` sampling runs with seeds ``seed, seed + 1, ...`` of ``-n`` molecules each, with the model's
  default sampler (the bundled checkpoint: heun, 32 Karras steps, 63 network evaluations), sampled in
  batches of ``--batch-size`` from one seeded generator on the CPU with ``torch.set_num_threads(--threads)``
  (2 by default); every batch is decoded twice, ``raw`` (argmax atoms and bonds, invalid samples count as
  invalid) and ``valence`` (bonds added by confidence within valence limits);
* metrics (``polydiff_molecule.metrics``, the same code as ``polydiff evaluate molecule``): validity,
  uniqueness, novelty against all 131,954 molecules of ``qm9_canonical_neutral.csv``, fraction connected,
  fragments per molecule, atom-type and ring-size total-variation distances and FCD against a seeded
  10,000-molecule split of that file (rows ``sorted(numpy.random.default_rng(0).permutation(131954)[:10000])``);
  **the bundled checkpoint was trained on all 131,954 molecules, so that split is not held out from it**;
* molecules per second = n / (sampling seconds + decoding seconds) of a run (valence decoding for the
  target), the median over runs; reference loading and ChemNet are not timed;
* with ``--sweep``, the same for heun 16 / 32 steps and dpmpp_2m 10 / 20 steps (informative; the checks use
  the default sampler only).

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

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu_name, pin_precision  # noqa: E402

TARGETS = {"raw_validity": 0.97, "valence_validity": 1.0, "uniqueness": 0.95, "fcd": 2.0, "molecules_per_s": 200.0}
ANCHORS = [
    {"model": "DiGress", "paper": "Vignac et al., ICLR 2023", "setting": "QM9, implicit H",
     "validity": 0.990, "uniqueness": 0.962, "fcd": None},
    {"model": "GDSS", "paper": "Jo et al., ICML 2022", "setting": "QM9, implicit H, validity without correction",
     "validity": 0.957, "uniqueness": None, "fcd": 2.90},
    {"model": "EDM", "paper": "Hoogeboom et al., ICML 2022", "setting": "QM9, 3-D with explicit H",
     "validity": 0.919, "uniqueness": None, "fcd": None},
]
SWEEP = (("heun", 16), ("heun", 32), ("dpmpp_2m", 10), ("dpmpp_2m", 20))
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


def run_setting(model, reference, sampler, steps, args, with_fcd):
    """All runs of one sampler setting: per-run metrics and their mean, median molecules/s."""
    from polydiff_molecule.metrics import evaluate_model

    runs, samples0 = [], None
    for r in range(args.runs):
        doc = evaluate_model(model, args.n, args.seed + r, sampler, steps, args.batch_size, ("raw", "valence"),
                             reference, with_fcd)
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qm9", help="pretrained name or .safetensors bundle [qm9]")
    ap.add_argument("-n", type=int, default=1000, help="molecules per run [1000]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=1, help="sampling runs (seeds seed, seed+1, ...) per setting [1]")
    ap.add_argument("--threads", type=int, default=2, help="torch threads [2]")
    ap.add_argument("--batch-size", type=int, default=200, help="molecules sampled per batch [200]")
    ap.add_argument("--device", default="cpu", help="where to sample [cpu]; molecules/s targets are for 2 CPU cores")
    ap.add_argument("--reference", default="qm9", help="qm9, qm9_sample or a molecule file [qm9]")
    ap.add_argument("--test-size", type=int, default=10_000, help="size of the QM9 split for FCD [10000]")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--sweep", action="store_true", help="also heun 16/32 and dpmpp_2m 10/20 steps")
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

    from polydiff.model import Model
    from polydiff_molecule.metrics import load_chemnet, load_reference

    doc = {"benchmark": "molecules",
           "command": " ".join([os.path.basename(sys.executable), "benchmarks/molecules.py"] + sys.argv[1:]),
           "machine": {"platform": platform.platform(), "cpu": cpu_name(), "cpus": os.cpu_count(),
                       "threads": args.threads, "device": args.device},
           "versions": versions()}
    model = Model.load(args.model, modality="molecule", device=args.device)
    precision = pin_precision(model, args.precision)
    doc["machine"]["precision"] = precision
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
    doc.update({"model": str(model.path), "n": args.n, "runs": args.runs, "batch_size": args.batch_size,
                "fcd": {"computed": with_fcd and fcd_reason is None,
                        "reason": fcd_reason if with_fcd else "--no-fcd",
                        "weights": "fcd package ChemNet_v0.13_pretrained.pt read with torch.load(weights_only=True)"},
                "anchors": ANCHORS, "targets": TARGETS})

    default, samples = run_setting(model, reference, None, None, args, with_fcd)
    doc["default"] = default
    if args.grid:
        from polydiff_molecule.draw import grid

        grid(samples["valence"][:32], args.grid, n_cols=8)
        doc["grid"] = args.grid
    if args.sweep:
        doc["sweep"] = []
        for sampler, steps in SWEEP:
            if sampler == default["sampler"] and steps == default["steps"]:
                doc["sweep"].append({k: v for k, v in default.items()})
                continue
            doc["sweep"].append(run_setting(model, reference, sampler, steps, args, with_fcd)[0])

    raw, val = default["mean"]["raw"], default["mean"]["valence"]
    doc["checks"] = {
        "raw_validity": check(raw["validity"], TARGETS["raw_validity"]),
        "valence_validity": check(val["validity"], TARGETS["valence_validity"]),
        "uniqueness": check(val["uniqueness"], TARGETS["uniqueness"]),
        "fcd": check(val["fcd"], TARGETS["fcd"], below=True, reason="--no-fcd" if args.no_fcd else val.get("fcd_reason")),
        "molecules_per_s": check(default["molecules_per_s"]["valence"], TARGETS["molecules_per_s"]),
    }
    doc["checks"]["uniqueness"]["decode"] = doc["checks"]["fcd"]["decode"] = "valence"
    doc["checks"]["molecules_per_s"]["note"] = (f"sampling + valence decoding, {args.threads} torch thread(s) on "
                                               f"{args.device}, {precision}, median over {args.runs} run(s)")
    doc["wall_s"] = time.perf_counter() - t_start
    if args.json:
        print(json.dumps(doc, indent=1))
        return
    print(f"model {doc['model']}; {args.n} molecules x {args.runs} run(s); {args.threads} thread(s) on {args.device}")
    print(f"reference {reference.name}: {reference.description}")
    if reference.note:
        print(f"  note: {reference.note}")
    rows = [default] + [s for s in doc.get("sweep", []) if s is not default and
                        (s["sampler"], s["steps"]) != (default["sampler"], default["steps"])]
    head = "setting".ljust(22) + "".join(k.rjust(13) for k in ("raw valid", "val valid", "unique", "novel",
                                                                   "connected", "atom TV", "ring TV", "FCD", "mol/s"))
    print(head)
    for s in rows:
        r, v = s["mean"]["raw"], s["mean"]["valence"]
        f = lambda x, p=True: "-" if x is None else (f"{100 * x:.2f}" if p else f"{x:.3f}")  # noqa: E731
        print(f"{s['sampler']} {s['steps']} ({s['nfe']} NFE)".ljust(22) + "".join(x.rjust(13) for x in (
            f(r["validity"]), f(v["validity"]), f(v["uniqueness"]), f(v["novelty"]), f(v["connected"]),
            f(v["atom_type_tv"], False), f(v["ring_size_tv"], False), f(v["fcd"], False),
            f"{s['molecules_per_s']['valence']:.1f}")))
    print("anchors (published, other models):")
    for a in ANCHORS:
        parts = [f"validity {100 * a['validity']:.1f}"] + ([f"uniqueness {100 * a['uniqueness']:.1f}"] if a["uniqueness"] else []) \
            + ([f"FCD {a['fcd']:.2f}"] if a["fcd"] else [])
        print(f"  {a['model']} ({a['paper']}; {a['setting']}): {', '.join(parts)}")
    for name, c in doc["checks"].items():
        val_s = "null" if c["value"] is None else f"{c['value']:.4g}"
        print(f"{name}: {val_s} (target {'<=' if c.get('below') else '>='} {c['target']}) {'PASS' if c['pass'] else 'FAIL'}"
              + (f" ({c['reason']})" if c.get("reason") else ""))


if __name__ == "__main__":
    main()
