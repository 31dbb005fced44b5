"""Helpers shared by the benchmark scripts (imported with the scripts' folder on sys.path)."""
from __future__ import annotations

import platform
import sys


def cpu_name():
    """The CPU model from /proc/cpuinfo, else platform.processor(), else None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def log(msg: str) -> None:
    """Progress on stderr (stdout is kept for --json)."""
    import sys

    print(msg, file=sys.stderr, flush=True)


def versions(modules=(), distributions=()) -> dict:
    """Versions of Python, torch, numpy, scipy and polydiff, of the extra ``modules`` (import names whose
    ``__version__`` is read) and of the installed ``distributions`` (None where missing)."""
    import importlib
    import importlib.metadata as md

    import numpy as np
    import scipy
    import torch

    import polydiff

    v = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
         "scipy": scipy.__version__, "polydiff": polydiff.__version__}
    for name in modules:
        v[name.lower()] = getattr(importlib.import_module(name), "__version__", None)
    for dist in distributions:
        try:
            v[dist.replace("-", "_")] = md.version(dist)
        except md.PackageNotFoundError:
            v[dist.replace("-", "_")] = None
    return v


class Stopwatch:
    """Wall and process CPU seconds per phase of a run (``with clock.phase("name"): ...``). CPU seconds well
    below ``threads x`` wall seconds mean the process waited for cores that other work held: its timings
    are then not representative."""

    def __init__(self):
        self.wall = {}
        self.cpu = {}

    def phase(self, name: str):
        import contextlib
        import time

        @contextlib.contextmanager
        def timed():
            w, c = time.perf_counter(), time.process_time()
            try:
                yield
            finally:
                self.wall[name] = time.perf_counter() - w
                self.cpu[name] = time.process_time() - c

        return timed()


def pin_precision(model, requested) -> str:
    """Resolve ``requested`` (fp32, bf16, auto; None: the model's default) for ``model`` and store it in the
    model's sample config, so every sampling call of a benchmark runs with it; returns fp32 or bf16. A bad
    value exits with a one-line error."""
    from polydiff.errors import PolydiffError

    try:
        precision = model.precision(requested)
    except PolydiffError as e:
        sys.exit(f"error: {e}")
    model.config = {**model.config, "sample": {**model.config.get("sample", {}), "precision": precision}}
    return precision
