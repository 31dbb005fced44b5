"""Entry point for ``python -m torch.distributed.run --nproc_per_node=N ddp_modality.py OUT ARGS.json``:
``polydiff.model.train_modality`` as ``polydiff train`` calls it, on every rank, with one more callback that
writes a digest of this rank's weights and EMA to ``OUT/replica{rank}.json`` at the end."""
import hashlib
import json
import sys
from pathlib import Path

import torch

from polydiff.model import train_modality
from polydiff.plugins import registry
from polydiff.training import Callback


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


class Replica(Callback):
    def __init__(self, out: Path):
        self.out = out

    def on_end(self, state):
        sd, ema = state.net.state_dict(), state.trainer.ema
        rec = {"rank": state.trainer.rank, "world_size": state.trainer.world_size, "step": state.step,
               "loss": state.loss, "params": digest(sd[k] for k in sorted(sd)),
               "ema": digest(ema[k] for k in sorted(ema))}
        (self.out / f"replica{state.trainer.rank}.json").write_text(json.dumps(rec))


def main():
    out = Path(sys.argv[1])
    args = json.loads(Path(sys.argv[2]).read_text())
    torch.manual_seed(100 + int(__import__("os").environ["RANK"]))  # the global generator differs per rank
    modality = registry().modality(args.pop("modality"))
    train_modality(modality, out=out / "run", progress=False, device="cpu", callbacks=[Replica(out)], **args)


if __name__ == "__main__":
    main()
