"""Ladders fitted to one model: the noise levels a few-step sampler samples best with.

A sampler's error at a small budget depends mostly on where its steps fall. :func:`fit_ladder` places
them for one denoiser, in the spirit of Sabour et al. 2024 ("Align Your Steps"): it searches the log noise
levels of a ``steps``-step ladder (Nelder-Mead, derivative-free, so it works with every sampler, the
stochastic ones on common random numbers included) to minimise the sliced Wasserstein-2 distance between
what the sampler draws on that ladder and what a fine solve of the same model draws from the same starting
noise. The reference is the model's own ODE, not data, so no training data is needed and the fit
measures the solver's discretisation error only; the paired start removes the finite-sample floor that a
comparison with fresh samples would add.

    from polydiff.tuning import fit_model_ladder
    sigmas = fit_model_ladder(model, sampler="unipc", steps=10)   # list of 10 floats, largest first

A bundle stores the result as its default schedule (``schedule: fitted``, ``schedule_args.sigmas``;
``polydiff ladder MODEL --out BUNDLE``), and :func:`polydiff.schedules.fitted` stretches it to other step
counts.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from .errors import PolydiffError

__all__ = ["fit_ladder", "fit_model_ladder", "ladder_distance", "candidate_ladders"]


def ladder_distance(reference: torch.Tensor, projections: int = 64, seed: int = 0) -> Callable[[torch.Tensor], float]:
    """``f(x) -> float``: the sliced Wasserstein-2 distance of a sample batch ``x`` to ``reference`` (same
    number of items) along ``projections`` fixed random directions (``seed``): the distance of
    :func:`polydiff.metrics.sliced_wasserstein` for sets of equal size, with the reference's projections
    sorted once for the many calls of a fit."""
    from .metrics import unit_directions

    ref = reference.reshape(len(reference), -1).double().cpu()
    dirs = unit_directions(projections, ref.shape[1], torch.Generator().manual_seed(int(seed)))
    ref_sorted = torch.sort(ref @ dirs.T, dim=0).values

    def distance(x: torch.Tensor) -> float:
        x = x.reshape(len(x), -1).double().cpu()
        if x.shape != ref.shape:
            raise PolydiffError(f"a ladder's samples have shape {tuple(x.shape)}, the reference {tuple(ref.shape)}")
        v = float(((torch.sort(x @ dirs.T, dim=0).values - ref_sorted) ** 2).mean().sqrt())
        return v if math.isfinite(v) else math.inf

    return distance


def _to_point(log_levels: np.ndarray) -> np.ndarray:
    """A point of the search space: the top log level, then the log of each gap between log levels."""
    return np.concatenate([log_levels[:1], np.log(-np.diff(log_levels))])


def _to_ladder(p: np.ndarray, steps: int) -> torch.Tensor:
    """The ``steps``-step ladder of a search point ``p`` (:func:`_to_point`): its levels themselves when
    there are ``steps`` of them, else :func:`polydiff.schedules.fitted`'s log-linear stretch of them."""
    from .schedules import fitted

    logs = p[0] - np.concatenate([[0.0], np.cumsum(np.exp(p[1:]))])
    levels = np.exp(logs)
    if len(levels) == steps:
        return torch.tensor(list(levels) + [0.0], dtype=torch.float32)
    return fitted(steps, sigmas=list(levels))


def candidate_ladders(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0) -> dict:
    """The built-in ladders of ``steps`` steps a fit may start from: Karras and exponential over
    [sigma_min, sigma_max], and the VP-derived ones (vp_linear, cosine, ddpm_discrete) at their defaults."""
    from . import schedules as L

    out = {"karras": L.karras(steps, sigma_min, sigma_max), "exponential": L.exponential(steps, sigma_min, sigma_max)}
    for name in ("vp_linear", "cosine", "ddpm_discrete"):
        out[name] = L.LADDERS[name](steps)
    return out


def _levels(ladder) -> torch.Tensor:
    ladder = torch.as_tensor(ladder, dtype=torch.float64)
    levels = ladder[ladder > 0]
    if len(levels) < 2 or len(levels) != len(ladder) - 1 or not bool((levels[1:] < levels[:-1]).all()):
        raise PolydiffError("a starting ladder must be strictly decreasing positive levels followed by one 0")
    return levels


