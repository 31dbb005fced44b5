"""Do the bundled models sample better on the ladder they store than on the Karras ladder they used to?

For each model, the solver error of its default sampler at its default step count: the sliced
Wasserstein-2 distance between what it draws on a ladder and what a fine Heun solve of the same model draws
from the same seed (the distance :func:`polydiff.tuning.fit_ladder` minimises), on seeds and projections the
fit never used (the fit uses seed 0; here seeds 101, 102, ...). Compared: the bundle's stored ladder and
``karras(steps, 0.002, 80, rho=7)``, the default every bundle had before ladders were fitted. Lower is better;
the ratio stored / karras is reported per seed with its median and worst case.

    python benchmarks/ladders.py --json > benchmarks/results/ladders.json
    python benchmarks/ladders.py --models shapes:4096,mnist:128 --seeds 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

import polydiff
from polydiff.sampling import run
from polydiff.schedules import karras
from polydiff.tuning import ladder_distance

DEFAULT_MODELS = "shapes:4096,mnist:256"
FINE_STEPS = 100


def evaluate(name: str, samples: int, seeds: list, log) -> dict:
    model = polydiff.load(name)
    sc = model.config.get("sample", {})
    steps = int(sc.get("steps", 20))
    ladders = {"stored": model.sigmas(), "karras": karras(steps, 0.002, 80.0, 7.0)}
    top = max(float(v[0]) for v in ladders.values())
    fine = karras(FINE_STEPS, 0.002, top)
    rows = {k: [] for k in ladders}
    t0 = time.perf_counter()
    for seed in seeds:
        ref, _ = run(model, n=samples, sigmas=fine, sampler="heun", seed=seed)
        dist = ladder_distance(ref, seed=seed)
        for k, lad in ladders.items():
            x, _ = run(model, n=samples, sigmas=lad, seed=seed)
            rows[k].append(dist(x))
        log(f"{name}: seed {seed} done ({time.perf_counter() - t0:.0f} s)")
    ratios = [a / b for a, b in zip(rows["stored"], rows["karras"])]
    return {"model": name, "modality": model.modality.name, "sampler": sc.get("sampler"), "steps": steps,
            "schedule": sc.get("schedule"), "samples": samples, "seeds": seeds,
            "stored_ladder": [float(v) for v in ladders["stored"][:-1]],
            "distance": {k: {"median": statistics.median(v), "per_seed": v} for k, v in rows.items()},
            "ratio_stored_to_karras": {"median": statistics.median(ratios), "worst": max(ratios), "per_seed": ratios}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS, help="NAME:SAMPLES,... [%(default)s]")
    ap.add_argument("--seeds", type=int, default=3, help="evaluation seeds 101, 102, ... [%(default)s]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    seeds = [101 + i for i in range(args.seeds)]
    res = {"benchmark": "ladders", "command": "python benchmarks/ladders.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "fine_solve": f"heun, karras({FINE_STEPS}, 0.002, top level)", "models": []}
    for item in args.models.split(","):
        name, _, n = item.partition(":")
        res["models"].append(evaluate(name, int(n or 256), seeds, log))
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        for m in res["models"]:
            r = m["ratio_stored_to_karras"]
            print(f"{m['model']:<10} {m['sampler']} {m['steps']} steps, {m['schedule']}: stored "
                  f"{m['distance']['stored']['median']:.4g} vs karras {m['distance']['karras']['median']:.4g} "
                  f"(ratio median {r['median']:.3f}, worst {r['worst']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
