"""Molecules <-> padded dense graphs in one float tensor: :class:`GraphCodec`.

Chemistry
    Molecules are used with implicit hydrogens (``RemoveHs``) and in a Kekulé form (``Chem.Kekulize`` with
    ``clearAromaticFlags=True``), so every bond is SINGLE, DOUBLE or TRIPLE. Before encoding, a molecule is
    rebuilt from its canonical SMILES, so atom order and Kekulé form depend only on the molecule, not on how
    it was written. Stored per atom: element and formal charge; per atom pair: bond class. Hydrogen counts,
    radicals, isotopes and stereochemistry are not stored: decoding lets RDKit fill hydrogens from default
    valences, and the result has no stereo.

Vocabulary
    ``atom_types`` = the distinct (element symbol, formal charge) pairs of the training molecules, sorted by
    atomic number then charge; ``max_atoms`` (N) = the largest heavy-atom count seen; both learned by
    :meth:`GraphCodec.fit` and kept in :meth:`GraphCodec.metadata`. ``size_counts[n]`` counts the
    training molecules with n heavy atoms (a distribution to draw sample sizes from).

Tensor layout (A = len(atom_types), E = 4 bond classes none/single/double/triple, T = N(N-1)/2 pairs)
    ``x``: float32 ``[B, D]`` with ``D = N*A + T*E``::

        x[:, :N*A]  -> view [B, N, A]  node one-hot, node i = atom i in canonical order
        x[:, N*A:]  -> view [B, T, E]  edge one-hot for the pairs (i, j), i < j, in row-major order
                                       (the order of ``torch.triu_indices(N, N, 1)``)

    Only the upper triangle is stored, so independent Gaussian noise on ``x`` is noise on a symmetric graph,
    and there is no diagonal. Values are ``2 * one_hot - 1``, i.e. +1 for the class and -1 elsewhere;
    decoding takes the argmax. Padding nodes (index >= number of atoms) are all -1; pairs involving a padding
    node are encoded as "none". :meth:`GraphCodec.split` gives ``nodes [B, N, A]`` and symmetric
    ``edges [B, N, N, E]`` (diagonal = the "none" encoding); :meth:`GraphCodec.join` is its inverse
    (averaging the two directions of ``edges``).

    ``cond = {"mask": float [B, N]}`` (1 for real atoms, 0 for padding).
    :meth:`GraphCodec.element_mask` turns it into a float ``[B, D]`` mask over ``x`` for the loss: node
    entries of real atoms and edge entries of pairs of two real atoms.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from polydiff.errors import InputError, PolydiffError

from . import io as molio

__all__ = ["GraphCodec", "BOND_CLASSES", "fragments", "is_connected", "atom_capacity", "atom_label"]

BOND_CLASSES = ("none", "single", "double", "triple")
DECODE_MODES = ("valence", "raw")
FORMAT = "polydiff-molecule-graph"
FORMAT_VERSION = 1
_log = logging.getLogger("polydiff.molecule")
_CAPACITY: Dict[Tuple[str, int], int] = {}


class _Unusable(Exception):
    """An item that cannot be encoded; the message says why (one line)."""


def _bond_types():
    from rdkit import Chem

    return (None, Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE)


def atom_capacity(symbol: str, charge: int) -> int:
    """Largest number of bond orders an atom may carry: RDKit's largest allowed valence, charge-adjusted.

    A charged atom is given the valences of the isoelectronic neutral element (atomic number minus charge):
    N+ and B- like C (4), O- like F (1), O+ like N (3), C- like N (3), C+ like B (3), S+ like P (3 or 5).
    Elements without a valence limit in RDKit (-1) get 8.
    """
    key = (symbol, int(charge))
    if key not in _CAPACITY:
        from rdkit import Chem

        table = Chem.GetPeriodicTable()
        z = table.GetAtomicNumber(symbol) - int(charge)
        if z < 1 or z > 118:
            cap = 0
        else:
            valences = list(table.GetValenceList(z))
            known = [v for v in valences if v >= 0]
            cap = 8 if (-1 in valences and not known) else max(known, default=0)
        _CAPACITY[key] = cap
    return _CAPACITY[key]


def atom_label(symbol: str, charge: int) -> str:
    """A readable name of an atom class: "C", "N+", "O-", "N2+"."""
    if charge == 0:
        return symbol
    return f"{symbol}{'' if abs(charge) == 1 else abs(charge)}{'+' if charge > 0 else '-'}"


def fragments(mol) -> int:
    """Number of connected components of ``mol`` (0 for None or a molecule without atoms)."""
    if mol is None or mol.GetNumAtoms() == 0:
        return 0
    from rdkit import Chem

    return len(Chem.GetMolFrags(mol))


def is_connected(mol) -> bool:
    """True when ``mol`` has at least one atom and a single connected component."""
    return fragments(mol) == 1


def _show(item: Any) -> str:
    """A short printable form of an item for error messages: its SMILES where possible."""
    if isinstance(item, str):
        text = item
    else:
        try:
            from rdkit import Chem

            text = Chem.MolToSmiles(item) if isinstance(item, Chem.Mol) else type(item).__name__
        except Exception:
            text = type(item).__name__
    text = repr(text)
    return text if len(text) <= 80 else text[:77] + "..."


class GraphCodec:
    """Molecules (RDKit or SMILES) <-> padded dense graphs, in both directions: the graph layout and its
    decoding, without the modality's masks and properties (:class:`polydiff_molecule.encoder.GraphEncoder`,
    the modality's encoder, adds those); see the module docstring.

    ``GraphCodec()`` is unfitted: call :meth:`fit` on training molecules, or rebuild a fitted one with
    :meth:`from_metadata`.
    """

    def __init__(self, atom_types: Optional[Sequence[Sequence[Any]]] = None, max_atoms: Optional[int] = None,
                 size_counts: Optional[Sequence[int]] = None):
        self.atom_types: List[Tuple[str, int]] = [(str(s), int(c)) for s, c in (atom_types or [])]
        self.max_atoms: int = int(max_atoms) if max_atoms else 0
        self.size_counts: List[int] = [int(c) for c in (size_counts or [])]
        #: training counts of each atom class and of each bond class over the pairs of real atoms ("none"
        #: included): the data's marginals, for a marginal categorical process (empty: not known)
        self.atom_counts: List[int] = []
        self.bond_counts: List[int] = []
        self.fit_skipped = 0
        self._cache: Dict[str, Any] = {}

    # ------------------------------------------------------------------ construction / metadata
    @classmethod
    def from_metadata(cls, meta: Optional[dict] = None) -> "GraphCodec":
        """An unfitted encoder for ``None``; otherwise the fitted encoder described by :meth:`metadata`."""
        if not meta:
            return cls()
        if meta.get("format", FORMAT) != FORMAT or int(meta.get("version", FORMAT_VERSION)) > FORMAT_VERSION:
            raise InputError(f"molecule encoder metadata: unsupported format {meta.get('format')!r} "
                             f"version {meta.get('version')!r}")
        if list(meta.get("bond_types", BOND_CLASSES)) != list(BOND_CLASSES):
            raise InputError(f"molecule encoder metadata: bond classes {meta.get('bond_types')!r} "
                             f"differ from {list(BOND_CLASSES)!r}")
        try:
            enc = cls(meta["atom_types"], meta["max_atoms"], meta.get("size_counts"))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"molecule encoder metadata: missing or bad field ({e})") from None
        if not enc.atom_types or enc.max_atoms < 1:
            raise InputError("molecule encoder metadata: empty atom vocabulary or max_atoms < 1")
        enc.atom_counts = [int(c) for c in meta.get("atom_counts") or ()]
        enc.bond_counts = [int(c) for c in meta.get("bond_counts") or ()]
        if (enc.atom_counts and len(enc.atom_counts) != enc.num_atom_types) or \
                (enc.bond_counts and len(enc.bond_counts) != enc.num_bond_types):
            raise InputError("molecule encoder metadata: atom_counts / bond_counts do not match the classes")
        return enc

    def metadata(self) -> dict:
        """JSON-serialisable state: vocabulary, max_atoms, size counts and the format of ``x``."""
        return {"format": FORMAT, "version": FORMAT_VERSION,
                "atom_types": [[s, c] for s, c in self.atom_types], "max_atoms": self.max_atoms,
                "bond_types": list(BOND_CLASSES), "size_counts": list(self.size_counts),
                "atom_counts": list(self.atom_counts), "bond_counts": list(self.bond_counts)}

    @property
    def fitted(self) -> bool:
        return bool(self.atom_types) and self.max_atoms > 0

    def _need_fit(self) -> None:
        if not self.fitted:
            raise PolydiffError("the molecule encoder is not fitted: call fit() on training molecules or "
                                "build it with GraphCodec.from_metadata()")

    @property
    def num_atom_types(self) -> int:
        """A: number of node classes."""
        return len(self.atom_types)

    @property
    def num_bond_types(self) -> int:
        """E: number of edge classes, including "none"."""
        return len(BOND_CLASSES)

    @property
    def num_pairs(self) -> int:
        """T = N(N-1)/2: number of stored atom pairs."""
        return self.max_atoms * (self.max_atoms - 1) // 2

    @property
    def dim(self) -> int:
        """D = N*A + T*E: size of one item's tensor."""
        return self.max_atoms * self.num_atom_types + self.num_pairs * self.num_bond_types

    def atom_labels(self) -> List[str]:
        """Readable names of the atom classes: "C", "N+", "O-", "N2+"."""
        return [atom_label(s, c) for s, c in self.atom_types]

    def sample_shape(self) -> Tuple[int, ...]:
        """``(D,)``: one item of ``x``."""
        self._need_fit()
        return (self.dim,)

    def _pairs(self, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of the stored pairs, i < j, row-major (``torch.triu_indices(N, N, 1)``)."""
        key = ("pairs", self.max_atoms, str(device))
        if key not in self._cache:
            iu = torch.triu_indices(self.max_atoms, self.max_atoms, 1, device=device)
            self._cache[key] = (iu[0], iu[1])
        return self._cache[key]

    def _pair_index(self) -> np.ndarray:
        """[N, N] int array: pair number of (i, j) and (j, i); -1 on the diagonal."""
        key = ("pair_index", self.max_atoms)
        if key not in self._cache:
            n = self.max_atoms
            idx = np.full((n, n), -1, dtype=np.int64)
            iu, ju = np.triu_indices(n, 1)
            idx[iu, ju] = np.arange(len(iu))
            idx[ju, iu] = np.arange(len(iu))
            self._cache[key] = idx
        return self._cache[key]

    # ------------------------------------------------------------------ files
    def read(self, path, strict: bool = False) -> List[Any]:
        """Molecules from a ``.smi``/``.csv``/``.sdf`` file (optionally ``.gz``) or a folder holding one.

        A folder is read through its ``samples.smi`` (what :meth:`write` makes) or else its only molecule
        file. Unparsable records are skipped with a warning (``strict=True``: the first one raises).
        """
        path = Path(path)
        if path.is_dir():
            path = self._file_in_folder(path)
        mols, invalid = molio.read_molecules(path, strict=strict)
        if invalid:
            _log.warning("%s: skipped %d unparsable record(s)", path, invalid)
        if not mols:
            raise InputError(f"{path}: no valid molecule ({invalid} unparsable record(s))")
        return mols

    @staticmethod
    def _file_in_folder(folder: Path) -> Path:
        if (folder / "samples.smi").is_file():
            return folder / "samples.smi"
        found = sorted(p for p in folder.iterdir() if p.is_file() and molio.file_kind(p))
        if len(found) != 1:
            raise InputError(f"{folder}: is a folder with {len(found)} molecule files; give one "
                             f"{', '.join(molio.READ_SUFFIXES)} file")
        return found[0]

    def write(self, items: Sequence[Any], path, keep_invalid: bool = True) -> List[Path]:
        """Write molecules to ``.smi`` or ``.sdf`` (``.gz`` allowed) by suffix, or to ``<folder>/samples.smi``.

        In ``.smi`` output line i is item i (an invalid item, e.g. None, gives an empty line) unless
        ``keep_invalid`` is false (invalid items dropped); ``.sdf`` output skips invalid items and names
        records ``sample_<i>``. Writes are atomic; returns the file.
        """
        path = Path(path)
        name = path.name.lower()
        if any(name.endswith(s) for s in molio.WRITE_SUFFIXES):
            target = path
        elif path.suffix and not path.is_dir():
            raise InputError(f"{path}: cannot write molecules to '{path.suffix}' files; use "
                             f"{', '.join(molio.WRITE_SUFFIXES)} or a folder")
        else:
            target = path / "samples.smi"
        if molio.file_kind(target) == "sdf":
            return [molio.write_sdf(items, target)]
        return [molio.write_smiles(items, target, keep_invalid=bool(keep_invalid))]

    # ------------------------------------------------------------------ molecules
    def _prepare(self, item: Any):
        """Canonical, hydrogen-free, kekulized copy of an item (Mol or SMILES); raises :class:`_Unusable`."""
        from rdkit import Chem

        molio.quiet_rdkit()
        if item is None:
            raise _Unusable("no molecule (None)")
        if isinstance(item, str):
            mol = Chem.MolFromSmiles(item.strip()) if item.strip() else None
            if mol is None:
                raise _Unusable("cannot parse the SMILES")
        elif isinstance(item, Chem.Mol):
            mol = Chem.Mol(item)
        else:
            raise _Unusable(f"expected an RDKit Mol or a SMILES string, got {type(item).__name__}")
        try:
            mol = Chem.RemoveHs(mol)  # sanitizes
            canonical = Chem.MolFromSmiles(Chem.MolToSmiles(mol))
            if canonical is not None:
                mol = canonical
            Chem.Kekulize(mol, clearAromaticFlags=True)
        except Exception as e:  # RDKit's sanitization / kekulization exceptions
            raise _Unusable(f"RDKit rejects it ({' '.join(str(e).split()) or type(e).__name__})") from None
        if mol.GetNumAtoms() == 0:
            raise _Unusable("no atoms")
        kinds = _bond_types()
        for bond in mol.GetBonds():
            if bond.GetBondType() not in kinds[1:]:
                raise _Unusable(f"unsupported bond type {bond.GetBondType()} (only single, double, triple)")
        return mol

    @staticmethod
    def _atom_key(atom) -> Tuple[str, int]:
        return atom.GetSymbol(), int(atom.GetFormalCharge())

    def _prepare_all(self, items: Sequence[Any], skip_invalid: bool, check_vocab: bool):
        """(prepared molecules, indices of skipped items); raises InputError for the first bad item unless
        ``skip_invalid``."""
        items = [items] if isinstance(items, str) else list(items)
        vocab = {k: i for i, k in enumerate(self.atom_types)}
        mols, skipped = [], []
        for i, item in enumerate(items):
            try:
                mol = self._prepare(item)
                if check_vocab:
                    n = mol.GetNumAtoms()
                    if n > self.max_atoms:
                        raise _Unusable(f"{n} heavy atoms, more than max_atoms={self.max_atoms}")
                    for atom in mol.GetAtoms():
                        key = self._atom_key(atom)
                        if key not in vocab:
                            raise _Unusable(f"atom {atom_label(*key)} is not in the vocabulary "
                                            f"({', '.join(self.atom_labels())})")
            except _Unusable as e:
                if not skip_invalid:
                    raise InputError(f"molecule {i} ({_show(item)}): {e}") from None
                skipped.append(i)
                continue
            mols.append(mol)
        if skipped:
            _log.warning("skipped %d of %d molecule(s) that cannot be encoded", len(skipped), len(items))
        return mols, skipped

    # ------------------------------------------------------------------ tensors
    def fit(self, items: Sequence[Any], skip_invalid: bool = False) -> "GraphCodec":
        """Learn the atom vocabulary, ``max_atoms`` and the size distribution from training molecules.

        Items are RDKit molecules or SMILES strings. An unusable item raises :class:`InputError` naming it,
        unless ``skip_invalid=True`` (then the number skipped is in ``self.fit_skipped``). Returns self.
        """
        from rdkit import Chem

        mols, skipped = self._prepare_all(items, skip_invalid, check_vocab=False)
        if not mols:
            raise InputError("no usable molecule to fit the molecule encoder on")
        table = Chem.GetPeriodicTable()
        keys, sizes = Counter(), []
        order = {t: k for k, t in enumerate(_bond_types()) if t is not None}
        bonds = [0] * len(BOND_CLASSES)
        for mol in mols:
            sizes.append(mol.GetNumAtoms())
            keys.update(self._atom_key(a) for a in mol.GetAtoms())
            for bond in mol.GetBonds():
                bonds[order[bond.GetBondType()]] += 1
        self.atom_types = sorted(keys, key=lambda k: (table.GetAtomicNumber(k[0]), k[1]))
        self.max_atoms = max(sizes)
        self.size_counts = np.bincount(sizes, minlength=self.max_atoms + 1).tolist()
        self.atom_counts = [int(keys[k]) for k in self.atom_types]
        bonds[0] = sum(n * (n - 1) // 2 for n in sizes) - sum(bonds[1:])  # pairs of real atoms without a bond
        self.bond_counts = bonds
        self.fit_skipped = len(skipped)
        self._cache.clear()
        return self

    def encode(self, items: Sequence[Any], skip_invalid: bool = False, return_skipped: bool = False):
        """Molecules (Mol or SMILES) -> ``(x [B, D], {"mask": [B, N]})``; see the module docstring for ``x``.

        An item that cannot be encoded (unparsable, more than ``max_atoms`` atoms, an atom outside the
        vocabulary, an unsupported bond) raises :class:`InputError` naming its index and SMILES. With
        ``skip_invalid=True`` such items are left out instead (B = number kept). With
        ``return_skipped=True`` the result is ``(x, cond, skipped)``, ``skipped`` the list of indices left out.
        """
        self._need_fit()
        mols, skipped = self._prepare_all(items, skip_invalid, check_vocab=True)
        n, a, e = self.max_atoms, self.num_atom_types, self.num_bond_types
        vocab = {k: i for i, k in enumerate(self.atom_types)}
        pair = self._pair_index()
        b = len(mols)
        node_cls = np.full((b, n), a, dtype=np.int64)  # class a = padding, dropped after one-hot
        edge_cls = np.zeros((b, self.num_pairs), dtype=np.int64)
        mask = np.zeros((b, n), dtype=np.float32)
        order = {t: k for k, t in enumerate(_bond_types()) if t is not None}
        for row, mol in enumerate(mols):
            count = mol.GetNumAtoms()
            mask[row, :count] = 1.0
            node_cls[row, :count] = [vocab[self._atom_key(at)] for at in mol.GetAtoms()]
            for bond in mol.GetBonds():
                edge_cls[row, pair[bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()]] = order[bond.GetBondType()]
        nodes = F.one_hot(torch.from_numpy(node_cls), a + 1)[..., :a].reshape(b, n * a)
        edges = F.one_hot(torch.from_numpy(edge_cls), e).reshape(b, self.num_pairs * e)
        x = torch.cat([nodes, edges], dim=1).float() * 2.0 - 1.0
        cond = {"mask": torch.from_numpy(mask)}
        return (x, cond, skipped) if return_skipped else (x, cond)

    def split(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``x [..., D]`` -> ``(nodes [..., N, A], edges [..., N, N, E])``; edges symmetric, diagonal "none".

        Differentiable; the diagonal holds the encoding of "none" (+1, -1, -1, -1).
        """
        self._need_fit()
        n, a, e, t = self.max_atoms, self.num_atom_types, self.num_bond_types, self.num_pairs
        if x.shape[-1] != self.dim:
            raise InputError(f"x has {x.shape[-1]} features per item, expected D={self.dim}")
        lead = x.shape[:-1]
        nodes = x[..., :n * a].reshape(*lead, n, a)
        tri = x[..., n * a:].reshape(*lead, t, e)
        iu, ju = self._pairs(x.device)
        none = torch.full((e,), -1.0, dtype=x.dtype, device=x.device)
        none[0] = 1.0
        edges = none.expand(*lead, n * n, e).clone()
        edges[..., iu * n + ju, :] = tri
        edges[..., ju * n + iu, :] = tri
        return nodes, edges.reshape(*lead, n, n, e)

    def join(self, nodes: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """``(nodes [..., N, A], edges [..., N, N, E])`` -> ``x [..., D]``; the inverse of :meth:`split`.

        The two directions of each pair are averaged, so a non-symmetric ``edges`` (a network output) is
        projected onto the symmetric layout; the diagonal is ignored.
        """
        self._need_fit()
        n, a, e = self.max_atoms, self.num_atom_types, self.num_bond_types
        if tuple(nodes.shape[-2:]) != (n, a) or tuple(edges.shape[-3:]) != (n, n, e):
            raise InputError(f"join: expected nodes [..., {n}, {a}] and edges [..., {n}, {n}, {e}], got "
                             f"{list(nodes.shape)} and {list(edges.shape)}")
        iu, ju = self._pairs(nodes.device)
        tri = 0.5 * (edges[..., iu, ju, :] + edges[..., ju, iu, :])
        lead = nodes.shape[:-2]
        return torch.cat([nodes.reshape(*lead, n * a), tri.reshape(*lead, self.num_pairs * e)], dim=-1)

    def element_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Node mask ``[B, N]`` -> float mask ``[B, D]`` over ``x``: 1 on node entries of real atoms and on
        edge entries of pairs of two real atoms, 0 elsewhere (there is no diagonal in ``x``)."""
        self._need_fit()
        n, a, e = self.max_atoms, self.num_atom_types, self.num_bond_types
        if mask.shape[-1] != n:
            raise InputError(f"mask has {mask.shape[-1]} nodes, expected N={n}")
        m = mask.float()
        iu, ju = self._pairs(m.device)
        lead = m.shape[:-1]
        nodes = m.unsqueeze(-1).expand(*lead, n, a).reshape(*lead, n * a)
        pairs = (m[..., iu] * m[..., ju]).unsqueeze(-1).expand(*lead, self.num_pairs, e)
        return torch.cat([nodes, pairs.reshape(*lead, self.num_pairs * e)], dim=-1)

    # ------------------------------------------------------------------ decoding
    def decode(self, x: torch.Tensor, cond: Optional[Dict[str, torch.Tensor]] = None,
               mode: str = "valence") -> List[Any]:
        """``x [B, D]`` (+ ``cond["mask"]``) -> a list of B RDKit molecules or None.

        Real atoms are the nodes with ``mask > 0.5``; without a mask, the nodes whose largest entry is > 0.
        A sample without real atoms gives None.

        * ``mode="raw"``: atom = argmax of its node entries, bond = argmax of its pair entries; the molecule
          is sanitized as built and None on failure. Several fragments are kept (a '.' in the SMILES).
        * ``mode="valence"``: atoms as in "raw"; candidate bonds (pairs whose best bond class scores above
          "none") are added in order of confidence (best bond score minus "none" score), each downgraded to
          the highest order both atoms' remaining valence allows (:func:`atom_capacity`) or dropped. If
          RDKit still rejects the molecule, the least confident bonds of the offending atoms are removed
          until it is accepted. Several fragments are then joined into one molecule by single bonds, each
          at the best-scored pair of atoms that both have a hydrogen to give up (a fragment no such bond
          can reach is dropped, the largest kept). Always a valid, connected molecule for a sample with at
          least one atom.
        """
        self._need_fit()
        if mode not in DECODE_MODES:
            raise InputError(f"unknown decode mode {mode!r}; use one of {', '.join(DECODE_MODES)}")
        x = torch.as_tensor(x).detach().float().cpu()
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise InputError(f"x has shape {list(x.shape)}, expected [B, {self.dim}]")
        n, a, e = self.max_atoms, self.num_atom_types, self.num_bond_types
        b = x.shape[0]
        nodes = x[:, :n * a].reshape(b, n, a)
        tri = x[:, n * a:].reshape(b, self.num_pairs, e)
        mask = (cond or {}).get("mask")
        if mask is None:
            real = nodes.max(-1).values > 0
        else:
            mask = torch.as_tensor(mask).detach().cpu()
            if tuple(mask.shape) != (b, n):
                raise InputError(f"cond['mask'] has shape {list(mask.shape)}, expected [{b}, {n}]")
            real = mask > 0.5
        atom_cls = nodes.argmax(-1).numpy()
        real = real.numpy()
        iu, ju = (t.numpy() for t in self._pairs())
        if mode == "raw":
            bond_cls = tri.argmax(-1).numpy()
            return [self._build_raw(atom_cls[k], real[k], bond_cls[k], iu, ju) for k in range(b)]
        score = (tri[..., 1:].max(-1).values - tri[..., 0]).numpy()
        order = (tri[..., 1:].argmax(-1) + 1).numpy()
        return [self._build_valence(atom_cls[k], real[k], score[k], order[k], iu, ju) for k in range(b)]

    def _new_atoms(self, atom_cls: np.ndarray, real: np.ndarray):
        """An RWMol with the real atoms, and the map node index -> atom index (-1 for padding)."""
        from rdkit import Chem

        rw = Chem.RWMol()
        where = np.full(len(real), -1, dtype=np.int64)
        for i in np.nonzero(real)[0]:
            symbol, charge = self.atom_types[int(atom_cls[i])]
            atom = Chem.Atom(symbol)
            atom.SetFormalCharge(charge)
            where[i] = rw.AddAtom(atom)
        return rw, where

    def _build_raw(self, atom_cls, real, bond_cls, iu, ju):
        from rdkit import Chem

        if not real.any():
            return None
        rw, where = self._new_atoms(atom_cls, real)
        kinds = _bond_types()
        for t in np.nonzero(bond_cls > 0)[0]:
            i, j = where[iu[t]], where[ju[t]]
            if i >= 0 and j >= 0:
                rw.AddBond(int(i), int(j), kinds[int(bond_cls[t])])
        mol = rw.GetMol()
        try:
            Chem.SanitizeMol(mol)
        except Exception:  # RDKit's sanitization errors: an invalid sample
            return None
        return mol

    def _build_valence(self, atom_cls, real, score, order, iu, ju):
        if not real.any():
            return None
        rw, where = self._new_atoms(atom_cls, real)
        free = [atom_capacity(self.atom_types[int(atom_cls[i])][0], self.atom_types[int(atom_cls[i])][1])
                if where[i] >= 0 else 0 for i in range(len(real))]
        kinds = _bond_types()
        candidates = [t for t in np.nonzero(score > 0)[0] if where[iu[t]] >= 0 and where[ju[t]] >= 0]
        candidates.sort(key=lambda t: -float(score[t]))  # stable: ties keep pair order
        added = []  # (pair, bond order), most confident first
        for t in candidates:
            i, j = iu[t], ju[t]
            k = min(int(order[t]), free[i], free[j])
            if k <= 0:
                continue
            rw.AddBond(int(where[i]), int(where[j]), kinds[k])
            free[i] -= k
            free[j] -= k
            added.append(t)
        mol = self._sanitize_or_repair(rw, added, where, iu, ju)
        return self._connect(mol, score, where, iu, ju)

    @staticmethod
    def _connect(mol, score, where, iu, ju):
        """One molecule from several fragments: while there are two or more, a single bond joins the largest
        fragment to another at the pair of atoms, both with a hydrogen to give up, that the sample scores
        highest (ties: the first pair). Where one side has no hydrogen, a bond of it is lowered by one order
        first (multiple bonds before single ones); a fragment that still cannot be reached is left out (the
        largest is kept). Returns a sanitized, connected molecule."""
        from rdkit import Chem

        pair_score = {}
        for t in range(len(iu)):
            i, j = int(where[iu[t]]), int(where[ju[t]])
            if i >= 0 and j >= 0:
                pair_score[(i, j)] = pair_score[(j, i)] = (float(score[t]), -t)
        for _ in range(4 * mol.GetNumAtoms() + 4):  # each pass joins two fragments or frees a hydrogen
            frags = sorted(Chem.GetMolFrags(mol), key=lambda f: (-len(f), f))
            if len(frags) < 2:
                return mol
            main = frags[0]
            free = {a.GetIdx() for a in mol.GetAtoms() if a.GetTotalNumHs() > 0}
            best = None
            for other in frags[1:]:
                for i in main:
                    if i not in free:
                        continue
                    for j in other:
                        if j in free:
                            key = pair_score.get((i, j), (-float("inf"), -len(iu)))
                            if best is None or key > best[0]:
                                best = (key, i, j)
                if best is not None:
                    break  # join the largest fragment to the next one it can reach
            if best is None:  # no hydrogen to give up on one side: free one by lowering a bond
                freed = GraphCodec._free_a_hydrogen(mol, frags)
                if freed is not None:
                    mol = freed
                    continue
                break  # nothing can join: keep the largest fragment
            rw = Chem.RWMol(mol)
            rw.AddBond(int(best[1]), int(best[2]), Chem.BondType.SINGLE)
            for k in (best[1], best[2]):
                rw.GetAtomWithIdx(int(k)).SetNoImplicit(False)
                rw.GetAtomWithIdx(int(k)).SetNumExplicitHs(0)
            out = rw.GetMol()
            try:
                Chem.SanitizeMol(out)
            except Exception:  # not expected (both atoms had a hydrogen to give up): stop joining
                break
            mol = out
        return GraphCodec._largest_fragment(mol)

    @staticmethod
    def _largest_fragment(mol):
        from rdkit import Chem

        frags = sorted(Chem.GetMolFrags(mol), key=lambda f: (-len(f), f))
        if len(frags) < 2:
            return mol
        rw = Chem.RWMol(mol)
        for idx in sorted((a for a in range(mol.GetNumAtoms()) if a not in set(frags[0])), reverse=True):
            rw.RemoveAtom(idx)
        out = rw.GetMol()
        Chem.SanitizeMol(out)
        return out

    @staticmethod
    def _free_a_hydrogen(mol, frags):
        """``mol`` with one bond lowered by one order (a double one becomes single; a single one, tried only
        where there is no multiple one, goes) in the first fragment (largest first) without an atom that
        has a hydrogen, so that two of its atoms get one; None when no such change sanitizes."""
        from rdkit import Chem

        lower = {Chem.BondType.TRIPLE: Chem.BondType.DOUBLE, Chem.BondType.DOUBLE: Chem.BondType.SINGLE,
                 Chem.BondType.SINGLE: None}
        kek = Chem.Mol(mol)
        Chem.Kekulize(kek, clearAromaticFlags=True)
        for frag in frags:
            atoms = set(frag)
            if any(kek.GetAtomWithIdx(i).GetTotalNumHs() > 0 for i in atoms):
                continue
            bonds = [b for b in kek.GetBonds() if b.GetBeginAtomIdx() in atoms and b.GetBondType() in lower]
            bonds.sort(key=lambda b: (b.GetBondType() == Chem.BondType.SINGLE, b.GetIdx()))  # multiple first
            for bond in bonds:
                rw = Chem.RWMol(kek)
                i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
                if lower[bond.GetBondType()] is None:
                    rw.RemoveBond(i, j)
                else:
                    rw.GetBondBetweenAtoms(i, j).SetBondType(lower[bond.GetBondType()])
                for k in (i, j):
                    rw.GetAtomWithIdx(k).SetNoImplicit(False)
                    rw.GetAtomWithIdx(k).SetNumExplicitHs(0)
                out = rw.GetMol()
                try:
                    Chem.SanitizeMol(out)
                except Exception:
                    continue
                return out
        return None

    @staticmethod
    def _sanitize_or_repair(rw, added, where, iu, ju):
        """Sanitize; while RDKit objects, remove the least confident bond at a flagged atom (or overall),
        then, with no bond left, neutralise flagged atoms. Returns a sanitized molecule."""
        from rdkit import Chem

        rank = {(int(where[iu[t]]), int(where[ju[t]])): r for r, t in enumerate(added)}
        for _ in range(4 * len(added) + 2 * rw.GetNumAtoms() + 2):
            mol = rw.GetMol()
            try:
                Chem.SanitizeMol(mol)
                return mol
            except Exception:
                pass
            problems = Chem.DetectChemistryProblems(rw.GetMol())
            flagged = set()
            for p in problems:
                if hasattr(p, "GetAtomIdx"):
                    flagged.add(p.GetAtomIdx())
                elif hasattr(p, "GetAtomIndices"):
                    flagged.update(p.GetAtomIndices())
            bonds = [(rank.get((b.GetBeginAtomIdx(), b.GetEndAtomIdx()), -1), b.GetBeginAtomIdx(),
                      b.GetEndAtomIdx()) for b in rw.GetBonds()]
            at_flagged = [bd for bd in bonds if bd[1] in flagged or bd[2] in flagged]
            pool = at_flagged or bonds
            if pool:
                _, i, j = max(pool)  # the least confident (latest accepted) bond
                rw.RemoveBond(i, j)
                continue
            targets = flagged or set(range(rw.GetNumAtoms()))
            for i in targets:
                atom = rw.GetAtomWithIdx(i)
                if atom.GetFormalCharge():
                    atom.SetFormalCharge(0)
                else:  # last resort, never reached for RDKit-valid vocabularies: a bare carbon
                    atom.SetAtomicNum(6)
                atom.SetNumExplicitHs(0)
                atom.SetNoImplicit(False)
        mol = rw.GetMol()
        Chem.SanitizeMol(mol)
        return mol
