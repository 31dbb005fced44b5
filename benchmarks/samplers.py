"""Sampler benchmark: per-step overhead and sample quality per network evaluation, next to diffusers.

    .venv/bin/python benchmarks/samplers.py             # tables on stdout
    .venv/bin/python benchmarks/samplers.py --json      # one JSON document on stdout
    .venv/bin/python benchmarks/samplers.py --runs 5    # runs (timing) / seeds (quality) per median

Two parts.

**Overhead.** A small conv network (batch 16, 3x32x32) and an MLP (batch 4096, d = 32) are treated as
epsilon networks. polydiff drives them through :class:`polydiff.precond.EpsPrediction` (with the
identity as ``sigma_to_t``), diffusers through its standard loop ``scale_model_input -> model -> step``.
Both see the same network, the same batch, ``torch.inference_mode`` and 2 threads. A run's ratio is

    wall time of one full sampling run (ladder / set_timesteps included) / (NFE x time of one forward)

where the forward time is the mean of NFE back-to-back calls of the bare network, timed between the
polydiff and the diffusers run of the same configuration, so that both runs share the baseline and a
change in machine load between configurations does not bias the ratio. 1.00 means no overhead at all.

A third row, ``floor``, is the cheapest loop any sampler can be: Euler written out by hand in epsilon
form, ``eps = net(c_in * x, sigma); x = x + (sigma_next - sigma) * eps``, two full-size tensor operations
per evaluation and no abstraction at all. Its ratio is what this machine charges for the network's
inputs and outputs changing from call to call (allocation, caches), which the bare forward loop does
not pay; a sampler cannot go below it, so the floor is the yardstick for the other two rows.

Those direct ratios move by 5-15 % from run to run on a shared machine, more than a few percent of
overhead. So every loop is timed once more with :class:`ConstEps`, a network that costs nothing (the same
epsilon tensor for every call, so every tensor operation of the loop stays), the fastest of 3 x runs:
the loop's own cost per evaluation. With the forward time F, ``(F + loop) / (F + floor loop)`` is the
decomposed ratio to the floor that the targets use.

``--malloc-tuned`` raises glibc's mmap and trim thresholds in the benchmark process (``mallopt``) before
anything is measured, for every row alike; see docs/benchmarks.md for why it matters on CPU.

**Quality per NFE.** The target is a 2-D ring of 8 Gaussians whose exact posterior mean
(:class:`polydiff.gmm.GaussianMixture`) stands in for a perfectly trained network, so any remaining
error is the sampler's (plus the noise of a finite sample). The score is the sliced Wasserstein-2
distance (:func:`polydiff.metrics.sliced_wasserstein`, fixed projections) between the generated
samples and fresh samples of the true distribution. Rows:

* polydiff samplers on their default ladder ``karras(steps, sigma_min=0.002, sigma_max=80)``;
* diffusers schedulers with their default configuration on VP linear betas (1e-4 .. 0.02, 1000 steps),
  the exact denoiser wrapped as an epsilon network on the VP side;
* polydiff samplers on the sigma ladder of the matching diffusers scheduler, from the same starting
  noise (apples to apples; the largest difference to the diffusers result is reported too);
* polydiff samplers on every built-in ladder at NFE = 10 (informative).

Heun spends 2 * steps - 1 evaluations; its step counts are chosen as (NFE + 1) // 2, so its NFE is
the requested one or one less (5, 9, 19, 49).

**Few steps** (``--only few-step``). The same comparison at NFE 10 and 20 on a harder target: nine
Gaussians with unequal weights and widths (:func:`unequal_mixture`), 50,000 samples per seed; polydiff on
every built-in ladder (its default is ``karras(0.002, 80)``) against every diffusers scheduler in its
default configuration and with ``use_karras_sigmas=True``.
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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import polydiff
from polydiff import samplers as S
from polydiff import schedules as L
from polydiff.gmm import GaussianMixture
from polydiff.metrics import sliced_wasserstein
from polydiff.precond import EpsPrediction
from polydiff.tuning import candidate_ladders, fit_ladder

try:
    import diffusers
except ImportError:  # the comparison rows are skipped
    diffusers = None

SAMPLER_NAMES = ["euler", "heun", "ddim", "ddpm", "dpmpp_2m", "unipc"]
DIFFUSERS_CLASS = {
    "euler": "EulerDiscreteScheduler", "heun": "HeunDiscreteScheduler", "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler", "dpmpp_2m": "DPMSolverMultistepScheduler", "unipc": "UniPCMultistepScheduler",
}
VP_BETAS = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
OVERHEAD_STEPS = (10, 20, 50)
QUALITY_NFE = (5, 10, 20, 50)
N_SAMPLES = 10_000
N_PROJECTIONS = 128
PROJECTION_SEED = 1234
TARGETS = {"conv": 1.02, "mlp": 1.10}
BUILTIN_LADDERS = {k: v for k, v in L.LADDERS.items() if k != "fitted"}  # 'fitted' needs a model's levels


def steps_for(name: str, nfe: int) -> int:
    return (nfe + 1) // 2 if name == "heun" else nfe


# ------------------------------------------------------------------------------------------------
# diffusers side
# ------------------------------------------------------------------------------------------------
def make_scheduler(name: str):
    """The diffusers scheduler matching polydiff sampler ``name``, default settings on VP linear betas.

    DDIM and DDPM default to clipping x0 to [-1, 1], which is meant for images in that range; it is
    switched off since the ring has radius 2. Everything else is left at the library defaults.
    """
    cls = getattr(diffusers, DIFFUSERS_CLASS[name])
    extra = {"clip_sample": False} if name in ("ddim", "ddpm") else {}
    if name == "dpmpp_2m":
        extra.update(algorithm_type="dpmsolver++", solver_order=2)
    if name == "unipc":
        extra.update(solver_type="bh2", solver_order=2)
    return cls(**VP_BETAS, **extra)


def _is_vp(sched) -> bool:
    """True when the scheduler's samples live on the VP side (x_vp = x_sigma / sqrt(1 + sigma^2))."""
    return type(sched).__name__ not in ("EulerDiscreteScheduler", "HeunDiscreteScheduler")


