"""polydiff-image: images, the ``image`` modality.

* :mod:`polydiff_image.io` reads PNG / JPEG / ... (Pillow) and .npy / .npz arrays, writes PNG atomically;
* :mod:`polydiff_image.encoder` holds :class:`~polydiff_image.encoder.ImageEncoder`: uint8 <-> [-1, 1],
  channels, the resize policy;
* :mod:`polydiff_image.denoiser` holds :class:`~polydiff_image.denoiser.UNet`, the network;
* :mod:`polydiff_image.datasets` loads MNIST and CIFAR-10 from a local folder;
* :mod:`polydiff_image.tasks` inpaints, upscales and denoises images through the core's masked
  conditioning, a projection of the denoiser's estimate and SDEdit, behind ``polydiff inpaint image``,
  ``polydiff upscale image`` and ``polydiff denoise image``;
* :mod:`polydiff_image.draw` draws trajectories.

This module holds the hook implementations only: importing it is cheap.
"""
from pathlib import Path

import polydiff

PRETRAINED = Path(__file__).parent / "pretrained"

DEFAULT_CONFIG = {
    "parameterisation": "edm",
    "sigma_data": 0.5,  # pixels in [-1, 1]
    "network": {"channels": [64, 128, 128], "blocks": 2, "attention": [8], "emb": 256, "patch": 1},
    "train": {"steps": 20000, "batch_size": 64, "lr": 2e-4, "warmup": 200, "ema_decay": 0.999, "cond_drop": 0.1,
              "bf16": True, "log_every": 100, "ckpt_every": 500},
    "sample": {"sampler": "dpmpp_2m", "steps": 20, "cfg_scale": 1.0},
}

RECIPES = {
    # 28x28 digits folded into 14x14x4 (patch 2): two levels (14, 7), attention at 7x7; 1.8 M parameters
    "mnist": {"data": "mnist", "config": {
        "network": {"channels": [64, 96], "blocks": 1, "attention": [7], "emb": 128, "patch": 2},
        "train": {"steps": 8000, "batch_size": 128, "lr": 5e-4, "warmup": 200, "ema_decay": 0.999,
                  "cond_drop": 0.1, "bf16": True}}},
    # 32x32 RGB folded into 16x16x12: levels 16 and 8, attention at 8x8; 6.4 M parameters
    "cifar10": {"data": "cifar10", "config": {
        "network": {"channels": [96, 192], "blocks": 1, "attention": [8], "emb": 256, "patch": 2},
        "train": {"steps": 20000, "batch_size": 64, "lr": 4e-4, "warmup": 200, "ema_decay": 0.999,
                  "cond_drop": 0.1, "bf16": True}}},
    # super-resolution x2 and x4 of 28x28 digits: the mnist network with the low-resolution copy as four more
    # input channels (after patching) and no class; 1.8 M parameters
    "mnist_sr": {"data": "mnist", "config": {
        "network": {"channels": [64, 96], "blocks": 1, "attention": [7], "emb": 128, "patch": 2,
                    "lowres_factors": [2, 4]},
        "train": {"steps": 3000, "batch_size": 128, "lr": 5e-4, "warmup": 200, "ema_decay": 0.999,
                  "cond_drop": 0.0, "bf16": True}}},
    # a quick trial on the 100 bundled digits
    "mnist_sample": {"data": "mnist_sample", "config": {
        "network": {"channels": [32, 64], "blocks": 1, "attention": [], "emb": 64, "patch": 2},
        "train": {"steps": 300, "batch_size": 32, "lr": 1e-3}}},
}


def _sample_options():
    from polydiff.modality import label_option

    return [label_option("a digit for mnist, a name such as 'cat' for cifar10")]


@polydiff.hookimpl
def register_modalities(register):
    from polydiff.modality import Modality

    from . import datasets, denoiser, draw, encoder

    register(Modality(
        name="image",
        description="Images (PNG/JPEG folders, .npy/.npz) with a U-Net: generation, inpainting, "
                    "super-resolution, denoising.",
        encoder=encoder.ImageEncoder.from_metadata,
        network=denoiser.UNet.from_config,
        default_config=DEFAULT_CONFIG,
        datasets=dict(datasets.DATASETS),
        recipes=RECIPES,
        # mnist first: the default model of `polydiff sample|inpaint|upscale|denoise image` (alphabetical
        # order would make it cifar10 once that checkpoint is bundled)
        pretrained={p.stem: p for p in sorted(PRETRAINED.glob("*.safetensors"), key=lambda p: (p.stem != "mnist",
                                                                                             p.stem))},
        model_info={"mnist": "28x28 handwritten digits 0-9: 9,000 images of the MNIST test set; "
                             "class-conditional U-Net",
                    "cifar10": "32x32 RGB images of the ten CIFAR-10 classes: 9,000 images of its test set; "
                               "class-conditional U-Net",
                    "mnist_sr": "x2 / x4 super-resolution of 28x28 digits (the default of `polydiff upscale image`): "
                                "the same 9,000 MNIST images"},
        guidance={"label": -1},
        sample_options=_sample_options(),
        make_cond=encoder.make_cond,
        configure=encoder.configure,
        augment=denoiser.augment,
        draw=draw.draw_frames,
        demo=_demo,
        demo_order=50,
    ))


def _demo(out, echo=print, device=None):
    from .demo import run

    return run(out, echo=echo, device=device)


@polydiff.hookimpl
def register_commands(cli):
    """``polydiff inpaint|upscale|denoise image`` (see :mod:`polydiff_image.tasks`)."""
    from .tasks import add_commands

    add_commands(cli)