def fit_ladder(sample: Callable[[torch.Tensor], torch.Tensor], reference: torch.Tensor, init, *,
               knots: Optional[int] = None, projections: int = 64, seed: int = 0, max_evals: int = 1500,
               progress: bool = False) -> List[float]:
    """The levels (largest first, without the final 0) of a ladder that minimise the sliced W2 distance
    between ``sample(sigmas)`` and ``reference``.

    ``sample(sigmas) -> x`` runs the sampler on a ladder (``steps + 1`` levels ending in 0) from fixed
    starting noise scaled by ``sigmas[0]``; ``reference`` is the same model's fine solve from the same noise
    (shaped like ``x``); ``init``: the starting ladder (ending in 0), or several of the same length, of which
    the search starts from the best. The search runs over the top log level and the logs of the gaps
    between log levels (so every point is a strictly decreasing ladder, and no step can collapse onto
    another and be lost to the search) with Nelder-Mead, restarted from the best point while the budget lasts, for at
    most ``max_evals`` calls of ``sample`` (the starting ladders included); the best ladder seen is
    returned, never one worse than the starting ones. ``knots`` (2 to ``steps``; default ``steps``): search
    that many levels and stretch them to the ladder log-linearly (:func:`polydiff.schedules.fitted`), a
    smaller search for models whose every sampling run is expensive."""
    from scipy.optimize import minimize

    inits = list(init.values()) if isinstance(init, dict) else \
        [init] if torch.is_tensor(init) and init.dim() == 1 else list(init)
    starts = [_levels(v) for v in inits]
    if len({len(v) for v in starts}) != 1:
        raise PolydiffError("the starting ladders must all have the same number of steps")
    steps = len(starts[0])
    k = steps if knots is None else int(knots)
    if not 2 <= k <= steps:
        raise PolydiffError(f"knots must be between 2 and the number of steps ({steps}), got {knots}")
    if max_evals < len(starts):
        raise PolydiffError(f"max_evals must be at least the number of starting ladders ({len(starts)}), got {max_evals}")
    dist = ladder_distance(reference, projections, seed)
    best = {"f": math.inf, "ladder": None}  # the best ladder sampled, starting ladders (exact) included
    search = {"f": math.inf, "p": None}  # the best point of the search space
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_evals, desc="fitting the ladder", unit="runs", leave=False)

    def measure(ladder: torch.Tensor) -> float:
        v = dist(sample(ladder))
        if v < best["f"]:
            best["f"], best["ladder"] = v, ladder
        if bar is not None:
            bar.update(1)
            bar.set_postfix(distance=f"{best['f']:.4g}", refresh=False)
        return v

    def objective(p: np.ndarray) -> float:
        if not np.all(np.isfinite(p)) or not -12 < p[0] < 12 or np.any(p[1:] > 5) or np.any(p[1:] < -12):
            return 1e6  # runaway levels: outside the search space
        ladder = _to_ladder(p, steps)
        if not float(ladder[-2]) > 1e-6:
            return 1e6
        v = measure(ladder)
        if v < search["f"]:
            search["f"], search["p"] = v, np.array(p, dtype=np.float64)
        return v

    grid, pos = np.linspace(0, 1, k), np.linspace(0, 1, steps)
    spent = 0
    for v in starts:  # each starting ladder as given, and as a point of the search space
        logs = v.log().numpy()
        f = measure(torch.cat([v, v.new_zeros(1)]).to(torch.float32))
        spent += 1
        if k == steps:
            if f < search["f"]:
                search["f"], search["p"] = f, _to_point(logs)
        elif spent < max_evals:
            objective(_to_point(np.interp(grid, pos, logs)))
            spent += 1
    if best["ladder"] is None:
        raise PolydiffError("the sampler did not give finite samples on any starting ladder")
    remaining = max_evals - spent
    start = search["p"]
    while start is not None and remaining > k + 1:  # restart from the best point while budget remains
        res = minimize(objective, start, method="Nelder-Mead",
                       options={"maxfev": remaining, "xatol": 1e-3, "fatol": 1e-7, "adaptive": True})
        remaining -= int(res.nfev)
        if np.allclose(search["p"], start, atol=1e-6):
            break  # a restart that found nothing better: converged
        start = search["p"]
    if bar is not None:
        bar.close()
    return [float(v) for v in best["ladder"][:-1]]


def fit_model_ladder(model, *, sampler: Optional[str] = None, steps: Optional[int] = None,
                     init: Optional[Sequence[float]] = None, samples: int = 2048, reference_steps: int = 200,
                     max_evals: int = 1500, knots: Optional[int] = None, seed: int = 0, progress: bool = False,
                     **options) -> List[float]:
    """:func:`fit_ladder` for a :class:`polydiff.model.Model`: ``samples`` draws of its sampling run (the
    model's guidance, precision and conditions; ``options`` go to its ``make_cond``) with ``sampler`` and
    ``steps`` [the model's], against ``reference_steps`` Heun steps on a Karras ladder from the highest
    starting level, from the same seed. ``init``: the starting levels [the best of the model's own ladder
    and :func:`candidate_ladders` over its range]."""
    from .sampling import run
    from .schedules import karras

    sc = model.config.get("sample", {})
    name = sampler or sc.get("sampler", "dpmpp_2m")
    n_steps = int(steps or sc.get("steps", 20))
    if n_steps < 2:
        raise PolydiffError(f"a fitted ladder needs at least 2 steps, got {n_steps}")
    if samples < 2:
        raise PolydiffError(f"samples must be at least 2, got {samples}")
    own = model.sigmas(n_steps)
    smin, smax = float(own[own > 0].min()), float(own[0])
    if init is None:
        starts = {"model": own, **candidate_ladders(n_steps, min(smin, 0.002), smax)}
    else:
        starts = {"given": torch.tensor([float(v) for v in init] + [0.0], dtype=torch.float32)}
    top = max(float(v[0]) for v in starts.values())
    fine = karras(int(reference_steps), sigma_min=min(smin, 0.002), sigma_max=top)
    reference, _ = run(model, n=samples, sigmas=fine, sampler="heun", seed=seed, **options)

    def sample(sigmas: torch.Tensor) -> torch.Tensor:
        x, _ = run(model, n=samples, sigmas=sigmas, sampler=name, seed=seed, **options)
        return x

    return fit_ladder(sample, reference, starts, knots=knots, seed=seed, max_evals=max_evals, progress=progress)
