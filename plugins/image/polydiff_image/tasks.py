"""Inpainting, super-resolution and denoising of image files with a trained image model, and their commands.

All three are runs of the core's one sampling run (:func:`polydiff.sampling.run`); only super-resolution's
``conditioned`` method needs a network trained for the task:

* :func:`inpaint` (``polydiff inpaint image IMG --mask MASK``): *masked conditioning* (a
  :class:`polydiff.sampling.Known` of the image and the mask): the pixels the mask keeps are pinned to the image at every
  step, so the generated pixels fit around them; RePaint resampling passes (``--resample``) blend the
  fill further. In the output, every pixel the mask keeps is the input's pixel, byte for byte.
* :func:`upscale` (``polydiff upscale image IMG --factor 4``) works two ways. With a super-resolution
  model (``--model mnist_sr``, a network trained with the low-resolution copy as extra input channels),
  method ``conditioned`` (its default) samples from noise given ``y``. With any generation model, no
  network trained for the task: the low-resolution image ``y`` is the
  ``factor x factor`` block average of the wanted image ``x`` (``y = A x``). Method ``project``
  runs any sampler from pure noise on a denoiser whose estimate is projected onto the images consistent
  with ``y``: ``x0 <- x0 + U (y - A x0)`` with ``U`` the block replication, the pseudo-inverse of ``A``
  (``A U = I``), so the estimate's own detail is kept and its block means become ``y`` exactly (a
  null-space projection, Wang et al. 2023, "Zero-shot image restoration using denoising diffusion
  null-space model"). Method ``sdedit`` (the default with a generation model) starts instead from the
  bicubic upsampling of ``y``, noised to a level ``--strength`` (0.3) of the way up the model's noise
  range in log scale (SDEdit, Meng et al. 2022), with the same projection; it beats bicubic PSNR at x2
  and x4 on both bundled generation models, while ``project`` draws a fresh consistent image that at x4
  is often another plausible one. The conditioned model beats both by 3-5 dB (docs/images.md). Every
  output, block-averaged, gives back the input up to rounding.
* :func:`denoise` (``polydiff denoise image IMG``): SDEdit from a *matched* noise level: the image's noise
  (estimated, or given with ``--sigma`` in 0-255 pixel units) is treated as the diffusion noise at that
  level, topped up to at least :data:`SIGMA_FLOOR`, and walked down to sigma = 0.

Noise estimate. :func:`estimate_noise` convolves each channel with the Laplacian-like mask
``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` (Immerkaer 1996, "Fast noise variance estimation"), which
cancels flat areas and linear ramps; white noise of standard deviation s becomes noise of standard
deviation 6 s (the mask's norm), and the median absolute response over the image divided by 0.6745 x 6
estimates s robustly to the edges (a median, not Immerkaer's mean). Noise clipped at black or white (an
8-bit file cannot hold negative values) makes the estimate low on images that are mostly black or white.

Units. The model works on pixels mapped to [-1, 1] (``x = u / 127.5 - 1``), so a noise level of
``s`` pixel levels (0-255) is ``s / 127.5`` in model units; ``--sigma`` and the summaries use pixel levels.

Python use::

    from polydiff_image.tasks import load_model, inpaint, upscale, denoise
    model = load_model("mnist")
    inpaint(model, "digit.png", "mask.png", "filled.png", seed=0)
    upscale(model, "small.png", "big.png", factor=4)
    denoise(model, "noisy.png", "clean.png", sigma="auto")
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, List, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from polydiff.errors import InputError, PolydiffError
from polydiff.sampling import Known, run

from . import io as image_io
from .denoiser import config_lowres_factors
from .encoder import from_tensor, to_tensor

__all__ = ["load_model", "inpaint", "inpaint_arrays", "upscale_arrays", "denoise_arrays", "upscale", "denoise", "estimate_noise", "read_mask", "block_mean",
           "block_replicate", "projected_denoiser", "consistent", "add_commands", "SIGMA_FLOOR", "DEFAULT_LABEL",
           "UPSCALE_METHODS", "DEFAULT_UPSCALE_MODEL", "lowres_factors", "pick_upscale_model"]

#: the lowest start level of denoising, in pixel levels (0-255): a clean image still gets a few steps
SIGMA_FLOOR = 2.0
#: the tasks condition on no class unless asked: the image itself says what it is
DEFAULT_LABEL = "none"
UPSCALE_METHODS = ("conditioned", "project", "sdedit")
#: the model of ``polydiff upscale image`` without --model, when it is bundled (else the modality's default)
DEFAULT_UPSCALE_MODEL = "mnist_sr"


# --------------------------------------------------------------------------------------- model and files
def load_model(model=None, device=None):
    """A :class:`polydiff.model.Model` of the image modality: ``model`` is a loaded Model (returned as is),
    a .safetensors path, a pretrained name, or None for the modality's first pretrained model
    (:func:`polydiff.model.load_model`)."""
    from polydiff.model import load_model as _load

    return _load("image", model, device)


def _check_out(out) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"{out}: the output is written as PNG; give a .png file name")
    if out.is_dir():
        raise InputError(f"{out}: is a folder; --out must be a .png file name")
    return out


def _check_steps(steps) -> None:
    if steps is not None and int(steps) < 1:
        raise PolydiffError(f"--steps must be at least 1, got {steps}")


def _read_one(path) -> np.ndarray:
    """One image (an image file, or a .npy/.npz file holding exactly one) as uint8 [H, W, C]."""
    p = Path(path)
    if p.suffix.lower() in image_io.ARRAY_SUFFIXES:
        arr, _ = image_io.read_array_file(p)
        if len(arr) != 1:
            raise InputError(f"{p}: holds {len(arr)} images; give one")
        return arr[0]
    return image_io.read_image(p)


def _model_image(model, path) -> np.ndarray:
    """The image at ``path`` with the model's channels, which must already have the model's size."""
    enc = model.encoder
    a = enc.match_channels(_read_one(path), str(path))
    h, w = a.shape[:2]
    if (h, w) != (enc.image_size, enc.image_size):
        raise InputError(f"{path}: is {w}x{h} pixels; the model works on {enc.image_size}x{enc.image_size} images")
    return a


def read_mask(path, size) -> np.ndarray:
    """A mask image -> bool [H, W], True where pixels are to be generated (white, > 127; for colour masks,
    the brightest channel). ``size`` (H, W) it must have."""
    m = _read_one(path)
    if m.shape[:2] != tuple(size):
        raise InputError(f"{path}: the mask is {m.shape[1]}x{m.shape[0]} pixels but the image is "
                         f"{size[1]}x{size[0]}; they must match")
    return m.max(axis=2) > 127


def _sampler_settings(model, sampler, steps):
    """The sampler name and step count a run will use (for the task summaries); an unknown name fails here."""
    from polydiff import get_sampler

    sc = model.config.get("sample", {})
    name = sampler or sc.get("sampler", "dpmpp_2m")
    get_sampler(name)
    return name, int(steps or sc.get("steps", 20))


def _trajectory(path, frames: List[torch.Tensor], titles: List[str], model) -> Optional[str]:
    if not path:
        return None
    from .draw import draw_frames

    draw_frames(model.encoder, frames, {}, path, titles=titles)
    return str(path)


def _collector(frames: list, enabled: bool) -> Optional[Callable]:
    if not enabled:
        return None
    return lambda info: frames.append(info["denoised"].detach().cpu())


# --------------------------------------------------------------------------------------- inpainting
@torch.no_grad()
def inpaint_arrays(model, imgs: np.ndarray, hole: np.ndarray, *, label=DEFAULT_LABEL, sampler=None, steps=None,
                   seed=0, cfg_scale=None, resample_passes: int = 1, callback=None) -> np.ndarray:
    """uint8 [N, S, S, C] images and a bool hole mask ([S, S] for all, or [N, S, S]; True = generate) ->
    uint8 images whose pixels outside the hole are the input's exactly."""
    n, c = imgs.shape[0], imgs.shape[3]
    hole = np.broadcast_to(np.asarray(hole, bool), (n,) + imgs.shape[1:3])
    keep = torch.from_numpy(np.ascontiguousarray(~hole)).float()[:, None].expand(n, c, *hole.shape[1:]).contiguous()
    x, _ = run(model, n=n, sampler=sampler, steps=steps, seed=seed, cfg_scale=cfg_scale, cond=model.cond(n, label=label),
               known=Known(to_tensor(imgs) * keep, keep, int(resample_passes)), callback=callback)
    return np.where(hole[..., None], from_tensor(x.cpu()), imgs)


