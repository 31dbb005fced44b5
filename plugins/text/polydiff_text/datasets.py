"""Text datasets, read from a local data folder (nothing is downloaded).

``e2e``: the E2E NLG Challenge's training split (42,061 restaurant descriptions with their meaning
representations; Novikova, Dušek and Rieser 2017, CC BY-SA 4.0; see ``data/SOURCE.md``); ``e2e_dev`` and
``e2e_test`` its development and test splits (``e2e_test`` with references). The folder is the first of

1. ``$POLYDIFF_TEXT_DATA``;
2. ``shared/data/e2e_nlg`` in the repository root (the folder holding ``plugins/``) or next to it;
3. ``shared/data/e2e_nlg`` and ``../shared/data/e2e_nlg`` from the working directory

that holds ``trainset.csv``. ``e2e_sample`` is the bundled sample of 300 training pairs, enough for tests and
a quick trial.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

from polydiff.errors import InputError

__all__ = ["ENV_VAR", "SAMPLE", "e2e_dir", "e2e", "e2e_dev", "e2e_test", "e2e_sample", "DATASETS"]

ENV_VAR = "POLYDIFF_TEXT_DATA"
SAMPLE = Path(__file__).parent / "data" / "e2e_sample.csv"


def _candidates() -> List[Path]:
    repo = Path(__file__).resolve().parents[3]  # <repo>/plugins/text/polydiff_text/datasets.py
    found = [Path(os.environ[ENV_VAR]).expanduser()] if os.environ.get(ENV_VAR) else []
    sub = Path("shared") / "data" / "e2e_nlg"
    return found + [repo / sub, repo.parent / sub, Path.cwd() / sub, Path.cwd().parent / sub]


def e2e_dir() -> Optional[Path]:
    """The E2E folder (see the module docstring), or None."""
    for d in _candidates():
        if (d / "trainset.csv").is_file():
            return d
    return None


def _split(name: str):
    from .encoder import read_lines

    d = e2e_dir()
    if d is None:
        raise InputError(f"the E2E dataset was not found: set ${ENV_VAR} or put it in shared/data/e2e_nlg")
    return read_lines(d / name)


def e2e():
    """The E2E training split: :class:`~polydiff_text.encoder.Sentence` items with their MRs."""
    return _split("trainset.csv")


def e2e_dev():
    return _split("devset.csv")


def e2e_test():
    """The E2E test split with its references (several per MR)."""
    return _split("testset_w_refs.csv")


def e2e_sample():
    from .encoder import read_lines

    return read_lines(SAMPLE)


DATASETS = {"e2e": e2e, "e2e_dev": e2e_dev, "e2e_test": e2e_test, "e2e_sample": e2e_sample}