def current_sigma(sched, t) -> float:
    """The VE noise level of the model call at timestep ``t`` (after scale_model_input)."""
    if type(sched).__name__ in ("DDIMScheduler", "DDPMScheduler"):
        ac = sched.alphas_cumprod[int(t)]
        return float(((1 - ac) / ac) ** 0.5)
    return float(sched.sigmas[sched.step_index or 0])


def diffusers_ladder(sched) -> torch.Tensor:
    """The sigma ladder a scheduler walks after ``set_timesteps`` (ending in 0)."""
    if type(sched).__name__ in ("DDIMScheduler", "DDPMScheduler"):
        ac = sched.alphas_cumprod[sched.timesteps.long()]
        return torch.cat([((1 - ac) / ac) ** 0.5, torch.zeros(1)]).float()
    return torch.unique_consecutive(sched.sigmas.float())


def diffusers_sample(sched, model, z, steps, generator=None):
    """The standard diffusers loop; returns the final sample (on the VE side, which at sigma = 0 is x0)."""
    sched.set_timesteps(steps)
    x = z * sched.init_noise_sigma
    kw = {"generator": generator} if type(sched).__name__ == "DDPMScheduler" else {}
    for t in sched.timesteps:
        eps = model(sched.scale_model_input(x, t), t)
        x = sched.step(eps, t, x, **kw).prev_sample
    return x


class GMMEps:
    """The exact GMM denoiser as a diffusers-style epsilon network on the VP side of ``sched``."""

    def __init__(self, gmm: GaussianMixture, sched):
        self.gmm, self.sched = gmm, sched

    def __call__(self, x_in, t):
        s = current_sigma(self.sched, t)
        x = x_in * math.sqrt(1 + s * s)  # model input is always VP-scaled: back to x_sigma
        x0 = self.gmm(x, torch.full((x.shape[0],), s, dtype=torch.float64))
        return (x - x0) / s


def start_point(sched, z, ladder):
    """polydiff's starting x (VE side) equal to diffusers' starting sample ``z * init_noise_sigma``."""
    x = z * float(sched.init_noise_sigma)
    return x * math.sqrt(1 + float(ladder[0]) ** 2) if _is_vp(sched) else x


# ------------------------------------------------------------------------------------------------
# overhead
# ------------------------------------------------------------------------------------------------
def _per_item(t, x):
    """The noise input as one value per item, whichever form the caller used, so that both libraries
    make the network do exactly the same work."""
    return torch.as_tensor(t, dtype=x.dtype).reshape(-1).expand(x.shape[0])


class ConvEps(nn.Module):
    """Three 3x3 convolutions with an additive noise embedding; tanh keeps the output bounded."""

    def __init__(self, ch: int = 32):
        super().__init__()
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.mid = nn.Conv2d(ch, ch, 3, padding=1)
        self.out = nn.Conv2d(ch, 3, 3, padding=1)
        self.emb = nn.Parameter(torch.randn(ch) * 0.01)

    def forward(self, x, t):
        t = _per_item(t, x)  # diffusers passes one timestep, polydiff one sigma per item
        h = F.silu(self.inp(x) + self.emb[:, None, None] * t[:, None, None, None])
        return torch.tanh(self.out(F.silu(self.mid(h))))


class MLPEps(nn.Module):
    """Three linear layers with an additive noise embedding; tanh keeps the output bounded."""

    def __init__(self, d: int = 32, width: int = 256):
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(d, width), nn.Linear(width, width), nn.Linear(width, d)
        self.emb = nn.Parameter(torch.randn(width) * 0.01)

    def forward(self, x, t):
        t = _per_item(t, x)
        h = F.silu(self.inp(x) + self.emb * t[:, None])
        return torch.tanh(self.out(F.silu(self.mid(h))))


def _identity(sigma):
    return sigma


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds to 256 MiB in this process (True if applied)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or platform.system() != "Linux":
        return False
    libc = ctypes.CDLL(name)
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 256 << 20)) and bool(libc.mallopt(m_trim_threshold, 256 << 20))


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def floor_loop(net, z, nfe: int) -> torch.Tensor:
    """The hand-written floor: Euler in epsilon form on the karras ladder, two tensor operations per evaluation."""
    sig = L.karras(nfe).tolist()
    x = z * sig[0]
    for i in range(nfe):
        eps = net(x * (sig[i] ** 2 + 1) ** -0.5, torch.full((z.shape[0],), sig[i]))
        x = torch.add(x, eps, alpha=sig[i + 1] - sig[i])
    return x