def inpaint(model, path, mask, out, *, label=DEFAULT_LABEL, sampler: Optional[str] = None,
            steps: Optional[int] = None, seed: Optional[int] = 0, cfg_scale: Optional[float] = None,
            resample_passes: int = 1, trajectory=None, device=None) -> dict:
    """Generate the pixels of ``path`` that ``mask`` marks white, keep the others exactly; write ``out`` (PNG).

    The image must have the model's size; the mask the image's size. ``label`` picks a class to condition
    on ("none": unconditional). Returns a summary dict."""
    t0 = time.perf_counter()
    label = DEFAULT_LABEL if label is None else label
    out = _check_out(out)
    _check_steps(steps)
    if int(resample_passes) < 1:
        raise PolydiffError(f"--resample must be at least 1, got {resample_passes}")
    raw = _read_one(path)
    hole = read_mask(mask, raw.shape[:2])
    model = load_model(model, device)
    img = _model_image(model, path)
    if not hole.any():
        raise InputError(f"{mask}: the mask marks no pixel to generate (white marks the pixels to generate, "
                         "black the pixels to keep)")
    frames: list = []
    result = inpaint_arrays(model, img[None], hole, label=label, sampler=sampler, steps=steps, seed=seed,
                            cfg_scale=cfg_scale, resample_passes=resample_passes,
                            callback=_collector(frames, bool(trajectory)))[0]
    image_io.write_png(out, result)
    sc = model.config.get("sample", {})
    traj = _trajectory(trajectory, frames + [to_tensor(result)[None]], [], model) if trajectory else None
    return {"task": "inpaint", "input": str(path), "mask": str(mask), "out": str(out),
            "size": [int(img.shape[1]), int(img.shape[0])], "channels": int(img.shape[2]),
            "generated_pixels": int(hole.sum()), "model": str(model.path), "label": label,
            "sampler": sampler or sc.get("sampler"), "steps": int(steps or sc.get("steps", 20)), "seed": seed,
            "resample": int(resample_passes), "trajectory": traj, "seconds": round(time.perf_counter() - t0, 4)}


