"""benchmarks/samplers.py's few-step part runs end to end on a small sample and states its targets;
benchmarks/ladders.py compares a bundle's stored ladder with the Karras ladder on seeds the fit never used."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(name: str = "samplers"):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_few_step_part_measures_every_configuration_and_states_the_targets(monkeypatch):
    B = _bench()
    monkeypatch.setattr(B, "FEW_STEP_SAMPLES", 2000)
    monkeypatch.setattr(B, "FEW_STEP_NFE", (10,))
    monkeypatch.setattr(B, "FIT_SAMPLES", 512)
    monkeypatch.setattr(B, "FIT_EVALS", 20)
    gmm = B.unequal_mixture()
    assert gmm.n_components == 9 and len(set(gmm.stds.tolist())) == 9 and len(set(gmm.weights.tolist())) > 5
    res = {"few_step": B.few_step(1, lambda msg: None)}
    fs = res["few_step"]
    assert 0 < fs["noise_floor"] < 0.5
    assert set(fs["swd"]["polydiff_karras"]) == set(B.FEW_STEP_SAMPLERS)
    assert set(fs["swd"]["polydiff_fitted"]) == set(B.FIT_SAMPLERS)
    assert all(len(f["10"]["sigmas"]) == 10 for f in fs["fit"]["ladders"].values())
    assert all(0 < v["10"] < 10 for tab in fs["swd"].values() for v in tab.values())
    targets = B.targets(res)
    names = [t["name"] for t in targets]
    if B.diffusers is not None:
        assert any(n.startswith("few-step NFE=10, unequal mixture: best polydiff sampler on the ladder fitted")
                   for n in names)
        assert all(isinstance(t["pass"], bool) for t in targets)


def test_loop_cost_times_every_loop_without_the_network_and_decomposes_the_ratio():
    bench = _bench()

    scheds = {n: bench.make_scheduler(n) for n in bench.SAMPLER_NAMES}
    out = bench.loop_cost((8, 4), scheds, forward_us=1000.0, reps=1, log=lambda m: None, key="tiny")
    U = out["loop_us_per_nfe"]
    assert set(U) == {"polydiff", "diffusers", "floor"}
    for lib in U:
        assert set(U[lib]) == set(bench.SAMPLER_NAMES)
        for n in bench.SAMPLER_NAMES:
            assert set(U[lib][n]) == {str(s) for s in bench.OVERHEAD_STEPS} and all(v > 0 for v in U[lib][n].values())
    for n in bench.SAMPLER_NAMES:
        for s in map(str, bench.OVERHEAD_STEPS):
            assert out["ratio_decomposed"]["polydiff"][n][s] == pytest.approx((1000.0 + U["polydiff"][n][s]) / 1000.0)
            assert out["vs_floor_decomposed"]["polydiff"][n][s] == pytest.approx(
                (1000.0 + U["polydiff"][n][s]) / (1000.0 + U["floor"][n][s]))
    assert "floor" not in out["vs_floor_decomposed"]
    # the targets read the decomposed ratios
    res = {"overhead": {k: {"ratio": {lib: {n: {s: 1.0 for s in map(str, bench.OVERHEAD_STEPS)} for n in bench.SAMPLER_NAMES}
                                      for lib in ("polydiff", "diffusers", "floor")}, **out} for k in ("conv", "mlp")}}
    names = [t["name"] for t in bench.targets(res)]
    assert any("decomposed" in n for n in names) and any("loop cost per NFE" in n for n in names)


def test_ladders_benchmark_reports_the_stored_ladder_against_karras(monkeypatch, capsys):
    B = _bench("ladders")
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
