"""One helper for optional imports: a missing package becomes a message naming what to pip install."""
from __future__ import annotations

import importlib

from .errors import MissingDependency

__all__ = ["require", "pip_name_for"]

#: well-known import names whose distribution on PyPI has another name (a plugin with another such package
#: passes ``pip=`` to :func:`require`)
_PIP_NAMES = {"PIL": "pillow", "sklearn": "scikit-learn", "yaml": "pyyaml", "cv2": "opencv-python-headless"}


def pip_name_for(module: str) -> str:
    """The pip package that provides the top-level import ``module``."""
    top = module.split(".")[0]
    return _PIP_NAMES.get(top, top)


def require(module: str, purpose: str = "", pip: str | None = None):
    """Import ``module`` or raise :class:`MissingDependency` saying what to install and why."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = getattr(e, "name", None) or module
        pkg = pip or pip_name_for(missing)
        why = f" for {purpose}" if purpose else ""
        raise MissingDependency(f"the package {pkg!r} is needed{why}: pip install {pkg}") from None