# --------------------------------------------------------------------------------------- super-resolution
def block_mean(x: torch.Tensor, factor: int) -> torch.Tensor:
    """A: the mean of every ``factor x factor`` block ([B, C, H, W] -> [B, C, H / f, W / f])."""
    return F.avg_pool2d(x, factor) if factor > 1 else x


def block_replicate(y: torch.Tensor, factor: int) -> torch.Tensor:
    """U: every pixel repeated into a ``factor x factor`` block; A(U(y)) = y."""
    return F.interpolate(y, scale_factor=factor, mode="nearest") if factor > 1 else y


def projected_denoiser(D: Callable, y: torch.Tensor, factor: int) -> Callable:
    """D whose estimate x0 is replaced by ``x0 + U(y - A x0)``: its block means equal ``y``."""
    def wrapped(x, sigma, **cond):
        x0 = D(x, sigma, **cond)
        return x0 + block_replicate(y - block_mean(x0, factor), factor)

    return wrapped


def bicubic(a: np.ndarray, size: int) -> np.ndarray:
    """uint8 [h, w, C] -> uint8 [size, size, C] by bicubic interpolation (Pillow), the baseline."""
    from PIL import Image

    im = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).resize((size, size), Image.BICUBIC)
    out = np.asarray(im)
    return out[:, :, None] if out.ndim == 2 else out


