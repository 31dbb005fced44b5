"""Training under torchrun for every modality: two processes on the CPU (gloo), each running
``train_modality`` as ``polydiff train`` does, end with identical weights and EMA, and only rank 0 writes the
run folder."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from polydiff import checkpoint

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "tests" / "helpers" / "ddp_modality.py"
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
import tiny_data  # noqa: E402


def _port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: modality -> (plugin package, the data: a tiny_data writer or a recipe name, steps, batch size)
CASES = {
    "points": ("polydiff_points", tiny_data.points_csv, 3, 16),
    "tabular": ("polydiff_anomaly", tiny_data.table_csv, 3, 16),
    "image": ("polydiff_image", tiny_data.image_folder, 2, 4),
    "molecule": ("polydiff_molecule", tiny_data.molecule_smi, 2, 4),
    "audio": ("polydiff_audio", "fsdd_sample", 1, 2),
}


@pytest.mark.parametrize("modality", list(CASES))
def test_two_ddp_processes_keep_replicas_identical(modality, tmp_path):
    package, data, steps, batch = CASES[modality]
    pytest.importorskip(package)
    args = {"modality": modality, "steps": steps, "overrides": {"train": {"batch_size": batch}},
            **({"recipe": data} if isinstance(data, str) else {"data": str(data(tmp_path))})}
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
