"""benchmarks/molecule_network_cost.py: the bundled categorical model's cost per pass, with and without its
structural features, and with int8 linear layers beside fp32 (a small batch here)."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "molecule_network_cost.py"


def test_the_network_cost_script_reports_every_measurement():
    r = subprocess.run([sys.executable, str(SCRIPT), "--batch", "16", "--repeats", "1", "--threads", "1", "--int8",
                        "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["model"] == "qm9_discrete" and doc["batch"] == 16 and doc["with_features_s"] > 0
    q = doc["int8"]
    assert q["fp32_s"] > 0 and q["int8_s"] > 0 and 0 <= q["tv_mean"] <= q["tv_max"] <= 1
    assert q["argmax_agreement"] > 0.8  # int8 weights change the predictions a little, not wholesale