def pick_upscale_model(low: np.ndarray, factor: int) -> Optional[str]:
    """The bundled model ``polydiff upscale image`` uses without ``--model``: the first one, super-resolution
    models before generation models, whose images are ``factor`` times the input's size and take its
    channels (a grayscale input fits an RGB model, not the other way round). None when no model is bundled
    (loading then names the problem); an :class:`InputError` naming what each bundled model takes when none
    fits. Reads the bundles' headers only."""
    from polydiff.checkpoint import read_meta
    from polydiff.plugins import registry

    from .encoder import _is_gray

    pretrained = registry().modality("image").pretrained
    metas = {}
    for name, path in pretrained.items():
        try:
            metas[name] = read_meta(path)
        except (PolydiffError, OSError):  # an unreadable bundle is not a candidate; loading it names the problem
            continue
    h, w = low.shape[:2]
    gray = _is_gray(low)

    factors = {name: config_lowres_factors(meta.get("config")) for name, meta in metas.items()}

    def fits(name) -> bool:
        enc = metas[name].get("encoder") or {}
        if h != w or enc.get("image_size") != h * factor:
            return False
        if enc.get("channels") == 1 and not gray:
            return False
        return not factors[name] or factor in factors[name]

    for name in sorted(metas, key=lambda n: not factors[n]):  # stable: pretrained order within each kind
        if fits(name):
            return name
    if not metas:
        return None

    def takes(name) -> str:
        enc = metas[name].get("encoder") or {}
        size = enc.get("image_size")
        kind = "gray" if enc.get("channels") == 1 else "gray or colour"
        ins = (" or ".join(f"{size // f}x{size // f} (x{f})" for f in factors[name]) if factors[name]
               else f"{size}/factor square")
        return f"{name}: {ins} {kind}"

    raise InputError(f"a {w}x{h} {'gray' if gray else 'colour'} image at --factor {factor}: no bundled image model "
                     f"fits ({'; '.join(takes(n) for n in metas)}); give --model")


def lowres_factors(model) -> tuple:
    """The factors a super-resolution model (``network.lowres_factors``) was trained for; () for others."""
    return config_lowres_factors(model.config)


def _upscale_method(model, method: Optional[str], factor: int) -> str:
    """The method to use (None: ``conditioned`` for a super-resolution model, else ``sdedit``), checked."""
    factors = lowres_factors(model)
    method = method or ("conditioned" if factors else "sdedit")
    if method not in UPSCALE_METHODS:
        raise PolydiffError(f"--method must be one of {', '.join(UPSCALE_METHODS)}, got {method!r}")
    if method == "conditioned" and not factors:
        raise PolydiffError(f"--method conditioned needs a super-resolution model (such as mnist_sr); "
                            f"{Path(str(model.path)).stem} is a generation model")
    if factors and factor not in factors:
        raise PolydiffError(f"--factor {factor}: this super-resolution model was trained for "
                            f"{' and '.join(f'x{f}' for f in factors)}")
    return method


