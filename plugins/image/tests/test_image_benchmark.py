"""benchmarks/images.py: its helpers (the numbers' definitions) and one ``--quick`` run on the MNIST data
with a tiny model trained for 3 steps, checked for structure and for the invariants that hold whatever the
model's quality: exact pixels outside the inpainting hole, consistent super-resolution, finite PSNRs, a
Fréchet distance of 0 between a set and itself, JSON keys, and the markdown report. (A full run takes
many minutes; it is not a unit test. Nothing here checks a timing.)"""
import contextlib
import importlib.util
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "images.py"
TINY = {"network": {"channels": [16, 32], "blocks": 1, "attention": [], "emb": 32, "patch": 2},
        "train": {"batch_size": 8, "warmup": 0}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("images_benchmark", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def mnist_found():
    from polydiff.errors import InputError
    from polydiff_image.datasets import data_dir

    try:
        data_dir("mnist", "t10k-images-idx3-ubyte.gz")
    except InputError:
        pytest.skip("the MNIST data folder (shared/data/mnist) is not here")


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory, one_thread):
    from polydiff.model import train_modality
    from polydiff.plugins import registry

    out = tmp_path_factory.mktemp("tiny_image")
    summary = train_modality(registry().modality("image"), recipe="mnist_sample", steps=3, out=out, overrides=TINY,
                             device="cpu", progress=False)
    return summary["model_path"]


@pytest.fixture(scope="module")
def tiny_sr_model_path(tmp_path_factory, one_thread):
    from polydiff.model import merge_config, train_modality
    from polydiff.plugins import registry

    out = tmp_path_factory.mktemp("tiny_sr")
    summary = train_modality(registry().modality("image"), recipe="mnist_sample", steps=3, out=out,
                             overrides=merge_config(TINY, {"network": {"lowres_factors": [2, 4]}}), device="cpu",
                             progress=False)
    return summary["model_path"]


@pytest.fixture(scope="module")
def quick(bench, tiny_model_path, tiny_sr_model_path, mnist_found, tmp_path_factory):
    """One ``--quick --json`` run through main(): (document, output folder)."""
    out_dir = tmp_path_factory.mktemp("pictures")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        bench.main(["--quick", "--threads", "1", "--model", tiny_model_path, "--sr-model", tiny_sr_model_path,
                    "--out-dir", str(out_dir), "--json"])
    torch.set_num_threads(1)
    return json.loads(buf.getvalue()), out_dir


def finite(v):
    return v is not None and math.isfinite(v)


# ------------------------------------------------------------------------------------------ helpers
def test_downsampling_hole_and_mean_fill(bench):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 8, 8, 2)).astype(np.uint8)
    bm = bench.block_means(a, 4)
    assert bm.shape == (3, 2, 2, 2)
    assert bm[1, 0, 1, 1] == pytest.approx(a[1, 0:4, 4:8, 1].astype(float).mean())
    low = bench.downsample(a, 2)
    assert low.dtype == np.uint8 and np.abs(low - bench.block_means(a, 2)).max() <= 0.5
    up = np.repeat(np.repeat(low, 2, axis=1), 2, axis=2)
    assert bench.consistency(up, low, 2) == 0.0
    for size, side, off in ((28, 14, 7), (32, 16, 8)):
        hole = bench.centre_hole(size)
        assert hole.sum() == side * side and hole[off, off] and hole[off + side - 1, off + side - 1]
        assert not hole[off - 1, off] and not hole[off + side, off]
    hole = bench.centre_hole(8)
    filled = bench.mean_fill(a, hole)
    assert np.array_equal(filled[:, ~hole], a[:, ~hole])
    want = np.round(a[2][~hole].astype(float).mean(axis=0))
    assert np.array_equal(filled[2][hole], np.broadcast_to(want, (hole.sum(), 2)).astype(np.uint8))