def overhead(runs: int, log) -> dict:
    torch.manual_seed(0)
    nets = {"conv": (ConvEps(), (16, 3, 32, 32)), "mlp": (MLPEps(), (4096, 32))}
    out = {}
    for key, (net, shape) in nets.items():
        net.eval()
        D = EpsPrediction(net, sigma_data=1.0, sigma_to_t=_identity)
        z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        t_probe = torch.tensor(1.0)
        scheds = {n: make_scheduler(n) for n in SAMPLER_NAMES} if diffusers else {}

        def run_polydiff(name, steps):
            sig = L.karras(steps)
            S.SAMPLERS[name](D, z * sig[0], sig, generator=torch.Generator().manual_seed(2))

        def run_diffusers(name, steps):
            diffusers_sample(scheds[name], net, z, steps, generator=torch.Generator().manual_seed(2))

        def run_forward(nfe):
            for _ in range(nfe):
                net(z, t_probe)

        def run_floor(nfe):
            return floor_loop(net, z, nfe)

        ratios = {"polydiff": {n: {s: [] for s in OVERHEAD_STEPS} for n in SAMPLER_NAMES},
                  "diffusers": {n: {s: [] for s in OVERHEAD_STEPS} for n in scheds},
                  "floor": {n: {s: [] for s in OVERHEAD_STEPS} for n in SAMPLER_NAMES}}
        extra_us = {lib: {n: {s: [] for s in OVERHEAD_STEPS} for n in tab} for lib, tab in ratios.items()}
        forward_ms = []
        with torch.inference_mode():
            for name in SAMPLER_NAMES:  # warm-up: every code path once
                run_polydiff(name, 10)
                if scheds:
                    run_diffusers(name, 10)
            run_forward(10)
            run_floor(10)
            for r in range(runs):
                for name in SAMPLER_NAMES:
                    for steps in OVERHEAD_STEPS:
                        nfe = S.nfe(name, steps)
                        # alternate the order so neither library always runs first
                        first_poly = (r + OVERHEAD_STEPS.index(steps)) % 2 == 0
                        if first_poly or not scheds:
                            tp = _timed(lambda: run_polydiff(name, steps))
                        tf = _timed(lambda: run_forward(nfe)) / nfe
                        tl = _timed(lambda: run_floor(nfe))
                        ratios["floor"][name][steps].append(tl / (nfe * tf))
                        extra_us["floor"][name][steps].append((tl / nfe - tf) * 1e6)
                        if scheds:
                            td = _timed(lambda: run_diffusers(name, steps))
                            ratios["diffusers"][name][steps].append(td / (nfe * tf))
                            extra_us["diffusers"][name][steps].append((td / nfe - tf) * 1e6)
                        if not (first_poly or not scheds):
                            tp = _timed(lambda: run_polydiff(name, steps))
                        ratios["polydiff"][name][steps].append(tp / (nfe * tf))
                        extra_us["polydiff"][name][steps].append((tp / nfe - tf) * 1e6)
                        forward_ms.append(tf * 1e3)
                log(f"overhead {key}: run {r + 1}/{runs} done")
        def med(table):
            return {lib: {n: {str(s): statistics.median(v) for s, v in d.items()} for n, d in tab.items()}
                    for lib, tab in table.items()}

        out[key] = {"batch_shape": list(shape), "forward_ms": statistics.median(forward_ms),
                    "network": " ".join(repr(net).split()), "ratio": med(ratios),
                    "overhead_us_per_nfe": med(extra_us)}
        out[key].update(loop_cost(shape, scheds, out[key]["forward_ms"] * 1e3, 3 * runs, log, key))
    return out


class ConstEps(nn.Module):
    """A network that costs nothing: the same epsilon tensor for every call."""

    def __init__(self, shape):
        super().__init__()
        self.eps = 0.1 * torch.randn(shape, generator=torch.Generator().manual_seed(3))

    def forward(self, x, t):
        return self.eps


def loop_cost(shape, scheds, forward_us: float, reps: int, log, key: str) -> dict:
    """What a sampler costs besides the network: every loop of :func:`overhead` run with :class:`ConstEps`
    in place of the network (same batch shape, same tensor operations), the fastest of ``reps`` runs per NFE
    in microseconds. With the network's forward time F this gives the decomposed ratio (F + loop) / F, and
    (F + loop) / (F + floor loop) against the hand-written floor: the same quantity as the direct ratios,
    without the run-to-run noise of a network that takes 1,000 times longer than the loop (the direct
    paired ratios of one configuration spread over +-15 % on this machine)."""
    net = ConstEps(shape)
    D = EpsPrediction(net, sigma_data=1.0, sigma_to_t=_identity)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    runs = {
        "polydiff": lambda name, steps: S.SAMPLERS[name](D, z * L.karras(steps)[0], L.karras(steps),
                                                         generator=torch.Generator().manual_seed(2)),
        "diffusers": (lambda name, steps: diffusers_sample(scheds[name], net, z, steps,
                                                           generator=torch.Generator().manual_seed(2))) if scheds else None,
    }

    runs["floor"] = lambda name, steps: floor_loop(net, z, S.nfe(name, steps))
    loop_us = {lib: {n: {} for n in SAMPLER_NAMES} for lib, fn in runs.items() if fn is not None}
    with torch.inference_mode():
        for name in SAMPLER_NAMES:
            for steps in OVERHEAD_STEPS:
                nfe = S.nfe(name, steps)
                for lib, fn in runs.items():
                    if fn is None:
                        continue
                    fn(name, steps)  # warm-up
                    loop_us[lib][name][str(steps)] = min(_timed(lambda: fn(name, steps)) for _ in range(reps)) / nfe * 1e6
    log(f"overhead {key}: loop cost measured")
    F = forward_us
    ratio = {lib: {n: {s: (F + v) / F for s, v in d.items()} for n, d in tab.items()} for lib, tab in loop_us.items()}
    vs_floor = {lib: {n: {s: (F + v) / (F + loop_us["floor"][n][s]) for s, v in d.items()} for n, d in tab.items()}
                for lib, tab in loop_us.items() if lib != "floor"}
    return {"loop_us_per_nfe": loop_us, "ratio_decomposed": ratio, "vs_floor_decomposed": vs_floor}