@torch.no_grad()
def upscale_arrays(model, low: np.ndarray, factor: int, *, method: Optional[str] = None, label=DEFAULT_LABEL,
                   sampler: Optional[str] = None, steps: Optional[int] = None, seed: Optional[int] = 0,
                   cfg_scale: Optional[float] = None, strength: float = 0.3, callback=None) -> np.ndarray:
    """uint8 [N, s, s, C] low-resolution images (s = model size / factor) -> uint8 [N, S, S, C].

    ``method`` None: ``conditioned`` with a super-resolution model, else ``sdedit``."""
    method = _upscale_method(model, method, factor)
    if not 0.0 < float(strength) <= 1.0:
        raise PolydiffError(f"--strength must be in (0, 1], got {strength}")
    enc = model.encoder
    n = low.shape[0]
    y = to_tensor(low).to(model.device)
    cond = model.cond(n, label=label)
    if lowres_factors(model):  # the super-resolution network sees the low-resolution image as well
        cond["lowres"] = block_replicate(y, factor)
    # the network alone gives the conditioned method's estimates; the others project them onto the input
    wrap = None if method == "conditioned" else (lambda D: projected_denoiser(D, y, factor))
    common = dict(sampler=sampler, steps=steps, cond=cond, cfg_scale=cfg_scale, wrap=wrap, seed=seed,
                  callback=callback)
    if method in ("project", "conditioned"):
        x, _ = run(model, n=n, **common)
    else:  # sdedit: the bicubic upsampling, noised to strength x sigma_max in sigma's log scale
        smin, smax = model.sigma_range()
        base = to_tensor(np.stack([bicubic(a, enc.image_size) for a in low]))
        x, _ = run(model, start=base, sigma_start=math.exp(math.log(smin) + float(strength) * (math.log(smax) - math.log(smin))),
                   **common)
    return from_tensor(consistent(x, y, factor))


def consistent(x: torch.Tensor, y: torch.Tensor, factor: int, rounds: int = 40) -> torch.Tensor:
    """The point of {pixels in [-1, 1]} and {block means = y} nearest ``x`` (the sampler's last estimate is
    consistent but may leave [-1, 1], and clipping it alone would move the block means of saturated
    blocks). Per block that point is ``clamp(x + t, -1, 1)`` for the one shift ``t`` that gives the block
    mean ``y``; the mean grows with ``t``, so ``rounds`` bisection steps find it. (Alternating projections,
    used before, converge slowly near saturation: 20 rounds could leave block means 2-3 levels off.)"""
    y = y.to(x.device, x.dtype)
    lo = -1.0 - F.max_pool2d(x, factor)  # every pixel of the block at -1: the mean is -1 <= y
    hi = 1.0 + F.max_pool2d(-x, factor)  # every pixel at 1: the mean is 1 >= y
    for _ in range(rounds):
        mid = (lo + hi) / 2
        high = block_mean((x + block_replicate(mid, factor)).clamp(-1.0, 1.0), factor) > y
        lo, hi = torch.where(high, lo, mid), torch.where(high, mid, hi)
    return (x + block_replicate((lo + hi) / 2, factor)).clamp(-1.0, 1.0).cpu()


