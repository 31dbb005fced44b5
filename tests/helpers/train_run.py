"""Run a tiny training in its own process: ``train_run.py OUT --steps N --ckpt-every K [--sleep S] [--resume]``.

Writes ``OUT/result.json`` with the trainer's summary and the number of forward calls made by this process.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_training import TinyNet, ring_data, tiny_config  # noqa: E402

from polydiff.training import Trainer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--ckpt-every", type=int, default=10)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(1)
    net = TinyNet(sleep=a.sleep)
    x, cond = ring_data(256)
    cfg = tiny_config(steps=a.steps, ckpt_every=a.ckpt_every, batch_size=32)
    res = Trainer(net, x, cond, cfg, a.out, modality="points", encoder_meta={"scale": 1.0},
                  progress=False).fit(resume=a.resume)
    res["forward_calls"] = net.calls
    Path(a.out, "result.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main()
