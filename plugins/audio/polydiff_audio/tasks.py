"""Gap filling and denoising of audio files with a trained audio model, and their commands.

Both tasks are runs of the core's one sampling run (:func:`polydiff.sampling.run`), no sampling code of
their own:

* :func:`inpaint` (``polydiff inpaint audio``) fills the gap ``[start, end)`` of a recording through
  *masked conditioning* (a :class:`polydiff.sampling.Known` of the recording around the gap): the model
  generates a clip whose samples outside the gap are pinned to the recording, so what it writes into the
  gap continues the audio on both sides. Everything outside the gap is copied from the input file
  sample for sample (same sample rate, channels and sample format), never re-synthesised.
* :func:`denoise` (``polydiff denoise audio``) is SDEdit (Meng et al. 2022) started at a *matched* noise
  level: the recording's own noise is estimated (:func:`estimate_noise`), the recording is treated as a
  sample of the diffusion process at that level, and the sampler walks it down to sigma = 0 (a Karras
  ladder from the estimate to 0 and any registered sampler). Long recordings are cut into overlapping
  clips (50 % overlap, Hann crossfade). The result is written at the model's sample rate, mono.

Units. The model works on loudness-normalized, scaled waveforms (see
:class:`~polydiff_audio.encoder.AudioEncoder`: RMS ``rms`` times ``scale``, 0.1 x 5 = 0.5 for the FSDD
models). Noise levels (``--sigma``, ``noise_sigma`` in the summaries) are standard deviations in those
units, so they compare directly with the model's sigma ladder; the summaries also give the level in dB
relative to full scale of the input (dBFS).

Noise estimate. :func:`estimate_noise` is a robust estimate of the standard deviation of white noise
from the second differences ``d[t] = x[t-1] - 2 x[t] + x[t+1]``: ``median|d| / (0.6745 sqrt(6))``. For
white Gaussian noise of standard deviation s each ``d[t]`` is N(0, 6 s^2) and its median absolute value
is 0.6745 sqrt(6) s, so the estimate is unbiased; it is the finest-scale median-absolute-deviation
estimator of Donoho & Johnstone (1994, "Ideal spatial adaptation by wavelet shrinkage") with a second
difference in place of the Haar wavelet, as in the DER_SNR estimator (Stoehr et al. 2008). The second
difference passes white noise with a power gain of 6 but a sinusoid of angular frequency w with
(2 - 2 cos w)^2, which is 24 dB less than that at 500 Hz in 8 kHz audio (the Haar difference: 11 dB), so
speech, whose energy lies mostly low, barely moves the median. What speech does leak in makes the
estimate err upwards (on the FSDD sample: by about 10 % at 8 dB SNR, and to about 0.03 in model units
for a clean recording), and :data:`SIGMA_FLOOR` keeps a clean recording from a ladder of zero length.
:func:`denoise` measures the noise at the recording's own sample rate, where white noise is white
(resampling cuts off its top band, which the second difference weighs most), and scales it by the share
of the noise power that resampling to the model's rate keeps.

Python use::

    from polydiff_audio.tasks import inpaint, denoise, load_model
    model = load_model("runs/audio/model.safetensors", device="cpu")
    inpaint(model, "in.wav", "filled.wav", start=0.40, end=0.55, seed=0)
    denoise(model, "noisy.wav", "clean.wav", sigma="auto")
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import torch

from polydiff.errors import InputError, PolydiffError
from polydiff.sampling import Known, run

from . import io as audio_io
from .encoder import resample, to_mono

__all__ = ["load_model", "inpaint", "denoise", "estimate_noise", "window_starts", "crossfade_weights",
           "add_commands", "SIGMA_FLOOR", "DEFAULT_LABEL"]

#: the lowest start level of denoising, in model units (speech RMS 0.5): 28 dB below the speech level, so
#: even a clean recording gets a few steps of the model rather than a no-op ladder
SIGMA_FLOOR = 0.02
#: both tasks condition on no class unless asked: the recording itself says what it is
DEFAULT_LABEL = "none"
#: windows denoised per network batch
DENOISE_BATCH = 16


# --------------------------------------------------------------------------------------- model
def load_model(model=None, device=None):
    """A :class:`polydiff.model.Model` of the audio modality: ``model`` is a loaded Model (returned as is),
    a .safetensors path, a pretrained name, or None for the modality's first pretrained model
    (:func:`polydiff.model.load_model`)."""
    from polydiff.model import load_model as _load

    return _load("audio", model, device)


def _check_out(out) -> Path:
    out = Path(out)
    if out.suffix.lower() not in audio_io.SUPPORTED:
        raise InputError(f"{out}: unsupported output format {out.suffix or '(no extension)'!r}; "
                         f"use {', '.join(audio_io.SUPPORTED)}")
    if out.is_dir():
        raise InputError(f"{out}: is a folder; --out must be an audio file name")
    return out


def _check_steps(steps) -> None:
    if steps is not None and int(steps) < 1:
        raise PolydiffError(f"--steps must be at least 1, got {steps}")


def _dbfs(amplitude: float) -> Optional[float]:
    """20 log10 of an amplitude relative to full scale (1.0); None for 0 (JSON has no -inf)."""
    return 20.0 * math.log10(amplitude) if amplitude > 0 else None


# --------------------------------------------------------------------------------------- inpainting
#: torchaudio.functional.resample's defaults, which polydiff_audio.encoder.resample uses
_LOWPASS_FILTER_WIDTH, _ROLLOFF = 6, 0.99


def _resampler_reach(sr: int, rate: int) -> int:
    """How many samples at ``rate`` one sample's value reaches when a signal goes from ``sr`` to ``rate``
    or back (the half-width of torchaudio's windowed-sinc kernel, plus one); 0 without resampling."""
    if int(sr) == int(rate):
        return 0
    return int(math.ceil(_LOWPASS_FILTER_WIDTH * rate / (min(sr, rate) * _ROLLOFF))) + 1


def inpaint(model, path, out, start: float, end: float, *, label=DEFAULT_LABEL, sampler: Optional[str] = None,
            steps: Optional[int] = None, seed: Optional[int] = 0, cfg_scale: Optional[float] = None,
            resample_passes: int = 1, device=None) -> dict:
    """Fill ``[start, end)`` seconds of the recording ``path`` with the model; write ``out``; return a summary.

    The recording is downmixed and resampled to the model's rate, and the model's clip-length window
    centred on the gap (moved inside the file at its ends, padded with silence when the file is shorter
    than a clip) is normalized with the loudness gain of its known, non-gap part, as the encoder
    normalizes training clips. The model then samples that window with ``known`` = the normalized window
    and ``known_mask`` = 1 outside the gap (0 in the gap and in padding; when the rates differ, also 0 over
    the resampler's reach on either side of the gap, whose samples resampling mixed with the gap's old
    content), with ``resample_passes`` RePaint passes per step. The generated gap is brought back to the
    recording's loudness and sample rate and written into every channel of a copy of the input's samples,
    in the input's sample format. Every other sample of ``out`` equals the input's bit for bit whenever the
    output format can store the input's sample format (WAV stores every PCM, float, mu-law and A-law
    format; FLAC stores 8-24 bit PCM; Vorbis, in or out, is lossy). When the known part is silent the
    window keeps the model's own loudness (unit gain), so the fill is never NaN. ``label`` None is "none".

    ``model``: a loaded Model, a bundle path or pretrained name (loaded after the input is checked).
    """
    t0 = time.perf_counter()
    label = DEFAULT_LABEL if label is None else label
    out = _check_out(out)
    _check_steps(steps)
    if int(resample_passes) < 1:
        raise PolydiffError(f"--resample must be at least 1, got {resample_passes}")
    native, sr, subtype = audio_io.read_audio_native(path)
    n_frames = native.shape[1]
    duration = n_frames / sr
    start, end = float(start), float(end)
    if not math.isfinite(start) or start < 0:
        raise PolydiffError(f"--start must be a number of seconds >= 0, got {start:g}")
    if not math.isfinite(end) or end > duration:
        raise PolydiffError(f"--end: {end:g} s is past the end of {path} ({duration:.3f} s long)")
    if start >= end:
        raise PolydiffError(f"--start ({start:g} s) must be before --end ({end:g} s)")
    a, b = int(round(start * sr)), min(int(round(end * sr)), n_frames)
    if b <= a:
        raise PolydiffError(f"--start/--end: the gap {start:g}-{end:g} s holds no sample at {sr} Hz")

    model = load_model(model, device)
    enc = model.encoder
    rate, size = enc.sample_rate, enc.clip_samples
    mono = resample(to_mono(audio_io.to_float(native)), sr, rate)
    m = len(mono)
    gs, ge = int(math.floor(a * rate / sr)), min(int(math.ceil(b * rate / sr)), m)
    if ge - gs >= size:
        raise PolydiffError(f"--start/--end: the gap is {end - start:.3f} s; it must be shorter than the model's "
                            f"clip ({enc.seconds:.3f} s)")
    cond = model.cond(1, label=label)  # checks the label before any sampling

    # the clip-length window around the gap, inside the file where possible
    ws = 0 if m <= size else min(max((gs + ge) // 2 - size // 2, 0), m - size)
    # resampling smears the gap's old content over the resampler's kernel: those samples on either side
    # are generated too (the model continues the known audio into them), and only [a, b) is spliced
    margin = _resampler_reach(sr, rate)
    lo, hi = max(gs - margin, ws), min(ge + margin, ws + size)
    seg = mono[ws:ws + size]
    window = np.zeros(size, np.float32)
    window[:len(seg)] = seg
    mask = np.zeros(size, np.float32)
    mask[:len(seg)] = 1.0
    mask[lo - ws:hi - ws] = 0.0
    gain = enc.loudness_gain(window[mask > 0])
    gain = gain if gain > 0 else 1.0  # silent surroundings: the model's own level
    unit = gain * enc.scale
    known = Known(torch.from_numpy(window * mask * np.float32(unit)).reshape(1, 1, size),
                  torch.from_numpy(mask).reshape(1, 1, size), int(resample_passes))
    x, _ = run(model, n=1, sampler=sampler, steps=steps, seed=seed, cfg_scale=cfg_scale, cond=cond, known=known)
    generated = np.nan_to_num(x[0, 0].detach().float().cpu().numpy()) / np.float32(unit)

    # back to the input's rate: resample the whole model-rate track, so both time axes start at 0 and
    # input sample k lines up with output sample k; only [a, b) of it is used
    track = mono.copy()
    hi = min(hi, m)
    track[lo:hi] = generated[lo - ws:hi - ws]
    back = resample(track, rate, sr)
    if len(back) < b:
        back = np.pad(back, (0, b - len(back)))
    result = native.copy()
    result[:, a:b] = audio_io.from_float(back[a:b], native.dtype)[None, :]
    audio_io.write_audio(out, result, sr, subtype=subtype)
    sc = model.config.get("sample", {})
    return {"task": "inpaint", "input": str(path), "out": str(out), "sample_rate": sr,
            "channels": int(native.shape[0]), "subtype": subtype, "start": start, "end": end,
            "gap_samples": b - a, "window": [ws / rate, (ws + size) / rate], "model": str(model.path),
            "label": label, "sampler": sampler or sc.get("sampler"), "steps": int(steps or sc.get("steps", 20)),
            "seed": seed, "resample": int(resample_passes), "seconds": round(time.perf_counter() - t0, 4)}


# --------------------------------------------------------------------------------------- denoising
def estimate_noise(x: np.ndarray) -> float:
    """Standard deviation of white noise in ``x``: ``median|x[t-1] - 2 x[t] + x[t+1]| / (0.6745 sqrt(6))``,
    robust to the low-frequency content of speech (see the module docstring). 0 for fewer than three
    samples."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3:
        return 0.0
    d = x[:-2] - 2.0 * x[1:-1] + x[2:]
    return float(np.median(np.abs(d)) / (0.6745 * math.sqrt(6.0)))


def window_starts(n: int, size: int) -> List[int]:
    """Starts of the clip-length windows covering ``n`` samples with 50 % overlap; the last one ends at n."""
    if n <= size:
        return [0]
    hop = size // 2
    return list(range(0, n - size, hop)) + [n - size]


def crossfade_weights(size: int, first: bool, last: bool) -> np.ndarray:
    """Overlap-add weights of one window: a Hann window sampled at the sample centres (positive
    everywhere), held at 1 over the first half of the first window and the second half of the last one,
    so the ends of the file are not faded. Windows are summed with these weights and divided by the
    summed weights."""
    t = (np.arange(size) + 0.5) / size
    w = np.sin(np.pi * t) ** 2
    if first:
        w[:size // 2] = 1.0
    if last:
        w[size // 2:] = 1.0
    return w


def _parse_sigma(sigma) -> Optional[float]:
    """None for 'auto', else a finite float >= 0 (a one-line error naming --sigma otherwise)."""
    if sigma is None or str(sigma).strip().lower() == "auto":
        return None
    try:
        v = float(sigma)
    except ValueError:
        raise PolydiffError(f"--sigma must be 'auto' or a number >= 0, got {sigma!r}") from None
    if not math.isfinite(v) or v < 0:
        raise PolydiffError(f"--sigma must be 'auto' or a number >= 0, got {sigma!r}")
    return v


@torch.no_grad()
def denoise(model, path, out, *, sigma: Union[str, float, None] = "auto", label=DEFAULT_LABEL,
            sampler: Optional[str] = None, steps: Optional[int] = None, seed: Optional[int] = 0, device=None,
            batch_size: int = DENOISE_BATCH) -> dict:
    """Remove noise from the recording ``path`` by SDEdit from a matched noise level; write ``out`` (the
    model's sample rate, mono, 16-bit for WAV/FLAC); return a summary.

    1. Downmix, resample to the model's rate, normalize the loudness of the whole recording (one gain, so
       one noise level holds for every window).
    2. Noise level ``s``: for ``sigma="auto"``, :func:`estimate_noise` of the mono recording at its own
       rate, brought to model units (times the gain, and times the square root of the share of the noise
       power that resampling to the model's rate keeps); else ``sigma`` (model units). Start level
       ``sigma_t = max(s, SIGMA_FLOOR)``; fresh Gaussian noise of standard deviation
       ``sqrt(sigma_t^2 - s^2)`` tops the recording's own noise up to ``sigma_t``.
    3. Each clip-length window (50 % overlap; the last one ends at the end of the file; a short file is
       padded with silence) goes down a Karras ladder from ``sigma_t`` to 0 (``steps`` steps, the model's
       ``sigma_min`` and ``rho``) with the sampler ``sampler`` [the model's], conditioned on ``label``.
    4. The windows are overlap-added with Hann crossfades, the gain is undone, and the result is written.

    A silent recording (RMS below 1e-6) is written back as silence without running the model. ``label``
    None is "none".
    """
    from polydiff import get_sampler
    from polydiff.sampling import generators

    t0 = time.perf_counter()
    label = DEFAULT_LABEL if label is None else label
    out = _check_out(out)
    _check_steps(steps)
    given = _parse_sigma(sigma)
    if int(batch_size) < 1:
        raise PolydiffError(f"batch_size must be at least 1, got {batch_size}")
    samples, sr = audio_io.read_audio(path)
    model = load_model(model, device)
    enc = model.encoder
    rate, size = enc.sample_rate, enc.clip_samples
    sc = model.config.get("sample", {})
    sampler = sampler or sc.get("sampler", "dpmpp_2m")
    get_sampler(sampler)  # an unknown name fails before any work
    n_steps = int(steps or sc.get("steps", 20))
    model.cond(1, label=label)  # checks the label before any work

    mono = to_mono(samples)
    wave = resample(mono, sr, rate)
    m = len(wave)
    gain = enc.loudness_gain(wave)
    unit = gain * enc.scale
    summary = {"task": "denoise", "input": str(path), "out": str(out), "sample_rate": rate, "channels": 1,
               "duration": m / rate, "model": str(model.path), "label": label, "sampler": sampler,
               "steps": n_steps, "seed": seed}
    if unit == 0:  # digital silence: nothing to denoise, and no gain to undo
        audio_io.write_audio(out, np.zeros(m, np.float32), rate)
        summary.update(noise_sigma=0.0, noise_dbfs=None, sigma_start=0.0, sigma_source="silent input",
                       windows=0, seconds=round(time.perf_counter() - t0, 4))
        return summary
    x = wave.astype(np.float32) * np.float32(unit)
    # measured at the recording's own rate, where white noise is still white, then carried to the model's
    # rate: resampling keeps the share min(sr, rate) * rolloff / sr of a white noise's power
    kept = 1.0 if sr == rate else min(sr, rate) * _ROLLOFF / sr
    noise = estimate_noise(mono) * math.sqrt(kept) * unit if given is None else given
    sigma_t = max(noise, SIGMA_FLOOR)
    gen = generators(seed)  # one stream for every batch of windows
    starts = window_starts(m, size)
    acc = np.zeros(max(m, size), np.float64)
    weight = np.zeros_like(acc)
    for i in range(0, len(starts), int(batch_size)):
        chunk = starts[i:i + int(batch_size)]
        batch = np.zeros((len(chunk), 1, size), np.float32)
        for j, s in enumerate(chunk):
            seg = x[s:s + size]
            batch[j, 0, :len(seg)] = seg
        y, _ = run(model, start=torch.from_numpy(batch), sigma_start=sigma_t, start_noise=noise, steps=n_steps,
                   sampler=sampler, cond=model.cond(len(chunk), label=label), generator=gen)
        y = np.nan_to_num(y.detach().float().cpu().numpy()[:, 0].astype(np.float64))
        for j, s in enumerate(chunk):
            w = crossfade_weights(size, first=s == starts[0], last=s == starts[-1])
            acc[s:s + size] += w * y[j]
            weight[s:s + size] += w
    clean = (acc / np.maximum(weight, 1e-12))[:m] / unit
    audio_io.write_audio(out, clean.astype(np.float32), rate)
    summary.update(noise_sigma=noise, noise_dbfs=_dbfs(noise / unit), sigma_start=sigma_t,
                   sigma_source="estimated" if given is None else "given", windows=len(starts),
                   seconds=round(time.perf_counter() - t0, 4))
    return summary


# --------------------------------------------------------------------------------------- commands
_MODEL_HELP = ("Pretrained name or a .safetensors bundle from `polydiff train audio` "
               "[the audio modality's first pretrained model].")
_LABEL_HELP = ("Class to condition on (a digit for FSDD models), or 'none' for the unconditional model "
               "[none: the recording guides the model].")


def _report(summary: dict, as_json: bool, line: str) -> None:
    from polydiff.cli import report_task

    report_task(summary, as_json, line)


def inpaint_command():
    """The click command ``polydiff inpaint audio``."""
    import click

    @click.command(name="audio")
    @click.argument("input_path", metavar="IN", type=click.Path())
    @click.option("--start", type=float, required=True, help="Start of the gap, in seconds.")
    @click.option("--end", type=float, required=True,
                  help="End of the gap, in seconds (exclusive); the gap must be shorter than the model's clip.")
    @click.option("--out", "out", type=click.Path(), required=True,
                  help="Output file (.wav, .flac or .ogg): the input's sample rate, channels and sample format.")
    @click.option("--model", "model_name", default=None, help=_MODEL_HELP)
    @click.option("--label", default=DEFAULT_LABEL, show_default=True, help=_LABEL_HELP)
    @click.option("--sampler", default=None, help="euler, heun, ddim, ddpm, dpmpp_2m, unipc, ... [the model's].")
    @click.option("--steps", type=int, default=None, help="Sampling steps [the model's].")
    @click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
    @click.option("--cfg-scale", type=float, default=None,
                  help="Classifier-free guidance scale with --label (1 = off) [the model's].")
    @click.option("--resample", "resample_passes", type=int, default=1, show_default=True,
                  help="RePaint resampling passes per step: more blend the fill into its surroundings, "
                       "at that many times the cost.")
    @click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [cuda when present, else cpu]")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
    def cmd(input_path, start, end, out, model_name, label, sampler, steps, seed, cfg_scale, resample_passes,
            device, as_json):
        """Fill the gap [--start, --end) of the recording IN with a trained audio model.

        The model sees the audio around the gap (one clip's worth, centred on it) and generates the gap to
        fit it (masked conditioning). Outside the gap OUT holds exactly the samples of IN, at IN's sample
        rate and channel count; the fill goes into every channel.
        """
        s = inpaint(model_name, input_path, out, start, end, label=label, sampler=sampler, steps=steps, seed=seed,
                    cfg_scale=cfg_scale, resample_passes=resample_passes, device=device)
        _report(s, as_json, f"filled {s['start']:g}-{s['end']:g} s of {input_path} ({s['gap_samples']} samples at "
                            f"{s['sample_rate']} Hz, {s['channels']} channel{'s' if s['channels'] != 1 else ''}); "
                            f"wrote {s['out']}")

    return cmd


def denoise_command():
    """The click command ``polydiff denoise audio``."""
    import click

    @click.command(name="audio")
    @click.argument("input_path", metavar="NOISY", type=click.Path())
    @click.option("--out", "out", type=click.Path(), required=True,
                  help="Output file (.wav, .flac or .ogg), written MONO at the MODEL's sample rate.")
    @click.option("--model", "model_name", default=None, help=_MODEL_HELP)
    @click.option("--label", default=DEFAULT_LABEL, show_default=True, help=_LABEL_HELP)
    @click.option("--sigma", default="auto", show_default=True,
                  help="Noise level of NOISY as a standard deviation in model units (speech normalized to RMS "
                       "0.5 for the FSDD models), or 'auto' to estimate it (median absolute second "
                       "difference). Denoising starts there "
                       f"(at least {SIGMA_FLOOR}).")
    @click.option("--sampler", default=None, help="euler, heun, ddim, ddpm, dpmpp_2m, unipc, ... [the model's].")
    @click.option("--steps", type=int, default=None, help="Steps from the noise level down to 0 [the model's].")
    @click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
    @click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [cuda when present, else cpu]")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
    def cmd(input_path, out, model_name, label, sigma, sampler, steps, seed, device, as_json):
        """Remove noise from the recording NOISY with a trained audio model (SDEdit from its noise level).

        NOISY is downmixed to mono and resampled to the model's rate; its noise level is estimated (or
        given with --sigma), and the model denoises it from that level, one clip at a time with crossfades.
        OUT is mono at the model's sample rate (8 kHz for the FSDD models), whatever NOISY's format.
        """
        s = denoise(model_name, input_path, out, sigma=sigma, label=label, sampler=sampler, steps=steps,
                    seed=seed, device=device)
        if s["sigma_source"] == "silent input":
            line = f"{input_path} is silent; wrote silence to {s['out']}"
        else:
            db = "no noise" if s["noise_dbfs"] is None else f"{s['noise_dbfs']:.1f} dBFS"
            line = (f"noise level {s['noise_sigma']:.4g} ({s['sigma_source']}; {db}), "
                    f"denoised from sigma {s['sigma_start']:.4g} in {s['steps']} steps; wrote {s['out']} "
                    f"({s['sample_rate']} Hz mono, {s['duration']:.2f} s)")
        _report(s, as_json, line)

    return cmd


def add_commands(cli) -> None:
    """Add ``inpaint audio`` and ``denoise audio`` to ``cli`` (groups created unless they exist)."""
    from polydiff.cli import verb_group

    verb_group(cli, "inpaint", "Fill gaps: polydiff inpaint MODALITY INPUT --out OUTPUT [options].").add_command(
        inpaint_command())
    verb_group(cli, "denoise", "Remove noise: polydiff denoise MODALITY INPUT --out OUTPUT [options].").add_command(
        denoise_command())
