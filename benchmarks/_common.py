"""Helpers shared by the benchmark scripts (imported with the scripts' folder on sys.path)."""
from __future__ import annotations

import platform


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
