"""Audio benchmark: are the bundled FSDD model's spoken digits recognisable, and how fast are they made?

    .venv/bin/python benchmarks/audio.py --json > benchmarks/results/audio.json
    .venv/bin/python benchmarks/audio.py --out-dir docs/img/audio --json > benchmarks/results/audio.json
    .venv/bin/python benchmarks/audio.py --model runs/mine/model.safetensors --n-per-digit 5 --skip-rtf
    .venv/bin/python benchmarks/audio.py --render benchmarks/results/audio.json     # markdown tables

Protocol:

* **data**: the Free Spoken Digit Dataset (3,000 recordings, 10 digits x 6 speakers x 50 takes, 8 kHz;
  found as in ``polydiff_audio.datasets``). Every clip, real or generated, goes through the model's
  encoder the way training data does: resampled to the model's rate, the loudest ``clip_samples`` window
  (or the clip padded with silence at the end) by ``AudioEncoder.fix_length``, loudness-normalized by
  ``AudioEncoder.normalize`` (the padding stays silent), divided by the encoder's ``scale``;
* **classifier**: a small CNN (4 conv layers, 16-32-64-64 channels, mean and max pooling over time, a
  64-unit penultimate layer; 69k parameters) on 40-band log-mel spectrograms (torchaudio; 32 ms windows,
  10 ms hop), trained by this script, seeded, on the recordings of every speaker except ``--holdout``
  (george by default) with takes 5-49; takes 0-4 of those speakers (FSDD's usual test takes) are its
  validation set. Training uses random spectral colouring, time shifts and SpecAugment-style masks,
  AdamW with a one-cycle schedule, ``--epochs`` epochs (12). ``--classifiers`` (3) such classifiers are
  trained, seeded ``--seed``, ``--seed`` + 1, ...: one classifier's verdict on generated clips moves by
  15 points and more with its seed alone, so the accuracies below are means over the classifiers;
* **accuracy**: of the classifiers on all 500 recordings of the held-out speaker ("real") and on
  ``--n-per-digit`` generated clips per digit ("generated"; the label is the digit asked for), per digit
  and overall. The clips are sampled with the model's default sampler, in batches of ``--batch-size``
  from one generator seeded with ``--seed``, digits 0 to 9 in order. The checked ratio is generated /
  real accuracy (each the mean over the classifiers; per-digit accuracies are means too, confusion
  matrices sums): 1.0 means the generated digits are as recognisable to these classifiers as a new
  speaker's real recordings. Each classifier's own ratio is reported as well;
* **Fréchet distance** between Gaussians fitted to the first classifier's penultimate-layer embeddings (64-D)
  of the held-out speaker's 500 recordings and of the generated clips (as FID does with Inception
  features). Reference value: the same distance for an equally sized, digit-balanced seeded draw from the
  validation takes of the classifier's speakers (real speech by other speakers; it shows how much of the
  distance a change of speaker alone accounts for; at most 25 clips per digit exist). The matrix square
  root comes from symmetric eigendecompositions, exact for covariance matrices (see
  :func:`frechet_distance`). The estimate is biased upward at small sample sizes, so values are
  comparable only at the same ``--n-per-digit``;
* **real-time factor** (RTF) = wall time of generating and decoding one clip at batch 1 / seconds of audio
  in it, the median of 5 runs after a warm-up, per sampler and step count (``--samplers``), on
  ``--device`` with ``torch.set_num_threads(--threads)`` (2 by default). The target applies to the
  model's default sampler.

The bundled model was trained on all six speakers, including the held-out one: the speaker is held out from
the classifier, not from the generator, and generated clips in the voice of the classifier's own speakers
are easier for it than the held-out speaker's recordings, so the ratio can exceed 1. Timings depend on
the machine and its load (the load average is recorded at the start and the end).
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
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import cpu_name  # noqa: E402

TARGETS = {"accuracy_ratio": 0.8, "rtf": 0.5}
DEFAULT_SAMPLERS = "dpmpp_2m:20,dpmpp_2m:10,heun:10,euler:20,unipc:10"
DIGITS = [str(d) for d in range(10)]
VAL_TAKES = 5   # takes 0..4 of the classifier's speakers: its validation set (FSDD's usual test takes)
RTF_RUNS = 5
N_MELS = 40


def log(msg: str) -> None:
    _common.log(msg)


def versions() -> dict:
    return _common.versions(modules=("torchaudio",), distributions=("polydiff-audio",))


def parse_samplers(text: str) -> List[tuple]:
    """``"dpmpp_2m:20,heun:10"`` -> ``[("dpmpp_2m", 20), ("heun", 10)]`` (checked against the samplers)."""
    from polydiff.samplers import SAMPLERS

    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, steps = part.partition(":")
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
        if not steps.isdigit() or int(steps) < 1:
            raise ValueError(f"--samplers: {part!r} is not SAMPLER:STEPS with STEPS >= 1")
        if (name, int(steps)) not in out:
            out.append((name, int(steps)))
    return out


# ------------------------------------------------------------------------------------------- data
def prepare(encoder, waves: Sequence[np.ndarray]) -> torch.Tensor:
    """Clips as the model's training data sees them, at the encoder's loudness ``rms``: ``[N, clip_samples]``.

    ``AudioEncoder.fix_length`` takes the loudest window (or pads at the end), ``AudioEncoder.normalize``
    sets the loudness of the real samples, the padding stays silent; dividing by ``scale`` undoes the
    network's input scaling, so a generated clip decoded by ``AudioEncoder.decode`` and a real recording
    are on the same footing."""
    out = np.zeros((len(waves), encoder.clip_samples), np.float32)
    for i, w in enumerate(waves):
        clip, n = encoder.fix_length(np.asarray(w, np.float32))
        out[i, :n] = encoder.normalize(clip[:n]) / encoder.scale
    return torch.from_numpy(out)


def load_fsdd(encoder, holdout: str) -> Dict[str, dict]:
    """The FSDD recordings, split into ``train`` / ``val`` (the classifier's speakers; takes >= 5 / < 5) and
    ``holdout`` (every take of the held-out speaker): each ``{"x": [N, L], "y": [N], "names": [...]}``."""
    from polydiff_audio.datasets import fsdd, fsdd_dir
    from polydiff_audio.encoder import FSDD_NAME, resample

    clips = fsdd()
    meta = [FSDD_NAME.match(Path(n).stem) for n in clips.names]
    speakers = sorted({m.group(2) for m in meta})
    if holdout not in speakers:
        raise ValueError(f"--holdout {holdout!r} is not an FSDD speaker; speakers: {', '.join(speakers)}")
    waves = [resample(w, clips.sample_rate, encoder.sample_rate) for w in clips.waves]
    x = prepare(encoder, waves)
    digit = torch.tensor([int(m.group(1)) for m in meta])
    parts = {"train": [], "val": [], "holdout": []}
    for i, m in enumerate(meta):
        if m.group(2) == holdout:
            parts["holdout"].append(i)
        else:
            parts["val" if int(m.group(3)) < VAL_TAKES else "train"].append(i)
    out = {k: {"x": x[idx], "y": digit[idx], "names": [clips.names[i] for i in idx]} for k, idx in parts.items()}
    out["info"] = {"folder": str(fsdd_dir()), "recordings": len(clips), "speakers": speakers, "holdout": holdout,
                   "classifier_speakers": [s for s in speakers if s != holdout],
                   "sizes": {k: len(v) for k, v in parts.items()}}
    return out


# ------------------------------------------------------------------------------------- classifier
class LogMel(nn.Module):
    """Waveform ``[N, L]`` -> log-mel spectrogram ``[N, 1, 40, frames]`` (32 ms Hann windows, 10 ms hop),
    standardized per mel band with statistics fitted on the training clips (:meth:`fit`)."""

    def __init__(self, sample_rate: int):
        super().__init__()
        import torchaudio.transforms as T

        self.mel = T.MelSpectrogram(sample_rate=sample_rate, n_fft=round(0.032 * sample_rate),
                                    hop_length=round(0.010 * sample_rate), n_mels=N_MELS, f_min=20.0,
                                    f_max=sample_rate / 2, power=2.0)
        self.register_buffer("mean", torch.zeros(N_MELS, 1))
        self.register_buffer("std", torch.ones(N_MELS, 1))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(x) + 1e-6)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, batch: int = 500) -> "LogMel":
        feats = torch.cat([self.raw(x[i:i + batch]) for i in range(0, len(x), batch)])  # [N, mels, frames]
        self.mean.copy_(feats.mean(dim=(0, 2))[:, None])
        self.std.copy_(feats.std(dim=(0, 2))[:, None].clamp_min(1e-3))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.raw(x) - self.mean) / self.std)[:, None]


class DigitNet(nn.Module):
    """Four 3x3 conv layers (BatchNorm, ReLU, 2x2 max-pooling after the first three); the feature maps are
    averaged over frequency, then pooled over time by mean and max (a digit fills only part of the 1 s
    clip, the rest is silence); a 64-unit penultimate layer (:meth:`embed`: the features of the Fréchet
    distance) and 10 logits."""

    def __init__(self, classes: int = 10, widths=(16, 32, 64, 64), emb: int = 64, dropout: float = 0.2):
        super().__init__()
        layers, c = [], 1
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.penultimate = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * c, emb), nn.ReLU())
        self.head = nn.Linear(emb, classes)

    def embed(self, spec: torch.Tensor) -> torch.Tensor:
        h = self.features(spec).mean(dim=2)                                # [N, C, frames / 8]
        return self.penultimate(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(spec))


def augment(spec: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Training-time augmentation of standardized log-mel spectrograms ``[N, 1, bands, frames]``, per clip:

    * a random spectral colouring, ``a * u + b * cos(pi * u + phase)`` over the bands (``u`` from -1 to 1,
      ``a``, ``b`` up to 0.5 standard deviations): a different microphone or vocal tract, the main
      difference between speakers that the classifier must ignore;
    * a random time shift of -5 to +20 frames (circular; FSDD clips end in silence);
    * one frequency mask (up to 6 bands) and one time mask (up to 10 frames), filled with the clip's mean
      (SpecAugment)."""
    n, _, f, t = spec.shape
    u = torch.linspace(-1, 1, f)
    a = (torch.rand(n, 1, generator=g) * 2 - 1) * 0.5
    b = (torch.rand(n, 1, generator=g) * 2 - 1) * 0.5
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    spec = spec + (a * u + b * torch.cos(math.pi * u + phase))[:, None, :, None]
    shifts = torch.randint(-5, 21, (n,), generator=g)
    fw = torch.randint(0, 7, (n,), generator=g)
    f0 = (torch.rand(n, generator=g) * (f - fw)).long()
    tw = torch.randint(0, 11, (n,), generator=g)
    t0 = (torch.rand(n, generator=g) * (t - tw)).long()
    for i in range(n):
        s = spec[i, 0].roll(int(shifts[i]), dims=1)
        fill = s.mean()
        s[f0[i]:f0[i] + fw[i]] = fill
        s[:, t0[i]:t0[i] + tw[i]] = fill
        spec[i, 0] = s
    return spec


class Classifier:
    """:class:`LogMel` features + :class:`DigitNet`, trained by :meth:`train` and applied in batches."""

    def __init__(self, sample_rate: int, seed: int):
        torch.manual_seed(seed)
        self.features = LogMel(sample_rate)
        self.net = DigitNet()
        self.seed = seed

    def train(self, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int = 64, lr: float = 3e-3,
              val: Optional[tuple] = None) -> dict:
        """Train on waveforms ``x`` with digits ``y``; returns the loss and validation accuracy per epoch."""
        g = torch.Generator().manual_seed(self.seed)
        self.features.fit(x)
        with torch.no_grad():
            spec = torch.cat([self.features(x[i:i + 500]) for i in range(0, len(x), 500)])
        opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=1e-3)
        steps = epochs * ((len(x) + batch_size - 1) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
        lossf = nn.CrossEntropyLoss(label_smoothing=0.1)
        history = []
        for ep in range(epochs):
            self.net.train()
            perm = torch.randperm(len(x), generator=g)
            total, t0 = 0.0, time.perf_counter()
            for i in range(0, len(x), batch_size):
                idx = perm[i:i + batch_size]
                loss = lossf(self.net(augment(spec[idx], g)), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            rec = {"epoch": ep + 1, "loss": total / len(x), "seconds": time.perf_counter() - t0}
            if val is not None:
                rec["val_accuracy"] = float((self.predict(val[0]) == val[1]).float().mean())
            history.append(rec)
            log(f"classifier epoch {ep + 1}/{epochs}: loss {rec['loss']:.4f}"
                + (f", validation accuracy {rec['val_accuracy']:.4f}" if "val_accuracy" in rec else "")
                + f" ({rec['seconds']:.1f} s)")
        self.net.eval()
        return {"history": history}

    @torch.no_grad()
    def _apply(self, x: torch.Tensor, fn, batch: int = 250) -> torch.Tensor:
        self.net.eval()
        return torch.cat([fn(self.features(x[i:i + batch])) for i in range(0, len(x), batch)])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, self.net).argmax(1)

    def embed(self, x: torch.Tensor) -> np.ndarray:
        return self._apply(x, self.net.embed).double().numpy()


# ---------------------------------------------------------------------------------------- metrics
def accuracy_report(pred: torch.Tensor, y: torch.Tensor) -> dict:
    """Overall and per-digit accuracy and the confusion matrix (rows: true digit, columns: predicted)."""
    pred, y = pred.numpy(), y.numpy()
    conf = np.zeros((10, 10), int)
    np.add.at(conf, (y, pred), 1)
    per = {DIGITS[d]: (float(conf[d, d] / conf[d].sum()) if conf[d].sum() else None) for d in range(10)}
    return {"n": int(len(y)), "accuracy": float((pred == y).mean()), "per_digit": per, "confusion": conf.tolist()}


def mean_report(reports: List[dict]) -> dict:
    """Several classifiers' reports on the same clips as one: mean accuracies (overall and per digit), summed
    confusion matrices."""
    if len(reports) == 1:
        return dict(reports[0])
    per = {d: (None if any(r["per_digit"][d] is None for r in reports)
               else float(np.mean([r["per_digit"][d] for r in reports]))) for d in DIGITS}
    return {"n": reports[0]["n"], "accuracy": float(np.mean([r["accuracy"] for r in reports])), "per_digit": per,
            "confusion": np.sum([r["confusion"] for r in reports], axis=0).tolist()}


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b``
    (:func:`polydiff.metrics.frechet_distance`)."""
    from polydiff.metrics import frechet_distance as fd

    return fd(np.asarray(a, np.float64), np.asarray(b, np.float64))


# -------------------------------------------------------------------------------------- generation
def generate(model, n_per_digit: int, seed: int, batch_size: int, cfg_scale=None):
    """``n_per_digit`` clips of every digit with the model's default sampler, from one generator seeded
    with ``seed`` (digits 0..9 in order, batches of ``batch_size``). Returns (waves, digits, seconds)."""
    g = torch.Generator().manual_seed(seed)
    waves, digits, seconds = [], [], 0.0
    for d in range(10):
        t_d = time.perf_counter()
        left = n_per_digit
        while left > 0:
            b = min(batch_size, left)
            t0 = time.perf_counter()
            x, cond = model.sample(b, generator=g, label=DIGITS[d], cfg_scale=cfg_scale)
            clips = model.encoder.decode(x.cpu(), {k: (v.cpu() if hasattr(v, "cpu") else v) for k, v in cond.items()})
            seconds += time.perf_counter() - t0
            waves += clips.waves
            digits += [d] * b
            left -= b
        log(f"generated {n_per_digit} clips of digit {d} ({time.perf_counter() - t_d:.1f} s)")
    return waves, torch.tensor(digits), seconds


def real_time_factor(model, sampler: str, steps: int, runs: int = RTF_RUNS, label: str = "7", cfg_scale=None) -> dict:
    """One clip at batch 1: a warm-up run, then ``runs`` timed runs (sampling + decoding) with seeds
    0..runs-1; RTF = median seconds / seconds of audio in the clip."""
    from polydiff.samplers import nfe

    def once(seed):
        t0 = time.perf_counter()
        x, cond = model.sample(1, sampler=sampler, steps=steps, seed=seed, label=label, cfg_scale=cfg_scale)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        clip = model.encoder.decode(x.cpu(), {k: (v.cpu() if hasattr(v, "cpu") else v) for k, v in cond.items()})
        return time.perf_counter() - t0, len(clip.waves[0]) / clip.sample_rate

    once(1000)
    times, audio_s = [], None
    for r in range(runs):
        t, audio_s = once(r)
        times.append(t)
    med = statistics.median(times)
    return {"sampler": sampler, "steps": steps, "nfe": nfe(sampler, steps), "audio_s": audio_s,
            "runs_s": times, "median_s": med, "rtf": med / audio_s}


Stopwatch = _common.Stopwatch


def check(value, target, below=False, reason=None, skipped=False):
    """One target: ``pass`` is true or false, or None when the measurement was ``skipped`` on request; a
    missing value that was not skipped fails (with the ``reason``)."""
    c = {"value": value, "target": target}
    if below:
        c["below"] = True
    if skipped:
        c["pass"] = None
    else:
        c["pass"] = value is not None and bool(value <= target if below else value >= target)
    if reason:
        c["reason"] = reason
    return c


# --------------------------------------------------------------------------------------- outputs
def write_examples(out_dir: Path, waves, digits: torch.Tensor, sample_rate: int, per_digit: int) -> dict:
    """The first ``per_digit`` generated clips of every digit as ``digit{d}_{i}.wav`` (16-bit; a clip peaking
    above full scale is scaled down as ``AudioEncoder.write`` does, never clipped) and a spectrogram grid of
    the first clip of every digit (``spectrograms.png``)."""
    from polydiff_audio.draw import spectrogram_grid
    from polydiff_audio.encoder import fit_full_scale
    from polydiff_audio.io import write_audio

    out_dir.mkdir(parents=True, exist_ok=True)
    wavs, first = [], []
    for d in range(10):
        idx = [i for i in range(len(waves)) if int(digits[i]) == d][:per_digit]
        for k, i in enumerate(idx):
            wavs.append(str(write_audio(out_dir / f"digit{d}_{k}.wav", fit_full_scale(waves[i]), sample_rate)))
        if idx:
            first.append((d, waves[idx[0]]))
    png = spectrogram_grid([w for _, w in first], sample_rate, out_dir / "spectrograms.png",
                           titles=[f"digit {d}" for d, _ in first], n_cols=5)
    return {"wavs": wavs, "png": str(png)}


def render_markdown(paths) -> str:
    """Markdown tables of saved results (``--render``), one block per file."""
    out = []
    for path in paths:
        with open(path) as f:
            out.append(render_doc(json.load(f)))
    return "\n".join(out)


def render_doc(doc: dict) -> str:
    """Markdown tables of one result document: accuracy per digit, Fréchet distances, real-time factors,
    and the checks with PASS / FAIL."""
    lines = []
    g, r = doc["generated"], doc["real"]
    m = doc["machine"]
    lines.append(f"`{doc['command']}`: model `{Path(doc['model']).name}`, {g['n']} generated clips "
                 f"({g['sampler']}, {g['steps']} steps, seed {doc['seed']}), held-out speaker "
                 f"{doc['data']['holdout']}; {m['threads']} thread(s) on {m['device']} ({m['cpu']}); "
                 f"{doc['wall_s']:.0f} s in all ({doc['cpu_s']:.0f} CPU s)\n")
    share = m.get("cpu_share")
    if share is not None and share < 0.7:
        lines.append(f"**Note:** the process got {100 * share:.0f}% of its {m['threads']} thread(s)' time; other work "
                     f"held the cores, so the timings below overstate the cost.\n")
    c = doc["classifier"]
    count = c.get("count", 1)
    means = f", means over {count} classifiers (seeds {', '.join(map(str, c['seeds']))})" if count > 1 else ""
    lines.append(f"Classifier accuracy in %, per digit and overall{means}. "
                 f"Trained on {', '.join(doc['data']['classifier_speakers'])} (takes {VAL_TAKES}-49, {c['epochs']} epochs, "
                 f"{c['train_s']:.0f} s in all); accuracy on their takes 0-{VAL_TAKES - 1}: "
                 f"{100 * c['val_accuracy']:.1f}%.\n")
    lines.append("| | " + " | ".join(DIGITS) + " | all |")
    lines.append("|---|" + "---|" * 11)
    for name, rep in ((f"real, {doc['data']['holdout']} ({r['n']})", r), (f"generated ({g['n']})", g)):
        lines.append(f"| {name} | " + " | ".join(f"{100 * rep['per_digit'][d]:.0f}" if rep["per_digit"][d] is not None else "-"
                                               for d in DIGITS) + f" | **{100 * rep['accuracy']:.1f}** |")
    if doc.get("per_classifier") and len(doc["per_classifier"]) > 1:
        lines.append("\n| classifier seed | real % | generated % | ratio |")
        lines.append("|---|---|---|---|")
        for pc in doc["per_classifier"]:
            ratio_text = "-" if pc["ratio"] is None else f"{pc['ratio']:.3f}"
            lines.append(f"| {pc['seed']} | {100 * pc['real']:.1f} | {100 * pc['generated']:.1f} | {ratio_text} |")
    fd = doc["fd"]
    lines.append("\n| | value | target |")
    lines.append("|---|---|---|")
    ratio = doc["checks"]["accuracy_ratio"]["value"]
    lines.append(f"| accuracy ratio generated / real | {'-' if ratio is None else f'{ratio:.3f}'} | "
                 f"≥ {doc['targets']['accuracy_ratio']} |")
    lines.append(f"| Fréchet distance, generated vs {doc['data']['holdout']} ({fd['n_generated']} vs {fd['n_real']}) | {fd['generated']:.2f} | |")
    lines.append(f"| Fréchet distance, other speakers' real takes vs {doc['data']['holdout']} ({fd['n_reference']} vs {fd['n_real']}) | {fd['reference']:.2f} | |")
    if doc.get("rtf"):
        lines.append(f"\nReal-time factor: one {doc['rtf'][0]['audio_s']:g} s clip at batch 1, median of {RTF_RUNS} runs; "
                     f"target ≤ {doc['targets']['rtf']} for the default sampler ({g['sampler']} {g['steps']}).\n")
        lines.append("| sampler | steps | NFE | median s per clip | RTF |")
        lines.append("|---|---|---|---|---|")
        for s in doc["rtf"]:
            lines.append(f"| {s['sampler']} | {s['steps']} | {s['nfe']} | {s['median_s']:.3f} | {s['rtf']:.3f} |")
    lines.append("")
    for name, ch in doc["checks"].items():
        lines.append(f"- {name}: {_fmt_check(ch)}")
    lines.append("")
    return "\n".join(lines)


def _fmt_check(c: dict) -> str:
    val = "null" if c["value"] is None else f"{c['value']:.4g}"
    verdict = "SKIPPED" if c["pass"] is None else ("PASS" if c["pass"] else "FAIL")
    return (f"{val} (target {'<=' if c.get('below') else '>='} {c['target']}) {verdict}"
            + (f" ({c['reason']})" if c.get("reason") else ""))


# ------------------------------------------------------------------------------------------ main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="fsdd", help="pretrained name or .safetensors bundle [fsdd]")
    ap.add_argument("--n-per-digit", type=int, default=20, help="generated clips per digit [20]")
    ap.add_argument("--seed", type=int, default=0, help="seed of the classifier and of the generated clips [0]")
    ap.add_argument("--threads", type=int, default=2, help="torch threads [2]")
    ap.add_argument("--holdout", default="george", help="FSDD speaker the classifier never sees [george]")
    ap.add_argument("--epochs", type=int, default=12, help="classifier training epochs [12]")
    ap.add_argument("--classifiers", type=int, default=3,
                    help="classifiers trained (seeds --seed, --seed + 1, ...); accuracies are their means [3]")
    ap.add_argument("--batch-size", type=int, default=20, help="clips sampled per batch [20]")
    ap.add_argument("--device", default="cpu", help="where to sample [cpu]; the RTF target is for 2 CPU cores")
    ap.add_argument("--samplers", default=DEFAULT_SAMPLERS,
                    help=f"SAMPLER:STEPS,... timed for the real-time factor; the model's default is added when "
                         f"missing [{DEFAULT_SAMPLERS}]")
    ap.add_argument("--cfg-scale", type=float, default=None,
                    help="classifier-free guidance scale of the generated clips and the timing runs [the model's]")
    ap.add_argument("--precision", default=None,
                    help="network arithmetic while sampling: fp32, bf16 or auto [the model's default, else fp32]")
    ap.add_argument("--skip-rtf", action="store_true", help="do not time the samplers (the RTF check is skipped)")
    ap.add_argument("--out-dir", help="write the first --examples generated clips per digit (WAV) and "
                                      "spectrograms.png (the first clip of every digit) here")
    ap.add_argument("--examples", type=int, default=3, help="WAV files per digit written to --out-dir [3]")
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    ap.add_argument("--render", nargs="+", metavar="RESULT.json", help="print markdown tables of saved results and exit")
    args = ap.parse_args(argv)
    if args.render:
        print(render_markdown(args.render))
        return
    if min(args.n_per_digit, args.threads, args.epochs, args.batch_size, args.classifiers) < 1 or args.examples < 0:
        sys.exit("error: --n-per-digit, --threads, --epochs, --classifiers and --batch-size must be at least 1, "
                 "--examples at least 0")
    try:
        samplers = parse_samplers(args.samplers)
    except ValueError as e:
        sys.exit(f"error: {e}")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    clock = Stopwatch()

    from polydiff.errors import PolydiffError
    from polydiff.model import Model
    from polydiff.samplers import nfe

    try:
        model = Model.load(args.model, modality="audio", device=args.device)
    except PolydiffError as e:
        sys.exit(f"error: {e}")
    precision = _common.pin_precision(model, args.precision)
    enc = model.encoder
    missing = [d for d in DIGITS if d not in enc.classes]
    if missing:
        sys.exit(f"error: {args.model}: the model has no class for digit(s) {', '.join(missing)} "
                 f"(classes: {', '.join(enc.classes) or 'none'}); this benchmark needs a spoken-digit model")
    sc = model.config.get("sample", {})
    default = (sc.get("sampler", "dpmpp_2m"), int(sc.get("steps", 20)))
    if default not in samplers:
        samplers.insert(0, default)
    try:
        load_avg = list(os.getloadavg())
    except OSError:
        load_avg = None
    doc = {"benchmark": "audio",
           "command": " ".join([os.path.basename(sys.executable), "benchmarks/audio.py"] + sys.argv[1:]),
           "machine": {"platform": platform.platform(), "cpu": cpu_name(), "cpus": os.cpu_count(),
                       "threads": args.threads, "device": args.device, "precision": precision,
                       "load_avg_start": load_avg},
           "versions": versions(), "model": str(model.path),
           "model_info": {"encoder": enc.metadata(), "parameters": sum(p.numel() for p in model.net.parameters())},
           "seed": args.seed, "n_per_digit": args.n_per_digit, "targets": TARGETS}

    # 1. data and classifier
    try:
        with clock.phase("load_data"):
            data = load_fsdd(enc, args.holdout)
    except (ValueError, PolydiffError) as e:
        sys.exit(f"error: {e}")
    doc["data"] = data.pop("info")
    log(f"FSDD: {doc['data']['recordings']} recordings; classifier trains on {doc['data']['sizes']['train']}, "
        f"validates on {doc['data']['sizes']['val']}, held-out speaker {args.holdout}: {doc['data']['sizes']['holdout']}")
    clfs, hists = [], []
    with clock.phase("classifier"):
        for k in range(args.classifiers):
            clfs.append(Classifier(enc.sample_rate, args.seed + k))
            hists.append(clfs[-1].train(data["train"]["x"], data["train"]["y"], args.epochs,
                                        val=(data["val"]["x"], data["val"]["y"])))
    clf = clfs[0]
    train_s = clock.wall["classifier"]
    doc["classifier"] = {"features": f"log-mel, {N_MELS} bands, 32 ms window, 10 ms hop, standardized per band",
                         "network": "4 conv 3x3 (16-32-64-64) + BN + ReLU, max-pool x3, mean over bands, mean and "
                                    "max over time, linear 64 (penultimate), linear 10",
                         "parameters": sum(p.numel() for p in clf.net.parameters()), "epochs": args.epochs,
                         "count": len(clfs), "seeds": [c.seed for c in clfs], "train_s": train_s,
                         "val_accuracy": float(np.mean([h["history"][-1]["val_accuracy"] for h in hists])),
                         "history": hists[0]["history"]}
    real_reps = [accuracy_report(c.predict(data["holdout"]["x"]), data["holdout"]["y"]) for c in clfs]
    doc["real"] = mean_report(real_reps)
    log(f"classifiers: validation accuracy {doc['classifier']['val_accuracy']:.4f}, held-out speaker "
        f"{args.holdout} {doc['real']['accuracy']:.4f} ({train_s:.0f} s; means over {len(clfs)})")

    # 2. generated clips: accuracy, Fréchet distance, examples
    with clock.phase("generate"):
        waves, digits, sampling_s = generate(model, args.n_per_digit, args.seed, args.batch_size, args.cfg_scale)
    gen_x = prepare(enc, waves)
    doc["generated"] = {"sampler": default[0], "steps": default[1], "nfe": nfe(*default),
                        "cfg_scale": float(args.cfg_scale if args.cfg_scale is not None else sc.get("cfg_scale", 1.0)),
                        "batch_size": args.batch_size,
                        "sampling_s": sampling_s, "clips_per_s": len(waves) / sampling_s}
    gen_reps = [accuracy_report(c.predict(gen_x), digits) for c in clfs]
    doc["generated"].update(mean_report(gen_reps))
    doc["per_classifier"] = [{"seed": c.seed, "val_accuracy": h["history"][-1]["val_accuracy"],
                              "real": r["accuracy"], "generated": g["accuracy"],
                              "ratio": g["accuracy"] / r["accuracy"] if r["accuracy"] > 0 else None}
                             for c, h, r, g in zip(clfs, hists, real_reps, gen_reps)]
    real_acc = doc["real"]["accuracy"]
    ratio = doc["generated"]["accuracy"] / real_acc if real_acc > 0 else None
    emb_real = clf.embed(data["holdout"]["x"])
    emb_gen = clf.embed(gen_x)
    ref_idx = balanced_subset(data["val"]["y"], args.n_per_digit, args.seed)
    emb_ref = clf.embed(data["val"]["x"][ref_idx])
    doc["fd"] = {"features": "classifier penultimate layer (64-D)", "n_real": len(emb_real),
                 "n_generated": len(emb_gen), "n_reference": len(ref_idx),
                 "generated": frechet_distance(emb_gen, emb_real), "reference": frechet_distance(emb_ref, emb_real),
                 "sqrt": "eigh of S_r^1/2 S_g S_r^1/2 (exact for PSD covariances; negative rounding clipped)"}
    log(f"generated: accuracy {doc['generated']['accuracy']:.4f} (real {real_acc:.4f}); Fréchet distance "
        f"{doc['fd']['generated']:.3f} (other speakers' real takes: {doc['fd']['reference']:.3f})")
    if args.out_dir:
        doc["outputs"] = write_examples(Path(args.out_dir), waves, digits, enc.sample_rate, args.examples)

    # 3. real-time factor
    if not args.skip_rtf:
        doc["rtf"] = []
        with clock.phase("rtf"):
            for sampler, steps in samplers:
                r = real_time_factor(model, sampler, steps, cfg_scale=args.cfg_scale)
                doc["rtf"].append(r)
                log(f"RTF {sampler} {steps} steps ({r['nfe']} NFE): {r['rtf']:.3f} ({r['median_s']:.3f} s per clip)")
    rtf_default = next((r["rtf"] for r in doc.get("rtf", []) if (r["sampler"], r["steps"]) == default), None)

    doc["checks"] = {
        "accuracy_ratio": check(ratio, TARGETS["accuracy_ratio"],
                                reason=None if ratio is not None else "the classifier got no held-out recording right"),
        "rtf": check(rtf_default, TARGETS["rtf"], below=True, reason="--skip-rtf" if args.skip_rtf else None,
                     skipped=args.skip_rtf),
    }
    doc["checks"]["rtf"]["setting"] = (f"{default[0]} {default[1]}, batch 1, {args.threads} thread(s) on {args.device}, "
                                       f"{precision}")
    try:
        doc["machine"]["load_avg_end"] = list(os.getloadavg())
    except OSError:
        pass
    doc["seconds"] = {"wall": clock.wall, "cpu": clock.cpu}
    doc["wall_s"] = time.perf_counter() - t_start
    doc["cpu_s"] = time.process_time() - cpu_start
    # the share of its threads' time the process got: well below 1, other work held the cores
    doc["machine"]["cpu_share"] = doc["cpu_s"] / (doc["wall_s"] * args.threads) if args.device == "cpu" else None
    if args.json:
        print(json.dumps(doc, indent=1))
        for name, c in doc["checks"].items():
            log(f"{name}: {_fmt_check(c)}")
        return
    print(render_doc(doc))


def balanced_subset(y: torch.Tensor, per_digit: int, seed: int) -> torch.Tensor:
    """Indices of up to ``per_digit`` items of every digit, drawn without replacement with ``seed``."""
    rng = np.random.default_rng(seed)
    idx = []
    for d in range(10):
        cand = np.flatnonzero(y.numpy() == d)
        idx += sorted(rng.choice(cand, min(per_digit, len(cand)), replace=False).tolist())
    return torch.tensor(idx, dtype=torch.long)


if __name__ == "__main__":
    main()
