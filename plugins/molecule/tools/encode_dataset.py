"""Encode a molecule dataset once into compact class indices, for training where RDKit is not installed.

    python plugins/molecule/tools/encode_dataset.py qm9 OUT.npz

Writes ``OUT.npz`` with ``nodes`` (uint8 [n, N]: atom class, 255 = no atom), ``edges`` (uint8 [n, T]: bond
class of each upper-triangle pair in ``torch.triu_indices(N, N, 1)`` order, 0 = none) and ``encoder`` (the
fitted encoder's JSON metadata). ``train_encoded.py`` rebuilds exactly the tensors that
``polydiff train molecule --recipe NAME`` would feed the trainer.
"""
import json
import sys

import numpy as np
import torch


def main(name, out):
    from polydiff_molecule import datasets
    from polydiff_molecule.encoder import GraphEncoder

    mols = datasets.DATASETS[name]()
    enc = GraphEncoder().fit(mols, skip_invalid=True)
    x, cond, skipped = enc.encode(mols, skip_invalid=True, return_skipped=True)
    nodes, edges = enc.split(x)  # [B, N, A], [B, N, N, E]
    node_mask = cond["node_mask"].bool()
    node_cls = torch.where(node_mask, nodes.argmax(-1), torch.full_like(node_mask, 255, dtype=torch.long))
    iu, ju = torch.triu_indices(enc.max_atoms, enc.max_atoms, 1)
    edge_cls = edges[:, iu, ju].argmax(-1)
    np.savez_compressed(out, nodes=node_cls.numpy().astype(np.uint8), edges=edge_cls.numpy().astype(np.uint8),
                        encoder=np.array(json.dumps(enc.metadata())))
    print(f"{name}: {len(x)} molecules encoded ({len(skipped)} skipped), N={enc.max_atoms}, "
          f"A={enc.num_atom_types} -> {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