# ------------------------------------------------------------------------------------------------
# quality per NFE
# ------------------------------------------------------------------------------------------------
def _seed_sets(gmm: GaussianMixture, n: int, seed: int, proj):
    """One seed's reference sample, starting noise, noise floor (two fresh sample sets) and the sliced W2
    to the reference."""
    g = torch.Generator().manual_seed(seed)
    ref = gmm.sample(n, generator=g)
    other = gmm.sample(n, generator=g)
    z = torch.randn(n, 2, generator=g)
    floor = sliced_wasserstein(ref, other, N_PROJECTIONS, generator=proj())
    return z, floor, lambda x: sliced_wasserstein(x, ref, N_PROJECTIONS, generator=proj())


def quality(runs: int, log) -> dict:
    gmm = GaussianMixture.ring(k=8, radius=2.0, std=0.2)
    proj = lambda: torch.Generator().manual_seed(PROJECTION_SEED)  # noqa: E731 - same directions everywhere
    rows = {"polydiff_karras": {}, "polydiff_karras_matched_range": {}, "diffusers": {},
            "polydiff_on_diffusers_ladder": {}}
    maxdiff = {}
    ladders10 = {ln: {n: [] for n in SAMPLER_NAMES} for ln in BUILTIN_LADDERS}
    floor = []
    nfe_used = {}

    def put(table, name, nfe, value):
        table.setdefault(name, {}).setdefault(str(nfe), []).append(value)

    for seed in range(runs):
        z, fl, swd = _seed_sets(gmm, N_SAMPLES, seed, proj)
        floor.append(fl)
        noise_gen = lambda: torch.Generator().manual_seed(10_000 + seed)  # noqa: E731
        for nfe in QUALITY_NFE:
            for name in SAMPLER_NAMES:
                steps = steps_for(name, nfe)
                nfe_used.setdefault(name, {})[str(nfe)] = S.nfe(name, steps)
                sig = L.karras(steps, sigma_min=0.002, sigma_max=80.0)
                x = S.SAMPLERS[name](gmm, z * sig[0], sig, generator=noise_gen())
                put(rows["polydiff_karras"], name, nfe, swd(x))
                if diffusers is None:
                    continue
                sched = make_scheduler(name)
                xd = diffusers_sample(sched, GMMEps(gmm, sched), z, steps, generator=noise_gen())
                put(rows["diffusers"], name, nfe, swd(xd))
                lad = diffusers_ladder(sched)
                xp = S.SAMPLERS[name](gmm, start_point(sched, z, lad), lad, generator=noise_gen())
                put(rows["polydiff_on_diffusers_ladder"], name, nfe, swd(xp))
                # polydiff's karras spacing over the same noise range as the diffusers scheduler
                kr = L.karras(steps, sigma_min=float(lad[-2]), sigma_max=float(lad[0]))
                xk = S.SAMPLERS[name](gmm, z * kr[0], kr, generator=noise_gen())
                put(rows["polydiff_karras_matched_range"], name, nfe, swd(xk))
                put(maxdiff, name, nfe, float((xp - xd).abs().max()))
        for ln, fn in BUILTIN_LADDERS.items():
            for name in SAMPLER_NAMES:
                sig = fn(steps_for(name, 10))
                x = S.SAMPLERS[name](gmm, z * sig[0], sig, generator=noise_gen())
                ladders10[ln][name].append(swd(x))
        log(f"quality: seed {seed + 1}/{runs} done")

    def med(table):
        return {n: {k: statistics.median(v) for k, v in d.items()} for n, d in table.items()}

    return {
        "target": "GaussianMixture.ring(k=8, radius=2.0, std=0.2)",
        "n_samples": N_SAMPLES, "n_projections": N_PROJECTIONS, "seeds": list(range(runs)),
        "metric": "sliced Wasserstein-2 to fresh samples of the target (lower is better)",
        "nfe": nfe_used,
        "noise_floor": statistics.median(floor),
        "swd": {k: med(v) for k, v in rows.items() if v},
        "max_abs_diff_polydiff_vs_diffusers_same_ladder": {n: {k: max(v) for k, v in d.items()} for n, d in maxdiff.items()},
        "ladders_nfe10": {ln: {n: statistics.median(v) for n, v in d.items()} for ln, d in ladders10.items()},
    }


# ------------------------------------------------------------------------------------------------
# few-step quality on a mixture with unequal weights and widths
# ------------------------------------------------------------------------------------------------
FEW_STEP_NFE = (10, 20)
FEW_STEP_SAMPLES = 200_000
FEW_STEP_SAMPLERS = ["euler", "heun", "ddim", "dpmpp_2m", "unipc"]
FIT_SAMPLERS = ["dpmpp_2m", "unipc"]
FIT_SAMPLES = 8192
FIT_EVALS = 1500
FIT_SEED = 777  # the fit's own starting noise and projections: never one of the evaluation seeds


def unequal_mixture() -> GaussianMixture:
    """Nine modes on a 3 x 3 grid (spacing 2) with unequal weights (2 % to 30 %) and widths (0.08 to 0.5)."""
    c = torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64)
    gx, gy = torch.meshgrid(c, c, indexing="ij")
    means = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    stds = torch.tensor([0.1, 0.3, 0.15, 0.5, 0.2, 0.08, 0.25, 0.4, 0.12], dtype=torch.float64)
    weights = torch.tensor([0.3, 0.05, 0.1, 0.15, 0.02, 0.08, 0.12, 0.03, 0.15], dtype=torch.float64)
    return GaussianMixture(means, stds, weights)


