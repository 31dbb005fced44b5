"""polydiff's samplers against diffusers' schedulers on the same denoiser, ladder and starting noise.

diffusers is a test requirement (requirements-test.txt) and a benchmark extra (``pip install
polydiff[bench]``), not a dependency of polydiff.

Setup. The exact posterior mean of a 2-D Gaussian mixture is wrapped as a diffusers-style epsilon
network on the VP side: the scheduler hands it ``x_vp = x_sigma / sqrt(1 + sigma^2)`` (Euler and Heun
scale their VE samples with ``scale_model_input``; DDIM, DDPM, DPM-Solver and UniPC keep VP samples),
and it returns ``eps = (x_sigma - D(x_sigma, sigma)) / sigma``. After ``set_timesteps`` the scheduler's
own ladder is read (``scheduler.sigmas``, or ``alphas_cumprod`` at the timesteps for DDIM and DDPM, whose
final step goes to ``alpha_bar = 1``, i.e. sigma = 0) and given to the polydiff sampler, which starts
from the same noise expressed on the VE side.

Result. Every pair agrees to float32 round-off. Largest difference over 1000 samples of size ~2.5
(measured with diffusers 0.42.1): deterministic samplers <= 6.4e-6 at 10 steps and <= 4.4e-5 at 50
steps (UniPC, whose solver coefficients diffusers computes in float32); ddpm against DDPMScheduler
and against DDIMScheduler(eta=1) <= 3.2e-6 at 10 steps and <= 1.1e-4 at 50 steps. Running polydiff in
float64 instead of float32 moves its own result by ~1e-5 at 50 steps, so the residual is rounding on
both sides, not a difference in formulation. The bound, 1e-3, leaves a margin of about 10x.

Differences in configuration (not in formulation) that the tests switch off explicitly:

* DDIMScheduler and DDPMScheduler clip x0 to [-1, 1] by default (``clip_sample=True``), meant for
  images in that range; polydiff never clips (the ring has radius 2), so ``clip_sample=False``.
* Euler, DPM-Solver++ and UniPC are asked for ``final_sigmas_type="zero"`` (the default in the installed
  version) so that their last step lands on sigma = 0 as polydiff's ladders do; with ``"sigma_min"``
  they stop at the smallest training sigma instead.
* DPM-Solver++(2M) and UniPC take a first-order last step (``lower_order_final``), as polydiff does.

The stochastic samplers agree too: polydiff's ``ddpm`` draws its fresh noise with
``torch.randn(x.shape, generator=...)``, the call diffusers makes, so the same generator seed gives
the same noise sequence (the DDPM posterior and DDIM with eta = 1 are the same step).
"""
import math

import pytest
import torch

import diffusers  # noqa: E402  (a test requirement: a missing install fails loudly)

from polydiff import samplers as S  # noqa: E402
from polydiff.gmm import GaussianMixture  # noqa: E402

RING = GaussianMixture.ring(k=8, radius=2.0, std=0.2)
VP = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
TOL = 1e-3  # measured at most 1.1e-4 (see the module docstring)

DETERMINISTIC = {
    "euler": lambda: diffusers.EulerDiscreteScheduler(**VP, final_sigmas_type="zero"),
    "heun": lambda: diffusers.HeunDiscreteScheduler(**VP),
    "ddim": lambda: diffusers.DDIMScheduler(**VP, clip_sample=False),
    "dpmpp_2m": lambda: diffusers.DPMSolverMultistepScheduler(
        **VP, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"),
    "unipc": lambda: diffusers.UniPCMultistepScheduler(**VP, solver_type="bh2", solver_order=2, final_sigmas_type="zero"),
}


def _alpha_bar_based(sched) -> bool:
    return isinstance(sched, (diffusers.DDIMScheduler, diffusers.DDPMScheduler))


def sigma_now(sched, t) -> float:
    """VE sigma of the current model call."""
    if _alpha_bar_based(sched):
        ac = sched.alphas_cumprod[int(t)]
        return float(((1 - ac) / ac) ** 0.5)
    return float(sched.sigmas[sched.step_index or 0])


def ladder(sched) -> torch.Tensor:
    if _alpha_bar_based(sched):
        ac = sched.alphas_cumprod[sched.timesteps.long()]
        return torch.cat([((1 - ac) / ac) ** 0.5, torch.zeros(1)]).float()
    return torch.unique_consecutive(sched.sigmas.float())


def run_diffusers(sched, z, steps, **step_kw):
    sched.set_timesteps(steps)

    def eps_model(x_in, t):
        s = sigma_now(sched, t)
        x = x_in * math.sqrt(1 + s * s)
        return (x - RING(x, torch.full((x.shape[0],), s))) / s

    x = z * sched.init_noise_sigma
    for t in sched.timesteps:
        eps = eps_model(sched.scale_model_input(x, t), t)
        x = sched.step(eps, t, x, **step_kw).prev_sample
    return x


def polydiff_start(sched, z, sig):
    x = z * float(sched.init_noise_sigma)
    vp = not isinstance(sched, (diffusers.EulerDiscreteScheduler, diffusers.HeunDiscreteScheduler))
    return x * math.sqrt(1 + float(sig[0]) ** 2) if vp else x


def noise(seed=0, n=1000):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_deterministic_sampler_matches_diffusers(name, steps):
    sched = DETERMINISTIC[name]()
    z = noise()
    expected = run_diffusers(sched, z, steps)
    sig = ladder(sched)
    assert len(sig) == steps + 1 and sig[-1] == 0 and (sig[:-1] > sig[1:]).all()
    got = S.SAMPLERS[name](RING, polydiff_start(sched, z, sig), sig)
    diff = (got - expected).abs().max().item()
    assert diff < TOL, (name, steps, diff)
    assert expected.abs().max() > 1.5  # the comparison is on samples of the ring, not on zeros


@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("which", ["DDPMScheduler", "DDIMScheduler eta=1"])
def test_ddpm_matches_diffusers_with_the_same_generator(which, steps):
    if which == "DDPMScheduler":
        sched, kw = diffusers.DDPMScheduler(**VP, clip_sample=False), {}
    else:
        sched, kw = diffusers.DDIMScheduler(**VP, clip_sample=False), {"eta": 1.0}
    z = noise(1)
    expected = run_diffusers(sched, z, steps, generator=torch.Generator().manual_seed(5), **kw)
    sig = ladder(sched)
    got = S.ddpm(RING, polydiff_start(sched, z, sig), sig, generator=torch.Generator().manual_seed(5))
    diff = (got - expected).abs().max().item()
    assert diff < TOL, (which, steps, diff)


def test_default_ddim_clipping_is_a_genuine_difference():
    """With diffusers' default clip_sample=True the ring (radius 2) is squashed into [-1, 1]^2."""
    sched = diffusers.DDIMScheduler(**VP)
    out = run_diffusers(sched, noise(2), 20)
    assert out.abs().max() <= 1.0 + 1e-6
