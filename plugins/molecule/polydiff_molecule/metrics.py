"""Metrics of generated molecules, the reference sets they are compared with, and ``polydiff evaluate molecule``.

Every metric is a pure function of lists whose items are RDKit molecules, SMILES strings or None (an invalid
sample). SMILES are canonicalised one way everywhere (:func:`canonical_smiles`): RDKit canonical SMILES
without stereochemistry, hydrogens implicit, written, parsed back and written again (the way the QM9
reference file was made), so a generated molecule and a reference molecule match exactly when they are the
same graph.

Definitions (n = number of samples, invalid ones included):

* **validity** = valid / n, where an item is *valid* when it is not None, has at least one atom, sanitizes
  with RDKit and its SMILES parses back. Several fragments are allowed (see *connected*).
* **uniqueness** = distinct canonical SMILES among the valid items / valid items.
* **novelty** = distinct valid canonical SMILES that are not in the training set / distinct valid ones.
* **connected** = valid items with exactly one fragment / valid items; **valid_connected** = valid and
  single-fragment items / n; **fragments_per_molecule** = mean number of fragments of a valid item.
* **atom_type_tv** = total variation distance ``0.5 * sum_e |p(e) - q(e)|`` between the element frequencies
  of all heavy atoms of the valid generated items (p) and of the reference molecules (q); formal charges
  are ignored.
* **ring_size_tv** = total variation distance between the histograms of ring sizes (RDKit's symmetrized
  SSSR of each valid molecule; bins 3, 4, 5, 6, 7, 8+), pooled over molecules; 0 when neither side has a
  ring, 1 when only one side has rings. **rings_per_molecule** = mean number of SSSR rings per valid item.
* **fcd** = Frechet ChemNet Distance (Preuer et al. 2018) between the ChemNet activations of the canonical
  SMILES of the valid generated items (duplicates kept) and of the reference molecules, computed with the
  optional PyPI package ``fcd`` (its bundled ChemNet weights and the same one-hot input padded to 350
  tokens; the Frechet distance of the activations' means and covariances is ``fcd``'s formula, evaluated
  with symmetric eigendecompositions, see :func:`frechet_distance`). Without ``fcd`` installed, or with
  fewer than 2 molecules on a side, FCD is reported as None with a one-line reason, never estimated otherwise.

ChemNet weights are read with ``torch.load(..., weights_only=True)`` (PyTorch's restricted unpickler: only
tensors and plain containers) and the network is built with ``fcd.utils.load_imported_model``. ``fcd``'s own
``load_ref_model`` is not called: it copies the weights to a temporary folder and calls ``torch.load``
without ``weights_only``, which is a full, code-executing unpickle on PyTorch < 2.6 (and whenever
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set). ``fcd.get_predictions`` is not used either: it starts a
DataLoader worker process; the activations are computed in-process here with the same input encoding.

Reference sets (:func:`load_reference`):

* ``qm9``: ``qm9/qm9_canonical_neutral.csv`` of the molecule data folder (131,954 molecules, see
  :mod:`polydiff_molecule.datasets`). Novelty is against **all** its molecules. FCD and the distribution
  distances are against a seeded split of ``test_size`` (10,000) molecules: the data rows (0-based, header
  excluded) ``sorted(numpy.random.default_rng(seed).permutation(131954)[:10000])`` with seed 0. **This split
  is not held out from the bundled ``molecule:qm9`` checkpoint**, which was trained on all 131,954 molecules:
  FCD against it compares generated molecules with molecules the model saw in training.
* ``qm9_sample``: the bundled 2,000-molecule sample (training set and FCD reference at once; also seen by the
  bundled checkpoint).
* a ``.smi`` / ``.csv`` / ``.sdf`` file: its molecules are both the training set and the FCD reference.
"""
from __future__ import annotations

import csv
import hashlib
import io as _io
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from polydiff.errors import InputError, MissingDependency, PolydiffError

__all__ = [
    "canonical_smiles", "parse", "validity", "uniqueness", "novelty", "fraction_connected", "mean_fragments",
    "atom_type_histogram", "atom_type_distance", "ring_size_histogram", "ring_size_distance",
    "rings_per_molecule", "total_variation", "fcd", "fcd_or_reason", "load_chemnet", "chemnet_activations",
    "chemnet_stats", "frechet_distance", "Reference", "load_reference", "qm9_split", "summarize",
    "sample_and_decode", "evaluate_model", "evaluate_file", "read_samples", "evaluate_command", "METRICS",
    "RING_BINS", "QM9_TEST_SIZE", "QM9_SPLIT_SEED", "CHEMNET_FILE",
]

RING_BINS = ("3", "4", "5", "6", "7", "8+")
QM9_TEST_SIZE = 10_000
QM9_SPLIT_SEED = 0
CHEMNET_FILE = "ChemNet_v0.13_pretrained.pt"
QM9_NOTE = ("the bundled molecule:qm9 checkpoint was trained on all 131,954 molecules of "
            "qm9_canonical_neutral.csv, so this split is NOT held out from it: FCD and the distribution distances "
            "compare with molecules it saw in training; novelty is against the whole file")


