"""The core's own samplers, schedules and scorers, registered through the same hooks as any plugin."""
from .hookspecs import hookimpl


@hookimpl
def register_samplers(register):
    from . import samplers

    for name, fn in samplers.SAMPLERS.items():
        register(name, fn)


@hookimpl
def register_schedules(register):
    from . import schedules

    for name, fn in schedules.LADDERS.items():
        register(name, fn)


@hookimpl
def register_scorers(register):
    from . import scoring

    register("elbo", scoring.elbo)
    register("reconstruction", scoring.reconstruction)