def few_step(runs: int, log) -> dict:
    """Sliced W2 at NFE 10 and 20 on :func:`unequal_mixture` with its exact denoiser: polydiff as configured
    by default (the karras(0.002, 80) ladder of the bundled models) and on every built-in ladder, against
    every diffusers scheduler in its default configuration and with karras sigmas over its VP range."""
    gmm = unequal_mixture()
    proj = lambda: torch.Generator().manual_seed(PROJECTION_SEED)  # noqa: E731
    rows: dict = {}
    floor = []

    def put(table, name, nfe, value):
        rows.setdefault(table, {}).setdefault(name, {}).setdefault(str(nfe), []).append(value)

    fitted = {}
    zf = torch.randn(FIT_SAMPLES, 2, generator=torch.Generator().manual_seed(FIT_SEED))
    for nfe in FEW_STEP_NFE:
        starts = candidate_ladders(nfe)
        top = max(float(v[0]) for v in starts.values())
        fine = L.karras(400, sigma_min=0.002, sigma_max=top)
        reference = S.heun(gmm, zf * fine[0], fine)
        for name in FIT_SAMPLERS:
            t0 = time.perf_counter()
            levels = fit_ladder(lambda sig: S.SAMPLERS[name](gmm, zf * sig[0], sig), reference, starts,
                                seed=FIT_SEED, max_evals=FIT_EVALS)
            fitted.setdefault(name, {})[str(nfe)] = {"sigmas": levels, "seconds": time.perf_counter() - t0}
            log(f"few-step: fitted a {nfe}-step {name} ladder in {time.perf_counter() - t0:.0f} s")
    for seed in range(runs):
        z, fl, swd = _seed_sets(gmm, FEW_STEP_SAMPLES, seed, proj)
        floor.append(fl)
        noise = lambda: torch.Generator().manual_seed(20_000 + seed)  # noqa: E731
        for name, by_nfe in fitted.items():
            for nfe, f in by_nfe.items():
                sig = torch.tensor(f["sigmas"] + [0.0])
                put("polydiff_fitted", name, nfe, swd(S.SAMPLERS[name](gmm, z * sig[0], sig, generator=noise())))
        for nfe in FEW_STEP_NFE:
            for name in FEW_STEP_SAMPLERS:
                steps = steps_for(name, nfe)
                for ln, fn in BUILTIN_LADDERS.items():
                    sig = fn(steps)
                    put(f"polydiff_{ln}", name, nfe, swd(S.SAMPLERS[name](gmm, z * sig[0], sig, generator=noise())))
                if diffusers is None:
                    continue
                for karras in (False, True):
                    if karras and name == "ddim":
                        continue  # DDIMScheduler has no karras sigmas
                    sched = make_scheduler(name)
                    if karras:
                        sched = type(sched).from_config(sched.config, use_karras_sigmas=True)
                    xd = diffusers_sample(sched, GMMEps(gmm, sched), z, steps, generator=noise())
                    put("diffusers_karras" if karras else "diffusers", name, nfe, swd(xd))
        log(f"few-step: seed {seed + 1}/{runs} done")
    med = {t: {n: {k: statistics.median(v) for k, v in d.items()} for n, d in table.items()} for t, table in rows.items()}
    return {"target": "unequal_mixture(): 9 modes, weights 0.02-0.30, stds 0.08-0.5", "n_samples": FEW_STEP_SAMPLES,
            "seeds": list(range(runs)), "noise_floor": statistics.median(floor), "noise_floor_max": max(floor),
            "fit": {"samples": FIT_SAMPLES, "max_evals": FIT_EVALS, "seed": FIT_SEED, "reference": "heun, 400 steps",
                    "ladders": fitted},
            "swd": med,
            "spread": {t: {n: {k: [min(v), max(v)] for k, v in d.items()} for n, d in table.items()}
                       for t, table in rows.items()},
            "per_seed": rows}


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "os": platform.platform()}
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "diffusers": diffusers.__version__ if diffusers else None, "polydiff": polydiff.__version__}