# ------------------------------------------------------------------------------------------ canonical form
def _chem():
    try:
        from rdkit import Chem
    except ImportError:
        raise MissingDependency("molecule metrics need RDKit: pip install rdkit") from None
    from . import io as molio

    molio.quiet_rdkit()
    return Chem


def _sanitized(item: Any, Chem):
    """A sanitized, hydrogen-free copy of a Mol / SMILES with at least one atom, or None."""
    if item is None:
        return None
    if isinstance(item, str):
        s = item.strip().split()[0] if item.strip() else ""
        mol = Chem.MolFromSmiles(s) if s else None
    elif isinstance(item, Chem.Mol):
        mol = Chem.Mol(item)
        try:
            Chem.SanitizeMol(mol)
        except Exception:  # RDKit's sanitization errors: an invalid molecule
            return None
    else:
        raise InputError(f"expected an RDKit Mol, a SMILES string or None, got {type(item).__name__}")
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    try:
        mol = Chem.RemoveHs(mol)
    except Exception:
        return None
    return mol if mol.GetNumAtoms() > 0 else None


def _canonical_of(mol, Chem, source: Optional[str] = None) -> Optional[str]:
    """Canonical SMILES of a sanitized molecule: written, parsed back, written again. When the first writing
    equals ``source`` (the SMILES the molecule was parsed from), it is already that fixed point."""
    try:
        smiles = Chem.MolToSmiles(mol, isomericSmiles=False)
        if source is not None and smiles == source:
            return smiles
        again = Chem.MolFromSmiles(smiles) if smiles else None
        if again is None or again.GetNumAtoms() == 0:
            return None
        return Chem.MolToSmiles(again, isomericSmiles=False) or None
    except Exception:  # a molecule RDKit cannot write or read back
        return None


def canonical_smiles(item: Any) -> Optional[str]:
    """RDKit canonical SMILES of a Mol / SMILES without stereo (written, parsed back, written again), or None
    when the item is None, empty or invalid (does not sanitize, or its SMILES does not parse back)."""
    Chem = _chem()
    mol = _sanitized(item, Chem)
    return None if mol is None else _canonical_of(mol, Chem, source=item.strip() if isinstance(item, str) else None)


@dataclass
class Parsed:
    """Items reduced to what the metrics need: the canonical SMILES of each item (None = invalid) and the
    sanitized molecules of the valid ones (parsed from their canonical SMILES)."""

    n: int
    smiles: List[Optional[str]]
    mols: List[Any]

    @property
    def valid(self) -> List[str]:
        return [s for s in self.smiles if s is not None]


def parse(items: Iterable[Any]) -> Parsed:
    """:class:`Parsed` of a list of Mol / SMILES / None (a :class:`Parsed` is returned as is)."""
    if isinstance(items, Parsed):
        return items
    Chem = _chem()
    items = [items] if isinstance(items, str) else list(items)
    smiles, mols = [], []
    for it in items:
        mol = _sanitized(it, Chem)
        s = None if mol is None else _canonical_of(mol, Chem, source=it.strip() if isinstance(it, str) else None)
        smiles.append(s)
        if s is not None:
            mols.append(Chem.MolFromSmiles(s))
    return Parsed(len(items), smiles, mols)


def _ratio(a: int, b: int) -> Optional[float]:
    return None if b == 0 else a / b


# ------------------------------------------------------------------------------------------ basic metrics
def validity(items) -> Optional[float]:
    """Valid items / all items (None for an empty list); see the module docstring for *valid*."""
    p = parse(items)
    return _ratio(len(p.valid), p.n)


def uniqueness(items) -> Optional[float]:
    """Distinct canonical SMILES among the valid items / valid items (None without a valid item)."""
    v = parse(items).valid
    return _ratio(len(set(v)), len(v))


def _training_set(training, assume_canonical: bool) -> frozenset:
    if assume_canonical:
        return training if isinstance(training, (set, frozenset)) else frozenset(training)
    return frozenset(s for s in parse(training).smiles if s is not None)


def novelty(items, training, assume_canonical: bool = False) -> Optional[float]:
    """Distinct valid canonical SMILES not in ``training`` / distinct valid ones (None without a valid item).

    ``training``: molecules or SMILES, canonicalised here; with ``assume_canonical=True`` a collection of
    SMILES already in :func:`canonical_smiles` form, used as is (e.g. :attr:`Reference.train`).
    """
    unique = set(parse(items).valid)
    train = _training_set(training, assume_canonical)
    return _ratio(sum(s not in train for s in unique), len(unique))


def _fragments(mols) -> List[int]:
    Chem = _chem()
    return [len(Chem.GetMolFrags(m)) for m in mols]


def fraction_connected(items) -> Optional[float]:
    """Valid items with exactly one fragment / valid items (None without a valid item)."""
    f = _fragments(parse(items).mols)
    return _ratio(sum(k == 1 for k in f), len(f))


