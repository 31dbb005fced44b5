"""The parts of benchmarks/audio.py that decide its numbers: preprocessing, Fréchet distance, accuracy,
sampler parsing, the classifier's interface and the markdown report. (A full run needs the 3,000 FSDD
recordings and a few minutes; it is not a unit test.)"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff_audio.encoder import AudioEncoder, Clips

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "audio.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("audio_benchmark", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_prepare_is_the_encoders_preprocessing(bench):
    rng = np.random.default_rng(0)
    enc = AudioEncoder()
    waves = [rng.normal(size=n).astype(np.float32) * s for n, s in ((3000, 0.3), (8000, 0.01), (12000, 1.0))]
    waves.append(np.zeros(500, np.float32))  # silence stays silent
    x, _ = enc.encode(Clips(waves, 8000))
    got = bench.prepare(enc, waves)
    assert got.shape == (4, 8000)
    assert torch.allclose(got * enc.scale, x[:, 0], atol=1e-6)
    assert got[0, 3000:].abs().max() == 0  # padding after the real samples


def test_frechet_distance_matches_scipy_sqrtm(bench):
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
    b = rng.normal(size=(300, 8)) * 2.0 + 0.5
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.trace(sqrtm(sa @ sb)).real
    assert bench.frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)
    assert bench.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # the distance is symmetric, and finite and non-negative with fewer samples than dimensions
    assert bench.frechet_distance(b, a) == pytest.approx(bench.frechet_distance(a, b), rel=1e-8)
    small = bench.frechet_distance(rng.normal(size=(5, 20)), rng.normal(size=(6, 20)))
    assert np.isfinite(small) and small >= 0


def test_accuracy_report_and_sampler_list(bench):
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9])
    pred = y.clone()
    pred[0] = 9
    rep = bench.accuracy_report(pred, y)
    assert rep["n"] == 20 and rep["accuracy"] == pytest.approx(0.95)
    assert rep["per_digit"]["0"] == 0.5 and rep["per_digit"]["9"] == 1.0
    assert rep["confusion"][0][9] == 1 and sum(map(sum, rep["confusion"])) == 20
    assert bench.parse_samplers("dpmpp_2m:20, heun:10,dpmpp_2m:20") == [("dpmpp_2m", 20), ("heun", 10)]
    with pytest.raises(ValueError, match="unknown sampler"):
        bench.parse_samplers("nope:10")
    with pytest.raises(ValueError, match="SAMPLER:STEPS"):
        bench.parse_samplers("euler")


def test_mean_report_averages_classifiers_on_the_same_clips(bench):
    y = torch.arange(20) % 10
    a = bench.accuracy_report(y.clone(), y)  # all right
    wrong = y.clone()
    wrong[y == 3] = 5
    b = bench.accuracy_report(wrong, y)  # digit 3 always wrong
    m = bench.mean_report([a, b])
    assert m["accuracy"] == pytest.approx(0.95) and m["per_digit"]["3"] == 0.5 and m["per_digit"]["4"] == 1.0
    assert m["confusion"][3][5] == 2 and m["confusion"][3][3] == 2 and sum(map(sum, m["confusion"])) == 40
    assert bench.mean_report([b]) == b


def test_classifier_trains_predicts_and_embeds(bench):
    g = torch.Generator().manual_seed(0)
    t = torch.arange(8000) / 8000
    y = torch.arange(20) % 10
    x = torch.sin(2 * torch.pi * (200 + 150 * y[:, None]) * t) * 0.1 + 0.01 * torch.randn(20, 8000, generator=g)
    clf = bench.Classifier(8000, seed=0)
    hist = clf.train(x, y, epochs=1, batch_size=10, val=(x[:4], y[:4]))
    assert len(hist["history"]) == 1 and 0 <= hist["history"][0]["val_accuracy"] <= 1
    assert clf.predict(x).shape == (20,)
    emb = clf.embed(x)
    assert emb.shape == (20, 64) and np.isfinite(emb).all()
    assert np.array_equal(clf.embed(x), emb)  # eval mode: no dropout, fixed BatchNorm statistics


def test_render_prints_the_tables_and_checks(bench, tmp_path):
    per = {d: 0.5 for d in bench.DIGITS}
    rep = {"n": 200, "accuracy": 0.5, "per_digit": per, "confusion": [[0] * 10] * 10}
    doc = {"command": "python benchmarks/audio.py --json", "model": "/x/fsdd.safetensors", "seed": 0,
           "machine": {"threads": 2, "device": "cpu", "cpu": "some CPU"}, "wall_s": 100.0, "cpu_s": 190.0,
           "data": {"holdout": "george", "classifier_speakers": ["jackson", "lucas"]},
           "classifier": {"epochs": 12, "train_s": 40.0, "val_accuracy": 0.97},
           "real": {**rep, "n": 500, "accuracy": 0.8},
           "generated": {**rep, "sampler": "dpmpp_2m", "steps": 20},
           "fd": {"n_real": 500, "n_generated": 200, "n_reference": 200, "generated": 12.5, "reference": 8.25},
           "rtf": [{"sampler": "dpmpp_2m", "steps": 20, "nfe": 20, "audio_s": 1.0, "median_s": 0.3, "rtf": 0.3}],
           "targets": bench.TARGETS,
           "checks": {"accuracy_ratio": bench.check(0.625, 0.8), "rtf": bench.check(0.3, 0.5, below=True)}}
    path = tmp_path / "audio.json"
    path.write_text(json.dumps(doc))
    r = subprocess.run([sys.executable, str(SCRIPT), "--render", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "| real, george (500) | 50 |" in out and "**80.0**" in out
    assert "| accuracy ratio generated / real | 0.625 | ≥ 0.8 |" in out
    assert "| dpmpp_2m | 20 | 20 | 0.300 | 0.300 |" in out
    assert "accuracy_ratio: 0.625 (target >= 0.8) FAIL" in out and "rtf: 0.3 (target <= 0.5) PASS" in out
    # several classifiers: the means are named and each classifier's ratio is listed
    doc["classifier"].update(count=2, seeds=[0, 1])
    doc["per_classifier"] = [{"seed": 0, "val_accuracy": 0.97, "real": 0.8, "generated": 0.6, "ratio": 0.75},
                             {"seed": 1, "val_accuracy": 0.96, "real": 0.8, "generated": 0.4, "ratio": 0.5}]
    path.write_text(json.dumps(doc))
    out = subprocess.run([sys.executable, str(SCRIPT), "--render", str(path)], capture_output=True, text=True,
                         timeout=120).stdout
    assert "means over 2 classifiers (seeds 0, 1)" in out
    assert "| 0 | 80.0 | 60.0 | 0.750 |" in out and "| 1 | 80.0 | 40.0 | 0.500 |" in out


def test_checks_pass_fail_and_skip(bench):
    assert bench.check(0.9, 0.8)["pass"] is True and bench.check(0.6, 0.5, below=True)["pass"] is False
    missing = bench.check(None, 0.8, reason="no real recording classified right")
    assert missing["pass"] is False and "FAIL (no real recording" in bench._fmt_check(missing)
    skipped = bench.check(None, 0.5, below=True, reason="--skip-rtf", skipped=True)
    assert skipped["pass"] is None and bench._fmt_check(skipped) == "null (target <= 0.5) SKIPPED (--skip-rtf)"


def test_bad_arguments_are_one_line_errors():
    r = subprocess.run([sys.executable, str(SCRIPT), "--samplers", "nope:3"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: unknown sampler 'nope'")
    r = subprocess.run([sys.executable, str(SCRIPT), "--precision", "fp16", "--classifiers", "1"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().splitlines() == ["error: unknown precision 'fp16'; use fp32, bf16, auto"]
    r = subprocess.run([sys.executable, str(SCRIPT), "--classifiers", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--classifiers" in r.stderr.strip().splitlines()[-1]
