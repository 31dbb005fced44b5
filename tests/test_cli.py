"""The ``polydiff`` command: plugin listing, help, one-line user errors, and sample/score/inspect on a toy bundle."""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from polydiff.cli import cli

POLYDIFF = Path(sys.executable).with_name("polydiff")


class _Mkdir:
    """Unpickling this creates a folder: proof that a file was (wrongly) unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.fixture
def toy(fresh_registry, fixture_plugins):
    """The process-wide registry with the toy modality registered; returns the fixture module."""
    import polydiff_toy

    rec = fresh_registry.register_plugin(polydiff_toy.plugin, name="toy", distribution="polydiff-toy", version="0.0.1")
    assert rec.status == "ok", rec.error
    return polydiff_toy


@pytest.fixture
def bundle(toy, tmp_path):
    return toy.save_bundle(tmp_path / "toy.safetensors")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result, *words):
    """Non-zero exit, one line on stderr naming the problem, no traceback, nothing on stdout."""
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and "Traceback" not in result.output
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert result.stdout == ""


def run_polydiff(args, env=None, cwd=None):
    exe = [str(POLYDIFF)] if POLYDIFF.exists() else [sys.executable, "-m", "polydiff.cli"]
    return subprocess.run(exe + [str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


def read_csv(path):
    lines = Path(path).read_text().splitlines()
    return lines[0], [tuple(float(v) for v in ln.split(",")) for ln in lines[1:]]


# ------------------------------------------------------------------------------------ help
def _verbs():
    return sorted(cli.commands)


def test_top_level_help():
    result = invoke("--help")
    assert result.exit_code == 0
    for verb in ("plugins", "models", "train", "sample", "score", "inspect", "export", "demo"):
        assert verb in result.stdout


@pytest.mark.parametrize("verb", _verbs())
def test_every_verb_has_help(toy, verb):
    result = invoke(verb, "--help")
    assert result.exit_code == 0 and "Usage: " in result.stdout and result.stderr == ""


@pytest.mark.parametrize("verb", ["train", "sample"])
def test_modality_subcommands_have_help(toy, verb):
    listing = invoke(verb, "--help")
    assert listing.exit_code == 0 and "toy" in listing.stdout
    result = invoke(verb, "toy", "--help")
    assert result.exit_code == 0 and "Rows of numbers" in result.stdout


# ------------------------------------------------------------------------------------ plugins
def test_plugins_json_lists_builtin_and_toy(toy):
    result = invoke("plugins", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert isinstance(data, list) and all(isinstance(d, dict) for d in data)
    for d in data:
        assert {"name", "version", "status", "modalities"} <= set(d)
    by_name = {d["name"]: d for d in data}
    assert data[0]["name"] == "polydiff" and data[0]["status"] == "ok" and "euler" in data[0]["samplers"]
    assert by_name["toy"]["modalities"] == ["toy"] and by_name["toy"]["version"] == "0.0.1"


def test_plugins_table(toy, fixture_plugins):
    import polydiff_fixture_plugins as fx
    import polydiff.plugins

    polydiff.plugins.registry().register_plugin(fx.needs_package, name="needs")
    result = invoke("plugins")
    assert result.exit_code == 0
    assert "modalities: toy" in result.stdout and "fix: pip install polydiff-fixture-absent" in result.stdout


def test_plugins_json_subprocess_with_broken_plugin(fake_site, tmp_path):
    fake_site.add("polydiff-toy", {"toy": "polydiff_toy:plugin"}, version="0.0.2")
    fake_site.add("polydiff-fixture-broken", {"broken": "polydiff_fixture_broken"})
    fake_site.add("polydiff-fixture-extras", {"extras": "polydiff_fixture_plugins:extras"})
    env = fake_site.env(POLYDIFF_LOAD_PLUGINS="toy,broken,extras")
    proc = run_polydiff(["plugins", "--json"], env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    by_name = {d["name"]: d for d in json.loads(proc.stdout)}
    assert by_name["toy"]["status"] == "ok" and by_name["toy"]["modalities"] == ["toy"]
    assert by_name["toy"]["version"] == "0.0.2"
    broken = by_name["broken"]
    assert broken["status"] == "error" and broken["hint"] == "pip install polydiff_fixture_missing_dependency"
    # the command's main() let plugins add their commands through register_commands
    assert by_name["extras"]["status"] == "ok" and by_name["extras"]["commands"] == ["fixture-hello"]


# ------------------------------------------------------------------------------------ user errors
@pytest.mark.parametrize("verb", ["sample", "train"])
def test_unknown_modality_is_one_line(toy, verb, tmp_path):
    result = invoke(verb, "nope", "--out", tmp_path / "x.csv")
    assert_user_error(result, "unknown modality 'nope'", "toy")


def test_unknown_recipe_is_one_line(toy):
    pytest.importorskip("polydiff.training")
    assert_user_error(invoke("train", "toy", "--recipe", "nope"), "no recipe 'nope'", "tiny")


def test_train_without_data_or_with_a_missing_file(toy, tmp_path):
    pytest.importorskip("polydiff.training")
    assert_user_error(invoke("train", "toy", "--out", tmp_path / "run"), "--data", "tiny")
    assert_user_error(invoke("train", "toy", "--data", tmp_path / "absent.csv", "--out", tmp_path / "run"),
                      "absent.csv")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def bad_models(tmp_path):
    """Model files that must be refused: torch.save (.pt), a pickle under a .safetensors name, random bytes."""
    marker = tmp_path / "unpickled"
    evil = {"w": torch.zeros(2), "payload": _Mkdir(marker)}
    files = {}
    files["torch.pt"] = tmp_path / "model.pt"
    torch.save(evil, files["torch.pt"])
    files["pickle.safetensors"] = tmp_path / "pickled.safetensors"
    files["pickle.safetensors"].write_bytes(pickle.dumps(evil, protocol=4))
    files["zip.safetensors"] = tmp_path / "zipped.safetensors"
    files["zip.safetensors"].write_bytes(files["torch.pt"].read_bytes())
    files["random.safetensors"] = tmp_path / "random.safetensors"
    files["random.safetensors"].write_bytes(random.Random(0).randbytes(4096))
    files["missing.safetensors"] = tmp_path / "missing.safetensors"
    yield files
    assert not marker.exists(), "a model file was unpickled"


BAD = ["torch.pt", "pickle.safetensors", "zip.safetensors", "random.safetensors", "missing.safetensors"]


@pytest.mark.parametrize("kind", BAD)
def test_inspect_refuses_bad_model_files(toy, bad_models, kind):
    path = bad_models[kind]
    assert_user_error(invoke("inspect", path), path.name)


@pytest.mark.parametrize("kind", BAD)
def test_score_refuses_bad_model_files(toy, bad_models, kind, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("x0,x1\n0,1\n")
    assert_user_error(invoke("score", data, "--model", bad_models[kind], "--out", tmp_path / "s.csv"),
                      bad_models[kind].name)
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("kind", ["torch.pt", "random.safetensors"])
def test_sample_refuses_bad_model_files(toy, bad_models, kind, tmp_path):
    result = invoke("sample", "toy", "--model", bad_models[kind], "-n", 2, "--out", tmp_path / "o.csv")
    assert_user_error(result, bad_models[kind].name)


def test_score_missing_data_file(bundle, tmp_path):
    assert_user_error(invoke("score", tmp_path / "absent.csv", "--model", bundle, "--out", tmp_path / "s.csv"),
                      "absent.csv")


def test_score_bad_data_and_unknown_method(bundle, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("x0,x1\n0,1\n2,oops\n")
    assert_user_error(invoke("score", data, "--model", bundle, "--out", tmp_path / "s.csv"), "line 3")
    data.write_text("x0,x1\n0,1\n")
    assert_user_error(invoke("score", data, "--model", bundle, "--method", "nope", "--out", tmp_path / "s.csv"),
                      "unknown scoring method 'nope'", "elbo")


def test_sample_modality_mismatch(toy, tmp_path, fixture_plugins):
    import polydiff.plugins
    import polydiff_toy

    reg = polydiff.plugins.registry()
    reg.modalities["other"] = polydiff_toy.make_modality("other")
    path = polydiff_toy.save_bundle(tmp_path / "toy.safetensors")
    result = invoke("sample", "other", "--model", path, "-n", 2, "--out", tmp_path / "o.csv")
    assert_user_error(result, "a 'toy' model, not a 'other' model")


def test_user_error_in_a_subprocess(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYDIFF_")}
    env["POLYDIFF_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    proc = run_polydiff(["sample", "nope", "--out", tmp_path / "x.csv"], env=env, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: unknown modality 'nope' (installed: none)"), err
    assert "pip install" not in err[0]  # never an invitation to install a look-alike package
    assert proc.stdout == "" and not (tmp_path / "x.csv").exists()


# ------------------------------------------------------------------------------------ with a bundle
def test_inspect_prints_the_bundle_document(bundle):
    result = invoke("inspect", bundle)
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["modality"] == "toy" and doc["kind"] == "model" and doc["format"] == "polydiff-bundle"
    assert doc["config"]["sample"]["sampler"] == "euler" and doc["encoder"]["dim"] == 2


def test_sample_end_to_end(bundle, tmp_path):
    out = tmp_path / "f.csv"
    result = invoke("sample", "toy", "--model", bundle, "-n", 4, "--out", out)
    assert result.exit_code == 0, result.output
    assert "wrote 4 of 4 toy samples" in result.stdout
    header, rows = read_csv(out)
    assert header == "x0,x1" and len(rows) == 4
    assert all(len(r) == 2 and all(abs(v) < 1e6 for v in r) for r in rows)
    again = tmp_path / "g.csv"
    summary = json.loads(invoke("sample", "toy", "--model", bundle, "-n", 4, "--out", again, "--json").stdout)
    assert summary["n"] == 4 and summary["sampler"] == "euler" and summary["steps"] == 5
    assert summary["files"] == [str(again)]
    assert again.read_text() == out.read_text()  # same seed, same samples
    other = tmp_path / "h.csv"
    assert invoke("sample", "toy", "--model", bundle, "-n", 4, "--seed", 1, "--sampler", "heun",
                  "--steps", 3, "--out", other).exit_code == 0
    assert other.read_text() != out.read_text()


def test_sample_end_to_end_in_a_subprocess(fake_site, tmp_path, fixture_plugins):
    import polydiff_toy

    path = polydiff_toy.save_bundle(tmp_path / "toy.safetensors")
    fake_site.add("polydiff-toy", {"toy": "polydiff_toy:plugin"})
    proc = run_polydiff(["sample", "toy", "--model", path, "-n", 4, "--out", tmp_path / "f.csv", "--json"],
                        env=fake_site.env(POLYDIFF_LOAD_PLUGINS="toy"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == 4
    assert len(read_csv(tmp_path / "f.csv")[1]) == 4


def test_score_one_row_per_input_in_order(bundle, tmp_path):
    rows = [(0.0, 1.0), (5.0, -3.0), (1.0, -1.0), (40.0, 40.0), (2.0, 0.5)]
    data = tmp_path / "data.csv"
    data.write_text("x0,x1\n" + "".join(f"{a},{b}\n" for a, b in rows))
    rev = tmp_path / "rev.csv"
    rev.write_text("x0,x1\n" + "".join(f"{a},{b}\n" for a, b in reversed(rows)))

    def score(path, out, *extra):
        result = invoke("score", path, "--model", bundle, "--out", out, *extra)
        assert result.exit_code == 0, result.output
        lines = Path(out).read_text().splitlines()
        assert lines[0] == "score" and len(lines) == len(rows) + 1  # line i + 1 is item i
        return [float(v) for v in lines[1:]]

    forward = score(data, tmp_path / "s.csv")
    assert len(forward) == len(rows) and all(v >= 0 for v in forward)
    assert forward[3] == max(forward)  # the far-away row is the most anomalous
    backward = score(rev, tmp_path / "r.csv")
    assert backward[::-1] == pytest.approx(forward, rel=1e-4)
    assert score(data, tmp_path / "b.csv", "--batch-size", 2) == pytest.approx(forward, rel=1e-4)
    assert score(data, tmp_path / "m.csv", "--method", "reconstruction") != forward
    summary = json.loads(invoke("score", data, "--model", bundle, "--out", tmp_path / "j.csv", "--json").stdout)
    assert summary["rows"] == len(rows) and summary["method"] == "elbo"


def test_sample_without_model_and_no_pretrained(toy, tmp_path):
    assert_user_error(invoke("sample", "toy", "-n", 2, "--out", tmp_path / "o.csv"), "no pretrained model")


def test_trajectory_without_draw_fails_before_writing(bundle, tmp_path):
    out = tmp_path / "o.csv"
    result = invoke("sample", "toy", "--model", bundle, "-n", 2, "--out", out, "--trajectory", tmp_path / "t.png")
    assert_user_error(result, "cannot draw trajectories")
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["-n", 0], "-n must be at least 1, got 0"),
    (["--steps", 0], "--steps must be at least 1, got 0"),
    (["--cfg-scale", -1], "--cfg-scale must be 0 or more (1 = no guidance), got -1.0"),
    (["--seed", -3], "--seed must be 0 or more, got -3"),
])
def test_sample_rejects_bad_counts_naming_the_option(bundle, tmp_path, args, message):
    result = invoke("sample", "toy", "--model", bundle, *args, "--out", tmp_path / "o.csv")
    assert_user_error(result, message)
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["--steps", -5], "--steps must be 0 or more, got -5"),
    (["--batch-size", 0], "--batch-size must be at least 1, got 0"),
    (["--seed", -1], "--seed must be 0 or more, got -1"),
    (["--lr", 0], "--lr must be a positive number, got 0.0"),
    (["--lr", "nan"], "--lr must be a positive number, got nan"),
])
def test_train_rejects_bad_numbers_in_the_options_words(toy, tmp_path, args, message):
    result = invoke("train", "toy", "--recipe", "tiny", *args, "--out", tmp_path / "run")
    assert_user_error(result, message)
    assert "train." not in result.stderr  # no internal config key in the message
    assert not (tmp_path / "run").exists()


def test_score_rejects_zero_batch_size(bundle, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("x0,x1\n0,1\n")
    result = invoke("score", data, "--model", bundle, "--batch-size", 0, "--out", tmp_path / "s.csv")
    assert result.exit_code != 0 and "batch-size" in result.output
    assert not (tmp_path / "s.csv").exists()


def test_score_encoder_value_error_is_one_line(bundle, toy, tmp_path, monkeypatch):
    """The Encoder protocol lets read() raise a plain ValueError for bad input."""
    def read(self, path):
        raise ValueError(f"{path}: line 2: not a toy row\nmore detail")

    monkeypatch.setattr(toy.ToyEncoder, "read", read)
    data = tmp_path / "data.csv"
    data.write_text("x0,x1\n0,1\n")
    assert_user_error(invoke("score", data, "--model", bundle, "--out", tmp_path / "s.csv"), "not a toy row")


def test_score_no_items_is_one_line(bundle, toy, tmp_path, monkeypatch):
    monkeypatch.setattr(toy.ToyEncoder, "read", lambda self, path: [])
    data = tmp_path / "data.csv"
    data.write_text("x0,x1\n")
    assert_user_error(invoke("score", data, "--model", bundle, "--out", tmp_path / "s.csv"), "data.csv")
    assert not (tmp_path / "s.csv").exists()


def test_export_ships_float16_ema_weights_with_sampling_defaults(bundle, tmp_path):
    from polydiff.checkpoint import load_bundle

    out = tmp_path / "shipped.safetensors"
    result = invoke("export", bundle, out, "--sampler", "heun", "--steps", 7, "--cfg-scale", 2, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["out"] == str(out) and summary["modality"] == "toy"
    tensors, meta = load_bundle(out)
    src, _ = load_bundle(bundle)
    assert tensors and all(k.startswith("ema.") for k in tensors)
    assert all(v.dtype == torch.float16 for v in tensors.values() if v.is_floating_point())
    assert all(torch.equal(v, src[k].half()) for k, v in tensors.items())
    sc = meta["config"]["sample"]
    assert (sc["sampler"], sc["steps"], sc["cfg_scale"]) == ("heun", 7, 2.0)
    assert "best_of" not in sc and not sc.get("sampler_args")  # not given: left as the run had them
    assert sc["schedule"] == "karras" and meta["kind"] == "model" and meta["encoder"]
    # the shipped bundle samples with the stored defaults
    sampled = json.loads(invoke("sample", "toy", "--model", out, "-n", 3, "--out", tmp_path / "s.csv", "--json").stdout)
    assert sampled["sampler"] == "heun" and sampled["steps"] == 7
    args = tmp_path / "args.safetensors"
    assert invoke("export", bundle, args, "--sampler", "ddim", "--sampler-args", '{"eta": 0.5}').exit_code == 0
    assert load_bundle(args)[1]["config"]["sample"]["sampler_args"] == {"eta": 0.5}
    assert invoke("export", bundle, args, "--schedule", "karras", "--schedule-args", '{"rho": 3.0}').exit_code == 0
    stored = load_bundle(args)[1]["config"]["sample"]
    assert (stored["schedule"], stored["schedule_args"]) == ("karras", {"rho": 3.0})
    assert invoke("export", bundle, args, "--precision", "AUTO").exit_code == 0
    assert load_bundle(args)[1]["config"]["sample"]["precision"] == "auto"
    full = tmp_path / "full.safetensors"
    assert invoke("export", bundle, full, "--full-precision").exit_code == 0
    assert all(v.dtype == torch.float32 for v in load_bundle(full)[0].values() if v.is_floating_point())


def test_export_bad_input_is_one_line(bundle, tmp_path):
    from polydiff.checkpoint import load_bundle, save_bundle

    out = tmp_path / "x.safetensors"
    assert_user_error(invoke("export", tmp_path / "missing", out), "no such file")
    assert_user_error(invoke("export", bundle, out, "--sampler", "nope"), "unknown sampler")
    assert_user_error(invoke("export", bundle, out, "--steps", 0), "--steps")
    assert_user_error(invoke("export", bundle, out, "--sampler-args", "{temperature"), "--sampler-args is not JSON")
    assert_user_error(invoke("export", bundle, out, "--sampler-args", "[1]"), "must be a JSON object")
    assert_user_error(invoke("export", bundle, out, "--best-of", 0), "--best-of must be at least 1")
    assert_user_error(invoke("export", bundle, out, "--schedule", "karras", "--schedule-args", '{"power": 2}'),
                      "--schedule-args for karras")
    assert_user_error(invoke("export", bundle, out, "--precision", "fp8"), "unknown precision")
    tensors, meta = load_bundle(bundle)
    only_model = save_bundle(tmp_path / "m.safetensors", {k: v for k, v in tensors.items() if k.startswith("model.")}, meta)
    assert_user_error(invoke("export", only_model, out), "no ema")
    assert not out.exists()


def test_cfg_interval_is_stored_cleared_and_checked(bundle, tmp_path):
    from polydiff.checkpoint import read_meta

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert invoke("export", bundle, a, "--cfg-scale", 2, "--cfg-interval", "0.3,5").exit_code == 0
    assert read_meta(a)["config"]["sample"]["cfg_interval"] == [0.3, 5.0]
    summary = json.loads(invoke("sample", "toy", "--model", a, "-n", 2, "--out", tmp_path / "s.csv", "--json").stdout)
    assert summary["cfg_interval"] == [0.3, 5.0] and summary["cfg_scale"] == 2.0
    summary = json.loads(invoke("sample", "toy", "--model", a, "-n", 2, "--cfg-interval", "none",
                                "--out", tmp_path / "t.csv", "--json").stdout)
    assert summary["cfg_interval"] is None
    assert invoke("export", a, b, "--cfg-interval", "none").exit_code == 0
    assert "cfg_interval" not in read_meta(b)["config"]["sample"]
    for bad in ("5,0.3", "1", "a,b", "-1,2"):
        assert_user_error(invoke("sample", "toy", "--model", a, "-n", 2, "--cfg-interval", bad,
                                 "--out", tmp_path / "u.csv"), "--cfg-interval")
        assert_user_error(invoke("export", a, tmp_path / "c.safetensors", "--cfg-interval", bad), "--cfg-interval")
    assert not (tmp_path / "u.csv").exists() and not (tmp_path / "c.safetensors").exists()


def test_sample_precision_bf16_runs_the_network_in_bfloat16(bundle, tmp_path):
    out32, out16 = tmp_path / "a.csv", tmp_path / "b.csv"
    assert invoke("sample", "toy", "--model", bundle, "-n", 6, "--out", out32).exit_code == 0
    summary = json.loads(invoke("sample", "toy", "--model", bundle, "-n", 6, "--out", out16, "--precision", "bf16",
                                "--json").stdout)
    assert summary["precision"] == "bf16"
    a, b = np.array(read_csv(out32)[1]), np.array(read_csv(out16)[1])
    assert a.shape == b.shape and not np.array_equal(a, b)  # bfloat16 arithmetic changes the digits...
    assert np.allclose(a, b, rtol=0.1, atol=0.1 * np.abs(a).max())  # ...not the samples
    bad = tmp_path / "c.csv"
    assert_user_error(invoke("sample", "toy", "--model", bundle, "-n", 2, "--out", bad, "--precision", "fp16"),
                      "unknown precision 'fp16'; use fp32, bf16, auto")
    assert not bad.exists()


def test_precision_auto_picks_bf16_only_where_it_is_native():
    from polydiff.model import native_bf16, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision(None, cpu) == "fp32" and resolve_precision("BF16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")


# ------------------------------------------------------------------------------------ fine-tuning
def _write_rows(path, rows):
    path.write_text("x0,x1\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return path


def test_train_init_starts_from_the_model_and_keeps_its_encoder(toy, tmp_path):
    pytest.importorskip("polydiff.training")
    from polydiff.checkpoint import load_bundle, split_prefix

    first = invoke("train", "toy", "--recipe", "tiny", "--steps", 5, "--out", tmp_path / "run1", "--json")
    assert first.exit_code == 0, first.output
    base_t, base_m = load_bundle(tmp_path / "run1" / "model.safetensors")
    # other data with other column statistics: fine-tuning encodes it the way the model expects
    data = _write_rows(tmp_path / "more.csv", [(100.0 + i, -3.0 * i) for i in range(16)])
    res = invoke("train", "toy", "--data", data, "--init", tmp_path / "run1" / "model.safetensors",
                 "--steps", 0, "--out", tmp_path / "run2", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["init"]["new_layers"] == [] and summary["init"]["step"] == 5
    tuned_t, tuned_m = load_bundle(tmp_path / "run2" / "model.safetensors")
    assert tuned_m["encoder"] == base_m["encoder"]
    for k, v in split_prefix(base_t, "ema").items():
        assert torch.equal(split_prefix(tuned_t, "ema")[k], v), k
    # with steps the weights move away from the start
    res = invoke("train", "toy", "--data", data, "--init", tmp_path / "run1" / "model.safetensors",
                 "--steps", 3, "--out", tmp_path / "run3")
    assert res.exit_code == 0, res.output
    moved = split_prefix(load_bundle(tmp_path / "run3" / "model.safetensors")[0], "model")
    assert any(not torch.equal(moved[k], v) for k, v in split_prefix(base_t, "ema").items())
    # an interrupted fine-tuning run continues with the same --init and --resume
    res = invoke("train", "toy", "--data", data, "--init", tmp_path / "run1" / "model.safetensors",
                 "--steps", 6, "--out", tmp_path / "run3", "--resume", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["step"] == 6


def test_train_init_bad_models_are_one_line(toy, tmp_path):
    pytest.importorskip("polydiff.training")
    from polydiff.checkpoint import load_bundle, save_bundle

    out = tmp_path / "run"
    assert_user_error(invoke("train", "toy", "--recipe", "tiny", "--init", tmp_path / "absent.safetensors",
                             "--out", out), "absent.safetensors")
    path = toy.save_bundle(tmp_path / "toy.safetensors")
    tensors, meta = load_bundle(path)
    save_bundle(tmp_path / "other.safetensors", tensors, {**meta, "modality": "other"})
    assert_user_error(invoke("train", "toy", "--recipe", "tiny", "--init", tmp_path / "other.safetensors",
                             "--out", out), "'other' model", "not a 'toy' model")
    save_bundle(tmp_path / "extra.safetensors", {**tensors, "ema.head.weight": torch.zeros(2, 2)}, meta)
    assert_user_error(invoke("train", "toy", "--recipe", "tiny", "--init", tmp_path / "extra.safetensors",
                             "--out", out), "do not fit", "head.weight")
    wide = {k: (torch.zeros(32, *v.shape[1:]) if k.endswith("layers.0.weight") else v) for k, v in tensors.items()}
    save_bundle(tmp_path / "wide.safetensors", wide, meta)
    assert_user_error(invoke("train", "toy", "--recipe", "tiny", "--init", tmp_path / "wide.safetensors",
                             "--out", out), "do not fit")
    assert not out.exists()


def test_models_lists_every_bundled_model_and_inspect_takes_its_name():
    """`polydiff models` names each pretrained model of every loaded modality with what it is, its size and
    its sampling defaults; `polydiff inspect NAME` reads the same bundle as `--model NAME`."""
    import polydiff.plugins
    from polydiff.checkpoint import read_meta

    reg = polydiff.plugins.registry()
    expected = {(m.name, name) for m in reg.modalities.values() for name in m.pretrained}
    result = invoke("models", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {(r["modality"], r["name"]) for r in rows} == expected
    for r in rows:
        assert r["about"] and r["parameters"] > 0 and r["mb"] > 0, r
        assert r["default"] == (next(iter(reg.modalities[r["modality"]].pretrained)) == r["name"])
        assert r["sampling"]["steps"] == read_meta(r["path"])["config"]["sample"]["steps"]
    if rows:
        name = rows[0]["name"]
        shown = invoke("inspect", name)
        assert shown.exit_code == 0 and json.loads(shown.stdout) == read_meta(rows[0]["path"])
    bad = invoke("inspect", "no_such_model")
    assert bad.exit_code == 1 and "no model file or pretrained model named 'no_such_model'" in bad.stderr


def test_demo_only_and_out_run_the_chosen_acts_in_order(tmp_path, monkeypatch):
    """`polydiff demo --only A,B --out DIR` runs just those modalities' acts, in the modalities' demo order,
    each in its own folder; an unknown name is a one-line error listing what has a demo."""
    import polydiff.plugins

    reg = polydiff.plugins.registry()
    with_demo = sorted((m for m in reg.modalities.values() if m.demo is not None), key=lambda m: (m.demo_order, m.name))
    if len(with_demo) < 2:
        pytest.skip("needs two modalities with a demo")
    ran = []
    for m in with_demo:
        monkeypatch.setattr(m, "demo", lambda out, echo, device, _n=m.name: (ran.append((_n, Path(out), device)),
                                                                             (Path(out) / "act.txt").write_text(_n)))
    pick = [with_demo[1].name, with_demo[0].name]  # given out of order
    result = invoke("demo", "--only", ",".join(pick), "--out", tmp_path / "d", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert [r[0] for r in ran] == [with_demo[0].name, with_demo[1].name]
    assert all(r[1] == tmp_path / "d" / r[0] and r[2] == "cpu" for r in ran)
    assert (tmp_path / "d" / with_demo[0].name / "act.txt").read_text() == with_demo[0].name
    bad = invoke("demo", "--only", "nope", "--out", tmp_path / "e")
    assert_user_error(bad, "no demo for nope; available: " + ", ".join(m.name for m in with_demo))
    assert not (tmp_path / "e").exists()
    assert_user_error(invoke("demo", "--out", tmp_path / "f", "--device", "gpu"), "unknown device 'gpu'")
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("device, message", [("gpu", "unknown device 'gpu'; use cpu, cuda or cuda:N"),
                                             ("cuda:x", "unknown device 'cuda:x'")])
def test_device_names_are_checked(bundle, tmp_path, device, message):
    result = invoke("sample", "toy", "--model", bundle, "-n", 2, "--device", device, "--out", tmp_path / "o.csv")
    assert_user_error(result, message)
    assert not (tmp_path / "o.csv").exists()


def test_cli_resume_ends_where_an_uninterrupted_run_ends(toy, tmp_path):
    """`train --steps 3` then `train --steps 8 --resume` writes the same model bundle, byte for byte, as one
    `train --steps 8` run with the same seed: the resumed run continues the optimizer, the EMA and every
    generator, it does not restart them."""
    common = ["train", "toy", "--recipe", "tiny", "--seed", 3, "--batch-size", 8]
    full = invoke(*common, "--steps", 8, "--out", tmp_path / "full", "--json")
    assert full.exit_code == 0, full.output
    part = invoke(*common, "--steps", 3, "--out", tmp_path / "split", "--json")
    assert part.exit_code == 0, part.output
    first = (tmp_path / "split" / "model.safetensors").read_bytes()
    rest = invoke(*common, "--steps", 8, "--out", tmp_path / "split", "--resume", "--json")
    assert rest.exit_code == 0, rest.output
    assert json.loads(rest.stdout)["step"] == 8
    whole = (tmp_path / "full" / "model.safetensors").read_bytes()
    assert (tmp_path / "split" / "model.safetensors").read_bytes() == whole
    assert first != whole  # the comparison can fail: three steps are not eight


def test_cli_resume_with_a_new_learning_rate(toy, tmp_path):
    """`--lr` on a resumed run holds from the checkpoint's step on: the steps before keep the recipe's rate
    (in metrics.jsonl), the run warns that its settings changed, and the model differs from the one the old
    rate would have given."""
    common = ["train", "toy", "--recipe", "tiny", "--seed", 3, "--batch-size", 8, "--json"]
    assert invoke(*common, "--steps", 4, "--out", tmp_path / "a").exit_code == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    same = invoke(*common, "--steps", 8, "--out", tmp_path / "a", "--resume")
    assert same.exit_code == 0, same.output
    with pytest.warns(UserWarning, match="changed training settings.*lr"):
        lower = invoke(*common, "--steps", 8, "--out", tmp_path / "b", "--resume", "--lr", "1e-5")
    assert lower.exit_code == 0, lower.output
    def rates(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["lr"] for r in rows if "lr" in r}

    recipe_lr = json.loads((tmp_path / "a" / "config.json").read_text())["train"]["lr"]
    assert recipe_lr != pytest.approx(1e-5)
    old, new = rates("a"), rates("b")  # the same warm-up factor at each step, scaled by the new rate after 4
    assert {s: new[s] for s in new if s <= 4} == {s: old[s] for s in old if s <= 4}
    assert new[8] == pytest.approx(old[8] * 1e-5 / recipe_lr)
    assert ((tmp_path / "a" / "model.safetensors").read_bytes()
            != (tmp_path / "b" / "model.safetensors").read_bytes())


def test_output_options_reach_decode_and_write_not_cond(toy, bundle, tmp_path, monkeypatch):
    """A sample option named in Modality.output_options goes to the encoder's decode and write as a keyword
    argument; make_cond and cond never see it (the same split in Model.generate)."""
    import polydiff.plugins
    from polydiff.model import Model

    mod = polydiff.plugins.registry().modality("toy")
    seen = {"make_cond": [], "decode": [], "write": []}

    def make_cond(encoder, n, **options):
        seen["make_cond"].append({k: v for k, v in options.items() if k != "generator"})
        return {}

    monkeypatch.setattr(mod, "sample_options", [click.Option(["--digits"], type=int, default=3),
                                                 click.Option(["--shift"], type=float, default=0.0)])
    monkeypatch.setattr(mod, "make_cond", make_cond)
    monkeypatch.setattr(mod, "output_options", ["digits"])
    enc_cls = type(Model.load(str(bundle)).encoder)
    real_decode, real_write = enc_cls.decode, enc_cls.write

    def decode(self, x, cond, **options):
        seen["decode"].append((sorted(cond), options))
        return real_decode(self, x, cond)

    def write(self, items, path, **options):
        seen["write"].append(options)
        return real_write(self, items, path)

    monkeypatch.setattr(enc_cls, "decode", decode)
    monkeypatch.setattr(enc_cls, "write", write)
    result = invoke("sample", "toy", "--model", bundle, "-n", 2, "--digits", 5, "--shift", 1.5, "--out", tmp_path / "o.csv")
    assert result.exit_code == 0, result.output
    assert seen["make_cond"] == [{"shift": 1.5}]
    assert seen["decode"] == [([], {"digits": 5})] and seen["write"] == [{"digits": 5}]
    Model.load(str(bundle)).generate(2, digits=7, shift=0.5)
    assert seen["make_cond"][-1] == {"shift": 0.5} and seen["decode"][-1] == ([], {"digits": 7})


def test_a_ladder_chosen_for_sampling_or_stored_by_export(bundle, tmp_path):
    """`sample --schedule NAME` samples on another built-in ladder; `export --schedule NAME` stores it as the
    bundle's default (dropping the old ladder's arguments), and sampling the shipped bundle uses it."""
    from polydiff.checkpoint import read_meta
    from polydiff.model import Model

    res = invoke("sample", "toy", "--model", bundle, "-n", 3, "--steps", 4, "--schedule", "ddpm_discrete",
                 "--out", tmp_path / "a.csv", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["schedule"] == "ddpm_discrete"
    base = (tmp_path / "a.csv").read_text()
    assert invoke("sample", "toy", "--model", bundle, "-n", 3, "--steps", 4, "--out", tmp_path / "b.csv").exit_code == 0
    assert (tmp_path / "b.csv").read_text() != base  # another ladder, other samples
    assert_user_error(invoke("sample", "toy", "--model", bundle, "--schedule", "nope", "--out", tmp_path / "c.csv"),
                      "unknown sigma schedule 'nope'")
    out = tmp_path / "shipped.safetensors"
    assert invoke("export", bundle, out, "--schedule", "ddpm_discrete").exit_code == 0
    sc = read_meta(out)["config"]["sample"]
    assert sc["schedule"] == "ddpm_discrete" and "schedule_args" not in sc
    shipped = json.loads(invoke("sample", "toy", "--model", out, "-n", 3, "--steps", 4, "--out", tmp_path / "d.csv",
                                "--json").stdout)
    assert shipped["schedule"] == "ddpm_discrete"
    assert torch.equal(Model.load(str(out)).sigmas(4), Model.load(str(bundle)).sigmas(4, "ddpm_discrete"))