def upscale(model, path, out, factor: int = 4, *, method: Optional[str] = None, label=DEFAULT_LABEL,
            sampler: Optional[str] = None, steps: Optional[int] = None, seed: Optional[int] = 0,
            cfg_scale: Optional[float] = None, strength: float = 0.3, trajectory=None, device=None) -> dict:
    """Super-resolve the image ``path`` by ``factor``: its size must be the model's size / factor. Writes
    ``out`` (PNG, the model's size) and returns a summary with the consistency of the result (the largest
    and mean absolute difference between the input and the result's block means, in pixel levels)."""
    t0 = time.perf_counter()
    label = DEFAULT_LABEL if label is None else label
    out = _check_out(out)
    _check_steps(steps)
    factor = int(factor)
    if factor < 2:
        raise PolydiffError(f"--factor must be 2 or more, got {factor}")
    raw = _read_one(path)
    if model is None:
        model = pick_upscale_model(raw, factor)
    model = load_model(model, device)
    method = _upscale_method(model, method, factor)
    enc = model.encoder
    size = enc.image_size
    if size % factor:
        raise PolydiffError(f"--factor {factor} does not divide the model's image size {size}")
    low = enc.match_channels(raw, str(path))
    want = size // factor
    if low.shape[:2] != (want, want):
        raise InputError(f"{path}: is {low.shape[1]}x{low.shape[0]} pixels; --factor {factor} with the model's "
                         f"{size}x{size} images needs a {want}x{want} input")
    frames: list = []
    big = upscale_arrays(model, low[None], factor, method=method, label=label, sampler=sampler, steps=steps,
                         seed=seed, cfg_scale=cfg_scale, strength=strength,
                         callback=_collector(frames, bool(trajectory)))[0]
    image_io.write_png(out, big)
    back = block_mean(to_tensor(big)[None], factor)[0]
    diff = (from_tensor(back).astype(np.int32) - low.astype(np.int32))
    name, n_steps = _sampler_settings(model, sampler, steps)
    traj = _trajectory(trajectory, frames + [to_tensor(big)[None]], [], model) if trajectory else None
    return {"task": "upscale", "input": str(path), "out": str(out), "factor": factor, "method": method,
            "size_in": [int(low.shape[1]), int(low.shape[0])], "size_out": [size, size],
            "consistency_max": int(np.abs(diff).max()), "consistency_mean": float(np.abs(diff).mean()),
            "model": str(model.path), "label": label, "sampler": name, "steps": n_steps, "seed": seed,
            "trajectory": traj, "seconds": round(time.perf_counter() - t0, 4)}


# --------------------------------------------------------------------------------------- denoising
_LAPLACE = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def estimate_noise(a: np.ndarray) -> float:
    """Standard deviation of white noise in the uint8 (or float, pixel-level) image ``a`` [H, W(, C)], in
    pixel levels: the median absolute response to Immerkaer's mask over 0.6745 x 6 (module docstring).
    0 for images smaller than 3 x 3."""
    x = torch.as_tensor(np.asarray(a, dtype=np.float64))
    if x.ndim == 2:
        x = x[:, :, None]
    if x.shape[0] < 3 or x.shape[1] < 3:
        return 0.0
    x = x.permute(2, 0, 1)[:, None]  # [C, 1, H, W]
    r = F.conv2d(x, _LAPLACE.to(x.dtype)[None, None])
    return float(r.abs().median()) / (0.6745 * 6.0)


def _parse_sigma(sigma) -> Optional[float]:
    if sigma is None or str(sigma).strip().lower() == "auto":
        return None
    try:
        v = float(sigma)
    except ValueError:
        raise PolydiffError(f"--sigma must be 'auto' or a number of pixel levels >= 0, got {sigma!r}") from None
    if not math.isfinite(v) or v < 0:
        raise PolydiffError(f"--sigma must be 'auto' or a number of pixel levels >= 0, got {sigma!r}")
    return v


@torch.no_grad()
def denoise_arrays(model, imgs: np.ndarray, sigma_levels: float, *, label=DEFAULT_LABEL, sampler=None, steps=None,
                   seed=0, cfg_scale=None, callback=None) -> np.ndarray:
    """uint8 [N, S, S, C] images with white noise of ``sigma_levels`` pixel levels -> uint8 denoised."""
    noise = float(sigma_levels) / 127.5
    y, _ = run(model, start=to_tensor(imgs), sigma_start=max(noise, SIGMA_FLOOR / 127.5), start_noise=noise,
               sampler=sampler, steps=steps, cond=model.cond(len(imgs), label=label), cfg_scale=cfg_scale, seed=seed,
               callback=callback)
    return from_tensor(y.cpu())


