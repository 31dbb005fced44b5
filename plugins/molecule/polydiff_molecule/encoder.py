"""The molecule modality's encoder and its sampling-side helpers (``make_cond``, ``configure``).

:class:`GraphEncoder` is :class:`polydiff_molecule.graph.GraphCodec` in the form the core needs:

* ``encode`` returns ``x [B, D]`` with **zeros on padding** and
  ``cond = {"mask": element mask [B, D] (float), "node_mask": [B, N] (float)}``: the core uses ``mask``
  (it must expand to x) to keep padding at exactly 0 through noising, the loss, the adapters and the
  samplers; the network uses ``node_mask``. A model trained with properties also gets ``"props"``
  ``[B, P]`` (standardized).
* ``read`` returns only the molecules this encoder can encode and warns with the number it skipped;
* ``decode(x, cond, decode=..., ...)`` decodes in the mode given (``valence`` by default, see
  :meth:`GraphCodec.decode`) into a list of RDKit Mol or None per sample; ``write(items, path,
  keep_invalid=...)`` writes None as an empty line when ``keep_invalid`` is true and drops it otherwise. Both
  are the modality's ``output_options``: the core passes the ``--decode`` / ``--keep-invalid`` choices to them
  as keyword arguments, never through ``cond``.

``make_cond`` builds the sampling ``cond`` for ``polydiff sample molecule``: it draws each sample's number of
atoms from the training size histogram (``size_counts``), makes the node and element masks and, with a
scaffold, the masked-conditioning values.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from polydiff.errors import InputError, UnknownName

from . import io as molio
from .denoiser import NULL_PROP
from .graph import DECODE_MODES, GraphCodec, _show, _Unusable, atom_label

__all__ = ["GraphEncoder", "MoleculeSet", "make_cond", "configure", "valence_rule", "PROPERTIES", "LAYOUTS",
           "molecule_property", "DEFAULT_MAX_ATOMS_LIMIT", "NULL_PROP"]

#: how ``x`` holds a graph: ``dense`` (+-1 one-hots of every atom and pair, for sigma-space diffusion) or
#: ``tokens`` (one category per atom and per pair, ``[B, N + T]``: atom classes 0 .. A-1 at the N atoms, then
#: A + bond class at the T pairs, for categorical diffusion; padding holds class 0 and "none")
LAYOUTS = ("dense", "tokens")

#: a fresh encoder refuses training molecules larger than this (the edge tensor grows as N^2)
DEFAULT_MAX_ATOMS_LIMIT = 64
_PREPARED = "_polydiff_prepared"


def _qed(mol):
    from rdkit.Chem import QED

    return QED.qed(mol)


def _logp(mol):
    from rdkit.Chem import Crippen

    return Crippen.MolLogP(mol)


def _mw(mol):
    from rdkit.Chem import Descriptors

    return Descriptors.MolWt(mol)


def _tpsa(mol):
    from rdkit.Chem import rdMolDescriptors

    return rdMolDescriptors.CalcTPSA(mol)


def _hba(mol):
    from rdkit.Chem import rdMolDescriptors

    return rdMolDescriptors.CalcNumHBA(mol)


def _hbd(mol):
    from rdkit.Chem import rdMolDescriptors

    return rdMolDescriptors.CalcNumHBD(mol)


def _rings(mol):
    from rdkit.Chem import rdMolDescriptors

    return rdMolDescriptors.CalcNumRings(mol)


#: properties a conditional model can be trained on: name -> (description, function of a sanitized Mol)
PROPERTIES = {
    "qed": ("quantitative estimate of drug-likeness (RDKit QED)", _qed),
    "logp": ("Crippen logP", _logp),
    "mw": ("molecular weight", _mw),
    "tpsa": ("topological polar surface area", _tpsa),
    "hba": ("hydrogen-bond acceptors", _hba),
    "hbd": ("hydrogen-bond donors", _hbd),
    "rings": ("number of rings", _rings),
}


def molecule_property(mol, name: str) -> float:
    """Property ``name`` (a key of :data:`PROPERTIES`) of an RDKit molecule, computed on a sanitized copy
    (aromaticity re-perceived, so a kekulized molecule gives the same value as its aromatic form)."""
    from rdkit import Chem

    if name not in PROPERTIES:
        raise UnknownName(f"unknown molecule property {name!r}; known: {', '.join(PROPERTIES)}")
    m = Chem.Mol(mol)
    Chem.SanitizeMol(m)
    return float(PROPERTIES[name][1](m))


class MoleculeSet(list):
    """A list of molecules that may name the :data:`PROPERTIES` a model trained on it is conditioned on.

    Dataset loaders return one; :meth:`GraphEncoder.fit` takes ``properties`` from it.
    """

    def __init__(self, items: Sequence[Any] = (), properties: Sequence[str] = ()):
        super().__init__(items)
        self.properties = tuple(properties)


class GraphEncoder(GraphCodec):
    """:class:`GraphCodec` with padding-zeroed ``x``, element and node masks, optional properties,
    filtering ``read`` and decode options taken from ``cond``; see the module docstring.

    ``properties``: names from :data:`PROPERTIES`; when non-empty, ``encode`` adds ``cond["props"]``, the
    properties standardized with the training mean and std (``prop_mean``, ``prop_std``).
    ``max_atoms_limit``: the largest heavy-atom count a fresh encoder accepts from training data.
    """

    def __init__(self, atom_types=None, max_atoms=None, size_counts=None, properties: Sequence[str] = (),
                 prop_mean: Sequence[float] = (), prop_std: Sequence[float] = (),
                 max_atoms_limit: int = DEFAULT_MAX_ATOMS_LIMIT, layout: str = "dense"):
        super().__init__(atom_types, max_atoms, size_counts)
        self.properties = self._check_properties(properties)
        self.prop_mean = [float(v) for v in prop_mean]
        self.prop_std = [float(v) for v in prop_std]
        self.max_atoms_limit = int(max_atoms_limit)
        if layout not in LAYOUTS:
            raise InputError(f"unknown molecule layout {layout!r}; known: {', '.join(LAYOUTS)}")
        self.layout = layout

    @property
    def tokens(self) -> bool:
        """True for the categorical layout (see :data:`LAYOUTS`)."""
        return self.layout == "tokens"

    @property
    def vocab(self) -> int:
        """Categories of the token layout: the A atom classes, then the E bond classes."""
        return self.num_atom_types + self.num_bond_types

    @staticmethod
    def _check_properties(names: Sequence[str]) -> tuple:
        names = tuple(str(n) for n in names)
        unknown = [n for n in names if n not in PROPERTIES]
        if unknown:
            raise UnknownName(f"unknown molecule property {unknown[0]!r}; known: {', '.join(PROPERTIES)}")
        if len(set(names)) != len(names):
            raise InputError(f"molecule properties named twice: {', '.join(names)}")
        return names

    # ------------------------------------------------------------------ metadata
    @classmethod
    def from_metadata(cls, meta: Optional[dict] = None, config: Optional[dict] = None) -> "GraphEncoder":
        """An unfitted encoder for ``None`` (in the token layout when ``config``, the model config it is made
        for, names a categorical ``process``); otherwise the fitted encoder described by :meth:`metadata`."""
        enc = super().from_metadata(meta)
        if not meta and (config or {}).get("process"):
            enc.layout = "tokens"
        if meta:
            layout = meta.get("layout", "dense")
            if layout not in LAYOUTS:
                raise InputError(f"molecule encoder metadata: unknown layout {layout!r}")
            enc.layout = layout
            enc.properties = cls._check_properties(meta.get("properties") or ())
            enc.prop_mean = [float(v) for v in meta.get("prop_mean") or ()]
            enc.prop_std = [float(v) for v in meta.get("prop_std") or ()]
            if len(enc.prop_mean) != len(enc.properties) or len(enc.prop_std) != len(enc.properties):
                raise InputError("molecule encoder metadata: prop_mean / prop_std do not match properties")
        return enc

    def metadata(self) -> dict:
        meta = super().metadata()
        meta.update({"properties": list(self.properties), "prop_mean": list(self.prop_mean),
                     "prop_std": list(self.prop_std), "layout": self.layout})
        return meta

    def sample_shape(self):
        """``(D,)`` dense, ``(N + T,)`` tokens: one item of ``x``."""
        self._need_fit()
        return (self.max_atoms + self.num_pairs,) if self.tokens else (self.dim,)

    # ------------------------------------------------------------------ the token layout
    def token_mask(self, node_mask: torch.Tensor) -> torch.Tensor:
        """Node mask ``[B, N]`` -> float ``[B, N + T]``: 1 at real atoms and at pairs of two real atoms."""
        m = node_mask.float()
        iu, ju = self._pairs(m.device)
        return torch.cat([m, m[..., iu] * m[..., ju]], dim=-1)

    def padding_tokens(self, b: int) -> torch.Tensor:
        """``[b, N + T]`` of what padding holds in the token layout: atom class 0, then "none" at every pair."""
        out = torch.zeros(b, self.max_atoms + self.num_pairs, dtype=torch.long)
        out[:, self.max_atoms:] = self.num_atom_types
        return out

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Dense ``x [B, D]`` -> tokens ``[B, N + T]`` (each node's and pair's argmax; a padding node is 0)."""
        n, a, e = self.max_atoms, self.num_atom_types, self.num_bond_types
        b = x.shape[0]
        nodes = x[:, :n * a].reshape(b, n, a).argmax(-1)
        edges = x[:, n * a:].reshape(b, self.num_pairs, e).argmax(-1)
        return torch.cat([nodes, a + edges], dim=1)

    def from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, N + T]`` -> dense ``x [B, D]`` of +-1 one-hots (the layout decoding reads). A token of
        the wrong kind at a position (an atom class at a pair) raises."""
        n, a, e = self.max_atoms, self.num_atom_types, self.num_bond_types
        t = torch.as_tensor(tokens).long().cpu()
        if t.ndim != 2 or t.shape[1] != n + self.num_pairs:
            raise InputError(f"tokens have shape {list(t.shape)}, expected [B, {n + self.num_pairs}]")
        nodes, edges = t[:, :n], t[:, n:] - a
        if bool(((nodes < 0) | (nodes >= a)).any()) or bool(((edges < 0) | (edges >= e)).any()):
            raise InputError("tokens: an atom class at a pair or a bond class at an atom (or out of range)")
        b = t.shape[0]
        x = torch.cat([F.one_hot(nodes, a).reshape(b, -1), F.one_hot(edges, e).reshape(b, -1)], 1)
        return x.float() * 2.0 - 1.0

    def _token_flags_to_dense(self, flags: torch.Tensor) -> torch.Tensor:
        """A per-position flag ``[B, N + T]`` -> the same flag on every entry of the dense layout ``[B, D]``."""
        n, a, e = self.max_atoms, self.num_atom_types, self.num_bond_types
        f = torch.as_tensor(flags).float().cpu()
        return torch.cat([f[:, :n].repeat_interleave(a, 1), f[:, n:].repeat_interleave(e, 1)], 1)

    # ------------------------------------------------------------------ molecules
    def _prepare(self, item: Any):
        """As :meth:`GraphCodec._prepare`, but a molecule this encoder already prepared is used as is."""
        from rdkit import Chem

        if isinstance(item, Chem.Mol) and item.HasProp(_PREPARED):
            return item
        mol = super()._prepare(item)
        mol.SetBoolProp(_PREPARED, True)
        return mol

    def usable(self, items: Sequence[Any]):
        """``(prepared molecules, [(index, reason), ...] of the items left out)``.

        Left out: items RDKit cannot prepare (unparsable, unkekulizable, unsupported bonds), and, for a
        fresh encoder, molecules above ``max_atoms_limit`` heavy atoms; for a fitted encoder, molecules
        with more than ``max_atoms`` atoms or an atom outside the vocabulary. A molecule's ``_Name`` is kept.
        """
        vocab = set(self.atom_types)
        kept, dropped = [], []
        for i, item in enumerate(items):
            try:
                mol = self._prepare(item)
                n = mol.GetNumAtoms()
                limit = self.max_atoms if self.fitted else self.max_atoms_limit
                if n > limit:
                    what = "max_atoms" if self.fitted else "max_atoms_limit"
                    raise _Unusable(f"{n} heavy atoms, more than {what}={limit}")
                if self.fitted:
                    for atom in mol.GetAtoms():
                        key = self._atom_key(atom)
                        if key not in vocab:
                            raise _Unusable(f"atom {atom_label(*key)} is not in the vocabulary "
                                            f"({', '.join(self.atom_labels())})")
            except _Unusable as e:
                dropped.append((i, str(e)))
                continue
            if not isinstance(item, str) and item is not mol and item.HasProp("_Name"):
                mol.SetProp("_Name", item.GetProp("_Name"))
            kept.append(mol)
        return kept, dropped

    def read(self, path, strict: bool = False) -> MoleculeSet:
        """Molecules from a file (see :meth:`GraphCodec.read`), keeping only those this encoder can
        encode; the others are skipped with a warning that counts them and names the first
        (``strict=True``: the first unparsable or unencodable record raises instead)."""
        path = Path(path)
        if path.is_dir():
            path = self._file_in_folder(path)
        mols, invalid = molio.read_molecules(path, strict=strict)
        kept, dropped = self.usable(mols)
        if strict and dropped:
            i, why = dropped[0]
            raise InputError(f"{path}: molecule {i + 1} ({_show(mols[i])}) cannot be encoded: {why}")
        parts = []
        if invalid:
            parts.append(f"{invalid} unparsable record(s)")
        if dropped:
            i, why = dropped[0]
            parts.append(f"{len(dropped)} molecule(s) that cannot be encoded (first: {_show(mols[i])}: {why})")
        total = len(mols) + invalid
        if not kept:
            raise InputError(f"{path}: no usable molecule among {total} record(s): {'; '.join(parts)}")
        if parts:
            warnings.warn(f"{path}: skipped {' and '.join(parts)}; using {len(kept)} of {total} record(s)",
                          stacklevel=2)
        return MoleculeSet(kept)

    # ------------------------------------------------------------------ tensors
    def fit(self, items: Sequence[Any], skip_invalid: bool = False) -> "GraphEncoder":
        """Learn vocabulary, ``max_atoms``, size histogram and (when ``items`` is a :class:`MoleculeSet`
        naming properties, or ``self.properties`` is set) the property mean and std. Returns self.

        A molecule above ``max_atoms_limit`` heavy atoms raises :class:`InputError` (``skip_invalid=True``:
        it is skipped, like an unusable one).
        """
        if getattr(items, "properties", None):
            self.properties = self._check_properties(items.properties)
        mols, skipped = self._prepare_all(items, skip_invalid, check_vocab=False)
        big = [i for i, m in enumerate(mols) if m.GetNumAtoms() > self.max_atoms_limit]
        if big and not skip_invalid:
            m = mols[big[0]]
            raise InputError(f"molecule {_show(m)} has {m.GetNumAtoms()} heavy atoms, more than "
                             f"max_atoms_limit={self.max_atoms_limit}; leave it out or raise the limit")
        if big:
            drop = set(big)
            mols = [m for i, m in enumerate(mols) if i not in drop]
        super().fit(mols)
        self.fit_skipped = len(skipped) + len(big)
        if self.properties:
            vals = self._property_values(mols)
            self.prop_mean = vals.mean(0).tolist()
            self.prop_std = np.maximum(vals.std(0), 1e-6).tolist()
        else:
            self.prop_mean, self.prop_std = [], []
        return self

    def _property_values(self, mols: Sequence[Any]) -> np.ndarray:
        return np.array([[molecule_property(m, p) for p in self.properties] for m in mols],
                        dtype=np.float64).reshape(len(mols), len(self.properties))

    def encode(self, items: Sequence[Any], skip_invalid: bool = False, return_skipped: bool = False):
        """Molecules -> ``(x [B, D], {"mask": [B, D], "node_mask": [B, N][, "props": [B, P]]})``.

        ``x`` is zero where ``mask`` is zero. Errors and ``skip_invalid`` / ``return_skipped`` as in
        :meth:`GraphCodec.encode`.
        """
        items = [items] if isinstance(items, str) else list(items)
        x, base, skipped = super().encode(items, skip_invalid=skip_invalid, return_skipped=True)
        node_mask = base["mask"]
        mask = self.element_mask(node_mask)
        if self.tokens:  # atoms, then pairs; padding holds atom class 0 and "none"
            x, mask = self.to_tokens(x), self.token_mask(node_mask)
        cond = {"mask": mask, "node_mask": node_mask}
        if self.properties:
            gone = set(skipped)
            mols = [self._prepare(it) for i, it in enumerate(items) if i not in gone]
            vals = (self._property_values(mols) - np.asarray(self.prop_mean)) / np.asarray(self.prop_std)
            cond["props"] = torch.as_tensor(vals, dtype=torch.float32)
        if not self.tokens:
            x = x * mask
        return (x, cond, skipped) if return_skipped else (x, cond)

    def node_mask_of(self, cond: Optional[Dict[str, Any]], batch: int) -> Optional[torch.Tensor]:
        """The ``[B, N]`` node mask in ``cond``: ``node_mask``, or the node part of an element ``mask``
        ``[B, D]``, or a ``[B, N]`` ``mask`` (the layout of :class:`GraphCodec`); None when absent."""
        cond = cond or {}
        n, a = self.max_atoms, self.num_atom_types
        nm = cond.get("node_mask")
        if nm is None:
            m = cond.get("mask")
            if m is None:
                return None
            m = torch.as_tensor(m)
            if m.ndim == 2 and m.shape[-1] == self.dim:
                nm = m[:, :n * a].reshape(m.shape[0], n, a)[..., 0]
            elif self.tokens and m.ndim == 2 and m.shape[-1] == n + self.num_pairs:
                nm = m[:, :n]
            else:
                nm = m
        nm = torch.as_tensor(nm).detach().cpu()
        if tuple(nm.shape) != (batch, n):
            raise InputError(f"node mask has shape {list(nm.shape)}, expected [{batch}, {n}]")
        return nm

    def decode(self, x: torch.Tensor, cond: Optional[Dict[str, Any]] = None, mode: Optional[str] = None, *,
               decode: Optional[str] = None, **_) -> List[Any]:
        """``x [B, D]`` -> one RDKit Mol or None per sample.

        ``mode`` (or ``decode``, the name of the ``polydiff sample`` option): ``"valence"`` (default) or
        ``"raw"`` (see :meth:`GraphCodec.decode`). Other output options (``keep_invalid``) are for
        :meth:`write`.
        """
        molio.quiet_rdkit()  # sanitization failures of raw samples go to logging, not stderr
        cond = cond or {}
        mode = mode or decode or "valence"
        if mode not in DECODE_MODES:
            raise InputError(f"unknown decode mode {mode!r}; use one of {', '.join(DECODE_MODES)}")
        fixed = cond.get("fixed")
        x = torch.as_tensor(x).detach().cpu()
        if self.tokens and not x.is_floating_point():  # categories: their one-hots
            nm = self.node_mask_of(cond, x.shape[0])
            if nm is not None:  # padding is never read: any category there
                x = torch.where(self.token_mask(nm) > 0, x, self.padding_tokens(x.shape[0]))
            x = self.from_tokens(x)
            if fixed is not None:
                fixed = self._token_flags_to_dense(torch.as_tensor(fixed).expand(x.shape[0], -1))
        x = x.float()
        if fixed is not None:  # scaffold atoms and bonds: exact +-1 values, made the most confident of all
            fixed = torch.as_tensor(fixed).float().cpu().expand_as(x) > 0
            x = torch.where(fixed, x * 1e3, x)
        nm = self.node_mask_of(cond, x.shape[0]) if x.ndim == 2 else None
        mols = super().decode(x, {"mask": nm} if nm is not None else {}, mode=mode)
        if cond.get("scaffold"):
            # the scaffold's atoms and bonds are always there, but a ring system built around an aromatic
            # scaffold can lose its aromaticity when RDKit perceives the whole molecule; such a sample does
            # not contain the scaffold as a chemist would search for it, so it counts as invalid
            from rdkit import Chem

            query = Chem.MolFromSmiles(str(cond["scaffold"]))
            mols = [m if m is not None and m.HasSubstructMatch(query) else None for m in mols]
        return list(mols)

    # ------------------------------------------------------------------ files
    def write(self, items: Sequence[Any], path, keep_invalid: bool = True, **_) -> List[Path]:
        """Write molecules to ``.smi`` / ``.sdf`` (``.gz`` allowed) or to ``<folder>/samples.smi``.

        In ``.smi`` output an invalid item (None, or a molecule RDKit cannot write) is an empty line when
        ``keep_invalid`` is true (line i = item i; the default here), and is dropped otherwise (the default of
        ``polydiff sample molecule``, whose ``--keep-invalid`` sets it). ``.sdf`` output always skips invalid
        items and names records ``sample_<i>``. Returns the file written.
        """
        return super().write(items, path, keep_invalid=bool(keep_invalid))

    # ------------------------------------------------------------------ sampling
    def draw_sizes(self, n: int, generator: Optional[torch.Generator] = None, at_least: int = 1) -> torch.Tensor:
        """``n`` atom counts drawn i.i.d. from the training size histogram ``size_counts``, restricted to
        counts of at least ``at_least`` atoms."""
        self._need_fit()
        counts = torch.as_tensor(self.size_counts[:self.max_atoms + 1], dtype=torch.float64)
        if counts.numel() == 0 or counts[max(at_least, 1):].sum() <= 0:
            return torch.full((n,), self.max_atoms, dtype=torch.long)
        counts[:max(at_least, 1)] = 0.0
        return torch.multinomial(counts / counts.sum(), n, replacement=True, generator=generator)

    def props_tensor(self, props, n: int) -> torch.Tensor:
        """``[n, P]`` standardized properties from ``{name: value}`` (raw units) or ``"name=value,..."``;
        properties not given are :data:`NULL_PROP` (unconditional for that property)."""
        out = torch.full((n, len(self.properties)), NULL_PROP)
        if props is None or props == "" or props == {}:
            return out
        if isinstance(props, str):
            pairs = {}
            for part in props.split(","):
                if not part.strip():
                    continue
                if "=" not in part:
                    raise InputError(f"--props: expected name=value pairs separated by commas, got {part.strip()!r}")
                k, v = part.split("=", 1)
                pairs[k.strip()] = v.strip()
            props = pairs
        if not isinstance(props, dict):
            raise InputError(f"props must be a dict of name -> value or 'name=value,...', got {type(props).__name__}")
        for k, v in props.items():
            if k not in self.properties:
                raise InputError(f"unknown property {k!r} for this model; it is conditioned on: "
                                 f"{', '.join(self.properties)}")
            try:
                val = float(v)
            except (TypeError, ValueError):
                raise InputError(f"property {k}: expected a number, got {v!r}") from None
            if not math.isfinite(val):
                raise InputError(f"property {k}: expected a finite number, got {v!r}")
            j = self.properties.index(k)
            out[:, j] = (val - self.prop_mean[j]) / self.prop_std[j]
        return out


#: "auto" batches hold about this many atoms and atom pairs (256 QM9 graphs of 9 atoms: 9 + 36 per graph)
AUTO_BATCH_TOKENS = 256 * 45


def auto_batch_size(max_atoms: int) -> int:
    """The batch size of ``train.batch_size: "auto"``: the network's time per graph grows with its atoms and
    atom pairs (N + N(N-1)/2 at N = ``max_atoms``, every graph padded to N), so the batch holds about
    :data:`AUTO_BATCH_TOKENS` of them: 256 graphs of QM9 (N = 9), 32 of MOSES (27), 16 of 38 atoms; a multiple
    of 8 between 8 and 256."""
    n = int(max_atoms)
    tokens = n + n * (n - 1) // 2
    return int(min(256, max(8, 8 * round(AUTO_BATCH_TOKENS / tokens / 8))))


def marginal_prior(encoder: GraphEncoder) -> dict:
    """A marginal process's ``prior`` and ``groups`` for the token layout (DiGress' marginal transitions): an
    atom is replaced by an atom class drawn from the training atom frequencies, a pair by a bond class ("none"
    included) drawn from the training frequencies over pairs of real atoms."""
    a, e = encoder.num_atom_types, encoder.num_bond_types
    if len(encoder.atom_counts) != a or len(encoder.bond_counts) != e:
        raise InputError("a marginal molecule process needs the training atom and bond frequencies; "
                         "refit the encoder on the training molecules")
    atoms = [float(c) for c in encoder.atom_counts] + [0.0] * e
    bonds = [0.0] * a + [float(c) for c in encoder.bond_counts]
    return {"prior": [atoms, bonds], "groups": [0] * encoder.max_atoms + [1] * encoder.num_pairs}


def configure(config: dict, encoder: GraphEncoder) -> dict:
    """Fill the network's data-dependent sizes (N, A, E, number of properties) from the fitted encoder, the
    batch size of ``train.batch_size: "auto"`` (:func:`auto_batch_size`), and for a categorical model the
    process's categories (atoms and bonds, :attr:`GraphEncoder.vocab`)."""
    net = dict(config.get("network", {}))
    net.update({"max_atoms": encoder.max_atoms, "n_atom_types": encoder.num_atom_types,
                "n_bond_types": encoder.num_bond_types, "n_props": len(encoder.properties)})
    out = {**config, "network": net}
    if (config.get("train") or {}).get("batch_size") == "auto":
        out["train"] = dict(config["train"], batch_size=auto_batch_size(encoder.max_atoms))
    if config.get("process"):
        if not encoder.tokens:
            raise InputError("a categorical molecule model needs the token layout; this encoder is dense")
        net["categorical"] = True
        out["process"] = dict(config["process"], vocab=encoder.vocab)
        if out["process"].get("kind") == "marginal":
            out["process"].update(marginal_prior(encoder))
        sample = dict(out.get("sample") or {})
        if sample.get("schedule") == "linear_levels":  # the dense model's ladder arguments (sigma_max, rho)
            sample.pop("schedule_args", None)         # do not apply to the categorical ladder
            out["sample"] = sample
    elif encoder.tokens:
        raise InputError("this encoder holds categories; a sigma-space molecule model needs the dense layout")
    return out