def targets(res: dict) -> list:
    out = []
    ov = res.get("overhead")
    if ov:
        for key, limit in TARGETS.items():
            worst = max(v for d in ov[key]["ratio"]["polydiff"].values() for v in d.values())
            out.append({"name": f"overhead {key}: every polydiff sampler and step count <= {limit}",
                        "measured": round(worst, 4), "threshold": limit, "pass": worst <= limit})
        for key in TARGETS:
            rel = [ov[key]["ratio"]["polydiff"][n][s] / ov[key]["ratio"]["floor"][n][s]
                   for n in SAMPLER_NAMES for s in map(str, OVERHEAD_STEPS)]
            worst_floor = max(v for d in ov[key]["ratio"]["floor"].values() for v in d.values())
            out.append({"name": f"overhead {key} (informative): polydiff / floor, worst configuration; floor's "
                                f"own worst ratio {worst_floor:.3f}",
                        "measured": round(max(rel), 4), "threshold": "-", "pass": True})
        deterministic = [n for n in SAMPLER_NAMES if n != "ddpm"]
        for key in TARGETS:
            rel = {(n, s): ov[key]["ratio"]["polydiff"][n][s] / ov[key]["ratio"]["floor"][n][s]
                   for n in deterministic for s in ("20", "50")}
            (wn, ws), worst = max(rel.items(), key=lambda kv: kv[1])
            out.append({"name": f"overhead {key} (informative, direct): deterministic samplers at 20 and 50 steps, "
                                f"ratio of the medians to the hand-written floor of the same run",
                        "measured": f"worst {worst:.3f} ({wn}, {ws} steps)", "threshold": "-", "pass": True})
            if "vs_floor_decomposed" in ov[key]:
                rel = {(n, s): ov[key]["vs_floor_decomposed"]["polydiff"][n][s] for n in deterministic for s in ("20", "50")}
                (wn, ws), worst = max(rel.items(), key=lambda kv: kv[1])
                out.append({"name": f"overhead {key}: deterministic samplers at 20 and 50 steps within 1.03 x the "
                                    f"hand-written floor (decomposed: forward time + loop cost)",
                            "measured": f"worst {worst:.4f} ({wn}, {ws} steps)", "threshold": 1.03, "pass": worst <= 1.03})
        if "diffusers" in ov["mlp"]["ratio"] and ov["mlp"]["ratio"]["diffusers"]:
            pairs = [(n, s) for n in SAMPLER_NAMES for s in map(str, OVERHEAD_STEPS)]
            below = [p for p in pairs if ov["mlp"]["ratio"]["polydiff"][p[0]][p[1]] < ov["mlp"]["ratio"]["diffusers"][p[0]][p[1]]]
            out.append({"name": "overhead mlp (informative, direct): polydiff below the matching diffusers scheduler",
                        "measured": f"{len(below)}/{len(pairs)} configurations", "threshold": "-", "pass": True})
            if "loop_us_per_nfe" in ov["mlp"]:
                U = ov["mlp"]["loop_us_per_nfe"]
                below = [p for p in pairs if U["polydiff"][p[0]][p[1]] < U["diffusers"][p[0]][p[1]]]
                closest = min(pairs, key=lambda p: U["diffusers"][p[0]][p[1]] - U["polydiff"][p[0]][p[1]])
                out.append({"name": "overhead mlp: polydiff below the matching diffusers scheduler (loop cost per NFE)",
                            "measured": f"{len(below)}/{len(pairs)} configurations; closest {closest[0]} {closest[1]}: "
                                        f"{U['polydiff'][closest[0]][closest[1]]:.0f} vs "
                                        f"{U['diffusers'][closest[0]][closest[1]]:.0f} us",
                            "threshold": "all", "pass": len(below) == len(pairs)})
    q = res.get("quality")
    if q and "diffusers" in q["swd"]:
        best_d = min(q["swd"]["diffusers"].items(), key=lambda kv: kv[1]["10"])
        best_m = min(q["swd"]["polydiff_karras_matched_range"].items(), key=lambda kv: kv[1]["10"])
        out.append({"name": "quality NFE=10: best polydiff sampler (karras spacing over the diffusers scheduler's "
                            "sigma range) <= best diffusers scheduler",
                    "measured": f"{best_m[0]} {best_m[1]['10']:.4f} vs {DIFFUSERS_CLASS[best_d[0]]} {best_d[1]['10']:.4f}",
                    "threshold": "<=", "pass": best_m[1]["10"] <= best_d[1]["10"]})
        best_p = min(q["swd"]["polydiff_karras"].items(), key=lambda kv: kv[1]["10"])
        out.append({"name": "quality NFE=10 (informative): best polydiff sampler on the image-oriented default "
                            "karras(0.002, 80) <= best diffusers scheduler",
                    "measured": f"{best_p[0]} {best_p[1]['10']:.4f} vs {DIFFUSERS_CLASS[best_d[0]]} {best_d[1]['10']:.4f}",
                    "threshold": "<=", "pass": best_p[1]["10"] <= best_d[1]["10"]})
        best_a = min(q["swd"]["polydiff_on_diffusers_ladder"].items(), key=lambda kv: kv[1]["10"])
        out.append({"name": "quality NFE=10 on the diffusers ladders (informative): best polydiff sampler within 1% of "
                            "the best diffusers scheduler",
                    "measured": f"{best_a[0]} {best_a[1]['10']:.4f} vs {DIFFUSERS_CLASS[best_d[0]]} {best_d[1]['10']:.4f}",
                    "threshold": "<= 1.01 x", "pass": best_a[1]["10"] <= 1.01 * best_d[1]["10"]})
    fs = res.get("few_step")
    if fs and "diffusers" in fs["swd"]:
        for nfe in map(str, FEW_STEP_NFE):
            cand = [(f"{t}:{n}", v[nfe]) for t in ("diffusers", "diffusers_karras") for n, v in fs["swd"][t].items()]
            best_d = min(cand, key=lambda kv: kv[1])
            if "polydiff_fitted" in fs["swd"]:
                best_f = min(((n, v[nfe]) for n, v in fs["swd"]["polydiff_fitted"].items()), key=lambda kv: kv[1])
                seeds = ""
                if "per_seed" in fs:  # the same seed's noise and reference set on both sides: paired ratios
                    table, name = best_d[0].split(":")
                    pair = [a / b for a, b in zip(fs["per_seed"]["polydiff_fitted"][best_f[0]][nfe],
                                                  fs["per_seed"][table][name][nfe])]
                    seeds = f"; per seed {', '.join(f'{r:.2f}' for r in pair)}, worst {max(pair):.2f}"
                out.append({"name": f"few-step NFE={nfe}, unequal mixture: best polydiff sampler on the ladder fitted "
                                    f"to the denoiser (what `polydiff ladder` stores in a bundle) <= 0.9 x best "
                                    f"diffusers configuration (floor {fs['noise_floor']:.4f})",
                            "measured": f"{best_f[0]} {best_f[1]:.4f} vs {best_d[0]} {best_d[1]:.4f} "
                                        f"(ratio {best_f[1] / best_d[1]:.2f}{seeds})",
                            "threshold": "<= 0.9 x", "pass": best_f[1] <= 0.9 * best_d[1]})
            best_p = min(((n, v[nfe]) for n, v in fs["swd"]["polydiff_karras"].items()), key=lambda kv: kv[1])
            out.append({"name": f"few-step NFE={nfe} (informative): best polydiff sampler on the unfitted default "
                                f"ladder karras(0.002, 80)",
                        "measured": f"{best_p[0]} {best_p[1]:.4f} vs {best_d[0]} {best_d[1]:.4f} "
                                    f"(ratio {best_p[1] / best_d[1]:.2f})",
                        "threshold": "<= 0.9 x", "pass": best_p[1] <= 0.9 * best_d[1]})
            any_p = min(((f"{t}:{n}", v[nfe]) for t, tab in fs["swd"].items()
                         if t.startswith("polydiff_") and t != "polydiff_fitted"
                         for n, v in tab.items()), key=lambda kv: kv[1])
            out.append({"name": f"few-step NFE={nfe} (informative): best polydiff sampler on any built-in ladder",
                        "measured": f"{any_p[0]} {any_p[1]:.4f} vs {best_d[0]} {best_d[1]:.4f} "
                                    f"(ratio {any_p[1] / best_d[1]:.2f})",
                        "threshold": "<= 0.9 x", "pass": any_p[1] <= 0.9 * best_d[1]})
    return out