def denoise(model, path, out, *, sigma: Union[str, float, None] = "auto", label=DEFAULT_LABEL,
            sampler: Optional[str] = None, steps: Optional[int] = None, seed: Optional[int] = 0,
            cfg_scale: Optional[float] = None, trajectory=None, device=None) -> dict:
    """Remove white noise from ``path`` (the model's size) by SDEdit from its noise level; write ``out``."""
    t0 = time.perf_counter()
    label = DEFAULT_LABEL if label is None else label
    out = _check_out(out)
    _check_steps(steps)
    given = _parse_sigma(sigma)
    _read_one(path)
    model = load_model(model, device)
    img = _model_image(model, path)
    noise = estimate_noise(img) if given is None else given
    frames: list = []
    clean = denoise_arrays(model, img[None], noise, label=label, sampler=sampler, steps=steps, seed=seed,
                           cfg_scale=cfg_scale, callback=_collector(frames, bool(trajectory)))[0]
    image_io.write_png(out, clean)
    name, n_steps = _sampler_settings(model, sampler, steps)
    traj = _trajectory(trajectory, frames + [to_tensor(clean)[None]], [], model) if trajectory else None
    return {"task": "denoise", "input": str(path), "out": str(out), "size": [int(img.shape[1]), int(img.shape[0])],
            "noise_sigma": noise, "sigma_source": "estimated" if given is None else "given",
            "sigma_start": max(noise, SIGMA_FLOOR), "model": str(model.path), "label": label, "sampler": name,
            "steps": n_steps, "seed": seed, "trajectory": traj, "seconds": round(time.perf_counter() - t0, 4)}


# --------------------------------------------------------------------------------------- commands
_MODEL_HELP = "Pretrained name (mnist, cifar10) or a .safetensors bundle from `polydiff train image` [mnist]."
_LABEL_HELP = ("Class to condition on (a digit for mnist, a name such as 'cat' for cifar10), or 'none' "
               "[none: the image guides the model].")


