"""benchmarks/anomaly.py runs the ADBench protocol end to end (on two small synthetic datasets here)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "anomaly.py"


def _dataset(path, seed, n=600, d=6):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(size=(n, d)), rng.normal(size=(30, d)) * 0.5 + 4.0])
    y = np.r_[np.zeros(n), np.ones(30)]
    np.savez(path, X=X, y=y)


def test_protocols_metrics_and_cache(tmp_path):
    _dataset(tmp_path / "1_a.npz", 0)
    _dataset(tmp_path / "2_b.npz", 1)
    cache = tmp_path / "cache.json"
    for protocol in ("semi", "unsup"):
        r = subprocess.run([sys.executable, str(SCRIPT), "--data-dir", str(tmp_path), "--protocol", protocol,
                            "--seeds", "2", "--methods", "dte-np", "--no-throughput", "--json",
                            "--cache", str(cache.with_suffix(f".{protocol}.json"))],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["protocol"] == protocol and doc["datasets"] == ["1_a", "2_b"] and doc["seeds"] == [0, 1]
        m = doc["methods"]["dte-np"]
        assert m["complete"] and m["mean_auroc"] > 0.9 and 0 < m["mean_auprc"] <= 1
        runs = json.loads(cache.with_suffix(f".{protocol}.json").read_text())
        assert len(runs) == 4
        n_test = runs["dte-np|1_a|0"]["n_test"]
        assert n_test == (300 + 30 if protocol == "semi" else 630)  # half the normal rows + every anomaly


def test_unknown_method_is_one_line(tmp_path):
    _dataset(tmp_path / "1_a.npz", 0)
    r = subprocess.run([sys.executable, str(SCRIPT), "--data-dir", str(tmp_path), "--methods", "nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: unknown method(s) nope")
