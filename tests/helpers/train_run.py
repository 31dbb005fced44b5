"""Run a tiny training in its own process: ``train_run.py OUT --steps N --ckpt-every K [--sleep S] [--resume]``.

Writes ``OUT/result.json`` with the trainer's summary and the number of forward calls made by this process.
:func:`run` does the same in the calling process.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_training import TinyNet, ring_data, tiny_config  # noqa: E402

from polydiff.training import Trainer, run_folder  # noqa: E402


def run(out, steps=60, ckpt_every=10, sleep=0.0, resume=False) -> dict:
    torch.manual_seed(1)
    net = TinyNet(sleep=sleep)
    x, cond = ring_data(256)
    cfg = tiny_config(steps=steps, ckpt_every=ckpt_every, batch_size=32)
    res = Trainer(net, x, cond, cfg, run_folder(out), modality="points", encoder_meta={"scale": 1.0}).fit(resume=resume)
    res["forward_calls"] = net.calls
    Path(out, "result.json").write_text(json.dumps(res))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--ckpt-every", type=int, default=10)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    run(a.out, a.steps, a.ckpt_every, a.sleep, a.resume)


if __name__ == "__main__":
    main()
