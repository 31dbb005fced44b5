"""The core's own samplers, schedules and scorers, registered through the same hooks as any plugin."""
from .hookspecs import hookimpl


@hookimpl
def register_samplers(register):
    from . import discrete, samplers

    for name, fn in {**samplers.SAMPLERS, **discrete.SAMPLERS}.items():
        register(name, fn)


@hookimpl
def register_schedules(register):
    from . import discrete, schedules

    for name, fn in {**schedules.LADDERS, discrete.LADDER_NAME: discrete.linear, "power_levels": discrete.power}.items():
        register(name, fn)


@hookimpl
def register_scorers(register):
    from . import scoring

    register("elbo", scoring.elbo)
    register("reconstruction", scoring.reconstruction)
