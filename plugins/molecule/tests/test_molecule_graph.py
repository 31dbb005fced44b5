"""GraphCodec: vocabulary, tensor layout, QM9 round trips, noise decoding, errors."""
import csv
import json
from pathlib import Path

import pytest
import torch
from rdkit import Chem

from polydiff.errors import InputError, PolydiffError
from polydiff.testing import assert_items_close

from polydiff_molecule import datasets
from polydiff_molecule.graph import (BOND_CLASSES, GraphCodec, atom_capacity, atom_label, fragments,
                                     is_connected)

# the plugin's own data lookup ($POLYDIFF_MOLECULE_DATA, then shared/data/molecules beside the repository)
DATA = datasets.data_dir(datasets.QM9_FILE)
QM9_NEUTRAL = DATA / datasets.QM9_FILE if DATA else None
QM9_RAW = DATA / "qm9" / "qm9.csv" if DATA else None


def canonical(smiles):
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


def spread(seq, n):
    """n items spread evenly over seq (QM9 is ordered by size, so the head is all tiny molecules)."""
    step = max(1, len(seq) // n)
    return list(seq[::step][:n])


@pytest.fixture(scope="module")
def qm9():
    if DATA is None or not QM9_RAW.exists():
        pytest.skip(f"QM9 not found (${datasets.ENV_VAR} or shared/data/molecules)")
    with open(QM9_NEUTRAL, newline="") as f:
        neutral = spread([r["smiles"] for r in csv.DictReader(f)], 1000)
    with open(QM9_RAW, newline="") as f:
        raw = [r["smiles"] for r in csv.DictReader(f)]
    # qm9.csv holds 1,845 zwitterions ([NH3+]CC([O-])=O, ...): take 300 of the molecules with charged atoms
    charged = spread([s for s in raw if "+" in s or "-]" in s], 300)
    assert len(neutral) == 1000 and len(charged) == 300
    assert all(any(a.GetFormalCharge() for a in Chem.MolFromSmiles(s).GetAtoms()) for s in charged)
    return neutral, charged


@pytest.fixture(scope="module")
def qm9_encoder(qm9):
    neutral, charged = qm9
    return GraphCodec().fit(neutral + charged)


def round_trip_rate(enc, smiles, mode):
    x, cond = enc.encode(smiles)
    out = enc.decode(x, cond, mode=mode)
    ok = sum(m is not None and Chem.MolToSmiles(m) == canonical(s) for s, m in zip(smiles, out))
    return ok / len(smiles)


# ------------------------------------------------------------------------------------------ vocabulary
def test_fit_vocabulary_and_max_atoms(qm9, qm9_encoder):
    neutral, charged = qm9
    enc = qm9_encoder
    table = Chem.GetPeriodicTable()
    keys = [(table.GetAtomicNumber(s), c) for s, c in enc.atom_types]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    labels = enc.atom_labels()
    assert {"C", "N", "O", "F", "N+", "O-"} <= set(labels)
    assert enc.max_atoms == 9
    assert sum(enc.size_counts) == len(neutral) + len(charged) and len(enc.size_counts) == 10
    neutral_only = GraphCodec().fit(neutral)
    assert neutral_only.atom_labels() == ["C", "N", "O", "F"]


def test_metadata_rebuilds_identical_encoder(qm9, qm9_encoder):
    neutral, charged = qm9
    meta = json.loads(json.dumps(qm9_encoder.metadata()))
    enc2 = GraphCodec.from_metadata(meta)
    assert enc2.atom_types == qm9_encoder.atom_types and enc2.max_atoms == 9
    assert enc2.sample_shape() == qm9_encoder.sample_shape()
    items = neutral[:50] + charged[:50]
    x1, c1 = qm9_encoder.encode(items)
    x2, c2 = enc2.encode(items)
    assert torch.equal(x1, x2) and torch.equal(c1["mask"], c2["mask"])
    assert GraphCodec.from_metadata(None).fitted is False
    with pytest.raises(InputError, match="bond classes"):
        GraphCodec.from_metadata({**meta, "bond_types": ["none", "single"]})
    with pytest.raises(PolydiffError, match="not fitted"):
        GraphCodec().encode(["CCO"])


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("which", ["neutral", "charged"])
@pytest.mark.parametrize("mode", ["raw", "valence"])
def test_qm9_round_trip(qm9, qm9_encoder, which, mode):
    mols = qm9[0] if which == "neutral" else qm9[1]
    rate = round_trip_rate(qm9_encoder, mols, mode)
    print(f"QM9 {which} ({len(mols)}), {mode}: {rate:.4f}")
    assert rate >= 0.995, (which, mode, rate)


def test_encoder_conformance_round_trips(qm9, qm9_encoder, tmp_path):
    """What polydiff.testing.check_modality asks of an encoder: encode/decode/encode, write/read."""
    items = qm9[0][::20] + qm9[1][::20]
    x, cond = qm9_encoder.encode(items)
    assert x.dtype == torch.float32 and tuple(x.shape[1:]) == qm9_encoder.sample_shape()
    back = qm9_encoder.decode(x, cond)
    assert_items_close(items, back, qm9_encoder, what="encode/decode")
    for suffix in (".smi", ".sdf", ""):
        files = qm9_encoder.write(back, tmp_path / f"written{suffix}")
        assert all(f.exists() for f in files)
        again = qm9_encoder.read(files[0] if suffix else tmp_path / "written")
        assert_items_close(back, again, qm9_encoder, what=f"write/read {suffix or 'folder'}")


def test_same_molecule_same_tensor():
    enc = GraphCodec().fit(["c1ccccc1CCO", "CC(=O)[O-]", "C[NH3+]"])
    x, _ = enc.encode(["c1ccccc1CCO", "OCCc1ccccc1", "C(O)Cc1ccccc1", "OCCC1=CC=CC=C1"])
    assert all(torch.equal(x[0], x[i]) for i in range(1, 4))


# ------------------------------------------------------------------------------------------ layout
def test_layout_split_join_and_masks():
    enc = GraphCodec().fit(["CC(=O)[O-]", "C#N", "c1ccccc1", "[NH3+]CC([O-])=O"])
    n, a, e = enc.max_atoms, enc.num_atom_types, enc.num_bond_types
    t = n * (n - 1) // 2
    assert (n, e) == (6, len(BOND_CLASSES)) and enc.dim == n * a + t * e == enc.sample_shape()[0]
    x, cond = enc.encode(["C#N", "c1ccccc1"])
    assert x.shape == (2, enc.dim) and set(x.unique().tolist()) == {-1.0, 1.0}
    assert cond["mask"].tolist() == [[1, 1, 0, 0, 0, 0], [1] * 6]
    nodes, edges = enc.split(x)
    assert nodes.shape == (2, n, a) and edges.shape == (2, n, n, e)
    assert torch.equal(edges, edges.transpose(1, 2))
    diag = edges[:, torch.arange(n), torch.arange(n)]
    assert torch.equal(diag, torch.tensor([1.0, -1, -1, -1]).expand(2, n, e))
    assert (nodes[0, 2:] == -1).all() and (nodes[0, :2].max(-1).values == 1).all()  # padding: all -1
    assert edges[0, 0, 1].argmax().item() == 3  # C#N triple
    assert (edges[0, 0, 2:].argmax(-1) == 0).all()  # pairs with padding: "none"
    ring = edges[1].argmax(-1)
    assert sorted(ring.sum(-1).tolist()) == [3] * 6  # kekulized benzene: each atom 1 single + 1 double
    assert torch.equal(enc.join(nodes, edges), x)
    # join averages the two directions of a non-symmetric edge tensor
    noisy = torch.randn(2, n, n, e)
    sym = enc.split(enc.join(nodes, noisy))[1]
    iu = torch.triu_indices(n, n, 1)
    assert torch.allclose(sym[:, iu[0], iu[1]], 0.5 * (noisy[:, iu[0], iu[1]] + noisy[:, iu[1], iu[0]]))
    # split is differentiable
    xg = x.clone().requires_grad_(True)
    nd, ed = enc.split(xg)
    (nd.sum() + ed.sum()).backward()
    assert torch.isfinite(xg.grad).all()
    m = enc.element_mask(cond["mask"])
    assert m.shape == x.shape
    assert m[0].sum().item() == 2 * a + 1 * e and m[1].sum().item() == 6 * a + 15 * e
    m_nodes, m_edges = enc.split(m)
    assert (m_nodes[0, :2] == 1).all() and (m_nodes[0, 2:] == 0).all()
    assert m_edges[0, 0, 1].eq(1).all() and m_edges[0, 0, 2].eq(0).all()


# ------------------------------------------------------------------------------------------ bad input
def test_encode_errors_name_the_molecule():
    enc = GraphCodec().fit(["CCO", "CCN"])
    with pytest.raises(InputError) as err:
        enc.encode(["CCO", "CCCCC"])
    assert "molecule 1 ('CCCCC')" in str(err.value) and "max_atoms=3" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match=r"molecule 0 \('CS'\): atom S is not in the vocabulary"):
        enc.encode(["CS"])
    with pytest.raises(InputError, match=r"molecule 2 \('C1CC'\): cannot parse"):
        enc.encode(["CC", "CO", "C1CC"])
    with pytest.raises(InputError, match=r"molecule 0 \(.*\): no molecule"):
        enc.encode([None])
    x, cond, skipped = enc.encode(["CCO", "CCCCC", "CS", "C1CC", "CN"], skip_invalid=True, return_skipped=True)
    assert skipped == [1, 2, 3] and x.shape[0] == 2 and cond["mask"].shape == (2, 3)
    x, cond = enc.encode(["CCCCC"], skip_invalid=True)
    assert x.shape == (0, enc.dim)
    with pytest.raises(InputError, match=r"molecule 1 \('C1CC'\)"):
        GraphCodec().fit(["CC", "C1CC"])
    fitted = GraphCodec().fit(["CC", "C1CC", "CO"], skip_invalid=True)
    assert fitted.fit_skipped == 1 and fitted.atom_labels() == ["C", "O"]
    with pytest.raises(InputError, match="no usable molecule"):
        GraphCodec().fit([])


