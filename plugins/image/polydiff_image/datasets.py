"""Image datasets, read from a local data folder (nothing is downloaded).

* ``mnist`` / ``mnist_heldout``: the MNIST test set (10,000 28x28 grayscale digits; CC BY-SA 3.0, LeCun,
  Cortes & Burges), split 9,000 / 1,000: image ``i`` is held out when ``i % 10 == 0``. Models train on
  ``mnist``; the benchmark measures on ``mnist_heldout``.
* ``cifar10`` / ``cifar10_heldout``: the CIFAR-10 test set (10,000 32x32 RGB images in 10 classes;
  Krizhevsky 2009), split the same way over the rows of its ``labels.csv``.
* ``mnist_sample``: 100 held-out MNIST digits bundled with the plugin (``data/mnist_sample.npz``, ten of
  each digit; see ``data/SOURCE.md``), enough for tests, the demo and a quick trial.

The data folder is the first of

1. ``$POLYDIFF_IMAGE_DATA`` (a folder holding ``mnist/`` and ``cifar10_test/``);
2. ``shared/data`` in the repository root (the folder holding ``plugins/``) or next to it;
3. ``shared/data`` and ``../shared/data`` from the working directory

that holds the dataset's files.
"""
from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path
from typing import List, Optional

import numpy as np

from polydiff.errors import InputError

__all__ = ["ENV_VAR", "SAMPLE", "MNIST_CLASSES", "CIFAR10_CLASSES", "data_dir", "mnist_arrays", "cifar10_arrays",
           "mnist", "mnist_heldout", "cifar10", "cifar10_heldout", "mnist_sample", "DATASETS", "split_index"]

ENV_VAR = "POLYDIFF_IMAGE_DATA"
SAMPLE = Path(__file__).parent / "data" / "mnist_sample.npz"
MNIST_CLASSES = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _candidates() -> List[Path]:
    repo = Path(__file__).resolve().parents[3]  # <repo>/plugins/image/polydiff_image/datasets.py
    found = []
    if os.environ.get(ENV_VAR):
        found.append(Path(os.environ[ENV_VAR]).expanduser())
    sub = Path("shared") / "data"
    found += [repo / sub, repo.parent / sub, Path.cwd() / sub, Path.cwd().parent / sub]
    return found


def data_dir(name: str, marker: str) -> Path:
    """The folder ``name`` (holding ``marker``) under the first data folder that has it."""
    for d in _candidates():
        if (d / name / marker).exists():
            return d / name
    raise InputError(f"dataset folder {name}/ not found (looked in ${ENV_VAR} and shared/data next to the "
                     f"project and the working directory); set {ENV_VAR} to the folder holding {name}/")


def split_index(n: int, heldout: bool) -> np.ndarray:
    """Indices of the training (``i % 10 != 0``) or held-out (``i % 10 == 0``) part of n items."""
    i = np.arange(n)
    return i[i % 10 == 0] if heldout else i[i % 10 != 0]


def mnist_arrays(split: Optional[str] = None):
    """(uint8 [N, 28, 28, 1], int64 labels [N]) of the MNIST test set; ``split`` None, "train" or "heldout"."""
    d = data_dir("mnist", _MNIST_FILES[0])
    with gzip.open(d / _MNIST_FILES[0]) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(d / _MNIST_FILES[1]) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    if split:
        idx = split_index(len(x), split == "heldout")
        x, y = x[idx], y[idx]
    return np.ascontiguousarray(x), y


def cifar10_arrays(split: Optional[str] = None):
    """(uint8 [N, 32, 32, 3], int64 labels [N]) of the CIFAR-10 test set; ``split`` None, "train" or "heldout"."""
    from .io import read_image

    d = data_dir("cifar10_test", "labels.csv")
    with open(d / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if split:
        rows = [rows[i] for i in split_index(len(rows), split == "heldout")]
    x = np.stack([read_image(d / r["path"]) for r in rows])
    y = np.array([int(r["label"]) for r in rows], np.int64)
    return x, y


def _images(x, y, classes, prefix):
    from .encoder import Images

    return Images(list(x), [int(v) for v in y], list(classes), [f"{prefix}[{i}]" for i in range(len(x))])


def mnist():
    """MNIST training split (9,000 digits) as :class:`~polydiff_image.encoder.Images`."""
    return _images(*mnist_arrays("train"), MNIST_CLASSES, "mnist")


def mnist_heldout():
    """MNIST held-out split (1,000 digits)."""
    return _images(*mnist_arrays("heldout"), MNIST_CLASSES, "mnist_heldout")


def cifar10():
    """CIFAR-10 training split (9,000 images)."""
    return _images(*cifar10_arrays("train"), CIFAR10_CLASSES, "cifar10")


def cifar10_heldout():
    """CIFAR-10 held-out split (1,000 images)."""
    return _images(*cifar10_arrays("heldout"), CIFAR10_CLASSES, "cifar10_heldout")


def mnist_sample():
    """The 100 bundled held-out MNIST digits (ten of each)."""
    with np.load(SAMPLE, allow_pickle=False) as z:
        return _images(z["images"], z["labels"], MNIST_CLASSES, "mnist_sample")


DATASETS = {"mnist": mnist, "mnist_heldout": mnist_heldout, "cifar10": cifar10, "cifar10_heldout": cifar10_heldout,
            "mnist_sample": mnist_sample}
