"""Export the EMA weights of a training run as a bundled checkpoint (float16, same JSON).

    python plugins/audio/tools/export_pretrained.py runs/audio_fsdd plugins/audio/polydiff_audio/pretrained/fsdd.safetensors

The same as ``polydiff export RUN_DIR OUT`` (see :func:`polydiff.checkpoint.export_bundle`), kept for the
recipe in ``pretrained/README.md``.
"""
from __future__ import annotations

import sys

from polydiff.cli import main

if __name__ == "__main__":
    main(["export", *sys.argv[1:]])
