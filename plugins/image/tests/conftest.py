"""Shared fixtures of the image tests: one torch thread, two tiny image models trained for 3 steps (a gray
one on the bundled MNIST sample, an RGB one on a few random colour images; their weights are barely
trained, which is all the plumbing tests need), and helpers to write test images with Pillow and to run
the ``polydiff`` command in a subprocess."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

#: a network small enough to train and sample in well under a second on one CPU thread; 3 sampling steps
TINY = {"network": {"channels": [16, 32], "blocks": 1, "attention": [], "emb": 32, "patch": 2},
        "train": {"batch_size": 8, "warmup": 0, "log_every": 1, "ckpt_every": 100, "bf16": False},
        "sample": {"steps": 3}}

#: the random colour images of the RGB model: 16 x 16, two classes
RGB_SIZE = 16


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these small batches gain nothing from more threads, and the spin-waiting of idle
    threads slows a busy machine down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(tmp_path_factory, name, overrides=None, **kw):
    from polydiff.model import merge_config, train_modality
    from polydiff.plugins import registry

    out = tmp_path_factory.mktemp(name)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train_modality(registry().modality("image"), steps=3, out=out,
                                 overrides=merge_config(TINY, overrides), device="cpu", progress=False, **kw)
    finally:
        torch.set_num_threads(before)
    return summary["model_path"]


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A tiny grayscale 28x28 model with the ten digit classes, trained for 3 steps on mnist_sample."""
    return _train(tmp_path_factory, "tiny_image", recipe="mnist_sample")


@pytest.fixture(scope="session")
def tiny_sr_model_path(tmp_path_factory):
    """A tiny super-resolution model (x2 and x4, 28x28 gray), trained for 3 steps on mnist_sample."""
    return _train(tmp_path_factory, "tiny_sr", overrides={"network": {"lowres_factors": [2, 4]}},
                  recipe="mnist_sample")


@pytest.fixture
def tiny_sr_model(tiny_sr_model_path):
    from polydiff.model import Model

    return Model.load(tiny_sr_model_path, modality="image", device="cpu")


def random_rgb(n, size=RGB_SIZE, seed=0):
    """n smooth random colour images, uint8 [n, size, size, 3] (4x4 random colours, upsampled bilinearly)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)) for a in small])


@pytest.fixture(scope="session")
def tiny_rgb_model_path(tmp_path_factory):
    """A tiny RGB 16x16 model with two classes, trained for 3 steps on 8 random colour images (an .npz)."""
    data = tmp_path_factory.mktemp("rgb_data") / "rgb.npz"
    np.savez(data, images=random_rgb(8), labels=np.arange(8) % 2)
    return _train(tmp_path_factory, "tiny_rgb", data=data)


@pytest.fixture
def tiny_model(tiny_model_path):
    """A freshly loaded tiny gray model (tests may replace its denoiser)."""
    from polydiff.model import Model

    return Model.load(tiny_model_path, modality="image", device="cpu")


@pytest.fixture
def tiny_rgb_model(tiny_rgb_model_path):
    from polydiff.model import Model

    return Model.load(tiny_rgb_model_path, modality="image", device="cpu")


def save(path, a, **kw):
    """Write uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] with Pillow (format from the suffix); returns path."""
    from PIL import Image

    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    Image.fromarray(a).save(path, **kw)
    return path


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cli(*args, timeout=180):
    """``python -m polydiff.cli ARGS`` in a subprocess with one thread; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "polydiff.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=_env())


# Runs several command lines through the real entry point (polydiff.cli.main, as the `polydiff` script
# does) in ONE fresh process, to pay Python's and torch's start-up once. Each command gets its own stdout
# and stderr; an exception that escapes main() is printed as a traceback with exit status 1, as Python
# would; the warning registry is reset between commands, so a repeated warning is shown every time.
_MANY = r"""
import contextlib, io, json, sys, traceback, warnings
from polydiff.cli import main
results = []
for argv in json.load(sys.stdin):
    out, err, code = io.StringIO(), io.StringIO(), 0
    with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append({"argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
sys.__stdout__.write(json.dumps(results))
"""


def run_cli_many(commands, timeout=300):
    """Run each list of arguments of ``commands`` as ``polydiff ARGS`` in one subprocess; returns a list of
    dicts with ``code``, ``stdout`` and ``stderr``, one per command."""
    r = subprocess.run([sys.executable, "-c", _MANY], input=json.dumps([[str(a) for a in c] for c in commands]),
                       capture_output=True, text=True, timeout=timeout, env=_env())
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="session")
def helpers():
    """The module-level helpers above, for tests (test modules do not import conftest)."""
    class H:
        pass

    h = H()
    h.save, h.run_cli, h.run_cli_many, h.random_rgb, h.TINY, h.RGB_SIZE = (save, run_cli, run_cli_many, random_rgb,
                                                                           TINY, RGB_SIZE)
    return h
