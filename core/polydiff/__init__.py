"""polydiff: a multi-modal diffusion toolkit with a sigma-space core and pluggy modality plugins."""
from .hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "get_sampler", "get_modality", "load", "__version__"]


def get_sampler(name: str):
    """The sampler registered under ``name`` (built-in or from a plugin)."""
    from .errors import UnknownName
    from .plugins import registry

    table = registry().samplers
    if name not in table:
        raise UnknownName(f"unknown sampler {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


def get_modality(name: str):
    """The :class:`~polydiff.modality.Modality` registered under ``name``."""
    from .plugins import registry

    return registry().modality(name)


def load(model, modality=None, device=None):
    """Load a trained model by pretrained name or bundle path; see :class:`polydiff.model.Model`."""
    from .model import Model

    return Model.load(model, modality=modality, device=device)
