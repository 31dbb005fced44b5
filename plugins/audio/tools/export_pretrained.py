"""Export the EMA weights of a training run as a bundled checkpoint (float16, same JSON).

    python plugins/audio/tools/export_pretrained.py runs/audio_fsdd plugins/audio/polydiff_audio/pretrained/fsdd.safetensors

Reads RUN_DIR/model.safetensors (the inference bundle the trainer writes at every checkpoint), keeps the
``ema.*`` tensors only, stores floating-point tensors as float16 (``Model.load`` casts them back to float32)
and prints the step and loss recorded in the bundle.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from polydiff.checkpoint import load_bundle, save_bundle


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out", type=Path)
    a = ap.parse_args(argv)
    tensors, meta = load_bundle(a.run_dir / "model.safetensors")
    ema = {k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items() if k.startswith("ema.")}
    if not ema:
        ap.error(f"{a.run_dir / 'model.safetensors'} holds no ema.* weights")
    save_bundle(a.out, ema, meta)
    print(f"exported {len(ema)} EMA tensors (step {meta.get('step')}, loss {meta.get('loss')}) to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
