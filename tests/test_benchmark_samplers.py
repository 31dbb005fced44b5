"""benchmarks/samplers.py's few-step part runs end to end on a small sample and states its targets."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_samplers", ROOT / "benchmarks" / "samplers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_few_step_part_measures_every_configuration_and_states_the_targets(monkeypatch):
    B = _bench()
    monkeypatch.setattr(B, "FEW_STEP_SAMPLES", 2000)
    monkeypatch.setattr(B, "FEW_STEP_NFE", (10,))
    gmm = B.unequal_mixture()
    assert gmm.n_components == 9 and len(set(gmm.stds.tolist())) == 9 and len(set(gmm.weights.tolist())) > 5
    res = {"few_step": B.few_step(1, lambda msg: None)}
    fs = res["few_step"]
    assert 0 < fs["noise_floor"] < 0.5
    assert set(fs["swd"]["polydiff_karras"]) == set(B.FEW_STEP_SAMPLERS)
    assert all(0 < v["10"] < 10 for tab in fs["swd"].values() for v in tab.values())
    targets = B.targets(res)
    names = [t["name"] for t in targets]
    if B.diffusers is not None:
        assert any(n.startswith("few-step NFE=10, unequal mixture") for n in names)
        assert all(isinstance(t["pass"], bool) for t in targets)
