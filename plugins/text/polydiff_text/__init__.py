"""polydiff-text: sentences, the ``text`` modality.

* :mod:`polydiff_text.tokenizer`: a word-level tokenizer fitted on the training text, invertible;
* :mod:`polydiff_text.mr`: E2E meaning representations (parsing, delexicalisation of names);
* :mod:`polydiff_text.encoder`: :class:`~polydiff_text.encoder.TextEncoder`, sentences <-> token tensors;
* :mod:`polydiff_text.network`: :class:`~polydiff_text.network.TextTransformer`, the denoiser;
* :mod:`polydiff_text.tasks`: MRs, lengths, required words and templates as the sampling run's conditions;
* :mod:`polydiff_text.datasets`: the E2E NLG dataset from a local folder, and a bundled sample.

Method ``masked`` (the default): masked (absorbing) categorical diffusion, MDLM's recipe, through the
core's categorical sampling run. This module holds the hook implementations only: importing it is cheap.
"""
from pathlib import Path

import polydiff

PRETRAINED = Path(__file__).parent / "pretrained"

DEFAULT_CONFIG = {
    "process": {"kind": "absorbing", "vocab": 0, "level_free": True},  # vocab: filled from the data
    "network": {"dim": 192, "depth": 4, "heads": 4, "mlp": 4, "dropout": 0.1, "method": "masked"},
    "train": {"steps": 20000, "batch_size": 64, "lr": 5e-4, "warmup": 500, "ema_decay": 0.999, "cond_drop": 0.1,
              "weight_decay": 0.0, "log_every": 100, "ckpt_every": 500},
    # chosen on the E2E development split (docs/benchmarks.md, "Text"): greedy confidence-ordered decoding,
    # the best of 4 draws by slot errors where there is an MR, bfloat16 where the CPU has it
    # (temperature 0 and a parallel-decoding threshold of 0.6 are added for the masked method by ``configure``)
    "sample": {"sampler": "confidence", "schedule": "linear_levels", "steps": 32, "cfg_scale": 1.0,
               "best_of": 4, "precision": "auto"},
}

# Diffusion-LM: learned 16-dimensional word embeddings diffused in sigma-space, x0 prediction; the estimate is
# the probability-weighted mean of the word embeddings under the network's logits, trained by cross-entropy
# (CDCD's score interpolation), with self-conditioning; sampled with DDPM's stochastic steps, each estimate
# clamped to its nearest word (chosen on the E2E development split: docs/benchmarks.md, "Text")
EMBEDDING = {"process": None, "parameterisation": "x0", "sigma_data": 1.0,
             "embedding": {"dim": 16, "loss": "ce", "self_cond": True, "clamp": True},
             "network": {"method": "embedding", "embed_dim": 16},
             "sample": {"sampler": "ddpm", "steps": 64, "schedule": "karras",
                        "schedule_args": {"sigma_min": 0.01, "sigma_max": 20.0, "rho": 7.0}}}

RECIPES = {
    "e2e_masked": {"data": "e2e", "config": {"train": {"steps": 9000, "batch_size": 64, "lr": 5e-4, "warmup": 500}}},
    "e2e_embedding": {"data": "e2e", "config": dict(EMBEDDING, train={
        "steps": 5000, "batch_size": 64, "lr": 5e-4, "warmup": 500,
        # noise levels log-uniform from where words are still certain (sigma 0.2: noise of length 0.8 against
        # words 5.7 apart) to the sampling ladder's top: the levels where a sentence's words are decided
        "sigma_dist": "loguniform", "sigma_dist_args": {"sigma_min": 0.2, "sigma_max": 20.0}})},
    "e2e_sample": {"data": "e2e_sample", "config": {"network": {"dim": 64, "depth": 2},
                                                    "train": {"steps": 300, "batch_size": 32, "lr": 1e-3,
                                                              "warmup": 20, "ckpt_every": 100, "log_every": 20}}},
}


def _sample_options():
    import click

    return [
        click.Option(["--mr"], default=None,
                     help="Meaning representation to realise, e.g. 'name[The Eagle], eatType[coffee shop], "
                          "food[Italian]' [none: unconditional]."),
        click.Option(["--contains"], default=None,
                     help="Words each sentence must contain, comma-separated phrases (kept exactly)."),
        click.Option(["--length"], type=int, default=None,
                     help="Tokens per sentence [with --mr: the median training length for the MR's size; "
                          "else drawn from the training sentences' lengths]."),
    ]


def _configure(config, encoder):
    from .encoder import configure

    return configure(config, encoder)


@polydiff.hookimpl
def register_modalities(register):
    from polydiff.modality import Modality

    from . import datasets, encoder, network

    register(Modality(
        name="text",
        description="Sentences with a word-level vocabulary: masked diffusion that writes from meaning "
                    "representations, fills templates and keeps required words.",
        encoder=encoder.TextEncoder.from_metadata,
        network=network.TextTransformer.from_config,
        default_config=DEFAULT_CONFIG,
        datasets=dict(datasets.DATASETS),
        recipes=RECIPES,
        # the masked model first: it is the modality's default
        pretrained={p.stem: p for p in sorted(PRETRAINED.glob("*.safetensors"), key=lambda p: (p.stem != "e2e_masked", p.stem))},
        model_info={"e2e_masked": "E2E NLG restaurant descriptions (train split, 42,061 sentences): masked "
                                  "diffusion transformer, data-to-text from meaning representations",
                    "e2e_embedding": "E2E NLG restaurant descriptions (train split): Diffusion-LM-style "
                                     "diffusion of learned 16-dimensional word embeddings, rounded to words"},
        guidance={"mr": -1},
        sample_options=_sample_options(),
        make_cond=encoder.make_cond,
        rank=encoder.rank,
        constrain=encoder.repeat_rule,
        configure=_configure,
        demo=_demo if any(PRETRAINED.glob("*.safetensors")) else None,  # the act needs a bundled model
        demo_order=50,
    ))


def _demo(out, echo=print, device=None):
    from .demo import run

    return run(out, echo=echo, device=device)


@polydiff.hookimpl
def register_commands(cli):
    """``polydiff inpaint text`` and ``polydiff evaluate text`` (see :mod:`polydiff_text.commands`)."""
    from .commands import add_commands

    add_commands(cli)