def make_cond(encoder: GraphEncoder, n: int,
              atoms: Optional[int] = None, sizes=None, props=None, size_seed: Optional[int] = None,
              generator: Optional[torch.Generator] = None, scaffold: Optional[str] = None,
              resample: int = 1) -> Dict[str, Any]:
    """The sampling ``cond`` for ``n`` molecules.

    Sizes: ``sizes`` (a length-n sequence of atom counts), else ``atoms`` for every sample, else drawn from
    the training size histogram with ``generator``, or a generator seeded with ``size_seed`` (default 0).
    Returns ``{"mask": [n, D], "node_mask": [n, N]}`` plus
    ``"props": [n, P]`` for a property-conditioned model (``props`` as in :meth:`GraphEncoder.props_tensor`).

    ``scaffold`` (SMILES): its k atoms take the first k node slots and, with the bonds among them, are
    returned as a :class:`polydiff.sampling.Known` beside ``cond`` (``(cond, known)``) for the core's masked
    conditioning (every sample then contains
    the scaffold's atoms and bonds; decoding turns a sample in which RDKit does not find the scaffold as a
    substructure, e.g. an aromatic ring that lost its aromaticity in a fused system, into None); sizes are drawn from the training sizes of at least k atoms. ``resample`` > 1 turns on
    RePaint resampling.
    """
    known = known_mask = None
    k = 0
    if int(resample) != 1 and not scaffold:
        raise InputError(f"resample {resample} needs a scaffold: it repeats the steps of scaffold-constrained sampling")
    if scaffold:
        from rdkit import Chem

        from .io import quiet_rdkit

        quiet_rdkit()
        mol = Chem.MolFromSmiles(str(scaffold))
        if mol is None or mol.GetNumAtoms() == 0:
            raise InputError(f"scaffold {scaffold!r} is not a valid SMILES")
        k = mol.GetNumHeavyAtoms()
        if k > encoder.max_atoms:
            raise InputError(f"the scaffold has {k} heavy atoms, more than this model's max_atoms {encoder.max_atoms}")
        try:
            xs, cs = GraphCodec.encode(encoder, [mol])
        except InputError as e:
            raise InputError(f"scaffold {scaffold!r}: {str(e).splitlines()[0]}") from None
        node_k = torch.zeros(1, encoder.max_atoms)
        node_k[0, :k] = 1.0
        known_mask = encoder.element_mask(node_k)  # scaffold atoms and the pairs among them
        known = xs * known_mask
    N = encoder.max_atoms
    if sizes is not None:
        sizes = torch.as_tensor(sizes, dtype=torch.long).reshape(-1)
        if sizes.numel() != n:
            raise InputError(f"sizes: expected {n} atom counts, got {sizes.numel()}")
    elif atoms is not None:
        sizes = torch.full((n,), int(atoms), dtype=torch.long)
    else:
        if generator is None or size_seed is not None:
            generator = torch.Generator().manual_seed(0 if size_seed is None else int(size_seed))
        sizes = encoder.draw_sizes(n, generator=generator, at_least=max(k, 1))
    if scaffold and sizes.numel() and int(sizes.min()) < k:
        raise InputError(f"the scaffold has {k} atoms; every sample needs at least that many (got {int(sizes.min())})")
    if sizes.numel() and (int(sizes.min()) < 1 or int(sizes.max()) > N):
        bad = int(sizes.min()) if int(sizes.min()) < 1 else int(sizes.max())
        raise InputError(f"number of atoms must be between 1 and {N} (this model's max_atoms), got {bad}")
    node_mask = (torch.arange(N)[None, :] < sizes[:, None]).float()
    cond: Dict[str, Any] = {"mask": encoder.element_mask(node_mask), "node_mask": node_mask}
    control = None
    if encoder.tokens:
        # categories: padding is known (atom class 0, "none"), and so is the scaffold, exactly
        from polydiff.sampling import Known

        if int(resample) != 1:
            raise InputError("resample applies to the dense molecule models; a categorical model keeps the "
                             "scaffold exactly without it")
        cond["mask"] = encoder.token_mask(node_mask)
        values = encoder.padding_tokens(n)
        keep = cond["mask"] == 0
        if known is not None:
            tok_mask = encoder.token_mask(node_k).expand(n, -1) > 0
            values = torch.where(tok_mask, encoder.to_tokens(known).expand(n, -1), values)
            keep = keep | tok_mask
            cond["fixed"] = tok_mask.float()
            cond["scaffold"] = Chem.MolToSmiles(mol)
        control = Known(values, keep)
    elif known is not None:
        from polydiff.sampling import Known

        mask_n = known_mask.expand(n, -1).clone()
        control = Known(known.expand(n, -1).clone() * cond["mask"], mask_n, int(resample))
        cond["fixed"] = mask_n  # a condition decode reads: the scaffold's atoms and bonds are kept first
        cond["scaffold"] = Chem.MolToSmiles(mol)  # decode checks that every sample contains it
    if encoder.properties:
        cond["props"] = encoder.props_tensor(props, n)
    elif props not in (None, "", {}):
        raise InputError("this model was trained without property conditioning; give no properties")
    return cond if control is None else (cond, control)