def test_psnr_noise_and_balanced_draw(bench):
    a = np.zeros((2, 4, 4, 1), np.uint8)
    b = a.copy()
    b[0, 0, 0, 0] = 16  # MSE = 256 / 32 = 8
    s = bench.scores(b, a)
    assert s["mse"] == pytest.approx(8.0) and s["psnr"] == pytest.approx(10 * math.log10(255 ** 2 / 8))
    assert bench.psnr(0.0) is None
    where = np.zeros((1, 4, 4, 1), bool)
    where[0, 0, 0, 0] = True
    assert bench.mse(b, a, where) == pytest.approx(128.0)  # pooled over both images' scored pixel
    img = np.full((50, 16, 16, 1), 128, np.uint8)
    n1, n2 = bench.add_noise(img, 25, seed=3), bench.add_noise(img, 25, seed=3)
    assert np.array_equal(n1, n2) and abs(float(n1.astype(float).std()) - 25) < 1.0
    y = np.repeat(np.arange(10), 7)
    idx = bench.balanced_subset(y, 3, seed=0)
    assert len(idx) == 30 and np.array_equal(np.bincount(y[idx]), np.full(10, 3))
    assert np.array_equal(idx, bench.balanced_subset(y, 3, seed=0)) and np.array_equal(idx, np.sort(idx))


def test_frechet_distance_of_a_set_with_itself_is_zero(bench):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    assert bench.fd(a, a)["value"] == pytest.approx(0.0, abs=1e-6)
    b = a + 1.0
    assert bench.fd(a, b)["value"] == pytest.approx(16.0, rel=1e-6)  # a mean shift of 1 in 16 dimensions
    # singular covariances (fewer samples than dimensions, dead units): finite and non-negative
    c = np.maximum(rng.normal(size=(12, 40)), 0)
    c[:, :5] = 0
    r = bench.fd(c, np.maximum(rng.normal(size=(15, 40)), 0))
    assert finite(r["value"]) and r["value"] >= 0 and isinstance(r["regularized"], bool)


def test_augment_crops_and_flips(bench):
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    out = bench.augment(x, g, pad=0)  # no padding: every crop is the image, flipped or not
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    out = bench.augment(x, torch.Generator().manual_seed(1), pad=2)
    assert out.shape == x.shape


def test_classifier_trains_predicts_and_embeds(bench):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 10
    x = (rng.integers(0, 60, (40, 12, 12, 1)) + (y * 20)[:, None, None, None]).astype(np.uint8)
    clf = bench.Classifier(1, seed=0)
    hist = clf.train(x, y, epochs=1, batch_size=20)
    assert len(hist["history"]) == 1 and np.isfinite(hist["history"][0]["loss"])
    pred = clf.predict(x)
    assert pred.shape == (40,) and pred.min() >= 0 and pred.max() <= 9
    emb = clf.embed(x)
    assert emb.shape == (40, bench.EMB) and np.isfinite(emb).all() and (emb >= 0).all()
    assert np.array_equal(clf.embed(x), emb)  # eval mode: no dropout, fixed BatchNorm statistics
    rep = bench.accuracy_report(pred, y, [str(i) for i in range(10)])
    assert rep["n"] == 40 and sum(map(sum, rep["confusion"])) == 40
    assert rep["accuracy"] == pytest.approx(float((pred == y).mean()))


def test_checks_and_arguments(bench):
    assert bench.check(0.96, 0.95)["pass"] is True and bench.check(0.0, 0.0, ">")["pass"] is False
    assert bench.check(0, 0, "<=")["pass"] is True and bench.check(None, 1.0)["pass"] is False
    skipped = bench.check(None, 20.0, skipped=True, reason="--skip-speed")
    assert skipped["pass"] is None and bench._fmt_check(skipped) == "null (target >= 20.0) SKIPPED (--skip-speed)"
    assert bench.parse_samplers("euler, heun,euler") == ["euler", "heun"]
    with pytest.raises(ValueError, match="unknown sampler"):
        bench.parse_samplers("nope")
    parse = bench.build_parser().parse_args
    with pytest.raises(SystemExit, match="error: unknown sampler 'nope'"):
        bench.resolve_args(parse(["--samplers", "euler,nope"]))
    with pytest.raises(SystemExit, match="must be at least 1"):
        bench.resolve_args(parse(["--n-per-class", "0"]))
    args = bench.resolve_args(parse(["--quick", "--n-task", "5"]))
    assert args.n_task == 5 and args.n_per_class == 2 and args.epochs == 1 and args.sampler_list == []
    args = bench.resolve_args(parse([]))
    assert (args.n_per_class, args.n_task, args.speed_batch, args.repeats, args.epochs) == (50, 100, 64, 3, None)
    assert args.sampler_list == ["euler", "heun", "dpmpp_2m", "ddim", "unipc"]