def _common(model_help=_MODEL_HELP):
    """The options every task command shares, as one decorator."""
    import click

    options = [
        click.option("--model", "model_name", default=None, help=model_help),
        click.option("--label", default=DEFAULT_LABEL, show_default=True, help=_LABEL_HELP),
        click.option("--sampler", default=None, help="euler, heun, ddim, ddpm, dpmpp_2m, unipc, ... [the model's]."),
        click.option("--steps", type=int, default=None, help="Sampling steps [the model's]."),
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed."),
        click.option("--cfg-scale", type=float, default=None,
                     help="Classifier-free guidance scale with --label (1 = off) [the model's]."),
        click.option("--trajectory", type=click.Path(), default=None,
                     help="Also write the x0 estimate of every step as a strip of frames (PNG)."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [cuda when present, else cpu]"),
        click.option("--json", "as_json", is_flag=True, help="Print a JSON summary."),
    ]

    def decorate(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return decorate


def _report(summary: dict, as_json: bool, line: str) -> None:
    from polydiff.cli import report_task

    report_task(summary, as_json, line)


def inpaint_command():
    import click

    @click.command(name="image")
    @click.argument("input_path", metavar="IMG", type=click.Path())
    @click.option("--mask", required=True, type=click.Path(),
                  help="Mask image of IMG's size: white marks the pixels to generate, black the pixels to keep.")
    @click.option("--out", "out", type=click.Path(), required=True, help="Output PNG.")
    @click.option("--resample", "resample_passes", type=int, default=1, show_default=True,
                  help="RePaint resampling passes per step: more blend the fill into its surroundings, at that "
                       "many times the cost.")
    @_common()
    def cmd(input_path, mask, out, resample_passes, model_name, label, sampler, steps, seed, cfg_scale, trajectory,
            device, as_json):
        """Fill the pixels of IMG that --mask marks white; every other pixel of OUT is IMG's, exactly.

        IMG must have the model's size (28x28 for mnist, 32x32 for cifar10)."""
        s = inpaint(model_name, input_path, mask, out, label=label, sampler=sampler, steps=steps, seed=seed,
                    cfg_scale=cfg_scale, resample_passes=resample_passes, trajectory=trajectory, device=device)
        _report(s, as_json, f"generated {s['generated_pixels']} pixels of {input_path}; kept the others; wrote {s['out']}")

    return cmd


def upscale_command():
    import click

    @click.command(name="image")
    @click.argument("input_path", metavar="IMG", type=click.Path())
    @click.option("--factor", type=int, default=4, show_default=True,
                  help="Upscaling factor; IMG must be the model's size divided by it (7x7 -> 28x28 for mnist).")
    @click.option("--out", "out", type=click.Path(), required=True, help="Output PNG (the model's size).")
    @click.option("--method", type=click.Choice(UPSCALE_METHODS), default=None,
                  help="conditioned: a super-resolution model (--model mnist_sr) samples from noise given IMG; "
                       "project: sample from noise, every estimate projected onto the images whose block means "
                       "are IMG; sdedit: start from the bicubic upsampling noised to --strength "
                       "[conditioned with a super-resolution model, else sdedit].")
    @click.option("--strength", type=float, default=0.3, show_default=True,
                  help="sdedit only: the start noise level as a fraction of the model's (log) noise range.")
    @_common(model_help="Pretrained name (mnist_sr, the super-resolution model; mnist, cifar10) or a .safetensors "
                         "bundle [the first bundled model whose size and channels fit IMG and --factor, "
                         "super-resolution models first: mnist_sr for 7x7 / 14x14 gray, cifar10 for 8x8 / "
                         "16x16 colour].")
    def cmd(input_path, factor, out, method, strength, model_name, label, sampler, steps, seed, cfg_scale,
            trajectory, device, as_json):
        """Super-resolve IMG by --factor with a super-resolution model or any image model.

        The result, averaged over factor x factor blocks, gives back IMG (up to rounding)."""
        s = upscale(model_name, input_path, out, factor, method=method, label=label, sampler=sampler, steps=steps,
                    seed=seed, cfg_scale=cfg_scale, strength=strength, trajectory=trajectory, device=device)
        _report(s, as_json, f"upscaled {input_path} x{s['factor']} ({s['size_in'][0]}x{s['size_in'][1]} -> "
                            f"{s['size_out'][0]}x{s['size_out'][1]}, {s['method']}); block means within "
                            f"{s['consistency_max']} level(s) of the input; wrote {s['out']}")

    return cmd


def denoise_command():
    import click

    @click.command(name="image")
    @click.argument("input_path", metavar="IMG", type=click.Path())
    @click.option("--out", "out", type=click.Path(), required=True, help="Output PNG.")
    @click.option("--sigma", default="auto", show_default=True,
                  help="Noise standard deviation of IMG in pixel levels (0-255), or 'auto' to estimate it. "
                       f"Denoising starts there (at least {SIGMA_FLOOR:g}).")
    @_common()
    def cmd(input_path, out, sigma, model_name, label, sampler, steps, seed, cfg_scale, trajectory, device, as_json):
        """Remove white noise from IMG with an image model (SDEdit from IMG's noise level).

        IMG must have the model's size (28x28 for mnist, 32x32 for cifar10)."""
        s = denoise(model_name, input_path, out, sigma=sigma, label=label, sampler=sampler, steps=steps, seed=seed,
                    cfg_scale=cfg_scale, trajectory=trajectory, device=device)
        _report(s, as_json, f"noise level {s['noise_sigma']:.3g} pixel levels ({s['sigma_source']}), denoised in "
                            f"{s['steps']} steps; wrote {s['out']}")

    return cmd


def add_commands(cli) -> None:
    """Add ``inpaint image``, ``upscale image`` and ``denoise image`` to ``cli``."""
    from polydiff.cli import verb_group

    verb_group(cli, "inpaint", "Fill gaps: polydiff inpaint MODALITY INPUT --out OUTPUT [options].").add_command(
        inpaint_command())
    verb_group(cli, "upscale", "Super-resolution: polydiff upscale MODALITY INPUT --factor F --out OUTPUT.").add_command(
        upscale_command())
    verb_group(cli, "denoise", "Remove noise: polydiff denoise MODALITY INPUT --out OUTPUT [options].").add_command(
        denoise_command())
