"""Train the molecule modality from ``encode_dataset.py`` output (no RDKit needed), e.g. on a GPU machine.

    python plugins/molecule/tools/train_encoded.py qm9.npz --recipe qm9 --out runs/qm9 \
        [--steps S] [--batch-size B] [--lr LR] [--device cuda] [--export qm9.safetensors]

Uses the recipe's configuration (``polydiff_molecule.RECIPES``) with the given overrides and the core
Trainer, so the run folder is the same as ``polydiff train molecule --recipe NAME`` would write.
``--export`` also writes the EMA weights in float16 with the same JSON (a smaller file to ship).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "molecule")]


def rebuild(npz):
    from polydiff_molecule.encoder import GraphEncoder

    d = np.load(npz, allow_pickle=False)
    enc = GraphEncoder.from_metadata(json.loads(str(d["encoder"])))
    nodes = torch.from_numpy(d["nodes"].astype(np.int64))
    edges = torch.from_numpy(d["edges"].astype(np.int64))
    n, N = nodes.shape
    A, E = enc.num_atom_types, enc.num_bond_types
    node_mask = (nodes != 255).float()
    node_oh = torch.nn.functional.one_hot(nodes.clamp(max=A - 1), A).float() * 2 - 1
    iu, ju = torch.triu_indices(N, N, 1)
    edge_oh = torch.nn.functional.one_hot(edges, E).float() * 2 - 1
    x = torch.cat([node_oh.reshape(n, N * A), edge_oh.reshape(n, -1)], 1)
    mask = enc.element_mask(node_mask)
    return enc, x * mask, {"mask": mask, "node_mask": node_mask}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--recipe", default="qm9")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--ckpt-every", type=int)
    ap.add_argument("--device")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--export")
    a = ap.parse_args()

    import polydiff_molecule as pm
    from polydiff.checkpoint import load_bundle, save_bundle
    from polydiff.model import default_config, merge_config
    from polydiff.plugins import registry
    from polydiff.training import modality_trainer, run_folder

    enc, x, cond = rebuild(a.data)
    over = {k: v for k, v in {"steps": a.steps, "batch_size": a.batch_size, "lr": a.lr, "warmup": a.warmup,
                              "ckpt_every": a.ckpt_every}.items() if v is not None}
    cfg = merge_config(default_config(), pm.DEFAULT_CONFIG, pm.RECIPES[a.recipe].get("config"), {"train": over})
    tr, _ = modality_trainer(registry().modality("molecule"), enc, x, cond, cfg, run_folder(a.out, progress=True),
                             device=a.device)
    print(f"{len(x)} molecules, D={x.shape[1]}, {sum(p.numel() for p in tr.net.parameters()):,} parameters", flush=True)
    res = tr.fit(resume=a.resume)
    print(json.dumps(res), flush=True)
    if a.export:
        tensors, meta = load_bundle(Path(a.out) / "model.safetensors")
        save_bundle(a.export, {k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items()}, meta)
        print(f"exported {a.export}", flush=True)


if __name__ == "__main__":
    main()