def test_sr_model_option(bench, tiny_model_path, tiny_sr_model_path):
    parse = bench.build_parser().parse_args
    assert bench.load_sr_model("mnist", parse(["--sr-model", "none"])) is None
    assert bench.load_sr_model("cifar10", parse([])) is None  # no bundled one for CIFAR-10
    m = bench.load_sr_model("mnist", parse(["--sr-model", str(tiny_sr_model_path)]))
    assert m.config["network"]["lowres_factors"] == [2, 4]
    with pytest.raises(SystemExit, match="not a super-resolution model"):
        bench.load_sr_model("mnist", parse(["--sr-model", str(tiny_model_path)]))


def test_model_that_does_not_fit_the_dataset_is_refused(bench, tiny_model_path):
    with pytest.raises(SystemExit, match="does not fit the cifar10 dataset"):
        bench.main(["--quick", "--threads", "1", "--model", tiny_model_path, "--dataset", "cifar10"])
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------ a --quick run
def test_quick_run_document(bench, quick):
    doc, _ = quick
    assert doc["benchmark"] == "images" and doc["config"]["quick"] is True
    assert set(doc["datasets"]) == {"mnist"}  # recognised from the model's classes and size
    assert {"machine", "versions", "config", "targets", "datasets", "checks", "wall_s", "cpu_s", "seconds"} <= set(doc)
    assert doc["machine"]["threads"] == 1 and doc["machine"]["load_avg_start"] is not None
    d = doc["datasets"]["mnist"]
    assert {"model", "model_info", "data", "classifier", "real", "generated", "accuracy_ratio", "fd", "tasks",
            "speed", "checks", "outputs"} <= set(d)
    assert d["data"] == {"train": 9000, "heldout": 1000}
    assert d["classifier"]["epochs"] == 1 and d["classifier"]["train_images"] == 1000
    assert d["classifier"]["augmentation"] == "none"
    assert set(doc["targets"]["mnist"]) == set(d["checks"])
    assert set(doc["checks"]) == {f"mnist/{k}" for k in d["checks"]}
    for c in doc["checks"].values():
        assert c["pass"] in (True, False) and c["op"] in (">=", "<=", ">")


def test_quick_run_accuracy_and_frechet_distance(bench, quick):
    d = quick[0]["datasets"]["mnist"]
    real, gen = d["real"], d["generated"]
    assert real["n"] == 1000 and gen["n"] == 20
    assert list(gen["per_class"]) == [str(i) for i in range(10)]
    assert sum(map(sum, gen["confusion"])) == 20
    assert [sum(row) for row in gen["confusion"]] == [2] * 10  # labels cycle: 2 of every class
    assert 0 <= gen["accuracy"] <= 1 and 0 < real["accuracy"] <= 1
    assert d["accuracy_ratio"] == pytest.approx(gen["accuracy"] / real["accuracy"])
    assert d["checks"]["generated_accuracy"]["value"] == gen["accuracy"]
    assert (gen["sampler"], gen["steps"], gen["nfe"], gen["cfg_scale"]) == ("dpmpp_2m", 20, 20, 1.0)
    fdd = d["fd"]
    assert (fdd["n_real"], fdd["n_generated"], fdd["n_reference"]) == (1000, 20, 20)
    assert finite(fdd["generated"]) and fdd["generated"] >= 0 and finite(fdd["reference"]) and fdd["reference"] >= 0
    assert "NOT Inception" in fdd["note"]


