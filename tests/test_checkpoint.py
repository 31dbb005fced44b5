"""Bundles: exact round trips, atomic saves under SIGKILL, stale temporary files, and refusing pickles."""
from __future__ import annotations

import io
import json
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from polydiff import checkpoint
from polydiff.checkpoint import BundleError, load_bundle, read_meta, save_bundle, split_prefix

HELPERS = Path(__file__).resolve().parent / "helpers"
REPO = Path(__file__).resolve().parents[1]


def subprocess_env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "core"), env.get("PYTHONPATH", "")])
    return env


def temp_files(folder: Path, target: str):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{target}.") and p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------------------
def test_round_trip_tensors_and_meta(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "model.w": torch.randn(3, 4, generator=g),
        "model.b": torch.randn(4, generator=g).double(),
        "ema.w": torch.randn(3, 4, generator=g).half(),
        "ema.v": torch.randn(5, generator=g).bfloat16(),
        "optim.state.0.step": torch.tensor(17.0),
        "rng.torch": torch.get_rng_state(),
        "count": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "flags": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "view": torch.arange(10.0)[::2],  # not contiguous
    }
    meta = {"kind": "checkpoint", "modality": "points", "step": 12, "config": {"a": [1, 2.5, None], "b": {"c": "é"}},
            "encoder": {"scale": 0.1}, "guidance": {"label": -1}, "loss": 0.123456789012345}
    path = save_bundle(tmp_path / "b.safetensors", tensors, meta)
    assert path == tmp_path / "b.safetensors"
    back, meta2 = load_bundle(path)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        assert torch.equal(back[k], v), k
    assert meta2["format"] == checkpoint.FORMAT and meta2["format_version"] == checkpoint.FORMAT_VERSION
    assert {k: v for k, v in meta2.items() if not k.startswith("format")} == meta
    assert read_meta(path) == meta2
    assert set(split_prefix(back, "model")) == {"w", "b"} and set(split_prefix(back, "ema")) == {"w", "v"}
    assert not temp_files(tmp_path, "b.safetensors")


def test_save_replaces_and_keeps_input_untouched(tmp_path):
    p = tmp_path / "sub" / "m.safetensors"  # the folder is created
    w = torch.ones(3, requires_grad=True)
    save_bundle(p, {"w": w}, {"i": 1})
    save_bundle(p, {"w": w * 2}, {"i": 2})
    t, m = load_bundle(p)
    assert m["i"] == 2 and torch.equal(t["w"], torch.full((3,), 2.0)) and not t["w"].requires_grad
    assert torch.equal(w.detach(), torch.ones(3))


def test_atomic_files_get_the_permissions_of_a_plain_write(tmp_path):
    """mkstemp creates its files 0o600; the renamed result has what open(path, "w") would have left: 0o666
    less the umask for a new file, the existing mode for a replaced one."""
    old = os.umask(0o022)
    try:
        fresh = checkpoint.atomic_write_text(tmp_path / "new.json", "{}")
        assert (fresh.stat().st_mode & 0o777) == 0o644
        kept = tmp_path / "kept.safetensors"
        save_bundle(kept, {"w": torch.ones(2)}, {})
        os.chmod(kept, 0o640)
        save_bundle(kept, {"w": torch.zeros(2)}, {})
        assert (kept.stat().st_mode & 0o777) == 0o640
        os.umask(0o077)
        assert (checkpoint.atomic_write_text(tmp_path / "private.json", "{}").stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(old)


def check_complete(path: Path, n: int):
    tensors, meta = load_bundle(path)
    i = meta["i"]
    assert tensors["a"].shape == (n,) and bool((tensors["a"] == float(i)).all())
    assert torch.equal(tensors["b"], torch.arange(1000) + i)
    return i


def test_writer_killed_mid_save_leaves_old_or_new_bundle(tmp_path):
    """SIGKILL a process that keeps saving a 32 MB bundle; the file is always absent or complete."""
    n = 8 * 1024 * 1024
    target = tmp_path / "big.safetensors"
    rng = random.Random(0)
    seen = []
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, str(HELPERS / "bundle_writer.py"), str(target), str(n)],
                                stdout=subprocess.PIPE, text=True, env=subprocess_env())
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 0.6) if attempt else 0.0)  # the first kill may come before any save
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if target.exists():
            seen.append(check_complete(target, n))
        else:
            assert not seen, "a complete bundle disappeared"
    assert seen, "no save completed in any of the runs; the test did not exercise anything"

    # whatever temporary files the kills left behind go away with the next good save
    save_bundle(target, {"a": torch.full((n,), -1.0), "b": torch.arange(1000) - 1}, {"i": -1})
    assert check_complete(target, n) == -1
    assert temp_files(tmp_path, target.name) == []