def print_tables(res: dict) -> None:
    m, v = res["machine"], res["versions"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}; "
          f"load average at start {m.get('load_average_at_start')}, at end {m.get('load_average_at_end')}")
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    print(f"runs per median: {res['runs']}; total wall time {res['wall_s']:.0f} s\n")
    ov = res.get("overhead")
    if ov:
        for key in ov:
            print(f"Overhead ratio, {key} (batch {ov[key]['batch_shape']}, one forward {ov[key]['forward_ms']:.2f} ms)")
            print(f"  {'sampler':<10}" + "".join(f"{'pd ' + str(s):>9}" for s in OVERHEAD_STEPS)
                  + "".join(f"{'df ' + str(s):>9}" for s in OVERHEAD_STEPS) + "  diffusers class")
            for n in SAMPLER_NAMES:
                p = ov[key]["ratio"]["polydiff"][n]
                d = ov[key]["ratio"].get("diffusers", {}).get(n)
                line = f"  {n:<10}" + "".join(f"{p[str(s)]:9.3f}" for s in OVERHEAD_STEPS)
                if d:
                    line += "".join(f"{d[str(s)]:9.3f}" for s in OVERHEAD_STEPS) + "  " + DIFFUSERS_CLASS[n]
                print(line)
            fl = ov[key]["ratio"]["floor"]
            print(f"  {'floor':<10}" + "".join(f"{statistics.median(fl[n][str(s)] for n in SAMPLER_NAMES):9.3f}"
                                               for s in OVERHEAD_STEPS) + "  (hand-written Euler, median over rows)")
            print("  extra time per network evaluation, microseconds (wall / NFE - one forward)")
            for n in SAMPLER_NAMES:
                p = ov[key]["overhead_us_per_nfe"]["polydiff"][n]
                d = ov[key]["overhead_us_per_nfe"].get("diffusers", {}).get(n)
                line = f"  {n:<10}" + "".join(f"{p[str(s)]:9.0f}" for s in OVERHEAD_STEPS)
                if d:
                    line += "".join(f"{d[str(s)]:9.0f}" for s in OVERHEAD_STEPS)
                print(line)
            if "loop_us_per_nfe" in ov[key]:
                U = ov[key]["loop_us_per_nfe"]
                print("  loop cost per network evaluation with a network that costs nothing, microseconds "
                      "(polydiff / diffusers / floor)")
                for n in SAMPLER_NAMES:
                    print(f"  {n:<10}" + "".join(f"{U[lib][n][str(s)]:9.0f}" for lib in U for s in OVERHEAD_STEPS))
            print()
    q = res.get("quality")
    if q:
        print(f"Quality: sliced W2 to the target, {q['n_samples']} samples, medians over {len(q['seeds'])} seeds; "
              f"noise floor (two fresh sample sets) {q['noise_floor']:.4f}")
        for table, title in [("polydiff_karras", "polydiff, karras(sigma_min=0.002, sigma_max=80)"),
                             ("polydiff_karras_matched_range", "polydiff, karras over the diffusers scheduler's sigma range"),
                             ("diffusers", "diffusers, default config, VP linear betas"),
                             ("polydiff_on_diffusers_ladder", "polydiff on the diffusers scheduler's ladder")]:
            if table not in q["swd"]:
                continue
            print(f"  {title}")
            print(f"    {'sampler':<10}" + "".join(f"{'NFE ' + str(n):>10}" for n in QUALITY_NFE))
            for n in SAMPLER_NAMES:
                row = q["swd"][table][n]
                print(f"    {n:<10}" + "".join(f"{row[str(k)]:10.4f}" for k in QUALITY_NFE))
        if q.get("max_abs_diff_polydiff_vs_diffusers_same_ladder"):
            print("  max |polydiff - diffusers| on the same ladder from the same noise")
            for n, d in q["max_abs_diff_polydiff_vs_diffusers_same_ladder"].items():
                print(f"    {n:<10}" + "".join(f"{d[str(k)]:10.1e}" for k in QUALITY_NFE))
        print("  polydiff samplers on every built-in ladder, NFE=10")
        print(f"    {'ladder':<14}" + "".join(f"{n:>10}" for n in SAMPLER_NAMES))
        for ln, d in q["ladders_nfe10"].items():
            print(f"    {ln:<14}" + "".join(f"{d[n]:10.4f}" for n in SAMPLER_NAMES))
        print()
    fs = res.get("few_step")
    if fs:
        print(f"Few-step quality, {fs['target']}: sliced W2, {fs['n_samples']} samples, medians over "
              f"{len(fs['seeds'])} seeds; noise floor {fs['noise_floor']:.4f}")
        print(f"  {'configuration':<34}" + "".join(f"{'NFE ' + str(n):>10}" for n in FEW_STEP_NFE))
        for table, tab in fs["swd"].items():
            for n, row in tab.items():
                print(f"  {table + ':' + n:<34}" + "".join(f"{row[str(k)]:10.4f}" for k in FEW_STEP_NFE))
        print()
    for t in res["targets"]:
        print(f"[{'PASS' if t['pass'] else 'FAIL'}] {t['name']}: {t['measured']}")


