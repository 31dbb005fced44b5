"""The categorical molecule method: atoms and bonds as categories (the token layout), masked diffusion
through the core's categorical sampling run, scaffolds kept exactly, padding never changed."""
import pytest
import torch
from rdkit import Chem

from polydiff.errors import InputError
from polydiff.model import merge_config
from polydiff.testing import check_modality, check_plugin

import polydiff_molecule
from polydiff_molecule import datasets
from polydiff_molecule.encoder import GraphEncoder, configure

TINY = {"network": {"hidden": 32, "edge_hidden": 16, "layers": 2, "heads": 4, "emb": 32, "ffn_mult": 2}}


@pytest.fixture(scope="module")
def small():
    return [Chem.MolToSmiles(m) for m in datasets.qm9_sample()[::10]]


@pytest.fixture(scope="module")
def model(small, tmp_path_factory):
    modality = check_plugin(polydiff_molecule, name="molecule").modality("molecule")
    config = merge_config(polydiff_molecule.DISCRETE, TINY)
    return check_modality(modality, small[:120], tmp_path_factory.mktemp("mol"), config=config, write_suffix=".smi")


def test_token_layout_round_trip(small):
    enc = GraphEncoder(layout="tokens").fit(small)
    x, cond = enc.encode(small[:50])
    n, a = enc.max_atoms, enc.num_atom_types
    assert x.dtype == torch.long and x.shape == (50, n + enc.num_pairs)
    assert bool((x[:, :n] < a).all()) and bool((x[:, n:] >= a).all()) and int(x.max()) < enc.vocab
    assert cond["mask"].shape == x.shape and torch.equal(cond["mask"][:, :n], cond["node_mask"])
    back = [Chem.MolToSmiles(m) for m in enc.decode(x, cond, mode="raw")]
    assert back == [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in small[:50]]
    dense = GraphEncoder().fit(small)
    xd, _ = dense.encode(small[:50])
    assert torch.equal(enc.to_tokens(xd), x)  # the same graphs in either layout
    assert GraphEncoder.from_metadata(enc.metadata()).layout == "tokens"
    assert GraphEncoder.from_metadata(None, config={"process": {"kind": "absorbing"}}).layout == "tokens"
    with pytest.raises(InputError, match="atom class at a pair"):
        bad = x.clone()
        bad[0, n] = 0
        enc.from_tokens(bad)
    with pytest.raises(InputError, match="needs the token layout"):
        configure({"process": {"kind": "absorbing"}}, dense)
    with pytest.raises(InputError, match="unknown molecule layout"):
        GraphEncoder(layout="sparse")


def test_conformance_and_sampling(model):
    assert model.categorical and model.encoder.layout == "tokens"
    assert model.config["process"]["vocab"] == model.encoder.vocab
    x, cond = model.sample(16, seed=3, steps=8)
    n = model.encoder.max_atoms
    pad = cond["mask"] == 0
    assert bool((x[:, :n][pad[:, :n]] == 0).all())  # padding keeps its filler
    assert bool((x[:, n:][pad[:, n:]] == model.encoder.num_atom_types).all())
    assert bool((x[:, :n] < model.encoder.num_atom_types).all()) and bool((x[:, n:] >= model.encoder.num_atom_types).all())
    again, _ = model.sample(16, seed=3, steps=8)
    assert torch.equal(x, again)
    mols = model.generate(16, seed=3, steps=8)  # valence decoding: a molecule for every sample
    assert len(mols) == 16 and all(m is not None for m in mols)


def test_scaffold_is_kept_exactly(model):
    scaffold = "C1CC1"
    mols = model.generate(12, seed=1, steps=6, scaffold=scaffold, decode="raw")
    query = Chem.MolFromSmiles(scaffold)
    assert all(m is None or m.HasSubstructMatch(query) for m in mols)
    x, cond = model.sample(12, seed=1, steps=6, scaffold=scaffold)
    assert bool((cond["fixed"][:, :3] == 1).all())
    ring = x[:, :3]
    assert bool((ring == ring[:1]).all())  # the scaffold's atoms in the first slots of every sample
    with pytest.raises(InputError, match="resample applies to the dense"):
        model.sample(2, seed=1, steps=4, scaffold=scaffold, resample=2)
