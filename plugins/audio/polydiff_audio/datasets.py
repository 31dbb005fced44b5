"""Audio datasets, read from a local data folder (nothing is downloaded).

``fsdd``: the Free Spoken Digit Dataset (3,000 recordings of the digits 0-9 by 6 speakers, 8 kHz mono; see
``data/SOURCE.md`` next to this file and the project's ``shared/data/fsdd/SOURCE.md``). The recordings
folder is the first of

1. ``$POLYDIFF_AUDIO_DATA`` (a folder holding ``recordings/``, or the recordings folder itself);
2. ``shared/data/fsdd`` in the repository root (the folder holding ``plugins/``) or next to it;
3. ``shared/data/fsdd`` and ``../shared/data/fsdd`` from the working directory

that exists. ``fsdd_sample`` is the bundled 30-recording sample (one take of every digit by three speakers),
enough for tests and a quick trial.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

from polydiff.errors import InputError

__all__ = ["ENV_VAR", "SAMPLE_DIR", "fsdd_dir", "fsdd", "fsdd_sample", "DATASETS"]

ENV_VAR = "POLYDIFF_AUDIO_DATA"
SAMPLE_DIR = Path(__file__).parent / "data" / "fsdd_sample"


def _candidates() -> List[Path]:
    repo = Path(__file__).resolve().parents[3]  # <repo>/plugins/audio/polydiff_audio/datasets.py
    found = []
    if os.environ.get(ENV_VAR):
        env = Path(os.environ[ENV_VAR]).expanduser()
        found += [env / "recordings", env]
    sub = Path("shared") / "data" / "fsdd" / "recordings"
    found += [repo / sub, repo.parent / sub, Path.cwd() / sub, Path.cwd().parent / sub]
    return found


def fsdd_dir() -> Optional[Path]:
    """The FSDD recordings folder (see the module docstring), or None."""
    for d in _candidates():
        if d.is_dir() and any(d.glob("*_*_*.wav")):
            return d
    return None


def fsdd(speakers: Optional[List[str]] = None):
    """Every FSDD recording (optionally only ``speakers``) as :class:`~polydiff_audio.encoder.Clips`, labelled
    with its digit."""
    from .encoder import AudioEncoder

    d = fsdd_dir()
    if d is None:
        raise InputError(f"FSDD not found: set ${ENV_VAR} or put the recordings in shared/data/fsdd/recordings")
    clips = AudioEncoder().read(d, strict=True)
    if speakers:
        keep = [i for i, n in enumerate(clips.names) if Path(n).stem.split("_")[1] in set(speakers)]
        clips.waves = [clips.waves[i] for i in keep]
        clips.labels = [clips.labels[i] for i in keep]
        clips.names = [clips.names[i] for i in keep]
    return clips


def fsdd_sample():
    """The 30 bundled FSDD recordings."""
    from .encoder import AudioEncoder

    return AudioEncoder().read(SAMPLE_DIR, strict=True)


DATASETS = {"fsdd": fsdd, "fsdd_sample": fsdd_sample}
