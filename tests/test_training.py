"""The training loop: loss goes down, files and bundles, exact resume after SIGKILL, NaN guard, DDP, bf16."""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from polydiff import checkpoint
from polydiff.errors import PolydiffError
from polydiff.noising import denoising_loss
from polydiff.precond import make_denoiser
from polydiff.training import Trainer, TrainingDiverged, default_train_config, run_folder, train

HELPERS = Path(__file__).resolve().parent / "helpers"
sys.path.insert(0, str(HELPERS))
from tiny_training import TinyNet, blob_data, ring_data, tiny_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest (and least disturbed by other processes) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def read_metrics(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def subprocess_env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "core"), env.get("PYTHONPATH", "")])
    return env


def make_trainer(out, net=None, x=None, cond=None, **train):
    if x is None:
        x, cond = ring_data(256)
    return Trainer(net if net is not None else TinyNet(), x, cond, tiny_config(**train), run_folder(out),
                   modality="points", encoder_meta={"scale": 1.0})


# ------------------------------------------------------------------------------------------------
def test_default_train_config():
    c = default_train_config()
    assert c["steps"] == 2000 and c["batch_size"] == 256 and c["lr"] == 2e-4 and c["warmup"] == 100
    assert c["ema_decay"] == 0.999 and c["grad_clip"] == 1.0 and c["bf16"] is False and c["seed"] == 0
    assert c["sigma_dist"] == "lognormal" and c["sigma_dist_args"] == {} and c["weighting"] == "edm"
    assert c["min_snr_gamma"] == 5.0 and c["cond_drop"] == 0.1 and c["log_every"] == 50 and c["ckpt_every"] == 500
    c["steps"] = 1
    assert default_train_config()["steps"] == 2000  # a fresh dict every call


