"""MOSES benchmark: drug-like molecules from a model trained on the MOSES training sample, scored the MOSES way.

    python benchmarks/moses.py --model runs/moses/model.safetensors -n 10000 --json

Data (``../shared/data/molecules/moses`` or ``$POLYDIFF_MOLECULE_DATA/moses``): ``test.csv.gz`` (176,074
molecules), ``test_scaffolds.csv.gz`` (176,225, scaffolds absent from the training split) and
``train_sample_50k.csv.gz`` (the 50,000 training molecules the recipes use).

Metrics (Polykovskiy et al. 2020, "Molecular Sets (MOSES)"), over ``-n`` samples of the model's default
sampler, raw decoding unless ``--decode valence``, without the valence rule unless ``--constrain``:

* **validity**: valid / n (RDKit sanitizes, one or more fragments); **valid_connected**: valid and one
  fragment / n;
* **unique@1k**, **unique@10k**: distinct canonical SMILES among the first 1,000 / 10,000 valid samples;
* **novelty**: distinct valid SMILES not in the training data / distinct valid. MOSES measures it against its
  whole 1.58 M training split; only the 50,000-molecule sample the model trained on is here, so this novelty
  is against that sample and reads higher than MOSES' own;
* **FCD/Test**, **FCD/TestSF**: Frechet ChemNet Distance of the valid samples against all of ``test`` and
  ``test_scaffolds`` (the ``fcd`` package's ChemNet, as ``polydiff evaluate molecule``); next to them the
  floor: the same distance for the same number of real molecules from the training sample (a Frechet
  distance shrinks with sample size, so a generated set is only compared with real sets of its size);
* **SNN/Test**: mean over valid samples of the Tanimoto similarity to the nearest test molecule (Morgan
  fingerprints, radius 2, 1,024 bits, as MOSES);
* molecules per second (sampling and decoding) and the published anchors.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402

#: published MOSES numbers (Polykovskiy et al. 2020, Table 2; DiGress: Vignac et al. 2023, Table 4)
ANCHORS = [
    {"model": "CharRNN", "validity": 0.975, "unique_10k": 0.999, "novelty": 0.842, "fcd_test": 0.073,
     "fcd_testsf": 0.520, "snn_test": 0.601},
    {"model": "JT-VAE (validity by construction)", "validity": 1.0, "unique_10k": 0.9996, "novelty": 0.9143,
     "fcd_test": 0.395, "fcd_testsf": 0.938, "snn_test": 0.5477},
    {"model": "DiGress", "validity": 0.857, "unique_10k": 1.0, "novelty": 0.950, "fcd_test": 1.19,
     "fcd_testsf": 1.41, "snn_test": 0.52},
]
TARGETS = {"validity": 0.80}


def read_smiles(path: Path) -> list:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    return [s for s in lines[1:] if s]


def fingerprints(mols):
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    return [gen.GetFingerprint(m) for m in mols]


def snn(gen_fps, ref_fps) -> float:
    from rdkit import DataStructs

    return float(np.mean([max(DataStructs.BulkTanimotoSimilarity(fp, ref_fps)) for fp in gen_fps]))


def reference_stats(path, smiles, chemnet, cache_dir):
    """ChemNet mean and covariance of a reference file's molecules, kept in ``cache_dir`` (an ``.npz`` read
    without pickles, named after the file, its size and modification time) when a folder is given."""
    from polydiff_molecule.metrics import chemnet_stats

    if cache_dir is None:
        return chemnet_stats(smiles(), chemnet)
    st = Path(path).stat()
    cached = Path(cache_dir) / f"{Path(path).name}.{st.st_size}.{int(st.st_mtime)}.chemnet.npz"
    if cached.exists():
        with np.load(cached, allow_pickle=False) as z:
            return z["mu"], z["sigma"]
    mu, sigma = chemnet_stats(smiles(), chemnet)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, mu=mu, sigma=sigma)
    os.replace(tmp, cached)
    return mu, sigma


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a .safetensors bundle (or a pretrained name) of a MOSES model")
    ap.add_argument("-n", type=int, default=10_000, help="molecules to sample [10000]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="sampler steps [the model's]")
    ap.add_argument("--decode", choices=["raw", "valence"], default="raw")
    ap.add_argument("--constrain", action="store_true",
                    help="sample with the modality's valence rule (sampler argument constrain)")
    ap.add_argument("--no-fcd", action="store_true")
    ap.add_argument("--stats-cache", default=None, metavar="DIR",
                    help="keep the reference sets' ChemNet statistics in DIR and reuse them [computed each run]")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    import torch

    from polydiff.model import Model
    from polydiff_molecule import datasets
    from polydiff_molecule.metrics import (canonical_smiles, chemnet_stats, frechet_distance, load_chemnet,
                                           parse, sample_and_decode)

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    root = datasets.data_dir(Path("moses") / "test.csv.gz")
    if root is None:
        raise SystemExit("MOSES data not found (moses/test.csv.gz under $POLYDIFF_MOLECULE_DATA or shared/data/molecules)")
    folder = root / "moses"
    train = read_smiles(folder / "train_sample_50k.csv.gz")
    test = read_smiles(folder / "test.csv.gz")
    test_sf = read_smiles(folder / "test_scaffolds.csv.gz")
    train_set = frozenset(canonical_smiles(s) for s in train)

    model = Model.load(args.model, modality="molecule")
    run = sample_and_decode(model, args.n, args.seed, None, args.steps, args.batch_size, (args.decode,),
                            {"constrain": True} if args.constrain else None)
    samples = run["samples"][args.decode]
    p = parse(samples)
    valid = list(p.valid)
    from rdkit import Chem

    frags = [len(Chem.GetMolFrags(m)) for m in p.mols]
    out = {"benchmark": "moses", "model": args.model, "n": args.n, "seed": args.seed, "decode": args.decode, "constrain": args.constrain,
           "steps": args.steps or model.config.get("sample", {}).get("steps"),
           "sampler": model.config.get("sample", {}).get("sampler"), "train_step": model.meta.get("step"),
           "command": " ".join(["python", "benchmarks/moses.py"] + sys.argv[1:]),
           "machine": {"platform": platform.platform(), "cpu": cpu_name(), "cpus": os.cpu_count(),
                       "threads": args.threads},
           "validity": len(valid) / args.n,
           "valid_connected": sum(k == 1 for k in frags) / args.n,
           "unique_1k": len(set(valid[:1000])) / min(1000, len(valid)) if valid else None,
           "unique_10k": len(set(valid[:10000])) / min(10000, len(valid)) if valid else None,
           "novelty": (len(set(valid) - train_set) / len(set(valid))) if valid else None,
           "novelty_against": f"the {len(train_set):,}-molecule training sample (MOSES: its whole training split)",
           "molecules_per_s": args.n / (run["sampling_s"] + run["decode_s"][args.decode]),
           "anchors": ANCHORS, "targets": TARGETS}
    gen_mols = [Chem.MolFromSmiles(s) for s in valid]
    test_mols = [m for m in (Chem.MolFromSmiles(s) for s in test) if m is not None]
    out["snn_test"] = snn(fingerprints(gen_mols), fingerprints(test_mols)) if gen_mols else None
    if not args.no_fcd and len(valid) >= 2:
        chemnet = load_chemnet()
        test_stats = reference_stats(folder / "test.csv.gz", lambda: [canonical_smiles(m) for m in test_mols],
                                     chemnet, args.stats_cache)  # parsed once, above
        sf_stats = reference_stats(folder / "test_scaffolds.csv.gz", lambda: [canonical_smiles(s) for s in test_sf],
                                   chemnet, args.stats_cache)
        gen_stats = chemnet_stats(valid, chemnet)
        rng = np.random.default_rng(args.seed)
        floor_set = [canonical_smiles(train[i]) for i in rng.choice(len(train), size=min(len(valid), len(train)),
                                                                  replace=False)]
        floor_stats = chemnet_stats(floor_set, chemnet)
        out["fcd_test"] = frechet_distance(gen_stats, test_stats)
        out["fcd_testsf"] = frechet_distance(gen_stats, sf_stats)
        out["fcd_floor_test"] = frechet_distance(floor_stats, test_stats)
        out["fcd_floor_testsf"] = frechet_distance(floor_stats, sf_stats)
        out["fcd_floor_note"] = f"{len(floor_set):,} real training-sample molecules (as many as the valid samples)"
    out["checks"] = {"validity": {"value": out["validity"], "target": TARGETS["validity"],
                                  "pass": out["validity"] >= TARGETS["validity"]}}
    out["wall_s"] = time.perf_counter() - t_start
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    keys = ("validity", "valid_connected", "unique_1k", "unique_10k", "novelty", "fcd_test", "fcd_testsf",
            "fcd_floor_test", "snn_test", "molecules_per_s")
    for k in keys:
        v = out.get(k)
        print(f"{k:>16}: {'-' if v is None else round(v, 4)}")
    for a in ANCHORS:
        print(f"  {a['model']}: validity {a['validity']}, unique@10k {a['unique_10k']}, FCD/Test {a['fcd_test']}, "
              f"FCD/TestSF {a['fcd_testsf']}, SNN/Test {a['snn_test']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