def test_stale_temp_file_of_killed_writer_is_cleaned(tmp_path):
    target = tmp_path / "m.safetensors"
    save_bundle(target, {"a": torch.full((10,), 7.0), "b": torch.arange(1000) + 7}, {"i": 7})
    # a writer that dies after writing its temporary file, just before the rename
    proc = subprocess.run([sys.executable, str(HELPERS / "bundle_writer.py"), str(target), "10", "--die-before-rename"],
                          env=subprocess_env(), capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    stale = temp_files(tmp_path, target.name)
    assert len(stale) == 1
    assert check_complete(target, 10) == 7  # the old bundle is intact
    # a temporary file of a live writer (this process) must survive a save by someone else
    live = tmp_path / f"{checkpoint._tmp_head(target)}{os.getpid()}.abc123.tmp"
    live.write_bytes(b"in progress")
    unrelated = tmp_path / ".other.safetensors.host.1.x.tmp"
    unrelated.write_bytes(b"")

    save_bundle(target, {"a": torch.full((10,), 8.0), "b": torch.arange(1000) + 8}, {"i": 8})
    assert check_complete(target, 10) == 8
    left = temp_files(tmp_path, target.name)
    assert stale[0] not in left
    assert left == [live.name] and unrelated.exists()


# ------------------------------------------------------------------------------------------------
class Payload:
    """Unpickling this creates ``marker`` (a harmless stand-in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_and_never_run(tmp_path):
    # the payload works: unpickling it does create its marker
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(Payload(control))).close()
    assert control.exists()

    marker = tmp_path / "PWNED"
    raw = {proto: pickle.dumps({"model": Payload(marker)}, protocol=proto) for proto in (0, 2, 4, 5)}
    buf = io.BytesIO()
    torch.save({"state_dict": Payload(marker)}, buf)
    zipped = buf.getvalue()
    assert zipped[:2] == b"PK"
    cases = []
    for suffix in (".pt", ".pkl", ".ckpt", ".pth", ".bin", ".safetensors"):
        for name, data in [(f"p{proto}", blob) for proto, blob in raw.items()] + [("zip", zipped)]:
            p = tmp_path / f"evil_{name}{suffix}"
            p.write_bytes(data)
            cases.append(p)
    for p in cases:
        for fn in (load_bundle, read_meta):
            with pytest.raises(BundleError) as info:
                fn(p)
            msg = str(info.value)
            assert str(p) in msg
            if p.suffix != ".safetensors":
                assert "pickle" in msg and "refusing" in msg
            else:
                assert "not a polydiff bundle" in msg or "pickle" in msg
    assert not marker.exists()


def test_random_bytes_and_foreign_safetensors_are_refused(tmp_path):
    rnd = tmp_path / "random.safetensors"
    rnd.write_bytes(bytes(random.Random(1).getrandbits(8) for _ in range(4096)))
    with pytest.raises(BundleError, match="not a polydiff bundle|pickle"):
        load_bundle(rnd)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(BundleError, match="no 'polydiff' metadata"):
        load_bundle(foreign)
    with pytest.raises(BundleError, match="no 'polydiff' metadata"):
        read_meta(foreign)

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(2)}, str(other), metadata={"polydiff": json.dumps({"format": "something-else"})})
    with pytest.raises(BundleError, match="not a polydiff bundle"):
        load_bundle(other)

    for name, data in (("empty.safetensors", b""), ("short.safetensors", b"\x01\x00"),
                       ("text.safetensors", b"hello, this is text and not a bundle at all")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BundleError, match="not a polydiff bundle"):
            read_meta(tmp_path / name)

    with pytest.raises(BundleError, match="no such file"):
        load_bundle(tmp_path / "missing.safetensors")
    with pytest.raises(BundleError, match="folder"):
        load_bundle(tmp_path)


def test_truncated_bundle_is_refused(tmp_path):
    p = tmp_path / "t.safetensors"
    save_bundle(p, {"w": torch.randn(1000)}, {"kind": "model"})
    data = p.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: 8 + n + 100])  # header intact, tensor data cut short
    assert read_meta(cut)["kind"] == "model"
    with pytest.raises(BundleError, match="corrupt"):
        load_bundle(cut)
    cut.write_bytes(data[: 8 + n // 2])  # header cut short
    with pytest.raises(BundleError, match="not a polydiff bundle"):
        read_meta(cut)


@pytest.mark.parametrize("pad", range(0, 64))
def test_bundles_whose_header_length_starts_like_a_pickle_still_load(tmp_path, pad):
    """The first bytes of a safetensors file are its header length; lengths such as 0x..80 or 0x4B50
    ('PK') must not be mistaken for pickle or zip magic numbers."""
    from polydiff.checkpoint import load_bundle, save_bundle

    p = save_bundle(tmp_path / "b.safetensors", {"w": torch.zeros(2)}, {"modality": "x", "pad": "p" * (pad * 8)})
    tensors, meta = load_bundle(p)
    assert meta["pad"] == "p" * (pad * 8) and torch.equal(tensors["w"], torch.zeros(2))


def test_training_state_round_trips_and_mismatches_are_named(tmp_path):
    """Optimizer and random-generator states survive a bundle; weights that do not fit are reported in one line
    naming the missing, unexpected and differently shaped keys."""
    import random

    import numpy as np
    from torch import nn

    from polydiff import checkpoint

    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    ot, om = checkpoint.optimizer_state(opt)
    rt, rm = checkpoint.rng_state()
    checkpoint.save_bundle(tmp_path / "s.safetensors", {**ot, **rt}, {"kind": "test", "optim": om, "rng": rm})
    expected = (torch.rand(3), random.random(), np.random.random_sample())
    tensors, meta = checkpoint.load_bundle(tmp_path / "s.safetensors")
    opt2 = torch.optim.AdamW(net.parameters(), lr=5.0)
    checkpoint.load_optimizer_state(opt2, tensors, meta["optim"])
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.param_groups[0]["betas"] == (0.9, 0.999)
    for a, b in zip(opt.state.values(), opt2.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    checkpoint.restore_rng_state(tensors, meta["rng"])
    again = (torch.rand(3), random.random(), np.random.random_sample())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]

    own = net.state_dict()
    assert checkpoint.weight_mismatch(own, dict(own)) is None
    other = {**{k: v for k, v in own.items() if k != "1.bias"}, "2.weight": torch.zeros(1), "0.weight": torch.zeros(2, 3)}
    msg = checkpoint.weight_mismatch(own, other)
    assert msg == "missing 1.bias; unexpected 2.weight; shape differs for 0.weight [2, 3] vs [4, 3]"
    assert checkpoint.weight_mismatch(own, {k: v for k, v in own.items() if k != "1.bias"}, allow_missing=True) is None
