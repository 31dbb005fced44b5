"""Molecule datasets: QM9 and a MOSES training sample, read from a local data folder (nothing is downloaded).

The data folder holds ``qm9/qm9_canonical_neutral.csv`` and ``moses/train_sample_50k.csv.gz`` (see the
project's ``shared/data/molecules/SOURCE.md``). It is the first of

1. ``$POLYDIFF_MOLECULE_DATA``;
2. ``shared/data/molecules`` in the repository root (the folder holding ``plugins/``) or next to it;
3. ``shared/data/molecules`` and ``../shared/data/molecules`` from the working directory

that exists. The ``qm9`` dataset falls back to the bundled 2,000-molecule sample
(``polydiff_molecule/data/qm9_sample.smi``, see its README) with a warning when the full file is missing.

Loaders return a :class:`~polydiff_molecule.encoder.MoleculeSet` of prepared RDKit molecules (canonical,
hydrogen-free, kekulized); molecules that cannot be encoded are skipped with a warning that counts them.
"""
from __future__ import annotations

import csv
import gzip
import os
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from polydiff.errors import InputError

__all__ = ["data_dir", "qm9", "qm9_train", "qm9_fit", "qm9_sample", "qm9_props", "moses", "DATASETS", "SAMPLE_PATH", "ENV_VAR"]

ENV_VAR = "POLYDIFF_MOLECULE_DATA"
SAMPLE_PATH = Path(__file__).parent / "data" / "qm9_sample.smi"
QM9_FILE = Path("qm9") / "qm9_canonical_neutral.csv"
MOSES_FILE = Path("moses") / "train_sample_50k.csv.gz"


def _candidates() -> List[Path]:
    here = Path(__file__).resolve()
    repo = here.parents[3]  # <repo>/plugins/molecule/polydiff_molecule/datasets.py
    found = []
    if os.environ.get(ENV_VAR):
        found.append(Path(os.environ[ENV_VAR]).expanduser())
    sub = Path("shared") / "data" / "molecules"
    found += [repo / sub, repo.parent / sub, Path.cwd() / sub, Path.cwd().parent / sub]
    return found


def data_dir(relative: Optional[Path] = None) -> Optional[Path]:
    """The first candidate data folder (see the module docstring) holding ``relative``, or None."""
    for d in _candidates():
        if (d / relative if relative else d).exists():
            return d
    return None


def _smiles_column(path: Path) -> List[str]:
    """The ``smiles`` column (any case) of a CSV file, optionally gzipped."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if "smiles" not in header:
            raise InputError(f"{path}: no 'smiles' column")
        col = header.index("smiles")
        return [row[col].strip() for row in reader if len(row) > col and row[col].strip()]


def _prepared(items: Sequence, where: str, properties: Sequence[str] = ()):
    from .encoder import GraphEncoder, MoleculeSet

    kept, dropped = GraphEncoder().usable(items)
    if dropped:
        warnings.warn(f"{where}: skipped {len(dropped)} of {len(items)} molecule(s) that cannot be encoded "
                      f"(first: molecule {dropped[0][0] + 1}: {dropped[0][1]})", stacklevel=3)
    return MoleculeSet(kept, properties=properties)


def qm9_sample(properties: Sequence[str] = ()):
    """The bundled 2,000 QM9 molecules (every 65th of the canonical neutral set)."""
    from . import io as molio

    mols, _ = molio.read_molecules(SAMPLE_PATH, strict=True)
    return _prepared(mols, str(SAMPLE_PATH), properties)


def qm9(properties: Sequence[str] = ()):
    """QM9: 131,954 canonical, neutral molecules with up to 9 heavy atoms (C, N, O, F).

    Falls back to :func:`qm9_sample` with a warning when ``qm9/qm9_canonical_neutral.csv`` is not found.
    """
    root = data_dir(QM9_FILE)
    if root is None:
        warnings.warn(f"QM9 not found ({QM9_FILE} under ${ENV_VAR} or shared/data/molecules); training on the "
                      f"bundled 2,000-molecule sample {SAMPLE_PATH.name} instead", stacklevel=2)
        return qm9_sample(properties)
    path = root / QM9_FILE
    return _prepared(_smiles_column(path), str(path), properties)


def _qm9_without(held_rows, what: str, properties: Sequence[str]):
    """QM9 without the data rows ``held_rows(n_rows)`` returns (0-based), named ``what`` in warnings; falls
    back like :func:`qm9` when the file is absent."""
    from .metrics import _read_qm9_csv

    root = data_dir(QM9_FILE)
    if root is None:
        return qm9(properties)
    path = root / QM9_FILE
    _, raw = _read_qm9_csv(path)
    held = set(held_rows(len(raw)).tolist())
    return _prepared([s for i, s in enumerate(raw) if i not in held], f"{path} ({what})", properties)


def qm9_train(properties: Sequence[str] = ()):
    """QM9 without the benchmarks' held-out test split (the 10,000 rows of
    :func:`polydiff_molecule.metrics.qm9_split`): 121,954 molecules, so that FCD and the distribution distances
    against that split measure a model on molecules it never saw. Falls back like :func:`qm9`."""
    from .metrics import qm9_split

    return _qm9_without(qm9_split, "training rows", properties)


def qm9_fit(properties: Sequence[str] = ()):
    """QM9 without the test split and without the development reference
    (:func:`polydiff_molecule.metrics.qm9_dev_split`, what ``benchmarks/molecule_choices.py`` measures
    against): 111,954 molecules, so that sampling choices are made on molecules the model never saw. Falls
    back like :func:`qm9`."""
    from . import metrics

    def held(n):  # looked up at call time (tests shrink the splits)
        return np.concatenate([metrics.qm9_split(n), metrics.qm9_dev_split(n)])

    return _qm9_without(held, "training rows, no development rows", properties)


def qm9_props():
    """QM9 with QED and logP as conditioning properties (a property-conditioned model)."""
    return qm9(properties=("qed", "logp"))


def moses():
    """50,000 molecules sampled from the MOSES training split (drug-like, 8-27 heavy atoms)."""
    root = data_dir(MOSES_FILE)
    if root is None:
        raise InputError(f"MOSES data not found: put {MOSES_FILE} under a folder named by ${ENV_VAR} "
                         "(or shared/data/molecules next to the repository)")
    path = root / MOSES_FILE
    return _prepared(_smiles_column(path), str(path))


DATASETS = {"qm9": qm9, "qm9_train": qm9_train, "qm9_fit": qm9_fit, "qm9_sample": qm9_sample, "qm9_props": qm9_props, "moses": moses}
