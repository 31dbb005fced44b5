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