def test_quick_run_inpainting_keeps_every_other_pixel(quick):
    inp = quick[0]["datasets"]["mnist"]["tasks"]["inpaint"]
    assert inp["n"] == 8 and inp["hole"] == {"top": 7, "left": 7, "side": 14, "pixels": 196}
    assert inp["outside_max_abs_diff"] == 0
    assert quick[0]["datasets"]["mnist"]["checks"]["inpaint_outside_max_abs_diff"]["pass"] is True
    for k in ("model", "mean_fill"):
        assert finite(inp[k]["psnr"]) and inp[k]["mse"] > 0


def test_quick_run_super_resolution_is_consistent(bench, quick, tiny_sr_model_path):
    d = quick[0]["datasets"]["mnist"]
    assert d["sr_model"] == str(tiny_sr_model_path)
    methods = ["project", "sdedit", "conditioned", "conditioned_project"]
    for f, low in ((2, 14), (4, 7)):
        sr = d["tasks"]["super_resolution"][f"x{f}"]
        assert sr["low_size"] == low and sr["methods"] == methods
        assert sr["nearest"]["consistency_max"] == 0.0
        for m in methods:
            assert sr[m]["consistency_max"] <= 2.0, (f, m)
            assert sr[m]["seconds"] > 0
        for m in ["nearest", "bicubic"] + methods:
            assert finite(sr[m]["psnr"])
        assert set(sr["beats_bicubic"]) <= set(methods) and sr["best_method"] in methods
        assert sr["psnr_gain_db"] == pytest.approx(max(sr[m]["psnr"] for m in methods) - sr["bicubic"]["psnr"])
        c = d["checks"][f"sr_x{f}_psnr_gain_db"]
        assert c["value"] == sr["psnr_gain_db"] and c["pass"] == (sr["psnr_gain_db"] > 0) == bool(sr["beats_bicubic"])


def test_quick_run_denoising_and_speed(quick):
    d = quick[0]["datasets"]["mnist"]
    den = d["tasks"]["denoise"]
    assert den["sigma"] == 25.0 and 0 < den["noise_std_actual"] <= 26
    for k in ("noisy", "given_sigma", "estimated_sigma"):
        assert finite(den[k]["psnr"])
    est = den["estimated_sigma"]
    assert 0 < est["sigma_min"] <= est["sigma_mean"] <= est["sigma_max"]
    (sp,) = d["speed"]  # --quick: the default sampler only
    assert (sp["sampler"], sp["steps"], sp["nfe"], sp["batch"], sp["network_batch"]) == ("dpmpp_2m", 20, 20, 4, 4)
    assert len(sp["runs_s"]) == 1 and sp["images_per_s"] > 0
    assert d["checks"]["images_per_s"]["value"] == sp["images_per_s"]


def test_quick_run_pictures(quick):
    from polydiff_image.io import read_image

    d, out_dir = quick[0]["datasets"]["mnist"], quick[1]
    assert set(d["outputs"]) == {"samples", "inpaint", "sr_x2", "sr_x4", "denoise"}
    for path in d["outputs"].values():
        assert Path(path).parent == out_dir / "mnist"
    grid = read_image(d["outputs"]["samples"])  # 10 rows (classes) x 2 columns of 56-pixel cells, 2-pixel gaps
    assert grid.shape == (10 * 56 + 11 * 2, 2 * 56 + 3 * 2, 1)
    sr = read_image(d["outputs"]["sr_x4"])  # 4 examples x (low-res | bicubic | sdedit | conditioned | truth)
    assert sr.shape == (4 * 56 + 5 * 2, 5 * 56 + 6 * 2, 1)


def test_render_prints_the_tables(bench, quick, tmp_path, capsys):
    path = tmp_path / "images.json"
    path.write_text(json.dumps(quick[0]))
    bench.main(["--render", str(path)])
    out = capsys.readouterr().out
    assert "#### mnist: model `model.safetensors`" in out
    assert "| real, held out (1000) |" in out and "| generated (20) |" in out
    assert "NOT Inception FIDs" in out
    assert "| model |" in out and "| mean fill (reference) |" in out and "| 0 |" in out
    assert "| x4 (7→) | bicubic |" in out and "| dpmpp_2m | 20 | 20 |" in out
    assert "- mnist inpaint_outside_max_abs_diff: 0 (target <= 0) PASS" in out
    assert "--quick: tiny sizes" in out
