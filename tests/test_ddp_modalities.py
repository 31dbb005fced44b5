"""Training under torchrun for every modality: two processes on the CPU (gloo), each running
``train_modality`` as ``polydiff train`` does, end with identical weights and EMA, and only rank 0 writes the
run folder."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from polydiff import checkpoint

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "tests" / "helpers" / "ddp_modality.py"


def _port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _points(tmp):
    rng = np.random.default_rng(0)
    np.savetxt(tmp / "p.csv", rng.normal(size=(200, 2)), delimiter=",", header="x,y", comments="")
    return {"modality": "points", "data": str(tmp / "p.csv"), "steps": 3, "overrides": {"train": {"batch_size": 16}}}


def _tabular(tmp):
    rng = np.random.default_rng(1)
    np.savetxt(tmp / "t.csv", rng.normal(size=(120, 4)), delimiter=",", header="a,b,c,d", comments="")
    return {"modality": "tabular", "data": str(tmp / "t.csv"), "steps": 3, "overrides": {"train": {"batch_size": 16}}}


def _image(tmp):
    from polydiff_image import io as image_io

    rng = np.random.default_rng(2)
    for cls in ("a", "b"):
        (tmp / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            image_io.write_png(tmp / "imgs" / cls / f"{i}.png", rng.integers(0, 256, (8, 8, 1), dtype=np.uint8))
    return {"modality": "image", "data": str(tmp / "imgs"), "steps": 2, "overrides": {"train": {"batch_size": 4}}}


def _molecule(tmp):
    lines = (ROOT / "plugins/molecule/polydiff_molecule/data/qm9_sample.smi").read_text().splitlines()[:13]
    (tmp / "m.smi").write_text("\n".join(lines) + "\n")
    return {"modality": "molecule", "data": str(tmp / "m.smi"), "steps": 2, "overrides": {"train": {"batch_size": 4}}}


def _audio(tmp):
    return {"modality": "audio", "recipe": "fsdd_sample", "steps": 1, "overrides": {"train": {"batch_size": 2}}}


@pytest.mark.parametrize("setup", [_points, _tabular, _image, _molecule, _audio],
                         ids=["points", "tabular", "image", "molecule", "audio"])
def test_two_ddp_processes_keep_replicas_identical(setup, tmp_path):
    pytest.importorskip(f"polydiff_{'anomaly' if setup is _tabular else setup.__name__[1:]}")
    args = setup(tmp_path)
    (tmp_path / "args.json").write_text(json.dumps(args))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_port()}", str(HELPER), str(tmp_path), str(tmp_path / "args.json")]
    proc = subprocess.run(cmd, env=env, timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"replica{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2 and r0["step"] == r1["step"] == args["steps"]
    assert r0["params"] == r1["params"] and r0["ema"] == r1["ema"]  # the replicas ended identical
    assert r0["loss"] == r1["loss"]  # the logged loss is the mean over the ranks
    meta = checkpoint.read_meta(tmp_path / "run" / "model.safetensors")  # written once, by rank 0
    assert meta["step"] == args["steps"] and meta["modality"] == args["modality"]
