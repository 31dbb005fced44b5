"""Draw the figures of docs/concepts.md with polydiff itself.

    .venv/bin/python docs/figures.py            # writes docs/img/*.png

Every picture comes from the library's own pieces: a :class:`polydiff.gmm.GaussianMixture` as the data
distribution (its exact denoiser stands in for a perfectly trained network), the forward process of
:func:`polydiff.noising.add_noise`, the samplers of :mod:`polydiff.samplers`, the ladders of
:mod:`polydiff.schedules`, guidance from :mod:`polydiff.guidance` and the ELBO scorer of
:mod:`polydiff.scoring`. Everything is seeded, runs on a CPU in a few seconds, and needs no checkpoint.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from polydiff import guidance, samplers, schedules, scoring  # noqa: E402
from polydiff.gmm import GaussianMixture  # noqa: E402
from polydiff.noising import add_noise  # noqa: E402

OUT = Path(__file__).resolve().parent / "img"
DPI = 100
BLUE, RED, GREEN, PURPLE, ORANGE, GREY = "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f"
COLORS = [BLUE, RED, GREEN, PURPLE, ORANGE, "#8c564b", "#e377c2", "#17becf"]

plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False})

# The two toy data distributions used throughout: three bumps on a line, eight on a ring.
LINE = GaussianMixture(means=[[-1.5], [0.4], [2.0]], stds=0.15, weights=[0.3, 0.3, 0.4])
RING = GaussianMixture.ring(k=8, radius=2.0, std=0.12)


def save(fig, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    kb = path.stat().st_size / 1024
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path} ({kb:.0f} KB)")
    return path


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# (a) the forward process is a random walk
# ------------------------------------------------------------------------------------------------
def forward_random_walk() -> Path:
    """A few 1-D points take independent Gaussian steps; at time t their spread is sigma = sqrt(t)."""
    g = seeded(0)
    t_max, n_steps = 9.0, 600                      # t = sigma^2 runs to 9, i.e. sigma to 3
    t = torch.linspace(0.0, t_max, n_steps + 1, dtype=torch.float64)
    dt = t_max / n_steps

    def walks(x0: torch.Tensor) -> torch.Tensor:
        """[n, steps + 1] paths: x0 plus the running sum of N(0, dt) increments (Brownian motion)."""
        steps = torch.randn(x0.shape[0], n_steps, generator=g, dtype=torch.float64) * math.sqrt(dt)
        return x0[:, None] + torch.cat([torch.zeros(x0.shape[0], 1, dtype=torch.float64), steps.cumsum(1)], 1)

    x0 = LINE.sample(6, generator=g, dtype=torch.float64)[:, 0]
    paths = walks(x0)

    # Many more walkers, only to check the end points against the closed form below.
    many_x0 = LINE.sample(6000, generator=g, dtype=torch.float64)[:, 0]
    ends = walks(many_x0)[:, -1]
    # The same end points through the library's forward process: the summed increments are sigma * eps.
    sigma_end = torch.full((many_x0.shape[0],), math.sqrt(t_max), dtype=torch.float64)
    eps = (ends - many_x0) / sigma_end
    assert torch.allclose(add_noise(many_x0, sigma_end, eps), ends)

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.6, 3.6), gridspec_kw={"width_ratios": [1.35, 1]})
    tt = t.numpy()
    for i in range(paths.shape[0]):
        ax.plot(tt, paths[i].numpy(), lw=0.8, color=COLORS[i % len(COLORS)])
        ax.plot([0], [x0[i].item()], "o", ms=4, color=COLORS[i % len(COLORS)])
    ax.plot(tt, x0[0].item() + np.sqrt(tt), "--", color="k", lw=1)
    ax.plot(tt, x0[0].item() - np.sqrt(tt), "--", color="k", lw=1)
    ax.text(tt[-1], x0[0].item() + math.sqrt(t_max), r"  $x_0 \pm \sqrt{t}$", va="center", fontsize=8)
    ax.set_xlabel(r"time $t = \sigma^2$")
    ax.set_ylabel(r"$x_\sigma$")
    ax.set_title(r"random walks: $x_\sigma = x_0 + \sigma\,\varepsilon$")
    top = ax.secondary_xaxis("top", functions=(lambda v: np.sqrt(np.clip(v, 0, None)), lambda s: s**2))
    top.set_xticks([0, 1, 2, 3])
    top.set_xlabel(r"$\sigma$")
    ax.set_xlim(0, t_max * 1.12)

    xs = torch.linspace(-8, 8, 801, dtype=torch.float64)
    levels = [0.0, 0.3, 1.0, 2.0, 3.0]
    for k, s in enumerate(levels):
        dens = LINE.log_prob(xs[:, None], sigma=s).exp().numpy()
        bx.plot(xs.numpy(), dens, color=plt.cm.viridis(k / (len(levels) - 1)), lw=1.2, label=rf"$\sigma$ = {s:g}")
    bx.hist(ends.numpy(), bins=60, density=True, color=GREY, alpha=0.35,
            label=r"walk end points ($\sigma$ = 3)")
    bx.set_ylim(0, 1.2)
    bx.set_xlim(-8, 8)
    bx.set_xlabel("x")
    bx.set_ylabel(r"density $p_\sigma(x)$")
    bx.set_title("the marginal density widens")
    bx.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save(fig, "forward_random_walk.png")


# ------------------------------------------------------------------------------------------------
# (b) a 2-D point cloud dissolving into noise
# ------------------------------------------------------------------------------------------------
def forward_cloud() -> Path:
    g = seeded(1)
    x0 = RING.sample(1500, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    levels = [0.0, 0.2, 0.5, 1.0, 2.0, 4.0]
    fig, axes = plt.subplots(1, len(levels), figsize=(12, 2.3))
    for ax, s in zip(axes, levels):
        x = add_noise(x0, torch.full((x0.shape[0],), s), noise)   # the same noise at every level
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5, color=BLUE, rasterized=True)
        ax.set_title(rf"$\sigma$ = {s:g}")
        ax.set_xlim(-8, 8)
        ax.set_ylim(-8, 8)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save(fig, "forward_cloud.png")


# ------------------------------------------------------------------------------------------------
# (c) reverse trajectories under the Euler sampler
# ------------------------------------------------------------------------------------------------
def run_euler(D, x: torch.Tensor, sigmas: torch.Tensor):
    """Run polydiff.samplers.euler and keep every state and every x0 estimate."""
    states, estimates = [x.clone()], []

    def callback(info):
        states.append(info["x"].clone())
        estimates.append(info["denoised"].clone())

    samplers.euler(D, x, sigmas, callback=callback)
    return torch.stack(states), torch.stack(estimates)


def reverse_trajectories() -> Path:
    g = seeded(2)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.0), gridspec_kw={"width_ratios": [1.4, 1]})

    # 1-D: x against sigma on a log axis, with the x0 estimate the step moves towards
    sig = schedules.karras(20, sigma_min=0.02, sigma_max=6.0)
    x = torch.randn(8, 1, generator=g, dtype=torch.float64) * sig[0]
    states, estimates = run_euler(LINE, x, sig)
    s_plot = sig.clone()
    s_plot[-1] = 0.01  # the final 0 drawn just below the smallest sigma of the log axis
    for i in range(x.shape[0]):
        c = COLORS[i % len(COLORS)]
        ax.plot(s_plot.numpy(), states[:, i, 0].numpy(), "-", color=c, lw=1.0)
        ax.plot(sig[:-1].numpy(), estimates[:, i, 0].numpy(), ".", color=c, ms=4, alpha=0.7)
    for m in LINE.means[:, 0].tolist():
        ax.axhline(m, color=GREY, lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel(r"$\sigma$ (sampling runs left to right; the last point is $\sigma$ = 0)")
    ax.set_ylabel("x")
    ax.set_title(r"Euler steps (lines) and the estimates $D(x,\sigma)$ (dots)")

    # 2-D: paths on the ring
    sig2 = schedules.karras(18, sigma_min=0.01, sigma_max=8.0)
    x2 = torch.randn(14, 2, generator=g, dtype=torch.float64) * sig2[0]
    states2, estimates2 = run_euler(RING, x2, sig2)
    bg = RING.sample(2000, generator=g)
    bx.scatter(bg[:, 0], bg[:, 1], s=1, color=GREY, alpha=0.25, rasterized=True)
    for i in range(x2.shape[0]):
        c = COLORS[i % len(COLORS)]
        bx.plot(states2[:, i, 0].numpy(), states2[:, i, 1].numpy(), "-", color=c, lw=0.9)
        bx.plot(estimates2[:, i, 0].numpy(), estimates2[:, i, 1].numpy(), ".", color=c, ms=3, alpha=0.6)
        bx.plot(states2[-1, i, 0].item(), states2[-1, i, 1].item(), "*", color=c, ms=7)
    bx.set_xlim(-4, 4)
    bx.set_ylim(-4, 4)
    bx.set_aspect("equal")
    bx.set_title(r"2-D: paths from $\sigma$ = 8 (outside) to 0 (stars)")
    fig.tight_layout()
    return save(fig, "reverse_trajectories.png")


# ------------------------------------------------------------------------------------------------
# (d) noise ladders
# ------------------------------------------------------------------------------------------------
def ladders() -> Path:
    n = 18
    table = {
        "karras (rho = 7)": schedules.karras(n, sigma_min=0.002, sigma_max=80.0, rho=7.0),
        "karras (rho = 3)": schedules.karras(n, sigma_min=0.002, sigma_max=80.0, rho=3.0),
        "exponential": schedules.exponential(n, sigma_min=0.002, sigma_max=80.0),
        "vp_linear": schedules.vp_linear(n),
        "cosine": schedules.cosine(n),
    }
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for k, (name, sig) in enumerate(table.items()):
        assert sig[-1] == 0 and sig.shape[0] == n + 1
        ax.plot(range(n), sig[:-1].numpy(), "o-", ms=3, lw=1, color=COLORS[k], label=name)
    ax.set_yscale("log")
    ax.set_xlabel(f"step i (of {n}; every ladder then ends in sigma = 0)")
    ax.set_ylabel(r"$\sigma_i$")
    ax.set_title(f"sigma ladders with {n} steps")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return save(fig, "ladders.png")


# ------------------------------------------------------------------------------------------------
# (e) classifier-free guidance
# ------------------------------------------------------------------------------------------------
def class_denoiser(classes, everything):
    """D(x, sigma, label): the exact denoiser of one class, or of all the data where label == -1."""

    def D(x, sigma, label=None, **cond):
        out = everything(x, sigma)
        if label is None:
            return out
        for c, mix in enumerate(classes):
            rows = label == c
            if rows.any():
                out[rows] = mix(x[rows], sigma[rows])
        return out

    return D


def classifier_free_guidance() -> Path:
    # class 0: the four components on the axes, class 1: the four on the diagonals
    classes = [GaussianMixture(RING.means[0::2], 0.12), GaussianMixture(RING.means[1::2], 0.12)]
    D = class_denoiser(classes, RING)
    null = {"label": guidance.NULL_LABEL}
    sig = schedules.karras(24, sigma_min=0.01, sigma_max=20.0)
    n = 600
    panels = [("unconditional", -1, 1.0), ("label 0, scale 1", 0, 1.0), ("label 0, scale 3", 0, 3.0),
              ("label 0, scale 8", 0, 8.0)]
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 2.8))
    for ax, (title, label, scale) in zip(axes, panels):
        x = torch.randn(n, 2, generator=seeded(3), dtype=torch.float64) * sig[0]
        cond = {"label": torch.full((n,), label, dtype=torch.long)}
        out = samplers.heun(guidance.cfg_denoiser(D, scale, null), x, sig, cond=cond)
        ax.scatter(out[:, 0], out[:, 1], s=2, alpha=0.5, color=BLUE if label < 0 else RED, rasterized=True)
        ax.scatter(RING.means[:, 0], RING.means[:, 1], s=14, marker="+", color="k", lw=0.8)
        ax.set_title(title)
        ax.set_xlim(-3.5, 3.5)
        ax.set_ylim(-3.5, 3.5)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save(fig, "guidance.png")


# ------------------------------------------------------------------------------------------------
# (f) masked conditioning
# ------------------------------------------------------------------------------------------------
def exact_conditional_y(mix: GaussianMixture, known_x: float, ys: torch.Tensor) -> torch.Tensor:
    """p(y | x = known_x) of a 2-D isotropic mixture: a 1-D mixture reweighted by how well x fits each part."""
    v = mix.stds**2
    logw = mix.weights.log() - 0.5 * (known_x - mix.means[:, 0]) ** 2 / v - 0.5 * v.log()
    w = torch.softmax(logw, 0)
    comp = torch.exp(-0.5 * (ys[:, None] - mix.means[None, :, 1]) ** 2 / v) / torch.sqrt(2 * math.pi * v)
    return comp @ w


def masked_conditioning() -> Path:
    """Fix the x coordinate of each point and let the sampler generate y in agreement with it."""
    g = seeded(4)
    sig = schedules.karras(24, sigma_min=0.01, sigma_max=20.0)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.6, 3.9), gridspec_kw={"width_ratios": [1, 1.15]})
    bg = RING.sample(2000, generator=g)
    ax.scatter(bg[:, 0], bg[:, 1], s=1, color=GREY, alpha=0.25, rasterized=True)
    ys = torch.linspace(-3, 3, 601, dtype=torch.float64)
    for k, known_x in enumerate([-2.0, 0.0, 1.41]):
        n = 1000
        known = torch.zeros(n, 2, dtype=torch.float64)
        known[:, 0] = known_x
        mask = torch.tensor([1.0, 0.0], dtype=torch.float64).expand(n, 2)  # 1 = given, 0 = generate
        x = torch.randn(n, 2, generator=g, dtype=torch.float64) * sig[0]
        out = guidance.sample_masked(samplers.heun, RING, x, sig, known, mask)
        assert bool((out[:, 0] == known_x).all())  # the given values come back exactly
        ax.scatter(out[:150, 0], out[:150, 1], s=6, alpha=0.6, color=COLORS[k], label=f"x = {known_x:g} (given)")
        bx.hist(out[:, 1].numpy(), bins=60, range=(-3, 3), density=True, color=COLORS[k], alpha=0.35)
        bx.plot(ys.numpy(), exact_conditional_y(RING, known_x, ys).numpy(), color=COLORS[k], lw=1.2,
                label=f"x = {known_x:g}")
    ax.set_xlim(-3.5, 3.5)
    ax.set_ylim(-3.5, 3.5)
    ax.set_aspect("equal")
    ax.set_title("masked conditioning: x given, y generated")
    ax.legend(fontsize=7, frameon=False, loc="center")
    bx.set_xlabel("generated y")
    bx.set_ylabel("density")
    bx.set_title("generated y (bars) and the exact p(y | x) (lines)")
    bx.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save(fig, "masked.png")


# ------------------------------------------------------------------------------------------------
# (g) anomaly scores: how hard is each point to denoise?
# ------------------------------------------------------------------------------------------------
def anomaly_map() -> Path:
    # scoring.elbo needs only model.denoiser and model.config; the exact mixture denoiser plays the model
    model = SimpleNamespace(denoiser=RING, config={"sigma_data": 1.0})
    side = torch.linspace(-4, 4, 121, dtype=torch.float64)
    gy, gx = torch.meshgrid(side, side, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    score = scoring.elbo(model, grid, {}, n_sigmas=12).reshape(gx.shape)

    g = seeded(5)
    inliers = (RING.means[1::2] + 0.1 * torch.randn(4, 2, generator=g, dtype=torch.float64)).float()
    outliers = torch.tensor([[0.0, 0.0], [3.3, -2.6], [-1.0, 1.1]], dtype=torch.float32)
    s_in = scoring.elbo(model, inliers.double(), {}, n_sigmas=12)
    s_out = scoring.elbo(model, outliers.double(), {}, n_sigmas=12)

    fig, ax = plt.subplots(figsize=(4.9, 4.2))
    im = ax.pcolormesh(gx.numpy(), gy.numpy(), score.log10().numpy(), cmap="magma", shading="auto", rasterized=True)
    fig.colorbar(im, ax=ax, label="log10 ELBO score (higher = more anomalous)")
    ax.scatter(inliers[:, 0], inliers[:, 1], s=22, color="w", edgecolor="k", lw=0.6)
    ax.scatter(outliers[:, 0], outliers[:, 1], s=40, marker="X", color=GREEN, edgecolor="k", lw=0.6)
    for p, s in zip(inliers.tolist() + outliers.tolist(), s_in.tolist() + s_out.tolist()):
        ax.annotate(f"{s:.2g}", p, xytext=(4, 4), textcoords="offset points", fontsize=7, color="w")
    ax.set_aspect("equal")
    ax.set_title("denoising difficulty over the plane")
    fig.tight_layout()
    return save(fig, "anomaly_map.png")


# ------------------------------------------------------------------------------------------------
# (h) categorical data: tokens replaced by a mask
# ------------------------------------------------------------------------------------------------
def discrete_forward() -> Path:
    """Left: a sentence under the absorbing forward process at growing levels (one set of uniform numbers,
    so a token masked at one level stays masked above it). Right: the ancestral sampler with an exact
    denoiser of a small joint distribution, total variation to it against the number of steps."""
    import itertools

    from polydiff import discrete

    words = "The Eagle is a cheap coffee shop near the river .".split()
    levels = [0.0, 0.25, 0.5, 0.75, 1.0]
    u = torch.rand(len(words), generator=seeded(4))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.0), gridspec_kw={"width_ratios": [1.7, 1]})
    for r, lv in enumerate(levels):
        y = len(levels) - 1 - r
        ax.text(-0.6, y, f"level {lv:.2f}", ha="right", va="center")
        for i, w in enumerate(words):
            masked = bool(u[i] < lv)
            ax.text(i, y, "[M]" if masked else w, ha="center", va="center", fontsize=8,
                    color="white" if masked else "black",
                    bbox=dict(boxstyle="round,pad=0.25", fc=GREY if masked else "#e8f0fa", ec="none"))
    ax.set_xlim(-2.2, len(words) - 0.4)
    ax.set_ylim(-0.6, len(levels) - 0.4)
    ax.axis("off")
    ax.set_title("forward: each token is replaced by the mask with probability = level")

    L, V = 3, 3
    outcomes = torch.tensor(list(itertools.product(range(V), repeat=L)))
    w = torch.rand(len(outcomes), generator=seeded(3)) ** 3
    w[outcomes[:, 0] == outcomes[:, 2]] *= 6.0
    p = w / w.sum()
    proc = discrete.Process("absorbing", V)

    class Exact(torch.nn.Module):
        def forward(self, x, level, **cond):
            seen = x != proc.mask_id
            agree = (outcomes[None] == x[:, None]) | ~seen[:, None]
            post = p[None] * agree.all(-1)
            post = post / post.sum(-1, keepdim=True)
            return torch.einsum("bo,olv->blv", post, torch.nn.functional.one_hot(outcomes, V).float()).clamp_min(1e-30).log()

    D = discrete.CategoricalDenoiser(Exact(), proc)
    steps_list = [1, 2, 3, 5, 10, 30, 100]
    tvs = []
    for k in steps_list:
        g = seeded(0)
        x = discrete.prior_sample(proc, (20000, L), g)
        out = discrete.ancestral(D, x, discrete.linear(k), generator=g)
        idx = (out * torch.tensor([V * V, V, 1])).sum(-1)
        emp = torch.bincount(idx, minlength=len(outcomes)).float() / len(out)
        tvs.append(0.5 * float((emp - p).abs().sum()))
    ax2.plot(steps_list, tvs, "o-", color=BLUE, label="ancestral sampler")
    ax2.axhline(0.014, color=GREY, ls="--", lw=1, label="sampling floor (20,000 draws)")
    ax2.set_xscale("log")
    ax2.set_xlabel("steps")
    ax2.set_ylabel("total variation to the data")
    ax2.set_title("reverse: 3 tokens, exact denoiser")
    ax2.legend(frameon=False)
    fig.tight_layout()
    return save(fig, "discrete_forward.png")


FIGURES = [forward_random_walk, forward_cloud, reverse_trajectories, ladders, classifier_free_guidance,
           masked_conditioning, anomaly_map, discrete_forward]


def main(argv=None) -> int:
    wanted = set(argv or [])
    for fn in FIGURES:
        if not wanted or fn.__name__ in wanted:
            fn()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
