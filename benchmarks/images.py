"""Image benchmark: are the MNIST and CIFAR-10 models' samples recognisable, how well do they inpaint,
super-resolve and denoise, and how fast do they sample?

    .venv/bin/python benchmarks/images.py --json > benchmarks/results/images.json      # every bundled model
    .venv/bin/python benchmarks/images.py --dataset mnist --out-dir docs/img/images --json > mnist.json
    .venv/bin/python benchmarks/images.py --model runs/image_mnist/model.safetensors --n-per-class 20 --skip-speed
    .venv/bin/python benchmarks/images.py --quick --model /tmp/tiny/model.safetensors   # a smoke test (seconds)
    .venv/bin/python benchmarks/images.py --render benchmarks/results/images.json        # markdown tables

Which models. ``--dataset mnist`` / ``--dataset cifar10`` (repeatable) picks the datasets; by default every
one whose pretrained model (``mnist``, ``cifar10``) is bundled. ``--model PATH`` replaces the pretrained
model for one dataset (given with ``--dataset``, or recognised from the model's classes and image size).

Protocol, per dataset (every random choice is seeded from ``--seed``):

* **data**: the plugin's splits (``polydiff_image.datasets``) of the MNIST / CIFAR-10 *test* sets: "train"
  (9,000 images; the diffusion models are trained on it) and "heldout" (1,000 images, every tenth);
* **classifier**: a small CNN trained by this script on the train split: three blocks of 3x3 convolution
  (32, 64, 128 channels, no bias) + BatchNorm + ReLU + 2x2 max-pooling, a 2x2 adaptive average pooling, a
  128-unit linear + ReLU penultimate layer (:meth:`ClassifierNet.embed`, the features of the Fréchet
  distance), dropout 0.2 and a linear layer to the 10 classes. Pixels scaled to [-1, 1] as the diffusion
  models see them. AdamW (weight decay 5e-4), one-cycle learning rate up to 3e-3, batches of 128,
  cross-entropy with label smoothing 0.1, ``--epochs`` epochs (6 for MNIST, 20 for CIFAR-10). CIFAR-10
  only: random crops (4-pixel reflection padding) and horizontal flips; MNIST is not augmented (flipped
  or shifted digits are other digits or off-centre). Its accuracy on the held-out split is the "real
  accuracy";
* **generated accuracy**: ``--n-per-class`` class-conditional samples per class (50: 500 images) with the
  model's stored sampler, steps and guidance scale (``--sampler``, ``--steps``, ``--cfg-scale`` override
  them), labels cycling 0, 1, ..., 9, 0, 1, ... in batches of ``--batch-size`` drawn from one generator
  seeded with ``--seed``. The classifier's accuracy on them (the label is the class asked for), overall
  and per class; the checked ratio is generated / real accuracy (1.0: the samples are as recognisable to
  this classifier as unseen real images). Targets: MNIST generated accuracy >= 0.95 (absolute),
  CIFAR-10 ratio >= 0.60;
* **Fréchet distance** between Gaussians fitted (``polydiff.metrics.frechet_distance``) to the
  classifier's 128-D penultimate features of the generated images and of the 1,000 held-out images.
  Reference: the same distance between an equally sized, class-balanced seeded draw from the train split
  and the held-out images (real versus real; the classifier was trained on the train split, which
  tightens its features there, so the reference is a floor, not an unbiased real-vs-real value). These
  are **not Inception FIDs** (Inception weights cannot be fetched offline): the features are this
  script's small classifier's, and the numbers are not comparable with published FID values, only with
  each other at the same ``--n-per-class`` (the estimate is biased upward at small sample sizes);
* the three **tasks** run on the first ``--n-task`` held-out images (100), unconditionally (label "none",
  the commands' default: the image guides the model; guidance is then a no-op, so they run at scale 1)
  with the model's sampler and steps (or ``--sampler`` / ``--steps``), in batches of ``--batch-size``,
  the batch starting at image ``i`` seeded with ``--seed + i``. Errors are in pixel levels (0-255);
  PSNR = 10 log10(255^2 / MSE) with the MSE pooled over every pixel and channel that is scored, of every
  image (the whole image, or the hole for inpainting):

  - **inpainting** (``polydiff_image.tasks.inpaint_arrays``): a centred square hole of half the side
    (14x14 of 28x28 for MNIST, 16x16 of 32x32 for CIFAR-10). MSE and PSNR inside the hole against the
    original; the largest absolute difference over the kept pixels (must be 0: kept pixels are kept byte
    for byte). Reference "mean fill": the hole filled with each image's mean kept pixel (per channel,
    rounded);
  - **super-resolution** x2 and x4 (``upscale_arrays``): the low-resolution input is the factor x factor
    block mean of the original, rounded to uint8 (area downsampling). Methods ``project`` and ``sdedit``
    (``--strength`` 0.3) of the generation model and, when the dataset has a super-resolution model
    (``--sr-model``, by default the bundled ``mnist_sr`` for MNIST), its ``conditioned`` sampling from
    noise alone and with the projection of ``project`` ("conditioned_project"), all at the generation
    model's sampler and steps, against Pillow's bicubic upsampling and pixel replication ("nearest"). PSNR
    against the original; consistency = the largest absolute difference, in pixel levels, between the
    block means of the output (uint8, averaged without rounding) and the input. Target, per factor: a
    diffusion method beats bicubic PSNR (the check's value is the best method's PSNR gain over bicubic,
    in dB, which must be > 0; which methods beat it is recorded);
  - **denoising** (``denoise_arrays``): the images plus Gaussian noise of standard deviation ``--sigma``
    (25) pixel levels, rounded and clipped to 0-255 (the clipping removes part of the noise in black or
    white areas; the standard deviation actually left is recorded). PSNR of the noisy images, of the
    images denoised with the given sigma (one call for the batch), and denoised with the sigma estimated
    from each image by ``estimate_noise`` (one call per image, as ``polydiff denoise image`` does; the
    mean, smallest and largest estimate are reported);
* **speed**: images per second for each of ``--samplers`` (euler, heun, dpmpp_2m, ddim, unipc; the
  model's default sampler is added when missing) at ``--speed-steps`` steps (20), class-conditional
  batches of ``--speed-batch`` (64, labels cycling), sampling and decoding to uint8, the median of
  ``--repeats`` (3) timed runs (seeds 0, 1, ...) after one warm-up run, with
  ``torch.set_num_threads(--threads)`` (2) on ``--device`` (cpu), at the model's default guidance scale
  (or ``--cfg-scale``). A guidance scale other than 1 evaluates the network on a doubled batch
  (conditional and unconditional together): ``network_batch`` records it. NFE is the network evaluations
  per image per guidance branch. Target for MNIST: >= 20 images/s with the default sampler at 20 steps.

The classifier, the generated images and the tasks all run with the same ``--threads``; the classifier
always runs on the CPU, the diffusion model on ``--device``. Timings depend
on the machine and its load: the load average is recorded at the start and the end, and ``cpu_share``
(process CPU seconds / (wall seconds x threads)) well below 1 means other work held the cores.
``--quick`` is a smoke test with tiny sizes (2 samples per class, 8 task images, 1 epoch on a 1,000-image
subset of the train split, one timed sampler at batch 4): its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import cpu_name  # noqa: E402

DATASET_NAMES = ("mnist", "cifar10")
#: per dataset: image size, channels, augmentation and classifier epochs
DATASET_INFO = {
    "mnist": {"size": 28, "channels": 1, "augment": False, "epochs": 6},
    "cifar10": {"size": 32, "channels": 3, "augment": True, "epochs": 20},
}
_COMMON_TARGETS = {"inpaint_outside_max_abs_diff": 0, "sr_x2_psnr_gain_db": 0.0, "sr_x4_psnr_gain_db": 0.0}
TARGETS = {
    "mnist": {"generated_accuracy": 0.95, "images_per_s": 20.0, **_COMMON_TARGETS},
    "cifar10": {"accuracy_ratio": 0.60, **_COMMON_TARGETS},
}
#: how each target compares: value OP target
TARGET_OPS = {"generated_accuracy": ">=", "accuracy_ratio": ">=", "images_per_s": ">=",
              "inpaint_outside_max_abs_diff": "<=", "sr_x2_psnr_gain_db": ">", "sr_x4_psnr_gain_db": ">"}
DEFAULT_SAMPLERS = "euler,heun,dpmpp_2m,ddim,unipc"
SR_FACTORS = (2, 4)
SR_METHODS = ("project", "sdedit")
SR_LABELS = {"project": "project (generation model)", "sdedit": "sdedit (generation model)",
             "conditioned": "conditioned (super-resolution model)",
             "conditioned_project": "conditioned + projection (super-resolution model)"}
#: the bundled super-resolution model of each dataset, when there is one
SR_MODELS = {"mnist": "mnist_sr"}
WIDTHS = (32, 64, 128)
EMB = 128
#: defaults of the sizes, normal and --quick
DEFAULTS = {"n_per_class": 50, "n_task": 100, "train_subset": 0, "speed_batch": 64, "repeats": 3,
            "samplers": DEFAULT_SAMPLERS, "examples": 8}
QUICK = {"n_per_class": 2, "n_task": 8, "train_subset": 1000, "speed_batch": 4, "repeats": 1, "samplers": "",
         "examples": 4, "epochs": 1}
FD_NOTE = ("Fréchet distances between Gaussian fits of this benchmark's classifier's 128-D penultimate "
           "features, NOT Inception FIDs (Inception weights cannot be fetched offline); not comparable "
           "with published FID values")


def log(msg: str) -> None:
    _common.log(msg)


def versions() -> dict:
    v = _common.versions(modules=("PIL",), distributions=("polydiff-image",))
    v["pillow"] = v.pop("pil")
    return v


def parse_samplers(text: str) -> List[str]:
    """``"euler, heun,euler"`` -> ``["euler", "heun"]`` (checked against the core's samplers)."""
    from polydiff.samplers import SAMPLERS

    out = []
    for name in (p.strip() for p in text.split(",")):
        if not name:
            continue
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
        if name not in out:
            out.append(name)
    return out


# ------------------------------------------------------------------------------------------- data
def load_data(name: str) -> Dict[str, tuple]:
    """``{"train": (x, y), "heldout": (x, y)}``: uint8 [N, H, W, C] images and int64 labels."""
    from polydiff_image import datasets

    fn = {"mnist": datasets.mnist_arrays, "cifar10": datasets.cifar10_arrays}[name]
    return {split: fn(split) for split in ("train", "heldout")}


def dataset_classes(name: str) -> List[str]:
    from polydiff_image.datasets import CIFAR10_CLASSES, MNIST_CLASSES

    return list({"mnist": MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}[name])


def load_sr_model(name: str, args):
    """The super-resolution model of dataset ``name``: ``--sr-model`` (a bundle or pretrained name; "none"
    for none), by default the bundled one of :data:`SR_MODELS` when it is installed."""
    from polydiff.errors import PolydiffError
    from polydiff.model import Model

    ref = args.sr_model
    if ref is None:
        from polydiff.plugins import registry

        ref = SR_MODELS.get(name)
        if ref not in registry().modality("image").pretrained:
            return None
    if str(ref).lower() == "none":
        return None
    try:
        m = Model.load(ref, modality="image", device=args.device)
    except PolydiffError as e:
        raise SystemExit(f"error: --sr-model {ref}: {e}")
    from polydiff_image.tasks import lowres_factors

    if not lowres_factors(m):
        raise SystemExit(f"error: --sr-model {ref}: not a super-resolution model (its network has no lowres_factors)")
    return m


def dataset_of_model(enc) -> Optional[str]:
    """The dataset whose classes, image size and channels the model's encoder has, else None."""
    for name in DATASET_NAMES:
        info = DATASET_INFO[name]
        if (list(enc.classes) == dataset_classes(name) and enc.image_size == info["size"]
                and enc.channels == info["channels"]):
            return name
    return None


def balanced_subset(y: np.ndarray, per_class: int, seed: int, classes: int = 10) -> np.ndarray:
    """Sorted indices of ``per_class`` items of every class (fewer when a class has fewer), drawn without
    replacement with ``seed``."""
    rng = np.random.default_rng(seed)
    idx = []
    for c in range(classes):
        cand = np.flatnonzero(np.asarray(y) == c)
        idx += rng.choice(cand, min(per_class, len(cand)), replace=False).tolist()
    return np.array(sorted(idx), dtype=np.int64)


def to_input(a: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float [N, C, H, W] in [-1, 1] (the diffusion models' scaling)."""
    return torch.from_numpy(np.asarray(a, np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------- classifier
class ClassifierNet(nn.Module):
    """Three blocks of conv 3x3 + BatchNorm + ReLU + max-pool 2x2 (32, 64, 128 channels), adaptive average
    pooling to 2x2, a 128-unit linear + ReLU penultimate layer (:meth:`embed`), dropout and 10 logits."""

    def __init__(self, channels: int, classes: int = 10, widths: Sequence[int] = WIDTHS, emb: int = EMB,
                 dropout: float = 0.2):
        super().__init__()
        layers, c = [], channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.penultimate = nn.Sequential(nn.Linear(4 * c, emb), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(emb, classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.penultimate(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def augment(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crops of the reflection-padded images and horizontal flips (half of them), per image."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    iy = dy[:, None] + torch.arange(h)                                     # [n, h] rows of each crop
    ix = dx[:, None] + torch.arange(w)                                     # [n, w] columns
    ix = torch.where(flip[:, None], ix.flip(1), ix)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                  iy[:, None, :, None], ix[:, None, None, :]]


class Classifier:
    """:class:`ClassifierNet` trained by :meth:`train` on uint8 images, applied in batches."""

    def __init__(self, channels: int, seed: int, classes: int = 10):
        torch.manual_seed(seed)
        self.net = ClassifierNet(channels, classes).to(memory_format=torch.channels_last)  # faster convs on CPU
        self.seed = seed

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def train(self, x: np.ndarray, y: np.ndarray, epochs: int, augment_images: bool = False, batch_size: int = 128,
              lr: float = 3e-3) -> dict:
        """Train on uint8 images ``x`` [N, H, W, C] with labels ``y``; returns the loss per epoch."""
        g = torch.Generator().manual_seed(self.seed)
        xt, yt = to_input(x), torch.as_tensor(np.asarray(y), dtype=torch.long)
        opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=5e-4)
        steps = epochs * ((len(xt) + batch_size - 1) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
        lossf = nn.CrossEntropyLoss(label_smoothing=0.1)
        history = []
        for ep in range(epochs):
            self.net.train()
            perm = torch.randperm(len(xt), generator=g)
            total, correct, t0 = 0.0, 0, time.perf_counter()
            for i in range(0, len(xt), batch_size):
                idx = perm[i:i + batch_size]
                xb = augment(xt[idx], g) if augment_images else xt[idx]
                logits = self.net(xb.contiguous(memory_format=torch.channels_last))
                loss = lossf(logits, yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                correct += int((logits.argmax(1) == yt[idx]).sum())
            rec = {"epoch": ep + 1, "loss": total / len(xt), "train_accuracy": correct / len(xt),
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            log(f"classifier epoch {ep + 1}/{epochs}: loss {rec['loss']:.4f}, training accuracy "
                f"{rec['train_accuracy']:.4f} ({rec['seconds']:.1f} s)")
        self.net.eval()
        return {"history": history}

    @torch.no_grad()
    def _apply(self, x: np.ndarray, fn: Callable, batch: int = 500) -> torch.Tensor:
        self.net.eval()
        return torch.cat([fn(to_input(x[i:i + batch]).contiguous(memory_format=torch.channels_last))
                          for i in range(0, len(x), batch)])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._apply(x, self.net).argmax(1).numpy()

    def embed(self, x: np.ndarray) -> np.ndarray:
        return self._apply(x, self.net.embed).double().numpy()


# ---------------------------------------------------------------------------------------- metrics
def accuracy_report(pred: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> dict:
    """Overall and per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    pred, y = np.asarray(pred), np.asarray(y)
    k = len(classes)
    conf = np.zeros((k, k), int)
    np.add.at(conf, (y, pred), 1)
    per = {classes[c]: (float(conf[c, c] / conf[c].sum()) if conf[c].sum() else None) for c in range(k)}
    return {"n": int(len(y)), "accuracy": float((pred == y).mean()) if len(y) else None, "per_class": per,
            "confusion": conf.tolist()}


def mse(a: np.ndarray, b: np.ndarray, where: Optional[np.ndarray] = None) -> float:
    """Mean squared difference in pixel levels^2, pooled over every pixel and channel (where ``where``)."""
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    if where is not None:
        d = d[np.broadcast_to(where, d.shape)]
    return float(d.mean())


def psnr(mse_value: float) -> Optional[float]:
    """10 log10(255^2 / MSE) in dB; None for MSE 0 (identical images: no finite value)."""
    return 10.0 * math.log10(255.0 ** 2 / mse_value) if mse_value > 0 else None


def scores(out: np.ndarray, truth: np.ndarray, where: Optional[np.ndarray] = None) -> dict:
    m = mse(out, truth, where)
    return {"mse": m, "psnr": psnr(m)}


def block_means(a: np.ndarray, factor: int) -> np.ndarray:
    """uint8 [N, S, S, C] -> float64 [N, S/f, S/f, C]: the mean of every factor x factor block."""
    n, h, w, c = a.shape
    return np.asarray(a, np.float64).reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def downsample(a: np.ndarray, factor: int) -> np.ndarray:
    """Area downsampling: block means rounded to uint8 (the super-resolution input)."""
    return np.clip(np.round(block_means(a, factor)), 0, 255).astype(np.uint8)


def consistency(out: np.ndarray, low: np.ndarray, factor: int) -> float:
    """Largest |block mean of out - low| in pixel levels."""
    return float(np.abs(block_means(out, factor) - np.asarray(low, np.float64)).max())


def centre_hole(size: int) -> np.ndarray:
    """bool [size, size], True on the centred square of side size // 2 (the pixels to generate)."""
    side = size // 2
    o = (size - side) // 2
    hole = np.zeros((size, size), bool)
    hole[o:o + side, o:o + side] = True
    return hole


def mean_fill(imgs: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The trivial inpainting: every hole pixel set to the image's mean kept pixel (per channel, rounded)."""
    keep = ~hole
    means = np.round(np.asarray(imgs, np.float64)[:, keep].mean(axis=1))  # [N, C]
    out = imgs.copy()
    out[:, hole] = means[:, None, :].astype(np.uint8)
    return out


def add_noise(imgs: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """uint8 images + Gaussian noise of ``sigma`` pixel levels, rounded and clipped to 0-255."""
    rng = np.random.default_rng(seed)
    noisy = np.asarray(imgs, np.float64) + rng.normal(0.0, sigma, imgs.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def fd(a: np.ndarray, b: np.ndarray) -> dict:
    """``polydiff.metrics.frechet_distance`` of two feature sets: ``{"value", "regularized"}``. The core's
    formula is real and exact for singular covariances too (fewer samples than feature dimensions, units that
    never fire), so ``regularized`` is always false; it stays in the results for their readers."""
    from polydiff.metrics import frechet_distance

    return {"value": frechet_distance(a, b), "regularized": False}


# -------------------------------------------------------------------------------------- generation
def generate(model, n_per_class: int, seed: int, batch_size: int, sampler=None, steps=None, cfg_scale=None):
    """``n_per_class`` images of every class, labels cycling 0..k-1, in batches from one generator seeded with
    ``seed``. Returns (uint8 [N, H, W, C], labels [N], sampling seconds)."""
    from polydiff_image.encoder import from_tensor

    k = len(model.encoder.classes)
    labels = np.arange(n_per_class * k) % k
    g = torch.Generator().manual_seed(seed)
    out, seconds = [], 0.0
    for i in range(0, len(labels), batch_size):
        lab = torch.as_tensor(labels[i:i + batch_size], dtype=torch.long)
        t0 = time.perf_counter()
        x, _ = model.sample(len(lab), sampler=sampler, steps=steps, cfg_scale=cfg_scale, generator=g,
                            cond={"label": lab.to(model.device)})
        out.append(from_tensor(x.cpu()))
        seconds += time.perf_counter() - t0
        log(f"generated {i + len(lab)}/{len(labels)} images")
    return np.concatenate(out), labels, seconds


def batched(fn: Callable, imgs: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    """``fn(chunk, seed)`` over chunks of ``batch_size`` images, the chunk starting at image i seeded seed + i."""
    return np.concatenate([fn(imgs[i:i + batch_size], seed + i) for i in range(0, len(imgs), batch_size)])


def run_inpaint(model, imgs: np.ndarray, seed: int, batch_size: int, sampler=None, steps=None) -> dict:
    from polydiff_image.tasks import inpaint_arrays

    hole = centre_hole(imgs.shape[1])
    t0 = time.perf_counter()
    out = batched(lambda a, s: inpaint_arrays(model, a, hole, seed=s, sampler=sampler, steps=steps, cfg_scale=1.0),
                  imgs, batch_size, seed)
    seconds = time.perf_counter() - t0
    trivial = mean_fill(imgs, hole)
    keep = ~hole[None, :, :, None]
    side = int(hole.sum(axis=0).max())
    off = int(np.argmax(hole.any(axis=1)))
    return {"n": int(len(imgs)), "hole": {"top": off, "left": off, "side": side, "pixels": int(hole.sum())},
            "seconds": seconds,
            "model": scores(out, imgs, hole[None, :, :, None]),
            "mean_fill": scores(trivial, imgs, hole[None, :, :, None]),
            "outside_max_abs_diff": int(np.abs(out.astype(np.int32) - imgs.astype(np.int32))[np.broadcast_to(keep, out.shape)].max()),
            "_images": {"hole": hole, "filled": out}}


def run_super_resolution(model, imgs: np.ndarray, seed: int, batch_size: int, sampler=None, steps=None,
                         strength: float = 0.3, factors=SR_FACTORS, sr_model=None) -> dict:
    """Every method of ``SR_METHODS`` with the generation model ``model``; with a super-resolution model
    ``sr_model`` also ``conditioned`` (the network alone) and ``conditioned_project`` (its estimates
    projected as ``project`` does), both from noise."""
    from polydiff_image.tasks import bicubic, upscale_arrays

    runs = [(m, model, m) for m in SR_METHODS]
    if sr_model is not None:
        runs += [("conditioned", sr_model, "conditioned"), ("conditioned_project", sr_model, "project")]
    methods = [key for key, _, _ in runs]

    size = imgs.shape[1]
    res, pictures = {}, {}
    for f in factors:
        low = downsample(imgs, f)
        outs = {"nearest": np.repeat(np.repeat(low, f, axis=1), f, axis=2),
                "bicubic": np.stack([bicubic(a, size) for a in low])}
        secs = {}
        for key, m, method in runs:
            t0 = time.perf_counter()
            outs[key] = batched(lambda a, s: upscale_arrays(m, a, f, method=method, seed=s, sampler=sampler,
                                                            steps=steps, cfg_scale=1.0, strength=strength),
                                low, batch_size, seed)
            secs[key] = time.perf_counter() - t0
            log(f"super-resolution x{f} {key}: {secs[key]:.1f} s, PSNR {_f(scores(outs[key], imgs)['psnr'])} dB")
        r = {"low_size": int(low.shape[1]), "methods": methods}
        for name, out in outs.items():
            r[name] = {**scores(out, imgs), "consistency_max": consistency(out, low, f)}
            if name in secs:
                r[name]["seconds"] = secs[name]
        r["sdedit"]["strength"] = strength
        base = r["bicubic"]["psnr"]
        r["beats_bicubic"] = [m for m in methods if r[m]["psnr"] is not None and base is not None
                              and r[m]["psnr"] > base]
        gains = [r[m]["psnr"] - base for m in methods if r[m]["psnr"] is not None and base is not None]
        r["best_method"] = max(methods, key=lambda m: -1e9 if r[m]["psnr"] is None else r[m]["psnr"])
        r["psnr_gain_db"] = max(gains) if gains else None
        res[f"x{f}"] = r
        pictures[f"x{f}"] = {"low": low, **outs}
    res["_images"] = pictures
    return res


def run_denoise(model, imgs: np.ndarray, sigma: float, seed: int, batch_size: int, sampler=None, steps=None) -> dict:
    from polydiff_image.tasks import denoise_arrays, estimate_noise

    noisy = add_noise(imgs, sigma, seed)
    t0 = time.perf_counter()
    given = batched(lambda a, s: denoise_arrays(model, a, sigma, seed=s, sampler=sampler, steps=steps, cfg_scale=1.0),
                    noisy, batch_size, seed)
    t_given = time.perf_counter() - t0
    est = [estimate_noise(a) for a in noisy]
    t0 = time.perf_counter()
    estimated = np.concatenate([denoise_arrays(model, noisy[i:i + 1], est[i], seed=seed + i, sampler=sampler,
                                               steps=steps, cfg_scale=1.0) for i in range(len(noisy))])
    t_est = time.perf_counter() - t0
    actual = float(np.std(noisy.astype(np.float64) - imgs.astype(np.float64)))
    return {"n": int(len(imgs)), "sigma": float(sigma), "noise_std_actual": actual,
            "noisy": scores(noisy, imgs),
            "given_sigma": {**scores(given, imgs), "seconds": t_given},
            "estimated_sigma": {**scores(estimated, imgs), "seconds": t_est, "sigma_mean": float(np.mean(est)),
                                "sigma_min": float(np.min(est)), "sigma_max": float(np.max(est))},
            "_images": {"noisy": noisy, "denoised": given}}


def speed(model, sampler: str, steps: int, batch: int, repeats: int, cfg_scale=None) -> dict:
    """Images per second of class-conditional batches (labels cycling): a warm-up, then ``repeats`` timed runs
    (sampling + decoding to uint8) with seeds 0, 1, ...; the median."""
    from polydiff.samplers import nfe

    def once(seed):
        t0 = time.perf_counter()
        model.generate(batch, sampler=sampler, steps=steps, seed=seed, label="all", cfg_scale=cfg_scale)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    items = []  # the warm-up run counts the network's work: items evaluated per image (guidance doubles some)
    hook = model.net.register_forward_hook(lambda mod, args, out: items.append(int(args[0].shape[0])))
    try:
        once(1000)
    finally:
        hook.remove()
    times = [once(r) for r in range(repeats)]
    med = statistics.median(times)
    sc = model.config.get("sample", {})
    scale = float(cfg_scale if cfg_scale is not None else sc.get("cfg_scale", 1.0))
    return {"sampler": sampler, "steps": steps, "nfe": nfe(sampler, steps), "batch": batch, "cfg_scale": scale,
            "cfg_interval": sc.get("cfg_interval"), "evaluations_per_image": sum(items) / batch,
            "network_batch": max(items) if items else batch, "runs_s": times, "median_s": med,
            "images_per_s": batch / med}


Stopwatch = _common.Stopwatch


def check(value, target, op: str = ">=", reason=None, skipped=False) -> dict:
    """One target: ``pass`` true or false, or None when the measurement was ``skipped`` on request; a missing
    value that was not skipped fails (with the ``reason``)."""
    c = {"value": value, "target": target, "op": op}
    if skipped:
        c["pass"] = None
    elif value is None:
        c["pass"] = False
    else:
        c["pass"] = bool({">=": value >= target, "<=": value <= target, ">": value > target, "<": value < target}[op])
    if reason:
        c["reason"] = reason
    return c


def _fmt_check(c: dict) -> str:
    val = "null" if c["value"] is None else f"{c['value']:.4g}"
    verdict = "SKIPPED" if c["pass"] is None else ("PASS" if c["pass"] else "FAIL")
    return f"{val} (target {c.get('op', '>=')} {c['target']}) {verdict}" + (f" ({c['reason']})" if c.get("reason") else "")


# --------------------------------------------------------------------------------------- outputs
def write_pictures(out_dir: Path, gen: np.ndarray, gen_labels: np.ndarray, k: int, truth: np.ndarray,
                   inp: dict, sr: dict, den: dict, examples: int) -> dict:
    """``samples.png`` (one row per class), ``inpaint.png`` (original | masked | filled), ``sr_x2.png`` /
    ``sr_x4.png`` (low-res, pixel-replicated | bicubic | sdedit | conditioned, with a super-resolution
    model | ground truth) and ``denoise.png``
    (noisy | denoised with the given sigma | ground truth): one example per row."""
    from polydiff_image.io import grid, write_png

    out_dir.mkdir(parents=True, exist_ok=True)
    scale = max(1, 64 // gen.shape[1])
    files = {}
    per = min(10, int(np.bincount(gen_labels, minlength=k).min()))
    rows = [gen[np.flatnonzero(gen_labels == c)[:per]] for c in range(k)]
    files["samples"] = str(write_png(out_dir / "samples.png", grid([a for r in rows for a in r], cols=per, scale=scale)))
    m = min(examples, len(truth))
    if m:
        hole = inp["hole"]
        masked = truth[:m].copy()
        masked[:, hole] = 128
        cells = [a for i in range(m) for a in (truth[i], masked[i], inp["filled"][i])]
        files["inpaint"] = str(write_png(out_dir / "inpaint.png", grid(cells, cols=3, scale=scale)))
        for key, p in sr.items():
            cols = [c for c in ("nearest", "bicubic", "sdedit", "conditioned") if c in p]
            cells = [a for i in range(m) for a in [p[c][i] for c in cols] + [truth[i]]]
            files[f"sr_{key}"] = str(write_png(out_dir / f"sr_{key}.png", grid(cells, cols=len(cols) + 1, scale=scale)))
        cells = [a for i in range(m) for a in (den["noisy"][i], den["denoised"][i], truth[i])]
        files["denoise"] = str(write_png(out_dir / "denoise.png", grid(cells, cols=3, scale=scale)))
    return files


def render_markdown(paths) -> str:
    """Markdown tables of saved results (``--render``), one block per file."""
    out = []
    for path in paths:
        with open(path) as f:
            out.append(render_doc(json.load(f)))
    return "\n".join(out)


def _f(v, fmt=".2f", none="-") -> str:
    return none if v is None else format(v, fmt)


def render_doc(doc: dict) -> str:
    """Markdown tables of one result document, per dataset: accuracy per class, Fréchet distances, the tasks,
    the speed per sampler, and the checks with PASS / FAIL."""
    lines = []
    m = doc["machine"]
    lines.append(f"`{doc['command']}`: seed {doc['config']['seed']}; {m['threads']} thread(s) on {m['device']} "
                 f"({m['cpu']}); {doc['wall_s']:.0f} s in all ({doc['cpu_s']:.0f} CPU s)"
                 + (" — **--quick: tiny sizes, the numbers mean nothing**" if doc["config"].get("quick") else "") + "\n")
    share = m.get("cpu_share")
    if share is not None and share < 0.7:
        lines.append(f"**Note:** the process got {100 * share:.0f}% of its {m['threads']} thread(s)' time; other work "
                     f"held the cores, so the timings below overstate the cost.\n")
    for name, d in doc["datasets"].items():
        lines += _render_dataset(name, d, doc["targets"][name])
    return "\n".join(lines)


def _render_dataset(name: str, d: dict, targets: dict) -> List[str]:
    lines = []
    g, r, c = d["generated"], d["real"], d["classifier"]
    lines.append(f"#### {name}: model `{Path(d['model']).name}`\n")
    gi = g.get("cfg_interval")
    gtext = f"guidance scale {g['cfg_scale']:g}" + (f" at noise levels in ({gi[0]:g}, {gi[1]:g}]" if gi and g['cfg_scale'] != 1 else "")
    lines.append(f"{g['n']} generated images ({g['sampler']}, {g['steps']} steps, {gtext}). "
                 f"The classifier ({c['parameters']:,} parameters, {c['epochs']} epoch(s) on {c['train_images']} "
                 f"train-split images, augmentation: {c['augmentation']}, {c['train_s']:.0f} s) scores them and the "
                 f"{r['n']} held-out images; accuracy in %:\n")
    classes = list(r["per_class"])
    lines.append("| | " + " | ".join(classes) + " | all |")
    lines.append("|---|" + "---|" * (len(classes) + 1))
    for label, rep in ((f"real, held out ({r['n']})", r), (f"generated ({g['n']})", g)):
        lines.append(f"| {label} | " + " | ".join(_f(None if rep["per_class"][k] is None else 100 * rep["per_class"][k], ".0f")
                                                for k in classes) + f" | **{100 * rep['accuracy']:.1f}** |")
    fdd = d["fd"]
    lines.append("\n| | value | target |")
    lines.append("|---|---|---|")
    lines.append(f"| generated accuracy | {g['accuracy']:.3f} | "
                 + (f"≥ {targets['generated_accuracy']}" if "generated_accuracy" in targets else "") + " |")
    lines.append(f"| accuracy ratio generated / real | {_f(d['accuracy_ratio'], '.3f')} | "
                 + (f"≥ {targets['accuracy_ratio']}" if "accuracy_ratio" in targets else "") + " |")
    lines.append(f"| Fréchet distance*, generated vs held-out real ({fdd['n_generated']} vs {fdd['n_real']}) | "
                 f"{_f(fdd['generated'])} | |")
    lines.append(f"| Fréchet distance*, train-split real vs held-out real ({fdd['n_reference']} vs {fdd['n_real']}) | "
                 f"{_f(fdd['reference'])} | |")
    lines.append(f"\n\\* {FD_NOTE}.\n")
    t = d["tasks"]
    inp = t["inpaint"]
    lines.append(f"Tasks on {inp['n']} held-out images, unconditional ({t['sampler']}, {t['steps']} steps); "
                 f"PSNR in dB from the MSE pooled over the scored pixels.\n")
    lines.append(f"Inpainting, centred {inp['hole']['side']}x{inp['hole']['side']} hole:\n")
    lines.append("| method | MSE in hole | PSNR in hole | max abs diff outside |")
    lines.append("|---|---|---|---|")
    lines.append(f"| model | {inp['model']['mse']:.1f} | {_f(inp['model']['psnr'])} | {inp['outside_max_abs_diff']} |")
    lines.append(f"| mean fill (reference) | {inp['mean_fill']['mse']:.1f} | {_f(inp['mean_fill']['psnr'])} | 0 |")
    srm = f"; super-resolution model `{Path(d['sr_model']).name}`" if d.get("sr_model") else ""
    lines.append(f"\nSuper-resolution (input: block means, rounded{srm}); consistency = max |block mean of output "
                 "− input| in pixel levels:\n")
    lines.append("| factor | method | PSNR | consistency |")
    lines.append("|---|---|---|---|")
    for key in sorted(k for k in t["super_resolution"] if not k.startswith("_")):
        sr = t["super_resolution"][key]
        for meth in ["nearest", "bicubic"] + list(sr.get("methods", SR_METHODS)):
            label = SR_LABELS.get(meth, meth)
            if meth == "sdedit":
                label = label.replace("sdedit", f"sdedit {sr[meth]['strength']:g}")
            lines.append(f"| {key} ({sr['low_size']}→) | {label} | {_f(sr[meth]['psnr'])} | "
                         f"{sr[meth]['consistency_max']:.2f} |")
    den = t["denoise"]
    est = den["estimated_sigma"]
    lines.append(f"\nDenoising, Gaussian noise σ = {den['sigma']:g} pixel levels (std left after clipping: "
                 f"{den['noise_std_actual']:.1f}):\n")
    lines.append("| image | PSNR |")
    lines.append("|---|---|")
    lines.append(f"| noisy | {_f(den['noisy']['psnr'])} |")
    lines.append(f"| denoised, given σ | {_f(den['given_sigma']['psnr'])} |")
    lines.append(f"| denoised, estimated σ (mean {est['sigma_mean']:.1f}, {est['sigma_min']:.1f}–{est['sigma_max']:.1f}) "
                 f"| {_f(est['psnr'])} |")
    if d.get("speed"):
        sp = d["speed"][0]
        interval = sp.get("cfg_interval")
        guide = f"guidance scale {sp['cfg_scale']:g}" + (f" at noise levels in ({interval[0]:g}, {interval[1]:g}]"
                                                        if interval and sp['cfg_scale'] != 1 else "")
        lines.append(f"\nSpeed: batches of {sp['batch']}, {guide}, median of {len(sp['runs_s'])} run(s) after a "
                     f"warm-up; network evaluations per image count both guidance branches"
                     + (f"; target ≥ {targets['images_per_s']} images/s for the default sampler at 20 steps"
                        if "images_per_s" in targets else "") + ".\n")
        lines.append("| sampler | steps | NFE | network evaluations per image | median s per batch | images/s |")
        lines.append("|---|---|---|---|---|---|")
        for s in d["speed"]:
            ev = s.get("evaluations_per_image")
            lines.append(f"| {s['sampler']} | {s['steps']} | {s['nfe']} | {_f(ev, '.0f')} | {s['median_s']:.3f} | "
                         f"{s['images_per_s']:.1f} |")
    lines.append("")
    for key, ch in d["checks"].items():
        lines.append(f"- {name} {key}: {_fmt_check(ch)}")
    lines.append("")
    return lines


# --------------------------------------------------------------------------------------- one dataset
def run_dataset(name: str, model_ref: str, args, clock: Stopwatch) -> dict:
    """Every measurement of one dataset with its model (see the module docstring)."""
    from polydiff.errors import PolydiffError
    from polydiff.model import Model
    from polydiff.samplers import nfe

    try:
        model = Model.load(model_ref, modality="image", device=args.device)
    except PolydiffError as e:
        raise SystemExit(f"error: {e}")
    enc = model.encoder
    if dataset_of_model(enc) != name:
        raise SystemExit(f"error: {model_ref}: the model ({enc.image_size}x{enc.image_size}, {enc.channels} channel(s), "
                         f"classes {', '.join(enc.classes) or 'none'}) does not fit the {name} dataset")
    info = DATASET_INFO[name]
    classes = dataset_classes(name)
    sc = model.config.get("sample", {})
    sampler = args.sampler or sc.get("sampler", "dpmpp_2m")
    steps = int(args.steps or sc.get("steps", 20))
    cfg = float(args.cfg_scale if args.cfg_scale is not None else sc.get("cfg_scale", 1.0))
    d = {"model": str(model.path),
         "model_info": {"encoder": enc.metadata(), "parameters": sum(p.numel() for p in model.net.parameters()),
                        "sample": sc}}

    with clock.phase(f"{name}/data"):
        data = load_data(name)
    xtr, ytr = data["train"]
    xho, yho = data["heldout"]
    d["data"] = {"train": int(len(xtr)), "heldout": int(len(xho))}
    log(f"{name}: {len(xtr)} train, {len(xho)} held-out images")

    # 1. classifier
    epochs = args.epochs if args.epochs is not None else info["epochs"]
    sub = np.arange(len(xtr)) if not args.train_subset else balanced_subset(ytr, args.train_subset // len(classes), args.seed)
    with clock.phase(f"{name}/classifier"):
        clf = Classifier(info["channels"], args.seed, len(classes))
        hist = clf.train(xtr[sub], ytr[sub], epochs, augment_images=info["augment"])
    d["classifier"] = {"network": "3 x (conv 3x3 no bias + BN + ReLU + max-pool 2), channels 32-64-128, adaptive "
                                  "avg-pool 2x2, linear 128 + ReLU (penultimate), dropout 0.2, linear 10",
                       "parameters": clf.parameters, "epochs": epochs, "train_images": int(len(sub)),
                       "augmentation": "random crop (reflect pad 4) + horizontal flip" if info["augment"] else "none",
                       "optimizer": "AdamW lr 3e-3 one-cycle, weight decay 5e-4, batch 128, label smoothing 0.1",
                       "train_s": clock.wall[f"{name}/classifier"], "history": hist["history"]}
    d["real"] = accuracy_report(clf.predict(xho), yho, classes)
    log(f"{name}: classifier held-out accuracy {d['real']['accuracy']:.4f}")

    # 2. generated images
    with clock.phase(f"{name}/generate"):
        gen, gen_y, sampling_s = generate(model, args.n_per_class, args.seed, args.batch_size, args.sampler,
                                          args.steps, args.cfg_scale)
    d["generated"] = {"sampler": sampler, "steps": steps, "nfe": nfe(sampler, steps), "cfg_scale": cfg,
                      "cfg_interval": sc.get("cfg_interval"),
                      "batch_size": args.batch_size, "sampling_s": sampling_s, "images_per_s": len(gen) / sampling_s,
                      **accuracy_report(clf.predict(gen), gen_y, classes)}
    real_acc = d["real"]["accuracy"]
    d["accuracy_ratio"] = d["generated"]["accuracy"] / real_acc if real_acc else None

    # 3. Fréchet distances of the classifier's features
    ref_idx = balanced_subset(ytr, args.n_per_class, args.seed + 1)
    e_real, e_gen, e_ref = clf.embed(xho), clf.embed(gen), clf.embed(xtr[ref_idx])
    d["fd"] = {"features": f"classifier penultimate layer ({EMB}-D)", "note": FD_NOTE, "n_real": int(len(e_real)),
               "n_generated": int(len(e_gen)), "n_reference": int(len(e_ref)),
               "generated": None, "reference": None, "regularized": []}
    for key, feats in (("generated", e_gen), ("reference", e_ref)):
        r = fd(feats, e_real)
        d["fd"][key] = r["value"]
        if r["regularized"]:
            d["fd"]["regularized"].append(key)
    log(f"{name}: generated accuracy {d['generated']['accuracy']:.4f} (real {real_acc:.4f}); Fréchet distance "
        f"{d['fd']['generated']:.3f} (train-split real: {d['fd']['reference']:.3f})")

    # 4-6. tasks
    task = xho[:args.n_task]
    with clock.phase(f"{name}/inpaint"):
        inp = run_inpaint(model, task, args.seed, args.batch_size, args.sampler, args.steps)
    log(f"{name}: inpainting PSNR in hole {_f(inp['model']['psnr'])} dB (mean fill {_f(inp['mean_fill']['psnr'])}); "
        f"outside max abs diff {inp['outside_max_abs_diff']}")
    with clock.phase(f"{name}/super_resolution"):
        sr_model = load_sr_model(name, args)
        sr = run_super_resolution(model, task, args.seed, args.batch_size, args.sampler, args.steps, args.strength,
                                  sr_model=sr_model)
    d["sr_model"] = str(sr_model.path) if sr_model is not None else None
    with clock.phase(f"{name}/denoise"):
        den = run_denoise(model, task, args.sigma, args.seed, args.batch_size, args.sampler, args.steps)
    log(f"{name}: denoising PSNR noisy {_f(den['noisy']['psnr'])}, given sigma {_f(den['given_sigma']['psnr'])}, "
        f"estimated {_f(den['estimated_sigma']['psnr'])} dB")
    pictures = {"inp": inp.pop("_images"), "sr": sr.pop("_images"), "den": den.pop("_images")}
    d["tasks"] = {"n": int(len(task)), "label": "none", "sampler": sampler, "steps": steps, "cfg_scale": 1.0,
                  "inpaint": inp, "super_resolution": sr, "denoise": den}
    if args.out_dir:
        d["outputs"] = write_pictures(Path(args.out_dir) / name, gen, gen_y, len(classes), task, pictures["inp"],
                                      pictures["sr"], pictures["den"], args.examples)

    # 7. speed
    default_sampler = sc.get("sampler", "dpmpp_2m")
    if not args.skip_speed:
        names = list(args.sampler_list)
        if default_sampler not in names:
            names.insert(0, default_sampler)
        d["speed"] = []
        with clock.phase(f"{name}/speed"):
            for s in names:
                r = speed(model, s, args.speed_steps, args.speed_batch, args.repeats, args.cfg_scale)
                d["speed"].append(r)
                log(f"{name}: {s} {r['steps']} steps: {r['images_per_s']:.1f} images/s")
    ips = next((r["images_per_s"] for r in d.get("speed", []) if r["sampler"] == default_sampler and r["steps"] == 20), None)

    # checks
    tg = TARGETS[name]
    values = {"generated_accuracy": d["generated"]["accuracy"], "accuracy_ratio": d["accuracy_ratio"],
              "images_per_s": ips, "inpaint_outside_max_abs_diff": inp["outside_max_abs_diff"],
              "sr_x2_psnr_gain_db": sr["x2"]["psnr_gain_db"], "sr_x4_psnr_gain_db": sr["x4"]["psnr_gain_db"]}
    checks = {}
    for key, target in tg.items():
        reason, skipped = None, False
        if key == "images_per_s":
            skipped = args.skip_speed
            reason = "--skip-speed" if skipped else (None if ips is not None else "--speed-steps is not 20")
        if key.startswith("sr_"):
            reason = "beaten by " + (", ".join(sr[key[3:5]]["beats_bicubic"]) or "no method")
        checks[key] = check(values[key], target, TARGET_OPS[key], reason=reason, skipped=skipped)
    if "images_per_s" in checks:
        checks["images_per_s"]["setting"] = (f"{default_sampler}, 20 steps, batch {args.speed_batch}, "
                                             f"{args.threads} thread(s) on {args.device}")
    d["checks"] = checks
    return d


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", action="append", choices=DATASET_NAMES,
                    help="mnist or cifar10, repeatable [every dataset whose pretrained model is bundled]")
    ap.add_argument("--model", help="a .safetensors bundle (or pretrained name) replacing the pretrained model of "
                                    "one dataset (--dataset, or recognised from the model)")
    ap.add_argument("--n-per-class", type=int, help="generated images per class [50; --quick 2]")
    ap.add_argument("--n-task", type=int, help="held-out images for inpainting, super-resolution, denoising [100; --quick 8]")
    ap.add_argument("--epochs", type=int, help="classifier epochs [6 for mnist, 20 for cifar10; --quick 1]")
    ap.add_argument("--train-subset", type=int,
                    help="train the classifier on a class-balanced draw of this many train-split images [0: all; --quick 1000]")
    ap.add_argument("--sampler", help="sampler of the generated images and the tasks [the model's]")
    ap.add_argument("--steps", type=int, help="steps of the generated images and the tasks [the model's]")
    ap.add_argument("--cfg-scale", type=float, help="guidance scale of the generated images and the timing runs [the model's]")
    ap.add_argument("--batch-size", type=int, default=100, help="images per sampling batch (generation, tasks) [100]")
    ap.add_argument("--sr-model", help="super-resolution model compared with the generation model's methods, or "
                                       "'none' [the bundled one of the dataset: mnist_sr for mnist]")
    ap.add_argument("--strength", type=float, default=0.3, help="sdedit super-resolution start level [0.3]")
    ap.add_argument("--sigma", type=float, default=25.0, help="noise of the denoising task, pixel levels [25]")
    ap.add_argument("--samplers", help=f"samplers timed; the model's default is added [{DEFAULT_SAMPLERS}; --quick: the default only]")
    ap.add_argument("--speed-steps", type=int, default=20, help="steps of the timing runs [20]")
    ap.add_argument("--speed-batch", type=int, help="images per timed batch [64; --quick 4]")
    ap.add_argument("--repeats", type=int, help="timed runs per sampler, after a warm-up [3; --quick 1]")
    ap.add_argument("--skip-speed", action="store_true", help="do not time the samplers (the speed check is skipped)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads [2]")
    ap.add_argument("--device", default="cpu", help="where the models run [cpu]")
    ap.add_argument("--seed", type=int, default=0, help="seed of everything [0]")
    ap.add_argument("--out-dir", help="write samples.png, inpaint.png, sr_x2.png, sr_x4.png, denoise.png to DIR/DATASET/")
    ap.add_argument("--examples", type=int, help="rows of the task figures [8; --quick 4]")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 epoch: a smoke test whose numbers mean nothing")
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    ap.add_argument("--render", nargs="+", metavar="RESULT.json", help="print markdown tables of saved results and exit")
    return ap


def resolve_args(args) -> argparse.Namespace:
    """Fill the size options left unset from DEFAULTS (or QUICK with --quick); check them; SystemExit on error."""
    base = {**DEFAULTS, **(QUICK if args.quick else {})}
    for key in ("n_per_class", "n_task", "train_subset", "speed_batch", "repeats", "samplers", "examples"):
        if getattr(args, key) is None:
            setattr(args, key, base[key])
    if args.epochs is None and args.quick:
        args.epochs = QUICK["epochs"]
    if min(args.n_per_class, args.n_task, args.speed_batch, args.repeats, args.threads, args.batch_size,
           args.speed_steps) < 1 or (args.epochs is not None and args.epochs < 1):
        raise SystemExit("error: --n-per-class, --n-task, --epochs, --speed-batch, --repeats, --threads, --batch-size "
                         "and --speed-steps must be at least 1")
    if args.examples < 0 or args.sigma < 0 or not 0 < args.strength <= 1:
        raise SystemExit("error: --examples and --sigma must be >= 0, --strength in (0, 1]")
    if args.train_subset < 0 or 0 < args.train_subset < 10:
        raise SystemExit("error: --train-subset must be 0 (the whole train split) or at least 10 (one per class)")
    if args.steps is not None and args.steps < 1:
        raise SystemExit("error: --steps must be at least 1")
    try:
        args.sampler_list = parse_samplers(args.samplers)
        if args.sampler:
            parse_samplers(args.sampler)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    return args


def pick_models(args) -> Dict[str, str]:
    """{dataset: model name or path} from --dataset / --model and the bundled pretrained models."""
    from polydiff.plugins import registry

    pretrained = registry().modality("image").pretrained
    wanted = list(dict.fromkeys(args.dataset or []))
    if args.model:
        if len(wanted) > 1:
            raise SystemExit("error: --model replaces the model of one dataset; give at most one --dataset with it")
        if not wanted:
            from polydiff.errors import PolydiffError
            from polydiff.model import Model

            try:
                enc = Model.load(args.model, modality="image", device="cpu").encoder
            except PolydiffError as e:
                raise SystemExit(f"error: {e}")
            name = dataset_of_model(enc)
            if name is None:
                raise SystemExit(f"error: {args.model}: neither an MNIST nor a CIFAR-10 model (classes "
                                 f"{', '.join(enc.classes) or 'none'}, {enc.image_size}x{enc.image_size}); "
                                 "this benchmark needs one")
            wanted = [name]
        return {wanted[0]: args.model}
    if not wanted:
        wanted = [n for n in DATASET_NAMES if n in pretrained]
        if not wanted:
            raise SystemExit("error: no pretrained mnist or cifar10 image model is bundled; give --model PATH")
    missing = [n for n in wanted if n not in pretrained]
    if missing:
        raise SystemExit(f"error: no pretrained {missing[0]} model is bundled; give --model PATH with --dataset {missing[0]}")
    return {n: n for n in wanted}


def run(args) -> dict:
    """The whole benchmark for resolved ``args``: the result document."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    clock = Stopwatch()
    models = pick_models(args)
    try:
        load_avg = list(os.getloadavg())
    except OSError:
        load_avg = None
    doc = {"benchmark": "images",
           "command": " ".join([os.path.basename(sys.executable), "benchmarks/images.py"] + list(args.argv)),
           "machine": {"platform": platform.platform(), "cpu": cpu_name(), "cpus": os.cpu_count(),
                       "threads": args.threads, "device": args.device, "load_avg_start": load_avg},
           "versions": versions(),
           "config": {k: getattr(args, k) for k in ("seed", "n_per_class", "n_task", "epochs", "train_subset", "sampler",
                                                    "steps", "cfg_scale", "batch_size", "strength", "sigma",
                                                    "sampler_list", "speed_steps", "speed_batch", "repeats",
                                                    "skip_speed", "quick")},
           "targets": {n: TARGETS[n] for n in models}, "datasets": {}}
    doc["config"]["samplers"] = doc["config"].pop("sampler_list")
    for name, ref in models.items():
        doc["datasets"][name] = run_dataset(name, ref, args, clock)
    doc["checks"] = {f"{n}/{k}": c for n, d in doc["datasets"].items() for k, c in d["checks"].items()}
    try:
        doc["machine"]["load_avg_end"] = list(os.getloadavg())
    except OSError:
        pass
    doc["seconds"] = {"wall": clock.wall, "cpu": clock.cpu}
    doc["wall_s"] = time.perf_counter() - t_start
    doc["cpu_s"] = time.process_time() - cpu_start
    doc["machine"]["cpu_share"] = doc["cpu_s"] / (doc["wall_s"] * args.threads) if args.device == "cpu" else None
    return doc


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.render:
        print(render_markdown(args.render))
        return
    args = resolve_args(args)
    args.argv = argv
    doc = run(args)
    if args.json:
        print(json.dumps(doc, indent=1))
        for name, c in doc["checks"].items():
            log(f"{name}: {_fmt_check(c)}")
        return
    print(render_doc(doc))


if __name__ == "__main__":
    main()
