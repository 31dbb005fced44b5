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
        detector=_LazyDetector(),
        demo=_demo,
    )


def _demo(out, echo=print, device=None):
    from .demo import run

    return run(out, echo=echo, device=device)


class _LazyDetector:
    """Stands for DiffusionDetector without importing it until ``polydiff score`` needs it."""

    def __call__(self, *args, **kwargs):
        from .detector import DiffusionDetector

        return DiffusionDetector(*args, **kwargs)

    def __getattr__(self, name):
        from . import detector

        if name in ("score_file", "plot_histogram"):
            return getattr(detector, name)
        return getattr(detector.DiffusionDetector, name)


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