def eval_loss(net, x):
    """The EDM-weighted denoising loss at fixed noise levels and noise: a stable yardstick."""
    g = torch.Generator().manual_seed(123)
    sigma = torch.tensor([0.1, 0.2, 0.3, 0.4]).repeat_interleave(len(x) // 4)
    noise = torch.randn(x.shape, generator=g)
    D = make_denoiser(net.cpu(), "edm", 0.5)
    with torch.no_grad():
        return denoising_loss(D, x, sigma, noise, weighting="edm", sigma_data=0.5).mean().item()


def test_training_reduces_loss_and_writes_bundles(tmp_path):
    torch.manual_seed(0)
    x, cond = blob_data(512)
    net = TinyNet(hidden=64)
    before = eval_loss(net, x)
    res = Trainer(net, x, cond, tiny_config(steps=300, batch_size=128, lr=3e-3, log_every=10, ckpt_every=100,
                                            ema_decay=0.9),
                  run_folder(tmp_path / "run"), modality="points", encoder_meta={"scale": 2.0}).fit()
    after = eval_loss(net, x)
    assert after < 0.6 * before, (before, after)

    out = tmp_path / "run"
    assert res["step"] == 300 and math.isfinite(res["loss"])
    assert Path(res["model_path"]) == out / "model.safetensors"
    assert Path(res["checkpoint_path"]) == out / "checkpoint.safetensors"
    rows = read_metrics(res["metrics_path"])
    assert [r["step"] for r in rows] == list(range(10, 301, 10))
    assert set(rows[0]) == {"step", "loss", "lr", "grad_norm", "seconds"}
    assert rows[-1]["loss"] == res["loss"]
    first, last = sum(r["loss"] for r in rows[:3]) / 3, sum(r["loss"] for r in rows[-3:]) / 3
    assert last < first

    tensors, meta = checkpoint.load_bundle(res["model_path"])
    keys = set(net.state_dict())
    assert {k for k in tensors if k.startswith("model.")} == {f"model.{k}" for k in keys}
    assert {k for k in tensors if k.startswith("ema.")} == {f"ema.{k}" for k in keys}
    assert not any(k.startswith(("optim.", "rng.")) for k in tensors)
    assert meta["kind"] == "model" and meta["modality"] == "points" and meta["step"] == 300
    assert meta["encoder"] == {"scale": 2.0} and meta["config"]["train"]["steps"] == 300
    assert meta["config"]["parameterisation"] == "edm" and meta["config"]["sigma_data"] == 0.5
    assert meta["config"]["train"]["sigma_dist"] == "lognormal"  # defaults filled in
    assert "polydiff_version" in meta and meta["guidance"] is None
    for k, v in net.state_dict().items():
        assert torch.equal(tensors[f"model.{k}"], v.cpu())
    # the EMA model also denoises well, and differs from the raw weights
    ema_net = TinyNet(hidden=64)
    ema_net.load_state_dict(checkpoint.split_prefix(tensors, "ema"))
    assert eval_loss(ema_net, x) < 0.6 * before
    assert not torch.equal(tensors["ema.out.weight"], tensors["model.out.weight"])

    ck, cmeta = checkpoint.load_bundle(res["checkpoint_path"])
    assert cmeta["kind"] == "checkpoint" and cmeta["step"] == 300
    assert any(k.startswith("optim.state.") for k in ck) and "rng.torch" in ck
    assert cmeta["optim"]["param_groups"][0]["lr"] == pytest.approx(3e-3)
    assert json.loads((out / "config.json").read_text()) == meta["config"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    def losses(name, seed):
        torch.manual_seed(7)  # identical initial weights each time
        make_trainer(tmp_path / name, seed=seed, steps=8).fit()
        return [r["loss"] for r in read_metrics(tmp_path / name / "metrics.jsonl")]

    a, b, c = losses("a", 0), losses("b", 0), losses("c", 1)
    assert a == b
    assert a != c


def test_lr_warmup_and_ema(tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    tr = make_trainer(tmp_path / "r", net=net, steps=6, warmup=4, lr=1e-3, ema_decay=0.0)
    tr.fit()
    lrs = [r["lr"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl")]
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    for k, v in net.state_dict().items():  # decay 0: the EMA is the current weights
        assert torch.equal(tr.ema[k], v)
    assert tr.ema_decay_at(0) == pytest.approx(0.0) and tr.lr_at(100) == 1e-3


def test_condition_dropout_uses_null_value(tmp_path):
    x, cond = ring_data(256, labels=True)
    for guidance, p in ((None, 0.5), ({"label": -1}, 0.5), ({"label": -1}, 0.0)):
        torch.manual_seed(0)
        net = TinyNet(n_labels=2)
        Trainer(net, x, cond, tiny_config(steps=5, cond_drop=p), run_folder(tmp_path / "r"), modality="points",
                encoder_meta={}, guidance=guidance).fit()
        labels = torch.cat(net.seen_labels)
        dropped = (labels == -1).float().mean().item()
        if guidance and p:
            assert 0.3 < dropped < 0.7
        else:
            assert dropped == 0
        assert set(labels.tolist()) <= {-1, 0, 1}
    assert checkpoint.read_meta(tmp_path / "r" / "model.safetensors")["guidance"] == {"label": -1}


def test_augment_computes_conditions_from_the_clean_batch_before_dropping(tmp_path):
    """``augment`` sees every clean batch, draws from the step's generator (so two runs with the same seed
    draw alike) and its conditions reach the network, after which guidance may still drop them."""
    x, _ = ring_data(256)

    def run(name):
        calls = []

        def augment(x0, cond, config, generator):
            calls.append((tuple(x0.shape), torch.randint(1000, (1,), generator=generator).item()))
            return {**cond, "label": (x0[:, 0] > 0).long()}

        torch.manual_seed(0)
        net = TinyNet(n_labels=2)
        Trainer(net, x, {}, tiny_config(steps=6, cond_drop=0.5, batch_size=32), run_folder(tmp_path / name), modality="points",
                encoder_meta={}, guidance={"label": -1}, augment=augment).fit()
        return calls, torch.cat(net.seen_labels)

    calls, labels = run("a")
    assert [c[0] for c in calls] == [(32, 2)] * 6
    assert set(labels.tolist()) == {-1, 0, 1}  # computed labels, some dropped to the null value
    assert run("b")[0] == calls  # the same draws: the generator is seeded per step


def test_padding_mask_and_other_parameterisations(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, 2, generator=g)
    mask = (torch.arange(6)[None, :, None] < torch.randint(2, 7, (40, 1, 1), generator=g)).float()
    x = x * mask
    for par in ("eps", "v", "x0"):
        cfg = tiny_config(steps=4)
        cfg["parameterisation"] = par
        res = Trainer(TinyNet(), x, {"mask": mask}, cfg, run_folder(tmp_path / par), modality="points", encoder_meta={}).fit()
        assert res["step"] == 4 and math.isfinite(res["loss"])
        assert checkpoint.read_meta(res["model_path"])["config"]["parameterisation"] == par


def test_bf16_autocast_runs(tmp_path):
    """With bf16 the network's matrix products run in bfloat16 (seen from inside the forward), the weights and
    the bundle stay float32; without it they run in float32."""
    seen = {}

    def probe(name):
        def hook(module, args, out):
            seen.setdefault(name, set()).add(out.dtype)
        return hook

    torch.manual_seed(0)
    net = TinyNet()
    net.mid.register_forward_hook(probe("bf16"))
    res = make_trainer(tmp_path / "bf", net=net, steps=4, bf16=True).fit()
    assert seen["bf16"] == {torch.bfloat16}
    plain = TinyNet()
    plain.mid.register_forward_hook(probe("fp32"))
    make_trainer(tmp_path / "fp", net=plain, steps=2).fit()
    assert seen["fp32"] == {torch.float32}
    assert res["step"] == 4 and math.isfinite(res["loss"])
    rows = read_metrics(res["metrics_path"])
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)
    tensors, _ = checkpoint.load_bundle(res["model_path"])
    assert tensors["model.out.weight"].dtype == torch.float32


def test_train_function_and_resume_of_finished_run(tmp_path):
    torch.manual_seed(0)
    x, cond = ring_data(128)
    res = train(TinyNet(), x, cond, tiny_config(steps=5, ckpt_every=2), tmp_path / "t", modality="points",
                encoder_meta={})
    assert res["step"] == 5 and checkpoint.read_meta(res["checkpoint_path"])["step"] == 5
    again = train(TinyNet(), x, cond, tiny_config(steps=5, ckpt_every=2), tmp_path / "t", resume=True,
                  modality="points", encoder_meta={})
    assert again["step"] == 5 and again["loss"] == res["loss"]
    longer = train(TinyNet(), x, cond, tiny_config(steps=7, ckpt_every=2), tmp_path / "t", resume=True,
                   modality="points", encoder_meta={})
    assert longer["step"] == 7
    assert [r["step"] for r in read_metrics(longer["metrics_path"])] == list(range(1, 8))


def test_resume_refuses_missing_or_mismatched_checkpoint(tmp_path):
    with pytest.raises(PolydiffError, match="no checkpoint at"):
        make_trainer(tmp_path / "none").fit(resume=True)

    torch.manual_seed(0)
    make_trainer(tmp_path / "r", steps=3, ckpt_every=3).fit()
    x, cond = ring_data(256)

    cfg = tiny_config(steps=6)
    cfg["network"] = {"hidden": 64}
    with pytest.raises(PolydiffError, match="different model.*network"):
        Trainer(TinyNet(hidden=64), x, cond, cfg, run_folder(tmp_path / "r"), modality="points", encoder_meta={"scale": 1.0}).fit(resume=True)
    cfg = tiny_config(steps=6)
    cfg["parameterisation"] = "v"
    with pytest.raises(PolydiffError, match="parameterisation"):
        Trainer(TinyNet(), x, cond, cfg, run_folder(tmp_path / "r"), modality="points", encoder_meta={"scale": 1.0}).fit(resume=True)
    with pytest.raises(PolydiffError, match="encoder"):
        Trainer(TinyNet(), x, cond, tiny_config(steps=6), run_folder(tmp_path / "r"), modality="points",
                encoder_meta={"scale": 3.0}).fit(resume=True)
    with pytest.raises(PolydiffError, match="encoder"):  # a recorded field went missing
        Trainer(TinyNet(), x, cond, tiny_config(steps=6), run_folder(tmp_path / "r"), modality="points",
                encoder_meta={}).fit(resume=True)
    with pytest.raises(PolydiffError, match="do not fit this network"):  # same config, other weights
        Trainer(TinyNet(hidden=8), x, cond, tiny_config(steps=6), run_folder(tmp_path / "r"), modality="points",
                encoder_meta={"scale": 1.0}).fit(resume=True)
    # the refused attempts left the checkpoint as it was
    assert checkpoint.read_meta(tmp_path / "r" / "checkpoint.safetensors")["step"] == 3
    # a newer encoder that records more about the same data resumes (with a warning) and saves what it records
    with pytest.warns(UserWarning, match="did not record counts"):
        Trainer(TinyNet(), x, cond, tiny_config(steps=4), run_folder(tmp_path / "r"), modality="points",
                encoder_meta={"scale": 1.0, "counts": [3, 4]}).fit(resume=True)
    after = checkpoint.read_meta(tmp_path / "r" / "checkpoint.safetensors")
    assert after["step"] == 4 and after["encoder"] == {"scale": 1.0, "counts": [3, 4]}
    # an inference bundle is not a training checkpoint
    (tmp_path / "m").mkdir()
    os.replace(tmp_path / "r" / "model.safetensors", tmp_path / "m" / "checkpoint.safetensors")
    with pytest.raises(PolydiffError, match="not a training checkpoint"):
        make_trainer(tmp_path / "m").fit(resume=True)


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(PolydiffError, match="weighting"):
        make_trainer(tmp_path, weighting="nope")
    with pytest.raises(PolydiffError, match="sigma distribution"):
        make_trainer(tmp_path, sigma_dist="nope")
    with pytest.raises(PolydiffError, match="float"):
        Trainer(TinyNet(), torch.zeros(4, 2, dtype=torch.long), {}, tiny_config(), run_folder(tmp_path), modality="points",
                encoder_meta={})


def test_nan_guard_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "nan"
    net = TinyNet(nan_after=7)  # forward call 8 (= step 8) returns NaN
    with pytest.raises(TrainingDiverged) as info:
        make_trainer(out, net=net, steps=20, ckpt_every=3).fit()
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.step == 8 and err.checkpoint_step == 6
    assert "step 8" in str(err) and str(out / "checkpoint.safetensors") in str(err)

    for name, kind in (("checkpoint.safetensors", "checkpoint"), ("model.safetensors", "model")):
        tensors, meta = checkpoint.load_bundle(out / name)
        assert meta["kind"] == kind and meta["step"] == 6
        assert all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 8))
    assert all(math.isfinite(r["loss"]) for r in read_metrics(out / "metrics.jsonl"))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    # the checkpoint resumes (a healthy network continues from step 6)
    res = make_trainer(out, net=TinyNet(), steps=9, ckpt_every=3).fit(resume=True)
    assert res["step"] == 9

    # divergence before any checkpoint says so
    with pytest.raises(TrainingDiverged, match="no checkpoint was written"):
        make_trainer(tmp_path / "early", net=TinyNet(nan_after=1), steps=20, ckpt_every=10).fit()
    assert not (tmp_path / "early" / "checkpoint.safetensors").exists()


def test_sigkilled_run_resumes_with_identical_losses(tmp_path):
    import train_run

    steps, every = 60, 10
    script = str(HELPERS / "train_run.py")
    env = subprocess_env()
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    args = ["--steps", str(steps), "--ckpt-every", str(every)]
    victim = subprocess.Popen([sys.executable, script, str(killed_dir), "--sleep", "0.02"] + args, env=env)
    try:
        # the uninterrupted run, here, while the other process starts
        assert train_run.run(full_dir, steps, every)["step"] == steps
        # kill between two checkpoints, after at least two of them exist
        deadline = time.time() + 60
        metrics = killed_dir / "metrics.jsonl"
        while time.time() < deadline and victim.poll() is None:
            if metrics.exists():
                lines = [ln for ln in metrics.read_text().splitlines() if ln.endswith("}")]
                if lines and json.loads(lines[-1])["step"] >= 2 * every + 3:
                    break
            time.sleep(0.005)
        assert victim.poll() is None, "the run finished before it could be killed"
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()

    ck_step = checkpoint.read_meta(killed_dir / "checkpoint.safetensors")["step"]
    assert every <= ck_step < steps and ck_step % every == 0
    assert not (killed_dir / "result.json").exists()
    assert checkpoint.read_meta(killed_dir / "model.safetensors")["step"] == ck_step

    resumed = subprocess.run([sys.executable, script, str(killed_dir), "--resume"] + args, env=env, timeout=60)
    assert resumed.returncode == 0
    result = json.loads((killed_dir / "result.json").read_text())
    assert result["step"] == steps
    assert result["forward_calls"] == steps - ck_step  # it continued, it did not start again

    a = read_metrics(full_dir / "metrics.jsonl")
    b = read_metrics(killed_dir / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, steps + 1))
    for ra, rb in zip(a, b):  # bit-for-bit: every random number is a function of (seed, step, rank)
        assert (ra["step"], ra["loss"], ra["lr"], ra["grad_norm"]) == (rb["step"], rb["loss"], rb["lr"], rb["grad_norm"])
    ta, _ = checkpoint.load_bundle(full_dir / "checkpoint.safetensors")
    tb, _ = checkpoint.load_bundle(killed_dir / "checkpoint.safetensors")
    assert set(ta) == set(tb)
    for k in ta:
        if not k.startswith("rng."):
            assert torch.equal(ta[k], tb[k]), k


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_keep_replicas_identical(tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(HELPERS / "ddp_train.py"), str(out)]
    proc = subprocess.run(cmd, env=subprocess_env(), timeout=120, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    r0 = json.loads((out / "replica0.json").read_text())
    r1 = json.loads((out / "replica1.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["initial"] != r1["initial"]  # the ranks started from different weights ...
    assert r0["params"] == r1["params"] and r0["flat"] == r1["flat"]  # ... and ended identical
    assert r0["ema"] == r1["ema"]
    assert r0["result"]["step"] == r1["result"]["step"] == 6
    assert r0["result"]["loss"] == r1["result"]["loss"]  # the logged loss is the mean over ranks
    assert r0["labels_seen"] == r1["labels_seen"] == 6 * 16  # batch 32 split over 2 ranks
    assert r0["group_destroyed"] and r1["group_destroyed"]

    # only rank 0 wrote files
    assert not (out / "rank1").exists()
    files = {p.name for p in (out / "rank0").iterdir()}
    assert files == {"checkpoint.safetensors", "model.safetensors", "metrics.jsonl", "config.json"}
    tensors, meta = checkpoint.load_bundle(out / "rank0" / "model.safetensors")
    assert meta["step"] == 6 and meta["guidance"] == {"label": -1}
    flat = torch.cat([tensors[f"model.{k}"].flatten() for k in sorted(checkpoint.split_prefix(tensors, "model"))])
    assert flat.tolist() == r0["flat"]
    assert [r["step"] for r in read_metrics(out / "rank0" / "metrics.jsonl")] == list(range(1, 7))


def test_training_in_memory_writes_nothing_and_matches_a_run_with_files(tmp_path, monkeypatch):
    """out_dir=None trains without a run folder: no file anywhere, the same weights and EMA as a run that
    writes its files, and no resume."""
    x, cond = ring_data(128)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    net_a = TinyNet()
    net_b = TinyNet()
    net_b.load_state_dict(net_a.state_dict())
    mem = Trainer(net_a, x, cond, tiny_config(steps=6, ckpt_every=2), None, modality="points", encoder_meta={})
    res = mem.fit()
    assert res["step"] == 6 and "model_path" not in res and "metrics_path" not in res
    assert list(tmp_path.iterdir()) == []
    disk = Trainer(net_b, x, cond, tiny_config(steps=6, ckpt_every=2), run_folder(tmp_path / "run"), modality="points",
                   encoder_meta={})
    assert disk.fit()["loss"] == res["loss"]
    assert all(torch.equal(mem.ema[k], disk.ema[k]) for k in mem.ema)
    assert all(torch.equal(a, b) for a, b in zip(net_a.state_dict().values(), net_b.state_dict().values()))
    with pytest.raises(PolydiffError, match="cannot resume a run trained in memory"):
        Trainer(TinyNet(), x, cond, tiny_config(steps=2), None, modality="points", encoder_meta={}).fit(resume=True)


def test_callbacks_see_every_step_and_choose_the_files(tmp_path, monkeypatch):
    """The loop writes nothing itself: a callback of one's own sees start, every update and the end in order
    (with the same losses the metrics file records), a metrics log alone writes only that file, and close()
    runs after a failure too."""
    from polydiff.training import Callback, MetricsLog

    class Recorder(Callback):
        def __init__(self):
            self.events, self.closed = [], 0

        def on_start(self, state):
            self.events.append(("start", state.step, state.resumed))

        def on_step(self, state):
            assert state.net is not None and state.opt is not None and state.trainer.ema
            self.events.append(("step", state.step, state.loss))

        def on_end(self, state):
            self.events.append(("end", state.step, state.loss))

        def close(self):
            self.closed += 1

    x, cond = ring_data(128)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    rec = Recorder()
    log = tmp_path / "logs" / "m.jsonl"
    res = Trainer(TinyNet(), x, cond, tiny_config(steps=5, log_every=1), [rec, MetricsLog(log)], modality="points",
                  encoder_meta={}).fit()
    assert [e[0] for e in rec.events] == ["start"] + ["step"] * 5 + ["end"] and rec.closed == 1
    assert [e[1] for e in rec.events] == [0, 1, 2, 3, 4, 5, 5]
    assert [r["loss"] for r in read_metrics(log)] == [e[2] for e in rec.events[1:6]]
    assert res["metrics_path"] == str(log) and res["loss"] == rec.events[-1][2] and "model_path" not in res
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["logs", "logs/m.jsonl"]

    failing = Recorder()
    with pytest.raises(TrainingDiverged):
        Trainer(TinyNet(nan_after=2), x, cond, tiny_config(steps=5), [failing], modality="points",
                encoder_meta={}).fit()
    assert failing.closed == 1 and failing.events[-1][0] == "step" and failing.events[-1][1] == 2
    with pytest.raises(TypeError, match="run_folder"):
        Trainer(TinyNet(), x, cond, tiny_config(steps=1), tmp_path / "run", modality="points", encoder_meta={})
