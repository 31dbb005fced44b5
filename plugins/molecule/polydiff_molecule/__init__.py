"""polydiff-molecule: small organic molecules as padded dense graphs, the ``molecule`` modality.

* :mod:`polydiff_molecule.io` reads ``.smi``, ``.csv``/``.csv.gz`` and ``.sdf``/``.sdf.gz`` files into RDKit
  molecules and writes ``.smi`` / ``.sdf`` files atomically; RDKit's own messages go to the Python logger
  ``polydiff.molecule.rdkit`` instead of raw stderr.
* :mod:`polydiff_molecule.graph` holds :class:`~polydiff_molecule.graph.GraphCodec`, the encoder between
  molecules and one float tensor per batch (node and edge one-hot features in [-1, 1]) plus a node mask.
* :mod:`polydiff_molecule.encoder` holds :class:`~polydiff_molecule.encoder.GraphEncoder`, the modality's
  encoder (element and node masks, properties, decoding and writing options) and ``make_cond`` / ``configure``.
* :mod:`polydiff_molecule.denoiser` holds :class:`~polydiff_molecule.denoiser.GraphTransformer`, the network.
* :mod:`polydiff_molecule.datasets` loads QM9 and a MOSES sample from a local data folder.
* :mod:`polydiff_molecule.metrics` holds the metrics of generated molecules (validity, uniqueness, novelty,
  FCD, ...) and the ``polydiff evaluate molecule`` command; :mod:`polydiff_molecule.draw` draws molecule grids.

This module holds the hook implementation only: importing it is cheap (RDKit and torch are imported when a
hook runs or a submodule is imported).
"""
from pathlib import Path

import polydiff

PRETRAINED = Path(__file__).parent / "pretrained"
#: the bundled model ``polydiff sample molecule`` uses without --model (the others stay available by name)
DEFAULT_MODEL = "qm9_discrete"


def _pretrained() -> dict:
    """The bundled checkpoints by name, the default first (the core's default is the first one)."""
    found = {p.stem: p for p in sorted(PRETRAINED.glob("*.safetensors"))}
    first = [DEFAULT_MODEL] if DEFAULT_MODEL in found else []
    return {k: found[k] for k in first + [k for k in found if k not in first]}

