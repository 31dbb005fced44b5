"""Entry point for ``python -m torch.distributed.run --nproc_per_node=N ddp_train.py OUTDIR``.

Each rank builds its network from a different seed (DDP must make the replicas equal), trains a few
steps into ``OUTDIR/rank<r>`` (only rank 0 may write there) and dumps its final parameters and EMA
to ``OUTDIR/replica<r>.json``.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_training import TinyNet, ring_data, tiny_config  # noqa: E402

from polydiff.training import Trainer, run_folder  # noqa: E402


def digest(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def main():
    out = Path(sys.argv[1])
    rank = int(os.environ["RANK"])
    torch.manual_seed(100 + rank)
    net = TinyNet(n_labels=2)
    before = digest(p for p in net.parameters())
    x, cond = ring_data(200, labels=True)
    cfg = tiny_config(steps=6, ckpt_every=3, batch_size=32, cond_drop=0.2)
    trainer = Trainer(net, x, cond, cfg, run_folder(out / f"rank{rank}", progress=True), modality="points", encoder_meta={},
                      guidance={"label": -1}, device="cpu")
    res = trainer.fit()
    sd = net.state_dict()
    record = {
        "rank": rank,
        "world_size": trainer.world_size,
        "initial": before,
        "params": digest(sd[k] for k in sorted(sd)),
        "ema": digest(trainer.ema[k] for k in sorted(trainer.ema)),
        "flat": torch.cat([sd[k].flatten() for k in sorted(sd)]).tolist(),
        "labels_seen": int(sum(len(l) for l in net.seen_labels)),
        "group_destroyed": not dist.is_initialized(),
        "result": res,
    }
    (out / f"replica{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
