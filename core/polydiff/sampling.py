"""One sampling run: everything between "a starting x and a ladder" and "a denoised x", in one place.

    from polydiff.sampling import Known, run

    x, cond = run(model, n=16, seed=0)                                   # from pure noise, the model's defaults
    x, cond = run(model, n=4, known=Known(values, mask), seed=0)         # inpainting / gap filling / scaffolds
    x, cond = run(model, start=noisy, sigma_start=0.2, start_noise=0.15, seed=0)   # SDEdit, denoising

:func:`run` resolves the sampler (the model's by default, with the model's sampler arguments only when the
name is the model's own), the ladder (the model's schedule from ``sigma_max``, or from ``sigma_start`` for a
start that is partly noised already), classifier-free guidance (scale and interval), the precision (bf16
autocast around the network, the sampler in float32), masked conditioning (a typed :class:`Known`, never
keys inside ``cond``) and the random numbers: one CPU generator from ``seed`` draws the conditions that
need drawing, then the starting noise; a device generator is derived from it after that (the CPU
generator itself on a CPU). Every sampling path of the core and the plugins goes through it, so the
same seed gives the same bytes whichever path asked.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from .errors import PolydiffError

__all__ = ["Known", "run", "generators"]


@dataclass(frozen=True)
class Known:
    """Masked conditioning: ``values`` (encoded, shaped like a sample batch) are kept where ``mask`` is 1 and
    generated where it is 0; ``resample`` RePaint passes per step (Lugmayr et al. 2022) harmonise the two."""

    values: torch.Tensor
    mask: torch.Tensor
    resample: int = 1


def generators(seed: Optional[int] = None, generator: Optional[torch.Generator] = None) -> torch.Generator:
    """The run's CPU generator: ``generator`` if given, else one seeded from ``seed`` (random when None)."""
    if generator is not None:
        return generator
    return torch.Generator(device="cpu").manual_seed(int(seed) if seed is not None else torch.seed() % 2 ** 63)


def _device_generator(gen: torch.Generator, device: torch.device) -> torch.Generator:
    """The generator the sampler draws from: ``gen`` itself on a CPU, else a device generator seeded from it."""
    if device.type == "cpu":
        return gen
    return torch.Generator(device).manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen)))


