"""benchmarks/anomaly.py runs the ADBench protocol end to end (on two small synthetic datasets here)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
        # the anomalies here are one tight group (5 % of the rows): easy with clean training rows, the outlier
        # mode's hardest case without them (docs/anomaly.md, "Limits")
        assert m["complete"] and m["mean_auroc"] > (0.95 if protocol == "semi" else 0.8) and 0 < m["mean_auprc"] <= 1
        runs = json.loads(cache.with_suffix(f".{protocol}.json").read_text())
        assert len(runs) == 4
        n_test = runs["dte-np|1_a|0"]["n_test"]
        assert n_test == (300 + 30 if protocol == "semi" else 630)  # half the normal rows + every anomaly


def test_unknown_method_is_one_line(tmp_path):
    _dataset(tmp_path / "1_a.npz", 0)
    r = subprocess.run([sys.executable, str(SCRIPT), "--data-dir", str(tmp_path), "--methods", "nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: unknown method(s) nope")


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("anomaly_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_results(names, seeds, table):
    """results[method|dataset|seed] from {method: {dataset: auroc in points}} (the same for every seed)."""
    return {f"{m}|{ds}|{s}": {"auroc": v[ds] / 100} for m, v in table.items() for ds in names for s in seeds}


def test_halves_are_fixed_disjoint_and_cover_every_dataset():
    bench = _bench_module()
    names = [f"{i}_set" for i in range(31)]
    a, b = bench.halves(names)
    assert (a, b) == bench.halves(names)  # fixed
    assert not set(a) & set(b) and set(a) | set(b) == set(names) and (len(a), len(b)) == (16, 15)
    assert a == [n for n in names if n in a]  # listed in the names' order


def test_selection_never_reports_on_the_datasets_it_chose_on():
    """Each fold chooses on one half and reports on the other: its table holds only held-out datasets, and
    changing results on the held-out half cannot change what that fold chose."""
    bench = _bench_module()
    names, seeds = [f"{i}_set" for i in range(10)], [0, 1]
    a, b = bench.halves(names)
    base = {"KNN": {ds: 80.0 for ds in names}}
    # "good_on_a" wins on half A only, "good_on_b" on half B only
    table = {**base, "c:good_on_a": {ds: 85.0 if ds in a else 70.0 for ds in names},
             "c:good_on_b": {ds: 85.0 if ds in b else 70.0 for ds in names}}
    sel = bench.select(_fake_results(names, seeds, table), ["c:good_on_a", "c:good_on_b"], "KNN", names, seeds)
    fa, fb = sel["folds"]
    for fold in sel["folds"]:
        assert not set(fold["selection_datasets"]) & set(fold["report_datasets"])
        assert set(fold["report"]["table"]) == set(fold["report_datasets"])
        assert set(fold["selection_datasets"]) | set(fold["report_datasets"]) == set(names)
    # chosen on A -> the A-specialist, which then loses 10 points on every held-out (B) dataset
    assert fa["chosen"] == "c:good_on_a" and fa["report"]["mean"] == pytest.approx(-10.0)
    assert fb["chosen"] == "c:good_on_b" and fb["report"]["mean"] == pytest.approx(-10.0)
    assert fa["report"]["worst"] == pytest.approx(-10.0) and fa["report"]["worst_dataset"] in b


def test_selection_rule_takes_the_largest_margin_to_both_targets():
    bench = _bench_module()
    stats = {"risky": {"mean": 3.0, "worst": -9.0}, "safe": {"mean": 1.2, "worst": -1.0},
             "weak": {"mean": 0.5, "worst": 0.0}}
    assert bench.margin(stats["risky"], 1.0, 3.0) == pytest.approx(-6.0)
    assert bench.choose(stats, 1.0, 3.0) == "safe"  # margins -6, +0.2, -0.5
    assert bench.choose(stats, 1.0, None) == "risky"  # the mean target alone
    assert bench.choose({"a": {"mean": 2.0, "worst": -1.0}, "b": {"mean": 2.0, "worst": -1.0}}, 1.0, 3.0) == "a"


def test_select_end_to_end_on_small_tables(tmp_path):
    pytest.importorskip("pyod")
    for i in range(4):
        _dataset(tmp_path / f"{i + 1}_s.npz", i, n=300)
    r = subprocess.run([sys.executable, str(SCRIPT), "--data-dir", str(tmp_path), "--protocol", "semi", "--seeds", "1",
                        "--methods", "dte-np", "--select", "--no-throughput", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    sel = doc["selection"]
    assert sel["anchor"] == "KNN" and len(sel["folds"]) == 2
    bench = _bench_module()
    assert set(sel["folds"][0]["selection_stats"]) == {f"dte-np@{c}" for c in bench.CANDIDATES["semi"]}
    for fold in sel["folds"]:
        assert fold["chosen"] in fold["selection_stats"]
        assert set(fold["report"]["table"]) == set(fold["report_datasets"])
    assert {"held_out_A_mean_over_knn", "held_out_B_worst_vs_knn"} <= set(doc["checks"])
    assert "Selection protocol" in bench.render_selection(doc)


def test_masking_check_runs_and_small_bags_undo_the_masking():
    """benchmarks/anomaly_masking.py: every method on every synthetic table, and the measurement it exists for
    (a tight group of anomalies masks itself in the default's 256-row bags, much less in 64-row bags)."""
    pytest.importorskip("pyod")
    script = SCRIPT.with_name("anomaly_masking.py")
    r = subprocess.run([sys.executable, str(script), "--seeds", "1", "--json"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc["auroc"]) == {"cluster", "wide-cluster", "scattered"} and doc["seeds"] == [0]
    cluster = doc["auroc"]["cluster"]
    assert cluster["dte-np@bags64"]["mean"] > cluster["dte-np (outlier default)"]["mean"] + 30
    assert all(v["mean"] > 99 for v in doc["auroc"]["scattered"].values())
    bad = subprocess.run([sys.executable, str(script), "--seeds", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1] == "error: --seeds must be at least 1"


def test_audio_novelty_tasks_train_on_one_digit_and_test_on_the_rest():
    pytest.importorskip("torchaudio")
    from polydiff_audio.datasets import fsdd_dir

    if fsdd_dir() is None:
        pytest.skip("the Free Spoken Digit Dataset is not in shared/data/fsdd")
    bench = _bench_module()
    assert len(bench.audio_task_names()) == 20
    X, labels = bench._audio_arrays("mfcc40")
    assert X.shape == (3000, 40) and np.isfinite(X).all() and np.bincount(labels).tolist() == [300] * 10
    Xtr, Xte, y = bench.split("audio", "fsdd-7-mfcc40", 0, "semi", 50_000)
    assert (len(Xtr), len(Xte), int(y.sum())) == (150, 2850, 2700) and np.allclose(Xtr.mean(0), 0, atol=1e-4)
    again = bench.split("audio", "fsdd-7-mfcc40", 0, "semi", 50_000)
    assert all(np.array_equal(u, v) for u, v in zip((Xtr, Xte, y), again))  # the same seed, the same task
    # before standardization: training rows and normal test rows are the digit's recordings, each used once
    bench.standardize = lambda a, b, c: (a, b, c)
    rtr, rte, y = bench.split("audio", "fsdd-7-mfcc40", 0, "semi", 50_000)
    key = lambda rows: [r.tobytes() for r in rows]  # noqa: E731
    digit, others = set(key(X[labels == 7])), set(key(X[labels != 7]))
    assert len(digit) == 300 and set(key(rtr)) | set(key(rte[y == 0])) == digit
    assert not set(key(rtr)) & set(key(rte)) and set(key(rte[y == 1])) == others