def mean_fragments(items) -> Optional[float]:
    """Mean number of fragments (connected components) of a valid item (None without a valid item)."""
    f = _fragments(parse(items).mols)
    return float(np.mean(f)) if f else None


# ------------------------------------------------------------------------------------------ distributions
def total_variation(p: Dict[str, float], q: Dict[str, float]) -> float:
    """``0.5 * sum |p - q|`` over the union of keys of two histograms (each normalised here); 0 when both are
    empty, 1 when only one is."""
    sp, sq = float(sum(p.values())), float(sum(q.values()))
    if sp == 0 and sq == 0:
        return 0.0
    if sp == 0 or sq == 0:
        return 1.0
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0.0) / sp - q.get(k, 0.0) / sq) for k in keys)


def atom_type_histogram(items) -> Dict[str, float]:
    """Frequencies (summing to 1) of the heavy-atom elements of the valid items, sorted by atomic number."""
    counts: Dict[Tuple[int, str], int] = {}
    for m in parse(items).mols:
        for a in m.GetAtoms():
            if a.GetAtomicNum() > 1:
                key = (a.GetAtomicNum(), a.GetSymbol())
                counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values())
    return {sym: c / total for (_, sym), c in sorted(counts.items())} if total else {}


def atom_type_distance(items, reference) -> float:
    """Total variation between the heavy-atom element histograms of ``items`` and ``reference``."""
    return total_variation(atom_type_histogram(items), atom_type_histogram(reference))


def _ring_sizes(mols) -> Tuple[Dict[str, int], List[int]]:
    Chem = _chem()
    counts = {b: 0 for b in RING_BINS}
    per_mol = []
    for m in mols:
        rings = Chem.GetSymmSSSR(m)
        per_mol.append(len(rings))
        for r in rings:
            k = len(r)
            counts["8+" if k >= 8 else str(k)] += 1
    return counts, per_mol


def ring_size_histogram(items) -> Dict[str, float]:
    """Frequencies of ring sizes (bins 3, 4, 5, 6, 7, 8+; SSSR rings pooled over the valid items); all zero
    when there is no ring."""
    counts, _ = _ring_sizes(parse(items).mols)
    total = sum(counts.values())
    return {b: (c / total if total else 0.0) for b, c in counts.items()}


def ring_size_distance(items, reference) -> float:
    """Total variation between the ring-size histograms of ``items`` and ``reference`` (see
    :func:`total_variation` for the cases without rings)."""
    return total_variation(_ring_sizes(parse(items).mols)[0], _ring_sizes(parse(reference).mols)[0])


def rings_per_molecule(items) -> Optional[float]:
    """Mean number of SSSR rings of a valid item (None without a valid item)."""
    _, per = _ring_sizes(parse(items).mols)
    return float(np.mean(per)) if per else None


# ------------------------------------------------------------------------------------------ FCD
_CHEMNET = None


def load_chemnet():
    """The ChemNet network of the ``fcd`` package, with its bundled weights read by
    ``torch.load(weights_only=True)``; cached. Raises :class:`MissingDependency` without ``fcd``."""
    global _CHEMNET
    if _CHEMNET is not None:
        return _CHEMNET
    try:
        import fcd  # noqa: F401
        from fcd.utils import load_imported_model
    except ImportError:
        raise MissingDependency("FCD needs the fcd package (ChemNet weights included): pip install fcd") from None
    import torch

    path = Path(fcd.__file__).resolve().parent / CHEMNET_FILE
    if path.is_file():
        source: Any = path
    else:  # a zipped install: read the bytes through the package loader, still without full unpickling
        import pkgutil

        data = pkgutil.get_data("fcd", CHEMNET_FILE)
        if data is None:
            raise MissingDependency(f"the fcd package has no {CHEMNET_FILE}; reinstall it: pip install fcd")
        source = _io.BytesIO(data)
    try:
        config = torch.load(source, map_location="cpu", weights_only=True)
        model = load_imported_model(config).eval()
    except Exception as e:
        raise PolydiffError(f"cannot load fcd's ChemNet weights ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:200]})") from None
    _CHEMNET = model
    return model


