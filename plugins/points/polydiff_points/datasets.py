"""Point-cloud datasets, generated from a seed (nothing is downloaded)."""
from __future__ import annotations

import math

import numpy as np

from .encoder import PointSet

__all__ = ["gmm", "moons", "spiral", "shapes", "DATASETS", "sliced_wasserstein_to"]


def gmm(n: int = 12000, seed: int = 0, k: int = 8, radius: float = 2.0, std: float = 0.15) -> PointSet:
    """k isotropic Gaussians on a ring (the classic 8-Gaussians target)."""
    rng = np.random.default_rng(seed)
    comp = rng.integers(0, k, n)
    ang = 2 * math.pi * comp / k
    xy = np.stack([radius * np.cos(ang), radius * np.sin(ang)], 1) + rng.normal(0, std, (n, 2))
    return PointSet(xy.astype(np.float32))


def moons(n: int = 12000, seed: int = 0, noise: float = 0.06) -> PointSet:
    """Two interleaving half circles, centred at the origin."""
    rng = np.random.default_rng(seed)
    upper = rng.random(n) < 0.5
    t = rng.random(n) * math.pi
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    xy = np.stack([x - 0.5, y - 0.25], 1) * 1.6 + rng.normal(0, noise, (n, 2))
    return PointSet(xy.astype(np.float32))


def spiral(n: int = 12000, seed: int = 0, turns: float = 2.0, noise: float = 0.05) -> PointSet:
    """An Archimedean spiral arm with radius growing from 0.2 to 2."""
    rng = np.random.default_rng(seed)
    u = np.sqrt(rng.random(n))  # uniform along the arm length
    theta = u * turns * 2 * math.pi
    r = 0.2 + 1.8 * u
    xy = np.stack([r * np.cos(theta), r * np.sin(theta)], 1) + rng.normal(0, noise, (n, 2))
    return PointSet(xy.astype(np.float32))


def shapes(n: int = 36000, seed: int = 0) -> PointSet:
    """All three shapes with class labels gmm = 0, moons = 1, spiral = 2 (for class-conditional models)."""
    parts = [gmm(n // 3, seed), moons(n // 3, seed + 1), spiral(n - 2 * (n // 3), seed + 2)]
    xy = np.concatenate([p.xy for p in parts])
    labels = np.concatenate([np.full(len(p.xy), i) for i, p in enumerate(parts)])
    return PointSet(xy, labels.astype(np.int64), ["gmm", "moons", "spiral"])


DATASETS = {"gmm": gmm, "moons": moons, "spiral": spiral, "shapes": shapes}


def sliced_wasserstein_to(generated: PointSet, reference: PointSet, seed: int = 0) -> float:
    """Sliced Wasserstein distance between two point sets (see polydiff.metrics.sliced_wasserstein)."""
    import torch
    from polydiff.metrics import sliced_wasserstein

    g = torch.Generator().manual_seed(seed)
    return float(sliced_wasserstein(torch.as_tensor(generated.xy), torch.as_tensor(reference.xy), generator=g))
