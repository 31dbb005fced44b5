"""Shared fixtures of the audio tests: one torch thread, a tiny audio model trained on the bundled FSDD
sample (a few steps: its weights are barely trained, which is all the plumbing tests need), and helpers to
write test signals and to run the ``polydiff`` command in a subprocess."""
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

#: a network small enough to train and sample in well under a second on one CPU thread
TINY = {"network": {"frame": 40, "channels": [16, 32], "blocks": 1, "emb": 32, "attention": False}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these small batches gain nothing from more threads, and the spin-waiting of idle
    threads slows a busy machine down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A tiny audio model (8 kHz, 1 s clips, the ten digit classes) trained for 3 steps on fsdd_sample."""
    from polydiff.model import merge_config, train_modality
    from polydiff.plugins import registry

    out = tmp_path_factory.mktemp("tiny_audio")
    overrides = merge_config(TINY, {"train": {"batch_size": 4, "warmup": 0, "log_every": 1, "ckpt_every": 100}})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train_modality(registry().modality("audio"), recipe="fsdd_sample", steps=3, out=out,
                                 overrides=overrides, device="cpu", progress=False)
    finally:
        torch.set_num_threads(before)
    return summary["model_path"]


@pytest.fixture
def tiny_model(tiny_model_path):
    """A freshly loaded tiny model (tests may replace its denoiser)."""
    from polydiff.model import Model

    return Model.load(tiny_model_path, modality="audio", device="cpu")


def sine(freq, seconds, rate, amplitude=0.5, phase=0.0):
    """A float32 sine of ``seconds`` at ``rate`` Hz."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def write(path, samples, rate, subtype="PCM_16"):
    """Write [frames] or [channels, frames] samples with soundfile; returns the path."""
    x = np.asarray(samples)
    sf.write(str(path), x.T if x.ndim == 2 else x, rate, subtype=subtype)
    return path


def run_cli(*args, timeout=120):
    """``python -m polydiff.cli ARGS`` in a subprocess with one thread; returns the CompletedProcess."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "polydiff.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def helpers():
    """The module-level helpers above, for tests (test modules do not import conftest)."""
    class H:
        pass

    h = H()
    h.sine, h.write, h.run_cli, h.TINY = sine, write, run_cli, TINY
    return h
