"""polydiff-anomaly: tabular data for polydiff (hook implementations only; nothing heavy at import)."""
import polydiff


def tabular_modality():
    """The ``tabular`` Modality (also used directly by :class:`DiffusionDetector`)."""
    from polydiff.modality import Modality

    from . import denoiser, encoder

    return Modality(
        name="tabular",
        description="Numeric tables (CSV, Parquet, NumPy, DataFrames): one row is one item.",
        encoder=encoder.TableEncoder.from_metadata,
        network=denoiser.TabularNet.from_config,
        default_config={
            "parameterisation": "edm",
            "sigma_data": 0.5,
            "network": {"hidden": 256, "depth": 3, "emb": 64},
            "train": {"steps": 3000, "batch_size": 512, "lr": 1e-3, "warmup": 100, "ema_decay": 0.999,
                      "cond_drop": 0.0},
            "sample": {"sampler": "dpmpp_2m", "steps": 20},
        },
        configure=encoder.configure,
        score=_score,
        score_options=_score_options(),
        demo=_demo,
        demo_order=20,
    )


def _score(data, out, **options):
    from .detector import score_data

    return score_data(data, out, **options)


def _score_options():
    import click

    return [
        click.Option(["--impute"], type=click.Choice(["median"]), help="Fill NaN with the training medians."),
        click.Option(["--columns"], metavar="A,B,...", help="Use only these columns as features."),
        click.Option(["--exclude"], metavar="A,B,...", help="Use every column but these as features."),
        click.Option(["--id", "ids"], metavar="A,B,...",
                     help="Identifier columns (keys, names, text): copied into the output before the scores, "
                          "never features."),
        click.Option(["--chunk-rows"], type=int, metavar="N",
                     help="Rows read and scored at a time; with --engine ray, the rows of one CSV piece of work "
                          "(a Parquet piece is a row group) [100000]."),
    ]


def _demo(out, echo=print, device=None):
    from .demo import run

    return run(out, echo=echo, device=device)


@polydiff.hookimpl
def register_modalities(register):
    register(tabular_modality())


@polydiff.hookimpl
def register_scorers(register):
    from .dte import NeuralDTE
    from .nonparametric import EmpiricalDTE

    register("dte-np", EmpiricalDTE, modalities=["tabular"])
    register("dte", NeuralDTE, modalities=["tabular"])


def __getattr__(name):  # lazy: importing the plugin must stay cheap
    if name == "DiffusionDetector":
        from .detector import DiffusionDetector

        return DiffusionDetector
    raise AttributeError(name)