# ------------------------------------------------------------------------------------------ decoding
def _random_mask(b, n, gen):
    sizes = torch.randint(1, n + 1, (b,), generator=gen)
    return (torch.arange(n)[None, :] < sizes[:, None]).float()


def test_valence_mode_on_noise_is_always_valid(qm9_encoder):
    enc = qm9_encoder
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, enc.dim, generator=gen) * torch.tensor([0.5, 1.0, 3.0]).repeat_interleave(
        torch.tensor([67, 67, 66]))[:, None]
    mask = _random_mask(200, enc.max_atoms, gen)
    mols = enc.decode(x, {"mask": mask}, mode="valence")
    assert len(mols) == 200 and all(m is not None for m in mols)
    kept = 0
    for m, k in zip(mols, mask.sum(1).tolist()):
        # one molecule; atoms are left out only where no bonds could join them (noise is full of fluorine,
        # and n atoms need a total valence of 2 (n - 1) to be connected at all)
        assert is_connected(m) and m.GetNumAtoms() <= int(k)
        kept += m.GetNumAtoms()
        assert Chem.MolFromSmiles(Chem.MolToSmiles(m)) is not None
        assert not Chem.DetectChemistryProblems(m)
    assert kept >= 0.9 * float(mask.sum())


def test_raw_mode_on_noise_mostly_invalid(qm9_encoder):
    enc = qm9_encoder
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, enc.dim, generator=gen)
    mols = enc.decode(x, {"mask": torch.ones(200, enc.max_atoms)}, mode="raw")
    assert len(mols) == 200
    invalid = sum(m is None for m in mols)
    assert invalid >= 150, invalid
    assert all(Chem.MolFromSmiles(Chem.MolToSmiles(m)) is not None for m in mols if m is not None)


