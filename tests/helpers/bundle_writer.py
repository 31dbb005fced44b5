"""Save bundles to one path in a loop until killed: ``bundle_writer.py PATH N_FLOATS [--die-before-rename]``.

Bundle ``i`` holds ``a`` = N_FLOATS copies of ``i`` and ``b`` = arange(1000) + i, with meta ``{"i": i}``.
Prints ``ready`` once imports are done. With ``--die-before-rename`` the process writes one temporary
file completely and SIGKILLs itself just before the rename.
"""
import os
import signal
import sys

import torch

from polydiff import checkpoint


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    if "--die-before-rename" in sys.argv[3:]:
        def die(*_a, **_k):
            os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.os.replace = die
    print("ready", flush=True)
    i = 0
    while True:
        checkpoint.save_bundle(path, {"a": torch.full((n,), float(i)), "b": torch.arange(1000) + i}, {"i": i})
        i += 1


if __name__ == "__main__":
    main()
