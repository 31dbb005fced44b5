"""The plugin contract. Each hook receives a ``register`` callback (or the CLI group) and returns nothing."""
import pluggy

hookspec = pluggy.HookspecMarker("polydiff")
hookimpl = pluggy.HookimplMarker("polydiff")


@hookspec
def register_modalities(register):
    """register(Modality(...)): add kinds of data (encoder, network, datasets, checkpoints, metrics)."""


@hookspec
def register_samplers(register):
    """register(name, fn): add samplers fn(D, x, sigmas, *, cond=None, generator=None, callback=None) -> x."""


@hookspec
def register_schedules(register):
    """register(name, fn): add sigma ladders fn(n, ...) -> Tensor[n + 1] ending in 0."""


@hookspec
def register_scorers(register):
    """register(name, fn, modalities=None): add anomaly scorers fn(model, x, cond, **options) -> Tensor[batch], or fitted-scorer classes (see polydiff.plugins.Scorer)."""


@hookspec
def register_commands(cli):
    """Add click commands or groups to the ``polydiff`` CLI group ``cli``."""