def render_overhead(path: str) -> str:
    """Markdown tables of the overhead part of a saved ``--json`` result."""
    res = json.load(open(path))
    ov = res["overhead"]
    steps = [str(s) for s in OVERHEAD_STEPS]
    lines = []
    for key in ov:
        R, U = ov[key]["ratio"], ov[key]["overhead_us_per_nfe"]
        lines += [f"**{key}, {'malloc tuned' if res.get('malloc_tuned') else 'default allocator'}** "
                  f"(batch {ov[key]['batch_shape']}, one forward {ov[key]['forward_ms']:.2f} ms; "
                  f"`{res['command']}`)", "",
                  "| sampler | " + " | ".join(f"{lib} {s}" for lib in ("polydiff", "diffusers", "floor") for s in steps) + " |",
                  "|---|" + "---|" * (3 * len(steps))]
        for n in SAMPLER_NAMES:
            cells = []
            for lib in ("polydiff", "diffusers", "floor"):
                for s in steps:
                    v = R.get(lib, {}).get(n, {}).get(s)
                    bold = lib == "polydiff" and v is not None and R.get("diffusers", {}).get(n, {}).get(s, 0) > v
                    cells.append("-" if v is None else (f"**{v:.3f}**" if bold else f"{v:.3f}"))
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines += ["", "Extra microseconds per network evaluation (wall / NFE - one forward):", "",
                  "| sampler | " + " | ".join(f"{lib} {s}" for lib in ("polydiff", "diffusers", "floor") for s in steps) + " |",
                  "|---|" + "---|" * (3 * len(steps))]
        for n in SAMPLER_NAMES:
            lines.append(f"| {n} | " + " | ".join(
                f"{U[lib][n][s]:.0f}" if n in U.get(lib, {}) else "-" for lib in ("polydiff", "diffusers", "floor") for s in steps) + " |")
        lines.append("")
        if "loop_us_per_nfe" in ov[key]:
            C, V = ov[key]["loop_us_per_nfe"], ov[key]["vs_floor_decomposed"]
            lines += ["Loop cost per network evaluation with a network that costs nothing (microseconds, fastest of "
                      f"{3 * res['runs']} runs), and the decomposed ratio to the hand-written floor, "
                      "(F + loop) / (F + floor loop) with F the forward time above:", "",
                      "| sampler | " + " | ".join(f"{lib} {s}" for lib in ("polydiff", "diffusers", "floor") for s in steps)
                      + " | " + " | ".join(f"polydiff / floor {s}" for s in steps) + " |",
                      "|---|" + "---|" * (4 * len(steps))]
            for n in SAMPLER_NAMES:
                lines.append(f"| {n} | " + " | ".join(
                    f"{C[lib][n][s]:.0f}" if n in C.get(lib, {}) else "-" for lib in ("polydiff", "diffusers", "floor")
                    for s in steps) + " | " + " | ".join(f"{V['polydiff'][n][s]:.4f}" for s in steps) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    ap.add_argument("--runs", type=int, default=5, help="timed runs / quality seeds per median (default 5)")
    ap.add_argument("--only", choices=["overhead", "quality", "few-step"], help="run one part only")
    ap.add_argument("--malloc-tuned", action="store_true",
                    help="raise glibc's mmap/trim thresholds in this process first (all rows alike)")
    ap.add_argument("--render", metavar="RESULT.json", help="print the overhead tables of a saved result as markdown and exit")
    args = ap.parse_args(argv)
    if args.render:
        print(render_overhead(args.render))
        return 0
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    torch.set_num_threads(2)
    malloc_tuned = tune_malloc() if args.malloc_tuned else False
    if args.malloc_tuned and not malloc_tuned:
        ap.error("--malloc-tuned needs glibc (Linux)")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731 - progress never goes to stdout
    if diffusers is None:
        log("diffusers is not installed: only the polydiff rows are measured")
    t0 = time.perf_counter()
    res = {"benchmark": "samplers", "command": "python benchmarks/samplers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "runs": args.runs, "malloc_tuned": malloc_tuned, "machine": machine(), "versions": versions()}
    if args.only in (None, "overhead"):
        res["overhead"] = overhead(args.runs, log)
    if args.only in (None, "quality"):
        # quality does not depend on the thread count, and the many small ops of a 2-D problem run
        # fastest on one thread
        torch.set_num_threads(1)
        res["quality"] = quality(args.runs, log)
        torch.set_num_threads(2)
    if args.only in (None, "few-step"):
        torch.set_num_threads(1)
        res["few_step"] = few_step(args.runs, log)
        torch.set_num_threads(2)
    res["wall_s"] = time.perf_counter() - t0
    if hasattr(os, "getloadavg"):
        res["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    res["targets"] = targets(res)
    if args.json:
        json.dump(res, sys.stdout, indent=1)
        print()
    else:
        print_tables(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