@torch.no_grad()
def run(model, *, n: Optional[int] = None, start: Optional[torch.Tensor] = None, sigma_start: Optional[float] = None,
        start_noise: float = 0.0, sigmas: Optional[torch.Tensor] = None, steps: Optional[int] = None,
        schedule: Optional[str] = None, schedule_args: Optional[dict] = None, sampler: Optional[str] = None,
        sampler_args: Optional[dict] = None,
        cond: Optional[dict] = None, known: Optional[Known] = None, cfg_scale: Optional[float] = None,
        cfg_interval=None, wrap: Optional[Callable] = None, precision: Optional[str] = None,
        seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
        callback: Optional[Callable] = None, **options) -> Tuple[torch.Tensor, dict]:
    """Sample with ``model`` (a :class:`polydiff.model.Model`); returns (x, cond).

    Start: ``n`` samples from pure noise at the ladder's first level, or ``start`` (an encoded batch on any
    device) noised up to ``sigma_start``: it already carries noise of ``start_noise`` (0 for a clean start,
    SDEdit) and fresh Gaussian noise of ``sqrt(sigma_start^2 - start_noise^2)`` tops it up. Ladder:
    ``sigmas`` as given, else the model's ``steps``-step ladder (``schedule`` with ``schedule_args`` over the
    stored ones) from its ``sigma_max`` or from ``sigma_start``. ``cond``: the conditions (default: the modality's ``make_cond`` with ``options``, drawing
    from the run's generator); ``known``: masked conditioning. ``wrap(D) -> D`` puts a task's own operator
    around the guided denoiser (a projection onto measurements, say), outside the precision autocast.
    ``cfg_scale`` / ``cfg_interval``: classifier-free guidance [the model's]; ``precision``: fp32, bf16 or
    auto [the model's]; ``seed`` or ``generator``: the random numbers (see the module docstring)."""
    from . import get_sampler

    sc = model.config.get("sample", {})
    from .discrete import DEFAULT_SAMPLER

    name = sampler or sc.get("sampler", DEFAULT_SAMPLER if getattr(model, "categorical", False) else "dpmpp_2m")
    fn = get_sampler(name)
    stored = sc.get("sampler_args", {})
    # the stored arguments tune the stored sampler; a token rule (constrain) holds whichever sampler runs
    sargs = dict(stored) if name == sc.get("sampler") else {k: v for k, v in stored.items() if k == "constrain"}
    sargs.update(sampler_args or {})
    prec = model.precision(precision)
    if start is None:
        if n is None or int(n) < 1:
            raise PolydiffError(f"the number of samples must be at least 1, got {n}")
        n = int(n)
    else:
        n = len(start)
        if sigma_start is None or not sigma_start > 0:
            raise PolydiffError(f"a start needs a positive start noise level, got {sigma_start}")
        if start_noise < 0 or start_noise > sigma_start:
            raise PolydiffError(f"the start's own noise ({start_noise}) must be in [0, {sigma_start}]")
    gen = generators(seed, generator)
    # make_cond may draw from the generator (e.g. the sizes of variable-size items), so the seed fixes them too
    if cond is None:
        cond, made = model.conditions(n, generator=gen, **options)
        known = known if known is not None else made
    cond = dict(cond)
    if sigmas is None:
        sigmas = (model.sigmas(steps, schedule, **(schedule_args or {})) if start is None
                  else model.sigmas_from(sigma_start, steps))
    shape = (n,) + tuple(model.encoder.sample_shape())
    proc = getattr(model.denoiser, "process", None)
    if proc is None and "constrain" in sargs:
        raise PolydiffError("sampler argument constrain (a token rule) applies to categorical models only")
    if proc is not None or getattr(fn, "space", "continuous") == "categorical":
        return _run_categorical(model, proc, fn, name, sargs, shape, sigmas, start, sigma_start, cond, known,
                                cfg_scale, cfg_interval, prec, wrap, gen, callback)
    from .embedding import spec_of

    spec = spec_of(model.config)
    tokens_known = None
    if spec is not None:  # tokens embedded in sigma-space: sample embeddings, round them to tokens at the end
        from .embedding import clamping, embed, lift_cond

        net = model.net
        shape = shape + (int(spec["dim"]),)
        cond = lift_cond(cond, len(shape) - 1)
        if start is not None:
            start = embed(net, start.to(model.device)).detach()
        if known is not None:
            tokens_known = known
            keep = known.mask.to(model.device).bool()
            values = embed(net, known.values.to(model.device).long()).detach()
            known = Known(values, keep.unsqueeze(-1).expand(values.shape).to(values.dtype), known.resample)
        if spec.get("clamp", True):
            wrap = _compose(clamping(net), wrap)
        if spec.get("self_cond"):  # innermost: the network's own estimate is what it reads next
            from .embedding import self_conditioning

            wrap = _compose(self_conditioning(), wrap)
    if start is None:
        x = torch.randn(shape, generator=gen).to(model.device) * sigmas[0]
        if cond.get("mask") is not None:
            x = x * cond["mask"]
    else:
        top_up = math.sqrt(max(float(sigma_start) ** 2 - float(start_noise) ** 2, 0.0))
        x = (start.cpu() + top_up * torch.randn(tuple(start.shape), generator=gen)).to(model.device)
    D = model.guided_denoiser(cfg_scale, cfg_interval)
    if prec == "bf16":
        D = _autocast(D, model.device)
    if wrap is not None:
        D = wrap(D)
    dev_gen = _device_generator(gen, model.device)
    if known is not None:
        from .guidance import sample_masked

        x = sample_masked(fn, D, x, sigmas, known.values.to(model.device), known.mask.to(model.device), cond=cond,
                          generator=dev_gen, callback=callback, resample=int(known.resample), **sargs)
    else:
        x = fn(D, x, sigmas, cond=cond, generator=dev_gen, callback=callback, **sargs)
    if spec is not None:
        from .embedding import round_tokens

        x = round_tokens(model.net, x)
        if tokens_known is not None:
            keep = tokens_known.mask.to(x.device).bool()
            x = torch.where(keep, tokens_known.values.to(x.device).long(), x)
        if cond.get("mask") is not None and cond["mask"].ndim == x.ndim + 1:
            cond["mask"] = cond["mask"].squeeze(-1)
            x = x * cond["mask"].long()  # padding: token 0
    return x, cond