#: the modality's own defaults, merged over the core's (see polydiff.model.default_config)
DEFAULT_CONFIG = {
    "parameterisation": "edm",
    "sigma_data": 1.0,  # real entries are +-1 one-hot values: second moment 1
    "network": {"hidden": 256, "edge_hidden": 64, "layers": 6, "heads": 8, "emb": 128, "ffn_mult": 2,
                "dropout": 0.0},
    "train": {"steps": 20000, "batch_size": 256, "lr": 3e-4, "warmup": 1000, "ema_decay": 0.999,
              "cond_drop": 0.1, "sigma_dist": "lognormal", "sigma_dist_args": {"p_mean": -0.5, "p_std": 1.2},
              "log_every": 100, "ckpt_every": 2000},
    "sample": {"sampler": "heun", "steps": 32, "schedule": "karras",
               "schedule_args": {"sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0}},
}

#: the categorical (discrete) method: atoms and bonds as categories, masked (absorbing) diffusion, the same
#: graph transformer reading one-hot categories and returning class logits (``network.categorical``); a model
#: trained with it samples under the valence rule (``encoder.valence_rule``) unless told otherwise
DISCRETE = {
    "process": {"kind": "absorbing", "vocab": 0},  # vocab: atom and bond classes, filled from the data
    "network": {"hidden": 128, "edge_hidden": 32, "layers": 4, "heads": 8, "emb": 64, "ffn_mult": 2,
                "structure": True, "attention": "dot"},
    "sample": {"sampler": "ancestral", "schedule": "linear_levels", "steps": 32, "sampler_args": {"constrain": True}},
}

def _discrete(process=None, **train) -> dict:
    """The config of a categorical recipe: :data:`DISCRETE` with its training schedule (``train`` overrides it)."""
    schedule = {"steps": 20000, "batch_size": 256, "lr": 1e-3, "warmup": 500, "ema_decay": 0.999, "cond_drop": 0.1,
                "log_every": 100, "ckpt_every": 1000}
    return dict(DISCRETE, train={**schedule, **train}, **({"process": process} if process else {}))


RECIPES = {
    "qm9": {"data": "qm9", "config": {"train": {"steps": 100000, "batch_size": 256, "lr": 3e-4, "warmup": 2000,
                                                "ema_decay": 0.9995, "log_every": 200, "ckpt_every": 5000}}},
    "qm9_props": {"data": "qm9_props", "config": {"train": {"steps": 100000, "batch_size": 256, "lr": 3e-4,
                                                            "warmup": 2000, "ema_decay": 0.9995, "cond_drop": 0.1,
                                                            "log_every": 200, "ckpt_every": 5000}}},
    "moses": {"data": "moses", "config": {"train": {"steps": 200000, "batch_size": 128, "lr": 2e-4, "warmup": 2000,
                                                    "ema_decay": 0.9995, "log_every": 200, "ckpt_every": 5000}}},
    "qm9_sample": {"data": "qm9_sample", "config": {"train": {"steps": 2000, "batch_size": 64}}},
    "qm9_discrete": {"data": "qm9_train", "config": _discrete()},
    # the same schedule with a network about half as costly per evaluation (narrower atom and pair states, a
    # one-times MLP), trained without the development rows too (qm9_fit), so that its sampling choices are made
    # on molecules it never saw
    "qm9_discrete_small": {"data": "qm9_fit", "config": {**_discrete(), "network": {
        **DISCRETE["network"], "hidden": 96, "heads": 6, "edge_hidden": 24, "ffn_mult": 1}}},
    # the same with DiGress' marginal transitions instead of masking (atoms and bonds replaced by draws from
    # their training frequencies)
    "qm9_marginal": {"data": "qm9_train", "config": _discrete(process={"kind": "marginal", "vocab": 0})},
    # the batch follows the graph size ("auto", see encoder.auto_batch_size): the MOSES sample's graphs have up
    # to 26 atoms, 325 pairs against QM9's 36, so batch 32, an eighth of QM9's, for about the same time per step
    "moses_discrete": {"data": "moses", "config": _discrete(steps=40000, batch_size="auto")},
    # what `polydiff train molecule --data FILE` trains when no recipe is given (DATA_RECIPE)
    "data": {"config": _discrete(batch_size="auto")},
}
DATA_RECIPE = "data"


def _sample_options():
    import click

    return [
        click.Option(["--decode"], type=click.Choice(["valence", "raw"]), default="valence", show_default=True,
                     help="valence: add bonds by confidence within each atom's valence (always a valid molecule); "
                          "raw: argmax atoms and bonds, invalid samples are None."),
        click.Option(["--keep-invalid"], is_flag=True, default=False,
                     help="Write an invalid sample as an empty line, so line i of a .smi file is sample i "
                          "(default: drop it)."),
        click.Option(["--atoms"], type=click.IntRange(min=1), default=None,
                     help="Heavy atoms of every sample [drawn from the training size distribution]."),
        click.Option(["--size-seed"], type=int, default=None,
                     help="Seed of the draw of atom counts from the training size distribution [--seed]."),
        click.Option(["--scaffold"], default=None,
                     help="SMILES of a substructure every sample must contain (masked conditioning: its atoms and "
                          "bonds are kept exactly, the rest is generated around it)."),
        click.Option(["--resample"], type=click.IntRange(min=1), default=1, show_default=True,
                     help="With --scaffold: RePaint resampling passes per step (more harmonised, r times slower)."),
        click.Option(["--props"], default=None,
                     help="Property targets of a property-conditioned model, e.g. 'qed=0.6,logp=1.5' "
                          "(raw units; properties left out are unconditioned)."),
    ]


@polydiff.hookimpl
def register_modalities(register):
    from polydiff.modality import Modality

    from . import datasets, denoiser, draw, encoder

    register(Modality(
        name="molecule",
        description="Small organic molecules (SMILES / SDF) as graphs of atoms and bonds with a graph-transformer denoiser.",
        encoder=encoder.GraphEncoder.from_metadata,
        network=denoiser.GraphTransformer.from_config,
        default_config=DEFAULT_CONFIG,
        datasets=dict(datasets.DATASETS),
        recipes=RECIPES,
        pretrained=_pretrained(),
        model_info={"qm9": "small organic molecules (C, N, O, F; up to 9 heavy atoms): all 131,954 of QM9; "
                           "graph transformer, sigma-space",
                    "qm9_discrete": "small organic molecules (C, N, O, F; up to 9 heavy atoms): QM9 without the "
                                    "benchmark's 10,000 held-out molecules; atoms and bonds as categories, masked "
                                    "diffusion",
                    "qm9_discrete_small": "small organic molecules (C, N, O, F; up to 9 heavy atoms): QM9 without "
                                          "the test and development molecules; masked diffusion with a network "
                                          "half as costly and 20 steps: twice as fast, FCD 1.10 against 0.87"},
        guidance={"props": denoiser.NULL_PROP},
        sample_options=_sample_options(),
        make_cond=encoder.make_cond,
        output_options=["decode", "keep_invalid"],
        configure=encoder.configure,
        data_recipe=DATA_RECIPE,
        draw=draw.draw_frames,
        constrain=encoder.valence_rule,
        demo=_demo,
        demo_order=30,
    ))


def _demo(out, echo=print, device=None):
    from .demo import run

    return run(out, echo=echo, device=device)


@polydiff.hookimpl
def register_commands(cli):
    """``polydiff evaluate molecule``: added to an ``evaluate`` group (created here unless a plugin made one)."""
    from polydiff.cli import verb_group

    from .metrics import evaluate_command

    verb_group(cli, "evaluate", "Evaluate generated samples: polydiff evaluate MODALITY [--model NAME|PATH] "
                                "[-n N] [--json].").add_command(evaluate_command())
