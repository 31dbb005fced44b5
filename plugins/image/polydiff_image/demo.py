"""`polydiff demo` for images: an MNIST grid (two of every digit), an inpainting example on held-out
digits, the same digits upscaled x4 from 7 x 7 by the super-resolution model, and a CIFAR-10 grid when
those checkpoints are bundled.

The grid is what

    polydiff sample image --model mnist -n 20 --seed 0 --out DIR

writes (``--label all``, the default, cycles through the classes: image i is digit i mod 10). The
inpainting example hides the centre 12 x 12 pixels of three bundled held-out digits (never seen in
training) and lets the model redraw them, with 5 RePaint resampling passes per step;
``inpainting.png`` shows original | masked | filled, one row per digit.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

#: RePaint resampling passes of the inpainting example (``polydiff inpaint image --resample 5``)
RESAMPLE = 5


def run(out, echo=print, device=None, n: int = 20, seed: int = 0) -> dict:
    from polydiff.model import Model

    from . import datasets, io as image_io
    from .encoder import Images
    from .encoder import from_tensor, to_tensor
    from .tasks import block_mean, inpaint_arrays, upscale_arrays

    out = Path(out)
    m = Model.load("mnist", modality="image", device=device)
    sc = m.config.get("sample", {})
    t0 = time.perf_counter()
    imgs = m.generate(n, seed=seed, label="all")
    seconds = time.perf_counter() - t0
    files = m.encoder.write(imgs, out / "mnist")
    echo(f"MNIST digits: {n} class-conditional 28x28 samples ({sc.get('sampler')}, {sc.get('steps')} steps, seed "
         f"{seed}) in {seconds:.2f} s ({n / seconds:.1f} images/s on {m.device.type}); grid: {files[-1]}")
    echo(f"  (same as: polydiff sample image --model mnist -n {n} --seed {seed} --out {out / 'mnist'})")

    sample = datasets.mnist_sample()
    picks = [sample.labels.index(d) for d in (2, 5, 8)]
    originals = np.stack([sample.arrays[i] for i in picks])
    hole = np.zeros((28, 28), bool)
    hole[8:20, 8:20] = True
    t0 = time.perf_counter()
    filled = inpaint_arrays(m, originals, hole, seed=seed, resample_passes=RESAMPLE)
    masked = originals.copy()
    masked[:, hole] = 128
    tiles = []
    for o, k, f in zip(originals, masked, filled):
        tiles += [o, k, f]
    path = image_io.write_png(out / "inpainting.png", image_io.grid(tiles, cols=3, scale=4))
    kept = bool(np.array_equal(filled[:, ~hole], originals[:, ~hole]))
    echo(f"inpainting: the centre 12x12 of 3 held-out digits redrawn in {time.perf_counter() - t0:.2f} s; "
         f"pixels outside the hole kept exactly: {kept}; {path} (original | masked | filled)")
    echo(f"  (one image: polydiff inpaint image IMG.png --mask MASK.png --resample {RESAMPLE} --out FILLED.png)")
    result = {"n": n, "seconds": seconds, "files": [str(f) for f in files] + [str(path)], "kept_exactly": kept}

    if "mnist_sr" in m.modality.pretrained:
        sr = Model.load("mnist_sr", modality="image", device=device)
        t0 = time.perf_counter()
        low = from_tensor(block_mean(to_tensor(originals), 4))
        big = upscale_arrays(sr, low, 4, seed=seed)
        tiles = []
        for lo, b, o in zip(low, big, originals):
            tiles += [np.repeat(np.repeat(lo, 4, 0), 4, 1), b, o]
        path = image_io.write_png(out / "upscaling.png", image_io.grid(tiles, cols=3, scale=4))
        echo(f"super-resolution x4: the same digits from 7x7 block means back to 28x28 with mnist_sr in "
             f"{time.perf_counter() - t0:.2f} s; {path} (7x7 input | upscaled | original)")
        echo("  (one image: polydiff upscale image SMALL.png --factor 4 --out BIG.png)")
        result["files"].append(str(path))

    if "cifar10" in m.modality.pretrained:
        c = Model.load("cifar10", modality="image", device=device)
        t0 = time.perf_counter()
        cimgs = c.generate(10, seed=seed, label="all")
        cfiles = c.encoder.write(Images(cimgs.arrays, cimgs.labels, cimgs.classes), out / "cifar10")
        echo(f"CIFAR-10: one 32x32 sample per class ({', '.join(c.encoder.classes)}) in "
             f"{time.perf_counter() - t0:.2f} s; grid: {cfiles[-1]}")
        result["files"] += [str(f) for f in cfiles]
    return result