def chemnet_activations(smiles: Sequence[str], model=None, batch_size: int = 128) -> np.ndarray:
    """``[len(smiles), 512]`` ChemNet activations, with ``fcd``'s input encoding (one-hot tokens padded to
    350, divided by the vocabulary size), computed in this process."""
    import torch
    from fcd.utils import SmilesDataset

    model = model or load_chemnet()
    smiles = list(smiles)
    if not smiles:
        return np.zeros((0, 512), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fcd warns when a SMILES longer than 349 tokens widens the padding
        data = SmilesDataset(smiles)
    out = []
    with torch.no_grad():
        for i in range(0, len(smiles), batch_size):
            batch = torch.as_tensor(np.stack([data[j] for j in range(i, min(i + batch_size, len(smiles)))]))
            out.append(model(batch.transpose(1, 2).float()).numpy().astype(np.float32))
    return np.concatenate(out)


def chemnet_stats(smiles: Sequence[str], model=None) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the ChemNet activations of ``smiles`` (at least 2)."""
    act = chemnet_activations(smiles, model)
    if len(act) < 2:
        raise InputError(f"FCD needs at least 2 molecules on each side, got {len(act)}")
    with _one_blas_thread():
        return act.mean(0), np.cov(act.T)


def _one_blas_thread():
    """One BLAS thread for the 512 x 512 decompositions (tens of milliseconds on one core): more threads gain
    nothing there and, on a busy machine, made them a hundred times slower. A no-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def frechet_distance(stats1, stats2) -> float:
    """Frechet distance between two (mean, covariance) pairs (:func:`polydiff.metrics.frechet_distance_from_stats`,
    the quantity ``fcd.calculate_frechet_distance`` computes), on one BLAS thread."""
    from polydiff.metrics import frechet_distance_from_stats

    mu1, mu2 = np.asarray(stats1[0]), np.asarray(stats2[0])
    if mu1.shape != mu2.shape or np.shape(stats1[1]) != np.shape(stats2[1]):
        raise InputError(f"FCD statistics of different sizes: {mu1.shape} and {mu2.shape}")
    with _one_blas_thread():
        return frechet_distance_from_stats(stats1[0], stats1[1], stats2[0], stats2[1])


def fcd(items, reference, model=None) -> float:
    """FCD between the valid items (canonical SMILES, duplicates kept) and the reference molecules (both
    canonicalised). ``reference`` may be a (mean, covariance) pair from :func:`chemnet_stats`. Raises
    :class:`MissingDependency` without the ``fcd`` package and :class:`InputError` with fewer than 2
    molecules on a side."""
    model = model or load_chemnet()
    gen = chemnet_stats(parse(items).valid, model)
    if isinstance(reference, tuple) and len(reference) == 2 and isinstance(reference[0], np.ndarray):
        ref = reference
    else:
        ref = chemnet_stats(parse(reference).valid, model)
    return frechet_distance(gen, ref)


def fcd_or_reason(items, reference, model=None) -> Tuple[Optional[float], Optional[str]]:
    """``(fcd, None)``, or ``(None, one-line reason)`` when it cannot be computed (no ``fcd`` package, too
    few molecules, a numerical failure); never an estimate."""
    try:
        return fcd(items, reference, model), None
    except (PolydiffError, ValueError, np.linalg.LinAlgError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        return None, msg[:300]


# ------------------------------------------------------------------------------------------ references
@dataclass
class Reference:
    """What generated molecules are compared with: ``train`` (canonical SMILES, for novelty) and ``test``
    (parsed molecules, for FCD and the distribution distances), with a description of both."""

    name: str
    train: frozenset
    test: Parsed
    description: str
    note: str = ""
    split: Dict[str, Any] = field(default_factory=dict)
    _stats: Any = None
    _hist: Any = None

    def fcd_stats(self, model=None):
        """Cached ChemNet mean and covariance of the test molecules."""
        if self._stats is None:
            self._stats = chemnet_stats(self.test.valid, model)
        return self._stats

    def histograms(self):
        """Cached atom-type and ring-size histograms and rings per molecule of the test molecules."""
        if self._hist is None:
            rings, per = _ring_sizes(self.test.mols)
            self._hist = (atom_type_histogram(self.test), rings, float(np.mean(per)) if per else None)
        return self._hist

    def to_dict(self) -> dict:
        atoms, rings, rpm = self.histograms()
        total = sum(rings.values())
        return {"name": self.name, "description": self.description, "note": self.note or None,
                "train_molecules": len(self.train), "test_molecules": len(self.test.valid), "split": self.split or None,
                "atom_types": atoms, "ring_sizes": {k: (v / total if total else 0.0) for k, v in rings.items()},
                "rings_per_molecule": rpm}


def qm9_split(n_rows: int, size: int = QM9_TEST_SIZE, seed: int = QM9_SPLIT_SEED) -> np.ndarray:
    """The sorted 0-based data rows of the test split: ``sorted(default_rng(seed).permutation(n_rows)[:size])``."""
    if size < 2 or size > n_rows:
        raise InputError(f"test split size must be between 2 and {n_rows}, got {size}")
    return np.sort(np.random.default_rng(seed).permutation(n_rows)[:size])


def qm9_dev_split(n_rows: int, size: int = QM9_TEST_SIZE, seed: int = QM9_SPLIT_SEED) -> np.ndarray:
    """The sorted 0-based data rows of the development reference: the ``size`` rows after the test split's in
    the same permutation, ``sorted(default_rng(seed).permutation(n_rows)[size:2 * size])`` (disjoint from
    :func:`qm9_split` of the same arguments). Sampling choices are made against these, never the test split."""
    if size < 2 or 2 * size > n_rows:
        raise InputError(f"a test and a development split of {size} rows need at least {2 * size} rows, got {n_rows}")
    return np.sort(np.random.default_rng(seed).permutation(n_rows)[size:2 * size])


def _read_qm9_csv(path: Path) -> Tuple[List[str], List[str]]:
    """(qm9_index values, SMILES) of qm9_canonical_neutral.csv (an index column is optional)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if "smiles" not in header:
            raise InputError(f"{path}: no 'smiles' column")
        col = header.index("smiles")
        icol = header.index("qm9_index") if "qm9_index" in header else None
        idx, smiles = [], []
        for k, row in enumerate(reader):
            if len(row) > col and row[col].strip():
                smiles.append(row[col].strip())
                idx.append(row[icol].strip() if icol is not None and len(row) > icol else str(k + 1))
    if not smiles:
        raise InputError(f"{path}: no molecules")
    return idx, smiles


def _reference_from_file(path: Path, name: str, description: str, note: str = "") -> Reference:
    from . import io as molio

    mols, _ = molio.read_molecules(path)
    p = parse(mols)
    if not p.valid:
        raise InputError(f"{path}: no valid reference molecule")
    return Reference(name, frozenset(p.valid), p, description, note)


def _qm9_reference(path: Path, test_size: int, seed: int) -> Reference:
    from . import datasets

    index, raw = _read_qm9_csv(path)
    rows = qm9_split(len(raw), test_size, seed)
    Chem = _chem()
    train = []
    for s in raw:  # the file is RDKit-canonical; re-canonicalised here with this RDKit and no stereo
        mol = _sanitized(s, Chem)
        train.append(None if mol is None else _canonical_of(mol, Chem, source=s))
    test = [train[i] for i in rows]
    p = Parsed(len(test), test, [Chem.MolFromSmiles(s) for s in test if s is not None])
    chosen = [index[i] for i in rows]
    split = {"file": str(path), "rows": len(raw), "seed": seed, "size": int(test_size),
             "rule": f"sorted(numpy.random.default_rng({seed}).permutation({len(raw)})[:{test_size}]) "
                     "(0-based data rows, header excluded)",
             "first_qm9_index": chosen[:5],
             "qm9_index_sha256": hashlib.sha256(",".join(chosen).encode()).hexdigest()}
    return Reference("qm9", frozenset(s for s in train if s is not None), p,
                     f"novelty vs all {len(raw):,} molecules of {datasets.QM9_FILE}; FCD and distribution "
                     f"distances vs a {test_size:,}-molecule split (seed {seed})", QM9_NOTE, split)


#: QM9 references built in this process, by (file, size, modification time, split size, split seed): parsing
#: the 133,885 molecules and the ChemNet statistics of the split take about a minute, so a process that
#: evaluates several sample sets pays for them once
_QM9_REFERENCES: Dict[tuple, Reference] = {}


def load_reference(name: str = "qm9", test_size: int = QM9_TEST_SIZE, seed: int = QM9_SPLIT_SEED) -> Reference:
    """A :class:`Reference`: ``qm9``, ``qm9_sample`` or a molecule file (see the module docstring).

    ``qm9`` falls back to ``qm9_sample`` with a warning when the QM9 file is not in the data folder. The
    ``qm9`` reference is built once per process and file (its statistics with it); treat it as read-only.
    """
    from . import datasets

    if name == "qm9":
        root = datasets.data_dir(datasets.QM9_FILE)
        if root is None:
            warnings.warn(f"QM9 not found ({datasets.QM9_FILE} under ${datasets.ENV_VAR} or shared/data/molecules); "
                          f"using the bundled 2,000-molecule sample as the reference", stacklevel=2)
            return load_reference("qm9_sample")
        path = root / datasets.QM9_FILE
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, int(test_size), int(seed))
        if key not in _QM9_REFERENCES:
            _QM9_REFERENCES.clear()  # one at a time: a reference holds ~130,000 SMILES
            _QM9_REFERENCES[key] = _qm9_reference(path, test_size, seed)
        return _QM9_REFERENCES[key]
    if name == "qm9_sample":
        return _reference_from_file(datasets.SAMPLE_PATH, "qm9_sample",
                                    "the bundled 2,000-molecule QM9 sample (novelty, FCD and distributions)",
                                    "a subset of QM9 that the bundled checkpoint was trained on")
    path = Path(name).expanduser()
    from . import io as molio

    if molio.file_kind(path) is None and not path.exists():
        raise InputError(f"unknown reference {name!r}: use qm9, qm9_sample or a .smi/.csv/.sdf file")
    return _reference_from_file(path, str(path), f"the molecules of {path} (novelty, FCD and distributions)")


# ------------------------------------------------------------------------------------------ summary
#: below this many valid molecules an FCD comes with a warning (its small-sample bias dominates)
FCD_MIN_SAMPLES = 1000


def summarize(items, reference: Optional[Reference] = None, with_fcd: bool = True) -> Dict[str, Any]:
    """Every metric of one set of samples as a JSON-ready dict (novelty, distances and FCD need a
    ``reference``)."""
    p = parse(items)
    valid = p.valid
    frags = _fragments(p.mols)
    rings, per = _ring_sizes(p.mols)
    ring_total = sum(rings.values())
    atoms = atom_type_histogram(p)
    out: Dict[str, Any] = {
        "n": p.n, "valid": len(valid), "validity": _ratio(len(valid), p.n),
        "unique": len(set(valid)), "uniqueness": _ratio(len(set(valid)), len(valid)),
        "novel": None, "novelty": None,
        "connected": _ratio(sum(k == 1 for k in frags), len(frags)),
        "valid_connected": _ratio(sum(k == 1 for k in frags), p.n),
        "fragments_per_molecule": float(np.mean(frags)) if frags else None,
        "atom_types": atoms, "atom_type_tv": None,
        "ring_sizes": {k: (v / ring_total if ring_total else 0.0) for k, v in rings.items()},
        "ring_size_tv": None, "rings_per_molecule": float(np.mean(per)) if per else None,
        "fcd": None, "fcd_reason": "not computed" if not with_fcd else None,
    }
    if reference is None:
        if with_fcd:
            out["fcd_reason"] = "no reference set"
        return out
    unique = set(valid)
    out["novel"] = sum(s not in reference.train for s in unique)
    out["novelty"] = _ratio(out["novel"], len(unique))
    ref_atoms, ref_rings, _ = reference.histograms()
    if valid:
        out["atom_type_tv"] = total_variation(atoms, ref_atoms)
        out["ring_size_tv"] = total_variation(rings, ref_rings)
    if with_fcd:
        try:
            model = load_chemnet()
            ref_stats = reference.fcd_stats(model)
        except (PolydiffError, ValueError) as e:
            out["fcd_reason"] = " ".join(str(e).split())[:300]
        else:
            out["fcd"], out["fcd_reason"] = fcd_or_reason(p, ref_stats, model)
            if out["fcd"] is not None and len(valid) < FCD_MIN_SAMPLES:
                out["fcd_warning"] = (f"FCD from {len(valid)} molecules mostly measures the sample size (it "
                                      f"shrinks as n grows); compare it only at equal n, and use at least "
                                      f"{FCD_MIN_SAMPLES:,} for a number to report")
    return out


# ------------------------------------------------------------------------------------------ evaluation
def _cpu(cond: dict) -> dict:
    return {k: (v.detach().cpu() if hasattr(v, "detach") else v) for k, v in cond.items()}


def sample_and_decode(model, n: int, seed: int = 0, sampler: Optional[str] = None, steps: Optional[int] = None,
                      batch_size: int = 200, decodes: Sequence[str] = ("raw", "valence"),
                      sampler_args: Optional[dict] = None, schedule: Optional[str] = None,
                      schedule_args: Optional[dict] = None) -> Dict[str, Any]:
    """Sample ``n`` molecules in batches of ``batch_size`` from one seeded generator (so ``n <= batch_size``
    gives exactly ``polydiff sample molecule -n n --seed seed``), then decode the same tensors in every mode
    of ``decodes``. ``sampler_args``: as ``polydiff sample --sampler-args``; ``schedule`` / ``schedule_args``: a
    ladder and its arguments [the model's]. Returns ``{"samples": {mode: [Mol|None]}, "sampling_s", "decode_s": {mode: s}}``."""
    import torch

    if n < 1:
        raise PolydiffError(f"the number of samples must be at least 1, got {n}")
    if batch_size < 1:
        raise PolydiffError(f"--batch-size must be at least 1, got {batch_size}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    batches = []
    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        x, cond = model.sample(min(batch_size, n - start), sampler=sampler, steps=steps, generator=gen,
                               sampler_args=sampler_args, schedule=schedule, schedule_args=schedule_args)
        batches.append((x.detach().cpu(), _cpu(cond)))
    sampling_s = time.perf_counter() - t0
    samples, decode_s = {}, {}
    for mode in decodes:
        t0 = time.perf_counter()
        out: List[Any] = []
        for x, cond in batches:
            out.extend(model.encoder.decode(x, cond, mode=mode))
        decode_s[mode] = time.perf_counter() - t0
        samples[mode] = out
    return {"samples": samples, "sampling_s": sampling_s, "decode_s": decode_s}


def _generation(n: int, sampling_s: float, decode_s: Dict[str, float]) -> Dict[str, Any]:
    import torch

    return {"sampling_s": sampling_s, "decode_s": decode_s,
            "sampling_molecules_per_s": n / sampling_s if sampling_s > 0 else None,
            "molecules_per_s": {m: (n / (sampling_s + d) if sampling_s + d > 0 else None) for m, d in decode_s.items()},
            "threads": torch.get_num_threads()}


def evaluate_model(model, n: int = 1000, seed: int = 0, sampler: Optional[str] = None, steps: Optional[int] = None,
                   batch_size: int = 200, decodes: Sequence[str] = ("raw", "valence"),
                   reference: Optional[Reference] = None, with_fcd: bool = True,
                   sampler_args: Optional[dict] = None) -> Dict[str, Any]:
    """Sample, decode in each mode, and :func:`summarize` every mode against ``reference``. Returns a dict with
    ``results`` (mode -> metrics), ``generation`` (timings, molecules per second of sampling + decoding) and
    ``samples`` (mode -> decoded list, not JSON)."""
    from polydiff.samplers import nfe

    sc = model.config.get("sample", {})
    name = sampler or sc.get("sampler", "dpmpp_2m")
    k = int(steps or sc.get("steps", 20))
    run = sample_and_decode(model, n, seed, sampler, steps, batch_size, decodes, sampler_args)
    results = {m: summarize(items, reference, with_fcd) for m, items in run["samples"].items()}
    return {"model": str(model.path) if model.path else None, "n": n, "seed": seed, "sampler": name, "steps": k,
            "nfe": nfe(name, k), "batch_size": batch_size, "device": str(model.device), "results": results,
            "generation": _generation(n, run["sampling_s"], run["decode_s"]), "samples": run["samples"]}


def read_samples(path) -> List[Any]:
    """Samples from a file, invalid ones as None. In a ``.smi`` file each line is a sample (first word =
    SMILES; an empty line or an unparsable SMILES is an invalid sample, the layout ``polydiff sample
    --keep-invalid`` writes; a first line ``smiles`` is a header). ``.csv`` / ``.sdf``: unparsable records
    count as invalid samples."""
    from . import io as molio

    path = Path(path)
    kind = molio.file_kind(path)
    if kind != "smi":
        mols, invalid = molio.read_molecules(path)
        return list(mols) + [None] * invalid
    text = molio._read_text(path)
    lines = text.split("\n")
    if lines and lines[-1].strip() == "":
        lines = lines[:-1]  # the newline that ends the last line
    out: List[Any] = []
    for i, line in enumerate(lines):
        word = line.strip().split()[0] if line.strip() else ""
        if i == 0 and word.lower() == "smiles":
            continue
        out.append(word or None)
    if not out:
        raise InputError(f"{path}: no samples")
    return out


def evaluate_file(path, reference: Optional[Reference] = None, with_fcd: bool = True) -> Dict[str, Any]:
    """:func:`summarize` the samples of a file (see :func:`read_samples`)."""
    items = read_samples(path)
    return {"samples_file": str(path), "n": len(items), "results": {"file": summarize(items, reference, with_fcd)},
            "samples": {"file": items}}


#: the modality's metrics (Modality.metrics): name -> function of (items[, reference])
METRICS = {
    "validity": validity, "uniqueness": uniqueness, "novelty": novelty, "connected": fraction_connected,
    "fragments_per_molecule": mean_fragments, "atom_type_tv": atom_type_distance,
    "ring_size_tv": ring_size_distance, "rings_per_molecule": rings_per_molecule, "fcd": fcd,
}


# ------------------------------------------------------------------------------------------ CLI
def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _num(v, fmt=".3f") -> str:
    return "-" if v is None else format(v, fmt)


ROWS = (("validity", _pct), ("uniqueness", _pct), ("novelty", _pct), ("connected", _pct),
        ("valid_connected", _pct), ("fragments_per_molecule", _num), ("atom_type_tv", _num),
        ("ring_size_tv", _num), ("rings_per_molecule", _num), ("fcd", _num))


def render_table(doc: dict) -> str:
    """The text table ``polydiff evaluate molecule`` prints."""
    res = doc["results"]
    modes = list(res)
    lines = []
    if doc.get("samples_file"):
        lines.append(f"molecule evaluation of {doc['n']} samples in {doc['samples_file']}")
    else:
        lines.append(f"molecule evaluation: {doc['n']} samples of {doc['model']} ({doc['sampler']}, {doc['steps']} "
                     f"steps, {doc['nfe']} network evaluations, seed {doc['seed']})")
    ref = doc.get("reference")
    if ref:
        lines.append(f"reference {ref['name']}: {ref['description']}")
        if ref.get("note"):
            lines.append(f"  note: {ref['note']}")
    lines.append("metric".ljust(24) + "".join(m.rjust(12) for m in modes))
    for key, fmt in ROWS:
        lines.append(key.ljust(24) + "".join(fmt(res[m].get(key)).rjust(12) for m in modes))
    for m in modes:
        if res[m].get("fcd") is None and res[m].get("fcd_reason"):
            lines.append(f"fcd ({m}): n/a: {res[m]['fcd_reason']}")
        elif res[m].get("fcd_warning"):
            lines.append(f"fcd ({m}): warning: {res[m]['fcd_warning']}")
    if ref and ref.get("rings_per_molecule") is not None:
        lines.append(f"reference rings per molecule: {ref['rings_per_molecule']:.3f}")
    gen = doc.get("generation")
    if gen:
        dec = ", ".join(f"{m} {s:.3f} s" for m, s in gen["decode_s"].items())
        mps = ", ".join(f"{m} {v:.1f}" for m, v in gen["molecules_per_s"].items() if v is not None)
        lines.append(f"generation: sampling {gen['sampling_s']:.2f} s, decoding {dec}; molecules/s (sampling + "
                     f"decoding): {mps} on {gen['threads']} thread(s), {doc.get('device', 'cpu')}")
    if doc.get("grid"):
        lines.append(f"grid: {doc['grid']}")
    return "\n".join(lines)


def evaluate_command():
    """The click command ``polydiff evaluate molecule`` (added through ``register_commands``)."""
    import json

    import click

    @click.command(name="molecule")
    @click.option("--model", "model_name", default=None, help="Pretrained name (qm9_discrete, qm9) or a .safetensors bundle [the default bundled model].")
    @click.option("--samples", "samples_file", type=click.Path(), default=None,
                  help="Evaluate the molecules of this .smi/.csv/.sdf file instead of sampling (in a .smi file an "
                       "empty line is an invalid sample, as `polydiff sample --keep-invalid` writes).")
    @click.option("-n", "n", type=int, default=None, help="Number of samples [1000].")
    @click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the sampling.")
    @click.option("--sampler", default=None, help="Sampler [the model's default].")
    @click.option("--steps", type=int, default=None, help="Sampling steps [the model's default].")
    @click.option("--batch-size", type=int, default=200, show_default=True, help="Molecules sampled per batch.")
    @click.option("--decode", type=click.Choice(["both", "raw", "valence"]), default="both", show_default=True,
                  help="Decode modes to evaluate (both: the same samples decoded raw and with valence repair).")
    @click.option("--reference", default="qm9", show_default=True,
                  help="qm9 (novelty vs the whole file, FCD vs a seeded 10,000-molecule split), qm9_sample "
                       "(the bundled 2,000 molecules) or a .smi/.csv/.sdf file.")
    @click.option("--test-size", type=int, default=QM9_TEST_SIZE, show_default=True,
                  help="Size of the QM9 split FCD is computed against.")
    @click.option("--split-seed", type=int, default=QM9_SPLIT_SEED, show_default=True, help="Seed of the QM9 split.")
    @click.option("--fcd/--no-fcd", "with_fcd", default=True, show_default=True,
                  help="Compute FCD (needs the fcd package).")
    @click.option("--grid", type=click.Path(), default=None, help="Draw the first 32 molecules in a PNG grid.")
    @click.option("--threads", type=int, default=None, help="torch threads [torch's default].")
    @click.option("--device", default=None, help="cpu, cuda, ... [cuda when present, else cpu]")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
    def cmd(model_name, samples_file, n, seed, sampler, steps, batch_size, decode, reference, test_size, split_seed,
            with_fcd, grid, threads, device, as_json):
        """Evaluate generated molecules: validity (raw and valence decoding), uniqueness, novelty, FCD,
        connectivity, atom-type and ring-size distances, and molecules per second.

        Samples from a model (--model, by default the bundled default model), or evaluates --samples FILE.
        """
        import torch

        if threads is not None:
            if threads < 1:
                raise PolydiffError(f"--threads must be at least 1, got {threads}")
            torch.set_num_threads(threads)
        if samples_file is not None:
            given = [o for o, v in (("--model", model_name), ("-n", n), ("--sampler", sampler), ("--steps", steps))
                     if v is not None]
            if given:
                raise PolydiffError(f"--samples evaluates a file; drop {', '.join(given)}")
            if not Path(samples_file).exists():
                raise InputError(f"{samples_file}: no such file")
        n = 1000 if n is None else n
        if n < 1:
            raise PolydiffError(f"-n must be at least 1, got {n}")
        if steps is not None and steps < 1:
            raise PolydiffError(f"--steps must be at least 1, got {steps}")
        model = None
        if samples_file is None:
            from polydiff.model import load_model

            if sampler is not None:
                from polydiff import get_sampler

                get_sampler(sampler)  # an unknown name fails here, before the reference is loaded
            model = load_model("molecule", model_name, device=device)  # None: the default bundled model
        ref = load_reference(reference, test_size, split_seed)
        if samples_file is not None:
            doc = evaluate_file(samples_file, ref, with_fcd)
        else:
            decodes = ("raw", "valence") if decode == "both" else (decode,)
            doc = evaluate_model(model, n, seed, sampler, steps, batch_size, decodes, ref, with_fcd)
        samples = doc.pop("samples")
        doc = {"modality": "molecule", **doc, "reference": ref.to_dict()}
        if with_fcd:
            doc["fcd_weights"] = (f"fcd package {CHEMNET_FILE}, read with torch.load(weights_only=True)"
                                  if _CHEMNET is not None else None)
        if grid:
            from .draw import grid as draw_grid

            mode = "valence" if "valence" in samples else next(iter(samples))
            shown = samples[mode][:32]
            legends = [(canonical_smiles(m) or "invalid") for m in shown]
            legends = [s if len(s) <= 28 else s[:25] + "..." for s in legends]
            draw_grid(shown, grid, n_cols=8, legends=legends)
            doc["grid"] = str(grid)
        if as_json:
            click.echo(json.dumps(doc, indent=2, default=_json_default))
        else:
            click.echo(render_table(doc))

    return cmd


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)