def valence_rule(encoder: GraphEncoder, cond: Dict[str, Any], process) -> Any:
    """The molecule modality's token rule (the core's ``constrain`` hook): every atom's bonds stay within its
    valence (:func:`polydiff_molecule.graph.atom_capacity` of its class; an atom still masked may carry the
    largest capacity of any class), so each sample decodes raw into a molecule RDKit accepts.

    After each step's draw, while an atom carries more bond orders than it may: an atom class revealed at
    this step goes back to the mask (absorbing data, not the last step); otherwise one bond of the atom is
    taken back, a bond drawn at this step before an older one, the highest order first (the first pair among
    equals): back to the mask (absorbing data, not the last step, a bond drawn at this step) or one order
    lower. Known tokens (a scaffold, padding) are never changed. Deterministic: it draws nothing."""
    if not encoder.tokens:
        raise InputError("the valence rule applies to the token layout (a categorical molecule model)")
    from .graph import atom_capacity

    n, a = encoder.max_atoms, encoder.num_atom_types
    caps = torch.tensor([atom_capacity(sym, ch) for sym, ch in encoder.atom_types], dtype=torch.long)
    iu, ju = encoder._pairs()
    t_pairs = len(iu)
    mask_id = int(process.mask_id) if process.kind == "absorbing" else -1
    node_mask = cond.get("node_mask")
    real_all = None if node_mask is None else torch.as_tensor(node_mask) > 0.5
    incidence = torch.zeros(n, t_pairs, dtype=torch.bool)
    incidence[iu, torch.arange(t_pairs)] = True
    incidence[ju, torch.arange(t_pairs)] = True

    def rule(prev: torch.Tensor, new: torch.Tensor, last: bool, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        dev = new.device
        out = new.clone()
        b = out.shape[0]
        real = torch.ones(b, n, dtype=torch.bool, device=dev) if real_all is None else real_all.to(dev)
        pair_real = real[:, iu.to(dev)] & real[:, ju.to(dev)]
        fixed = torch.zeros_like(out, dtype=torch.bool) if keep is None else keep.expand(out.shape).to(dev)
        changed = (new != prev) & ~fixed
        remask = mask_id >= 0 and not last
        cap_of, inc = caps.to(dev), incidence.to(dev)
        i_idx, j_idx = iu.to(dev), ju.to(dev)
        for _ in range(8 * n + 8):  # each pass takes back at least one order at every atom over its valence
            atoms, pairs = out[:, :n], out[:, n:]
            order = torch.where((pairs == mask_id) | ~pair_real, 0, pairs - a).clamp(min=0)
            cap = torch.where(atoms == mask_id, cap_of.max(), cap_of[atoms.clamp(0, a - 1)])
            used = torch.zeros(b, n, dtype=torch.long, device=dev)
            used.index_add_(1, i_idx, order).index_add_(1, j_idx, order)
            over = (used > cap) & real
            if not bool(over.any()):
                break
            if remask:
                back = over & changed[:, :n] & (atoms != mask_id)
                if bool(back.any()):
                    out[:, :n] = torch.where(back, torch.full_like(atoms, mask_id), atoms)
                    continue
            new_pair = changed[:, n:]
            score = torch.where((order > 0) & ~fixed[:, n:], new_pair.long() * 8 + order, torch.full_like(order, -1))
            at_atom = torch.where(inc.unsqueeze(0), score.unsqueeze(1), torch.full_like(score, -1).unsqueeze(1))
            best, which = at_atom.max(-1)                                      # [B, N]
            pick = over & (best >= 0)
            if not bool(pick.any()):
                break  # only known bonds left: nothing this rule may change
            chosen = torch.zeros(b, t_pairs, dtype=torch.bool, device=dev)
            chosen[pick.nonzero(as_tuple=True)[0], which[pick]] = True
            if remask:
                to_mask = chosen & new_pair
                pairs = torch.where(to_mask, torch.full_like(pairs, mask_id), pairs)
                chosen = chosen & ~to_mask
            pairs = torch.where(chosen, pairs - 1, pairs)
            out[:, n:] = pairs
        return out

    return rule
