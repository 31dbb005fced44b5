"""`polydiff demo` for audio: the bundled FSDD checkpoint speaks the digits 0 to 9.

One clip per digit is generated in one batch (seed 0, the checkpoint's default sampler), written as 16-bit
WAV files with a spectrogram picture, and timed. The same clips come from

    polydiff sample audio -n 10 --seed 0 --out DIR

because ``--label all`` (the default) cycles through the classes in order, so clip i is digit i.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional


def run(out, echo=print, device=None, model: str = "fsdd", n: int = 10, seed: int = 0) -> dict:
    """Generate ``n`` clips (clip i is class ``i mod classes``: the digits 0..9 for n = 10) with ``model``
    (a pretrained name or a ``.safetensors`` path; the bundled ``fsdd`` by default) and write them to the
    folder ``out`` as ``sample_000.wav`` ... plus ``spectrograms.png``.

    Returns ``{"n", "sampler", "steps", "seed", "seconds", "audio_seconds", "rtf", "files"}``, where
    ``seconds`` is the wall time of sampling and decoding (not of loading the model) and ``rtf`` is the
    real-time factor ``seconds / audio_seconds`` of this batch (below 1: faster than real time).
    """
    from polydiff.model import Model
    from polydiff.samplers import nfe

    m = Model.load(model, modality="audio", device=device)
    enc = m.encoder
    sc = m.config.get("sample", {})
    sampler, steps = sc.get("sampler", "dpmpp_2m"), int(sc.get("steps", 20))
    t0 = time.perf_counter()
    x, cond = m.sample(n, seed=seed, label="all")
    clips = enc.decode(x.cpu(), {k: (v.cpu() if hasattr(v, "cpu") else v) for k, v in cond.items()})
    seconds = time.perf_counter() - t0
    audio_seconds = sum(len(w) for w in clips.waves) / clips.sample_rate
    out = Path(out)
    files = enc.write(clips, out)
    rtf = seconds / audio_seconds if audio_seconds > 0 else float("nan")
    names = _class_names(clips)
    echo(f"spoken digits: {n} clips of {enc.seconds:g} s at {enc.sample_rate} Hz from {_model_name(m, model)} "
         f"({sampler}, {steps} steps, {nfe(sampler, steps)} network evaluations, seed {seed})")
    echo(f"  {seconds:.2f} s for {audio_seconds:g} s of audio: real-time factor {rtf:.3f} "
         f"(batch of {n} on {m.device.type})")
    wavs = [f for f in files if f.suffix == ".wav"]
    if wavs:
        pairs = ", ".join(f"{f.name} = {c}" for f, c in list(zip(wavs, names))[:3])
        more = ", ..." if len(wavs) > 3 else ""
        echo(f"  {pairs}{more}; {len(wavs)} WAV files and {files[-1].name} in {out}")
    given = "" if model == "fsdd" else f" --model {model}"
    echo(f"  (same as: polydiff sample audio{given} -n {n} --seed {seed} --out {out})")
    return {"n": n, "sampler": sampler, "steps": steps, "seed": seed, "seconds": seconds,
            "audio_seconds": audio_seconds, "rtf": rtf, "files": [str(f) for f in files]}


def _class_names(clips) -> list:
    """The class name of every clip ('7'), or its index when the model has no names."""
    if clips.labels is None:
        return [str(i) for i in range(len(clips))]
    return [clips.classes[l] if 0 <= l < len(clips.classes) else str(l) for l in clips.labels]


def _model_name(m, given: Optional[str]) -> str:
    return "the bundled checkpoint" if given == "fsdd" else str(m.path)