def test_raw_mode_keeps_fragments_and_valence_orders_by_confidence():
    enc = GraphCodec().fit(["CCC", "C=O"])
    x, cond = enc.encode(["CC.O"])  # not a training molecule, but in the vocabulary and size
    raw = enc.decode(x, cond, mode="raw")[0]
    assert Chem.MolToSmiles(raw) == "CC.O" and fragments(raw) == 2 and not is_connected(raw)
    # O (valence 2) asked for a double bond to both carbons: the more confident one wins, the other is
    # downgraded to nothing left -> dropped; C=O kept as a double bond; the lone carbon is then joined to
    # the only atom with a hydrogen to give up (the carbonyl carbon; O has none left): one molecule
    n = enc.max_atoms
    nodes = torch.full((1, n, enc.num_atom_types), -1.0)
    nodes[0, 0, enc.atom_types.index(("C", 0))] = 1
    nodes[0, 1, enc.atom_types.index(("O", 0))] = 1
    nodes[0, 2, enc.atom_types.index(("C", 0))] = 1
    edges = torch.tensor([1.0, -1, -1, -1]).repeat(1, n, n, 1)
    edges[0, 0, 1] = edges[0, 1, 0] = torch.tensor([-1.0, -1, 0.9, -1])
    edges[0, 1, 2] = edges[0, 2, 1] = torch.tensor([-1.0, -1, 0.5, -1])
    x = enc.join(nodes, edges)
    mask = torch.ones(1, n)
    assert enc.decode(x, {"mask": mask}, mode="raw") == [None]
    assert Chem.MolToSmiles(enc.decode(x, {"mask": mask}, mode="valence")[0]) == "CC=O"
    # raw CC.O in valence mode: joined at the best-scored pair with hydrogens (all pairs score alike here:
    # the first pair, atoms 0 and 1 in canonical order)
    joined = enc.decode(*enc.encode(["CC.O"]), mode="valence")[0]
    assert is_connected(joined) and joined.GetNumAtoms() == 3
    # without a mask, real atoms are the nodes with a positive entry
    assert enc.decode(x, {})[0].GetNumAtoms() == 3


