"""Sampling choices of a molecule model on a development reference (never the benchmark's test split).

    python benchmarks/molecule_choices.py --model MODEL --grid '[{"sampler": "ancestral", "steps": 16, "T": 0.7}]'

The development reference is 10,000 QM9 molecules (``qm9_dev_split``, the rows
``default_rng(0).permutation(rows)[10000:20000]``: disjoint from the test split
``permutation(rows)[:10000]`` that ``benchmarks/molecules.py`` reports against). They are training rows of
``qm9_train`` (recipe ``qm9_discrete``) and unseen by models trained on ``qm9_fit`` (recipe
``qm9_discrete_small``). For each setting of the grid
(keys: ``sampler`` and ``steps`` [the model's], ``T`` temperature of a categorical sampler [1], ``cache``
reuse of unchanged molecules' evaluations [false], ``constrain`` the modality's valence rule during
sampling [false], ``power`` sample on the ``power_levels`` ladder with this power [the model's ladder],
``batch`` molecules per batch [200]) it samples ``-n``
molecules with seed ``--seed`` (not the report's seed 0) and prints one JSON line: raw validity, raw
one-fragment validity, valence-decoded uniqueness, FCD against the development reference, atom-type and
ring-size distances, molecules per second (sampling and valence decoding) and network evaluations.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings


def dev_reference():
    """The development reference: the 10,000 QM9 rows after the test split's in the same permutation
    (:func:`polydiff_molecule.metrics.qm9_dev_split`; none of them is a test molecule, and the recipes that
    train on ``qm9_fit`` never see them)."""
    from polydiff_molecule import datasets
    from polydiff_molecule.metrics import Reference, _read_qm9_csv, parse, qm9_dev_split

    root = datasets.data_dir(datasets.QM9_FILE)
    if root is None:
        raise SystemExit(f"QM9 not found ({datasets.QM9_FILE}); the development reference needs it")
    _, raw = _read_qm9_csv(root / datasets.QM9_FILE)
    rows = qm9_dev_split(len(raw))
    p = parse(raw[i] for i in rows)
    return Reference("qm9_dev", frozenset(p.valid), p, f"{len(rows):,} QM9 rows (not the test split)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a pretrained name or a .safetensors bundle")
    ap.add_argument("--grid", required=True, help="JSON list of settings")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-fcd", action="store_true")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    import torch

    from polydiff.model import Model
    from polydiff.samplers import nfe
    from polydiff_molecule.metrics import load_chemnet, sample_and_decode, summarize

    torch.set_num_threads(args.threads)
    model = Model.load(args.model, modality="molecule")
    reference = dev_reference()
    with_fcd = not args.no_fcd
    if with_fcd:
        reference.fcd_stats(load_chemnet())
    sc = model.config.get("sample", {})
    for g in json.loads(args.grid):
        sargs = {}
        if "T" in g:
            sargs["temperature"] = float(g["T"])
        if "cache" in g:
            sargs["cache"] = bool(g["cache"])
        if "constrain" in g:
            sargs["constrain"] = bool(g["constrain"])
        sampler, steps = g.get("sampler"), g.get("steps")
        ladder = {"schedule": "power_levels", "schedule_args": {"power": float(g["power"])}} if "power" in g else {}
        t0 = time.perf_counter()
        run = sample_and_decode(model, args.n, args.seed, sampler, steps, int(g.get("batch", 200)),
                                ("raw", "valence"), sargs, **ladder)
        raw = summarize(run["samples"]["raw"], None, False)
        val = summarize(run["samples"]["valence"], reference, with_fcd)
        name = sampler or sc.get("sampler")
        k = int(steps or sc.get("steps"))
        doc = {"model": args.model, "setting": g, "sampler": name, "steps": k, "nfe": nfe(name, k), "n": args.n,
               "seed": args.seed, "reference": reference.name,
               "raw_validity": raw["validity"], "raw_valid_connected": raw["valid_connected"],
               "valence_validity": val["validity"], "valence_connected": val["valid_connected"],
               "uniqueness": val["uniqueness"], "fcd": val["fcd"], "atom_type_tv": val["atom_type_tv"],
               "ring_size_tv": val["ring_size_tv"],
               "molecules_per_s": args.n / (run["sampling_s"] + run["decode_s"]["valence"]),
               "sampling_s": run["sampling_s"], "wall_s": time.perf_counter() - t0}
        print(json.dumps(doc), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
