"""polydiff-points: 2-D point clouds, the reference modality plugin.

This module holds hook implementations only; everything heavy is imported when a hook runs.
"""
from pathlib import Path

import polydiff

PRETRAINED = Path(__file__).parent / "pretrained"


@polydiff.hookimpl
def register_modalities(register):
    from polydiff.modality import Modality, label_option

    from . import datasets, demo, encoder, denoiser

    register(Modality(
        name="points",
        description="2-D point clouds (Gaussian mixtures, two moons, a spiral).",
        encoder=encoder.PointsEncoder.from_metadata,
        network=denoiser.PointsNet.from_config,
        default_config={
            "parameterisation": "edm",
            "sigma_data": 0.5,
            "network": {"hidden": 128, "depth": 3, "emb": 64, "num_classes": 0},
            "train": {"steps": 4000, "batch_size": 512, "lr": 1e-3, "ema_decay": 0.999, "cond_drop": 0.1},
            "sample": {"sampler": "heun", "steps": 18},
        },
        datasets=datasets.DATASETS,
        recipes={
            "shapes": {"data": "shapes", "config": {"network": {"num_classes": 3},
                                                    "train": {"steps": 20000, "batch_size": 512, "lr": 1e-3,
                                                              "warmup": 500, "ema_decay": 0.9995,
                                                              "log_every": 200, "ckpt_every": 2000}}},
            "moons": {"data": "moons", "config": {"train": {"steps": 8000}}},
            "spiral": {"data": "spiral", "config": {"train": {"steps": 8000}}},
            "gmm": {"data": "gmm", "config": {"train": {"steps": 8000}}},
        },
        pretrained={"shapes": PRETRAINED / "shapes.safetensors"},
        model_info={"shapes": "2-D points of three labelled shapes (gmm, moons, spiral), generated from a seed; "
                              "class-conditional MLP"},
        guidance={"label": -1},
        sample_options=[label_option("gmm, moons, spiral for the bundled model")],
        make_cond=encoder.make_cond,
        configure=encoder.configure,
        demo=demo.run,
        demo_order=10,
        draw=demo.draw_frames,
    ))
