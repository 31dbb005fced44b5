"""benchmarks/ladders.py compares a bundle's stored ladder with the Karras ladder on seeds the fit never used."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_ladders", ROOT / "benchmarks" / "ladders.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ladders_benchmark_reports_the_stored_ladder_against_karras(monkeypatch, capsys):
    B = _bench()
    monkeypatch.setattr(B, "FINE_STEPS", 20)
    assert B.main(["--models", "shapes:64", "--seeds", "2", "--threads", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    (m,) = res["models"]
    assert m["model"] == "shapes" and m["seeds"] == [101, 102] and m["schedule"] == "fitted"
    assert len(m["stored_ladder"]) == m["steps"]
    d = m["distance"]
    assert all(len(v["per_seed"]) == 2 and all(x >= 0 for x in v["per_seed"]) for v in d.values())
    r = m["ratio_stored_to_karras"]
    assert r["per_seed"] == [a / b for a, b in zip(d["stored"]["per_seed"], d["karras"]["per_seed"])]
    assert r["worst"] == max(r["per_seed"])