def test_decode_edge_cases(qm9_encoder):
    enc = qm9_encoder
    x = torch.zeros(2, enc.dim)
    mask = torch.zeros(2, enc.max_atoms)
    mask[1, 0] = 1
    for mode in ("raw", "valence"):
        out = enc.decode(x, {"mask": mask}, mode=mode)
        assert out[0] is None and out[1].GetNumAtoms() == 1
    with pytest.raises(InputError, match="unknown decode mode"):
        enc.decode(x, {"mask": mask}, mode="greedy")
    with pytest.raises(InputError, match="expected"):
        enc.decode(torch.zeros(2, 5), {"mask": mask})


def test_repair_removes_offending_bonds():
    enc = GraphCodec().fit(["CC"])
    rw = Chem.RWMol()
    for _ in range(6):
        rw.AddAtom(Chem.Atom(6))
    added = []
    for j in range(1, 6):  # carbon 0 with five single bonds: invalid
        rw.AddBond(0, j, Chem.BondType.SINGLE)
        added.append(j - 1)  # pair numbers (0, j) in a 6-node triangle are j - 1
    iu, ju = (t.numpy() for t in torch.triu_indices(6, 6, 1))
    where = list(range(6))
    mol = enc._sanitize_or_repair(rw, added, where, iu, ju)
    assert mol.GetAtomWithIdx(0).GetDegree() == 4 and mol.GetBondBetweenAtoms(0, 5) is None


@pytest.mark.parametrize("symbol,charge", [("C", 0), ("C", 1), ("C", -1), ("N", 0), ("N", 1), ("N", -1),
                                           ("O", 0), ("O", 1), ("O", -1), ("F", 0), ("B", -1), ("S", 0),
                                           ("S", 1), ("P", 0), ("Cl", 0), ("Br", 0), ("H", 0)])
def test_atom_capacity_matches_rdkit(symbol, charge):
    cap = atom_capacity(symbol, charge)

    def ok(k):
        rw = Chem.RWMol()
        centre = Chem.Atom(symbol)
        centre.SetFormalCharge(charge)
        rw.AddAtom(centre)
        for j in range(k):
            rw.AddAtom(Chem.Atom(6))
            rw.AddBond(0, j + 1, Chem.BondType.SINGLE)
        mol = rw.GetMol()
        try:
            Chem.SanitizeMol(mol)
            return True
        except Exception:
            return False

    assert cap >= 1 and ok(cap) and not ok(cap + 1), (atom_label(symbol, charge), cap)


def test_fragment_utilities():
    assert fragments(Chem.MolFromSmiles("CC.O.[Na+]")) == 3
    assert is_connected(Chem.MolFromSmiles("CCO")) and not is_connected(None)
    assert fragments(None) == 0 and fragments(Chem.Mol()) == 0
