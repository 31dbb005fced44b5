"""Pictures and the ``polydiff demo`` act of the points plugin."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def scatter(sets: Sequence, path, titles: Optional[List[str]] = None, classes: Sequence[str] = (), lim: float = 3.0):
    """Save a row of scatter plots (one per PointSet), coloured by label."""
    from polydiff.checkpoint import atomic_write_bytes

    plt = _plt()
    fig, axes = plt.subplots(1, len(sets), figsize=(2.6 * len(sets), 2.8), squeeze=False)
    for k, (ax, s) in enumerate(zip(axes[0], sets)):
        if s.labels is not None:
            for lab in np.unique(s.labels):
                sel = s.labels == lab
                name = classes[lab] if 0 <= lab < len(classes) else ("unconditional" if lab < 0 else str(lab))
                ax.scatter(s.xy[sel, 0], s.xy[sel, 1], s=1.5, alpha=0.6, color=COLORS[int(lab) % len(COLORS)], label=name)
        else:
            ax.scatter(s.xy[:, 0], s.xy[:, 1], s=1.5, alpha=0.6, color=COLORS[0])
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_title(titles[k], fontsize=9)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def draw_frames(encoder, frames: List[torch.Tensor], cond: dict, path, titles: Optional[List[str]] = None, max_frames: int = 8):
    """A strip of x0 estimates along a sampling run (the modality's ``draw`` hook for --trajectory)."""
    idx = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    sets = [encoder.decode(frames[i], cond) for i in idx]
    return scatter(sets, path, titles=[titles[i] for i in idx] if titles else None, classes=encoder.classes)


def run(out: Path, echo=print, device=None):
    """Sample each shape from the bundled checkpoint, measure it, and draw the pictures."""
    import polydiff
    from polydiff.noising import add_noise

    from .datasets import shapes, sliced_wasserstein_to
    from .encoder import PointSet

    model = polydiff.load("points:shapes", device=device)
    enc = model.encoder
    real = shapes(n=6000, seed=123)

    # 1. the forward process: the data dissolving into noise as sigma grows
    x0, cond = enc.encode(real)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    levels = [0.0, 0.05, 0.2, 0.5, 1.0, 2.0]
    noisy = [enc.decode(add_noise(x0, torch.full((len(x0),), s), noise), cond) for s in levels]
    scatter(noisy, out / "forward.png", titles=[f"sigma = {s:g}" for s in levels], classes=enc.classes, lim=5.0)

    # 2. samples, per class, against fresh real data
    n_per = 2000
    frames: list = []
    t0 = time.perf_counter()
    x, c = model.sample(3 * n_per, seed=0, callback=lambda info: frames.append(info["denoised"].cpu()))
    secs = time.perf_counter() - t0
    gen = enc.decode(x.cpu(), {k: v.cpu() for k, v in c.items()})
    enc.write(gen, out / "samples.csv")
    scatter([real, gen], out / "real_vs_generated.png", titles=["real", "generated"], classes=enc.classes)
    sc = model.config["sample"]
    echo(f"sampled {len(gen)} points in {secs:.2f} s ({sc['sampler']}, {sc['steps']} steps, "
         f"{polydiff.samplers.nfe(sc['sampler'], sc['steps'])} network evaluations)")
    ref = shapes(n=6000, seed=7)
    for k, name in enumerate(enc.classes):
        g_k = PointSet(gen.xy[gen.labels == k])
        r_k = PointSet(real.xy[real.labels == k])
        rr = PointSet(ref.xy[ref.labels == k])
        echo(f"  {name:<7} sliced Wasserstein to real data {sliced_wasserstein_to(g_k, r_k):.4f} "
             f"(two real samples of the same size: {sliced_wasserstein_to(rr, r_k):.4f})")

    # 3. the reverse process: the x0 estimate at each step
    frames.append(x.cpu())
    draw_frames(enc, frames, {k: v.cpu() for k, v in c.items()}, out / "trajectory.png",
                titles=[f"step {i}" for i in range(len(frames) - 1)] + ["final"])
    echo(f"  pictures: {out / 'forward.png'}, {out / 'real_vs_generated.png'}, {out / 'trajectory.png'}")