def _compose(inner: Callable, outer: Optional[Callable]) -> Callable:
    """wrap(D) = outer(inner(D)): the run's own operator first, a task's ``wrap`` around it."""
    if outer is None:
        return inner
    return lambda D: outer(inner(D))


def _run_categorical(model, proc, fn, name, sargs, shape, levels, start, level_start, cond, known, cfg_scale,
                     cfg_interval, prec, wrap, gen, callback):
    """The categorical half of :func:`run`: tokens start at the prior (all masks for absorbing data) or from
    ``start`` corrupted up to ``level_start``; known tokens are placed first and never change."""
    from .discrete import corrupt, prior_sample

    if proc is None:
        raise PolydiffError(f"sampler {name!r} works on categorical data; this model's data is continuous")
    if getattr(fn, "space", "continuous") != "categorical":
        from .plugins import registry

        names = sorted(k for k, f in registry().samplers.items() if getattr(f, "space", "") == "categorical")
        raise PolydiffError(f"sampler {name!r} works on continuous data; this model's data is categorical: "
                            f"use {' or '.join(names)}")
    if known is not None and int(known.resample) != 1:
        raise PolydiffError("resampling passes apply to continuous data; categorical known tokens are kept exactly")
    dev = model.device
    if start is None:
        x = prior_sample(proc, shape, gen, "cpu").to(dev)
    else:
        if not 0 < float(level_start) <= 1:
            raise PolydiffError(f"a categorical start level must be in (0, 1], got {level_start}")
        x = corrupt(proc, start.cpu().long(), torch.full((shape[0],), float(level_start)), gen).to(dev)
    keep = None
    if known is not None:
        keep = known.mask.to(dev).bool().expand(x.shape)
        x = torch.where(keep, known.values.to(dev).long().expand(x.shape), x)
    D = model.guided_denoiser(cfg_scale, cfg_interval)
    if prec == "bf16":
        D = _autocast(D, dev)
    if wrap is not None:
        D = wrap(D)
    sargs = dict(sargs)
    if "cache" not in sargs:  # reuse evaluations while nothing changes, where that is exact
        scale = float(cfg_scale if cfg_scale is not None else model.config.get("sample", {}).get("cfg_scale", 1.0))
        interval = cfg_interval if cfg_interval is not None else model.config.get("sample", {}).get("cfg_interval")
        sargs["cache"] = bool(getattr(model.denoiser, "level_free", False)) and (scale == 1.0 or interval is None)
    rule = sargs.pop("constrain", None)
    if rule is not None and not callable(rule):  # a stored / command-line switch: the modality's own rule
        if not isinstance(rule, bool):
            raise PolydiffError(f"sampler argument constrain is true, false or a function, got {rule!r}")
        hook = model.modality.constrain
        if rule and hook is None:
            raise PolydiffError(f"the {model.modality.name} modality has no token rule to constrain sampling with")
        rule = hook(model.encoder, cond, proc) if rule else None
    if rule is not None:
        if "constrain" not in inspect.signature(fn).parameters:
            raise PolydiffError(f"sampler {name!r} takes no token rule (constrain)")
        sargs["constrain"] = rule
    if "select" in inspect.signature(fn).parameters and "select" not in sargs:
        sargs["select"] = True  # the model's denoiser returns the selected positions' log-probabilities alone
    x = fn(D, x, levels.to(dev), cond=cond, generator=_device_generator(gen, dev), callback=callback, keep=keep,
           process=proc, **sargs)
    return x, cond


def _autocast(D: Callable, device: torch.device) -> Callable:
    """D with the network under bfloat16 autocast; the estimate comes back in the input's dtype, so the
    sampler's updates stay in float32."""
    def bf16_denoiser(x, sigma, **cond):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = D(x, sigma, **cond)
        return out.to(x.dtype if x.is_floating_point() else torch.float32)
    return bf16_denoiser
