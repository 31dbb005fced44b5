"""polydiff-audio: waveform audio, the ``audio`` modality.

* :mod:`polydiff_audio.io` reads WAV / FLAC / OGG files (soundfile) and writes them atomically;
* :mod:`polydiff_audio.encoder` holds :class:`~polydiff_audio.encoder.AudioEncoder`: downmix, resample
  (torchaudio), loudness normalization, crop / pad to the model's clip length;
* :mod:`polydiff_audio.denoiser` holds :class:`~polydiff_audio.denoiser.FrameUNet`, the network;
* :mod:`polydiff_audio.datasets` loads the Free Spoken Digit Dataset from a local folder;
* :mod:`polydiff_audio.tasks` fills gaps and removes noise through the core's masked conditioning and
  SDEdit, behind ``polydiff inpaint audio`` and ``polydiff denoise audio``;
* :mod:`polydiff_audio.draw` draws spectrograms.

This module holds the hook implementations only: importing it is cheap.
"""
from pathlib import Path

import polydiff

PRETRAINED = Path(__file__).parent / "pretrained"

DEFAULT_CONFIG = {
    "parameterisation": "edm",
    "sigma_data": 0.5,  # speech is normalized to RMS 0.5 (encoder: rms 0.1 x scale 5)
    "network": {"frame": 40, "channels": [64, 128, 192, 256], "blocks": 2, "emb": 256, "attention": True},
    "train": {"steps": 20000, "batch_size": 32, "lr": 3e-4, "warmup": 200, "ema_decay": 0.999, "cond_drop": 0.1,
              "log_every": 100, "ckpt_every": 500},
    "sample": {"sampler": "dpmpp_2m", "steps": 20, "cfg_scale": 1.0},
}

RECIPES = {
    "fsdd": {"data": "fsdd", "config": {"train": {"steps": 20000, "batch_size": 32, "lr": 3e-4, "warmup": 200,
                                                  "ema_decay": 0.999, "cond_drop": 0.1}}},
    "fsdd_sample": {"data": "fsdd_sample", "config": {"train": {"steps": 500, "batch_size": 16}}},
    # the second stage of the bundled model: fine-tune the fsdd recipe's model (give it with --init) with band
    # masks on the skip connection, trained on more low noise levels, where the masks act
    "fsdd_bands": {"data": "fsdd", "config": {
        "network": {"skip_bands": 4},
        "train": {"steps": 4000, "batch_size": 32, "lr": 2e-4, "warmup": 200, "ema_decay": 0.999, "cond_drop": 0.1,
                  "sigma_dist_args": {"p_mean": -2.0, "p_std": 1.8}}}},
}


def _sample_options():
    from polydiff.modality import label_option

    return [label_option("a digit for the bundled model")]


@polydiff.hookimpl
def register_modalities(register):
    from polydiff.modality import Modality

    from . import datasets, denoiser, draw, encoder

    register(Modality(
        name="audio",
        description="Waveform audio (WAV/FLAC/OGG) with a frame U-Net: spoken digits, gap filling, denoising.",
        encoder=encoder.AudioEncoder.from_metadata,
        network=denoiser.FrameUNet.from_config,
        default_config=DEFAULT_CONFIG,
        datasets=dict(datasets.DATASETS),
        recipes=RECIPES,
        pretrained={p.stem: p for p in sorted(PRETRAINED.glob("*.safetensors"))},
        model_info={"fsdd": "spoken digits 0-9, 8 kHz: all 3,000 recordings of the Free Spoken Digit Dataset; "
                            "digit-conditional frame U-Net"},
        guidance={"label": -1},
        sample_options=_sample_options(),
        make_cond=encoder.make_cond,
        configure=encoder.configure,
        draw=draw.draw_frames,
        demo=_demo,
        demo_order=40,
    ))


def _demo(out, echo=print, device=None):
    from .demo import run

    return run(out, echo=echo, device=device)


@polydiff.hookimpl
def register_commands(cli):
    """``polydiff inpaint audio`` and ``polydiff denoise audio`` (see :mod:`polydiff_audio.tasks`)."""
    from .tasks import add_commands

    add_commands(cli)
