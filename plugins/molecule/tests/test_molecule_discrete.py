"""The categorical molecule method: atoms and bonds as categories (the token layout), masked diffusion
through the core's categorical sampling run, scaffolds kept exactly, padding never changed."""
from pathlib import Path

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
    mols = model.generate(16, seed=3, steps=8)  # valence decoding: one connected molecule for every sample
    assert len(mols) == 16 and all(m is not None and len(Chem.GetMolFrags(m)) == 1 for m in mols)


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


def test_structural_features_count_valence_degree_and_cycles():
    from polydiff_molecule.denoiser import GraphTransformer

    enc = GraphEncoder(layout="tokens").fit(["C1CC1", "C1CCC1", "C=CC#N", "CCO"])
    cfg = configure(merge_config(polydiff_molecule.DEFAULT_CONFIG, polydiff_molecule.DISCRETE, TINY,
                                 {"network": {"structure": True}}), enc)
    net = GraphTransformer.from_config(cfg["network"])
    x, cond = enc.encode(["C1CC1", "C1CCC1", "C=CC#N"])
    n = enc.max_atoms
    x[2, n + 0] = enc.vocab  # the pair (0, 1) of C=CC#N masked: its double bond is not counted
    nodes, pairs = net._one_hots(x)
    edges = pairs.new_zeros(3, n, n, pairs.shape[-1])
    edges[:, net.iu, net.ju] = pairs
    edges[:, net.ju, net.iu] = pairs
    f = net._structure(edges, cond["node_mask"]) * torch.tensor([4.0, 4.0, n, 2.0, 4.0])
    assert torch.allclose(f[0, :3], torch.tensor([[2.0, 2, 0, 1, 0]] * 3))  # cyclopropane: one triangle each
    assert torch.allclose(f[1, :4], torch.tensor([[2.0, 2, 0, 0, 1]] * 4))  # cyclobutane: one 4-cycle each
    assert bool((f[0, 3:] == 0).all())  # padding atoms: zeros
    # C=CC#N with (0, 1) masked: the atoms' revealed valences and their masked pairs
    val, deg, masked = f[2, :4, 0].tolist(), f[2, :4, 1].tolist(), f[2, :4, 2].tolist()
    assert int(x[2, n + 0]) == enc.vocab and enc.decode(enc.encode(["C=CC#N"])[0])[0].GetBondWithIdx(0).GetBondTypeAsDouble() == 2
    assert sum(val) == 2 * (1 + 3) and sum(deg) == 2 * 2 and sum(masked) == 2, (val, deg, masked)


def test_categorical_network_is_permutation_equivariant(small):
    """Relabelling the atoms (and with them the pairs) relabels the logits the same way, structural
    features included; masked positions and padding slots take part."""
    from polydiff_molecule.denoiser import GraphTransformer

    enc = GraphEncoder(layout="tokens").fit(small)
    cfg = configure(merge_config(polydiff_molecule.DEFAULT_CONFIG, polydiff_molecule.DISCRETE, TINY), enc)
    torch.manual_seed(0)
    net = GraphTransformer.from_config(cfg["network"]).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    some = [s for s in small if 5 <= Chem.MolFromSmiles(s).GetNumAtoms() <= 8][:4]
    x, cond = enc.encode(some)
    g = torch.Generator().manual_seed(0)
    x = torch.where(torch.rand(x.shape, generator=g) < 0.3, torch.full_like(x, enc.vocab), x)  # some masked
    n = enc.max_atoms
    perm = torch.randperm(n, generator=g)
    pair = enc._pair_index()
    iu, ju = net.iu, net.ju
    # pair t = (iu[t], ju[t]) goes to the pair of (perm^-1 ...): new atom k holds old atom perm[k]
    new_of_pairs = torch.tensor([pair[int(perm[int(i)]), int(perm[int(j)])] for i, j in zip(iu, ju)])

    def permute(v):
        return torch.cat([v[:, :n][:, perm], v[:, n:][:, new_of_pairs]], 1)

    nm = cond["node_mask"]
    nmp = nm[:, perm]
    level = torch.tensor([0.2, 0.5, 0.7, 0.9])
    with torch.no_grad():
        out = net(x, level, node_mask=nm)
        outp = net(permute(x), level, node_mask=nmp)
    real = enc.token_mask(nmp) > 0
    assert out.abs().max() > 0.1
    assert torch.allclose(outp[real], permute(out)[real], atol=1e-4)


def test_property_conditioning_and_guidance(small, tmp_path):
    from polydiff_molecule.encoder import MoleculeSet

    modality = check_plugin(polydiff_molecule, name="molecule").modality("molecule")
    items = MoleculeSet(small[:80], properties=("logp",))
    model = check_modality(modality, items, tmp_path, config=merge_config(polydiff_molecule.DISCRETE, TINY),
                           write_suffix=".smi", sample_options={"props": {"logp": 0.5}})
    assert model.categorical and model.config["network"]["n_props"] == 1
    x, cond = model.sample(6, steps=4, seed=0, props="logp=0.5", cfg_scale=2.0)  # guided: both halves
    again, _ = model.sample(6, steps=4, seed=0, props="logp=0.5", cfg_scale=2.0)
    assert torch.equal(x, again) and cond["props"].shape == (6, 1)
    assert all(m is not None for m in model.encoder.decode(x, cond))


def test_train_on_user_data_picks_the_categorical_method_and_a_batch_from_graph_size(small, tmp_path):
    import json

    from click.testing import CliRunner

    from polydiff.cli import cli
    from polydiff_molecule.encoder import auto_batch_size

    assert [auto_batch_size(n) for n in (9, 27, 38, 200)] == [256, 32, 16, 8]
    data = tmp_path / "mine.smi"
    data.write_text("\n".join(small[:60]) + "\n")
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", "molecule", "--data", str(data), "--steps", "2", "--out", str(run), "--json"])
    assert r.exit_code == 0, r.output
    config = json.loads((run / "config.json").read_text())
    assert config["process"]["kind"] == "absorbing" and config["network"]["categorical"]
    n = config["network"]["max_atoms"]
    assert config["train"]["batch_size"] == auto_batch_size(n)
    assert config["sample"]["sampler_args"] == {"constrain": True}  # its samples keep every valence
    # a recipe or --batch-size still decides
    r = CliRunner().invoke(cli, ["train", "molecule", "--data", str(data), "--steps", "1", "--batch-size", "8",
                                 "--out", str(tmp_path / "run2"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run2" / "config.json").read_text())["train"]["batch_size"] == 8


def test_marginal_transitions_draw_atoms_and_bonds_from_their_training_frequencies(small, tmp_path):
    enc = GraphEncoder(layout="tokens").fit(small)
    x, cond = enc.encode(small)
    n, a = enc.max_atoms, enc.num_atom_types
    real = cond["mask"].bool()
    atoms = torch.bincount(x[:, :n][real[:, :n]], minlength=a)
    bonds = torch.bincount(x[:, n:][real[:, n:]] - a, minlength=enc.num_bond_types)
    assert enc.atom_counts == atoms.tolist() and enc.bond_counts == bonds.tolist()
    assert GraphEncoder.from_metadata(enc.metadata()).bond_counts == enc.bond_counts
    config = configure({"process": {"kind": "marginal"}}, enc)
    proc = config["process"]
    assert proc["groups"] == [0] * n + [1] * enc.num_pairs
    assert proc["prior"][0][:a] == [float(c) for c in atoms] and set(proc["prior"][0][a:]) == {0.0}
    assert proc["prior"][1][a:] == [float(c) for c in bonds] and set(proc["prior"][1][:a]) == {0.0}
    legacy = enc.metadata()
    del legacy["atom_counts"], legacy["bond_counts"]
    with pytest.raises(InputError, match="atom and bond frequencies"):
        configure({"process": {"kind": "marginal"}}, GraphEncoder.from_metadata(legacy))

    modality = check_plugin(polydiff_molecule, name="molecule").modality("molecule")
    model = check_modality(modality, small[:120], tmp_path, write_suffix=".smi",
                           config=merge_config(polydiff_molecule.DISCRETE, TINY, {"process": {"kind": "marginal"}}))
    x, cond = model.sample(16, seed=3, steps=8)
    assert bool((x[:, :n] < a).all()) and bool((x[:, n:] >= a).all())  # every position holds its own kind
    assert all(m is not None and len(Chem.GetMolFrags(m)) == 1 for m in model.generate(16, seed=3, steps=8))


def test_the_categorical_bundle_is_the_default_and_the_sigma_space_one_stays_by_name(tmp_path):
    """`polydiff sample molecule` without --model, right after install (no data, no network), samples the
    default bundle; `--model qm9` still loads the sigma-space one."""
    import json

    from click.testing import CliRunner

    from polydiff.cli import cli
    from polydiff.plugins import registry

    pretrained = registry().modality("molecule").pretrained
    assert list(pretrained)[0] == polydiff_molecule.DEFAULT_MODEL and "qm9" in pretrained
    r = CliRunner().invoke(cli, ["sample", "molecule", "-n", "6", "--seed", "1", "--out", str(tmp_path / "d.smi"),
                                 "--trajectory", str(tmp_path / "steps.png"), "--json"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "steps.png").read_bytes()[:4] == b"\x89PNG"  # the revealed categories of every step
    doc = json.loads(r.stdout)
    assert Path(doc["model"]).stem == polydiff_molecule.DEFAULT_MODEL and doc["sampler"] in ("ancestral", "confidence")
    lines = (tmp_path / "d.smi").read_text().splitlines()
    assert len(lines) == 6 and all(Chem.MolFromSmiles(s) is not None and "." not in s for s in lines)
    r = CliRunner().invoke(cli, ["sample", "molecule", "--model", "qm9", "-n", "2", "--steps", "3",
                                 "--out", str(tmp_path / "q.smi"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sampler"] == "heun"


def test_valence_rule_takes_back_what_an_atom_cannot_carry(small):
    from polydiff.discrete import Process
    from polydiff_molecule.encoder import valence_rule

    enc = GraphEncoder(layout="tokens").fit(small)
    n, a = enc.max_atoms, enc.num_atom_types
    proc = Process("absorbing", enc.vocab)
    m = proc.mask_id
    carbon = [s for s, c in enc.atom_types].index("C")
    fluorine = [s for s, c in enc.atom_types].index("F")
    iu, ju = (t.tolist() for t in enc._pairs())
    pair = {(i, j): n + t for t, (i, j) in enumerate(zip(iu, ju))}
    node_mask = torch.zeros(1, n)
    node_mask[0, :4] = 1
    rule = valence_rule(enc, {"node_mask": node_mask}, proc)
    prev = torch.full((1, n + enc.num_pairs), m)
    prev[0, 4:n] = 0
    for (i, j), p in pair.items():
        if i >= 4 or j >= 4:
            prev[0, p] = a  # padding: "none"
    prev[0, 0] = fluorine
    prev[0, pair[(0, 1)]] = a + 1  # F-C single: F is full
    new = prev.clone()
    new[0, 1] = carbon
    new[0, pair[(0, 2)]] = a + 2    # a double bond at the full fluorine: taken back
    new[0, pair[(1, 2)]] = a + 1    # C-C: fine
    keep = torch.zeros_like(new, dtype=torch.bool)
    out = rule(prev, new, False, keep)
    assert int(out[0, pair[(0, 2)]]) == m and int(out[0, pair[(1, 2)]]) == a + 1 and int(out[0, 1]) == carbon
    out = rule(prev, new, True, keep)  # last step: nothing may stay masked, so lowered to "none"
    assert int(out[0, pair[(0, 2)]]) == a and int(out[0, pair[(1, 2)]]) == a + 1
    # a newly revealed atom class that cannot carry its bonds goes back to the mask
    new2 = prev.clone()
    new2[0, pair[(1, 2)]] = a + 3
    prev2 = new2.clone()
    new2[0, 1] = fluorine
    out = rule(prev2, new2, False, keep)
    assert int(out[0, 1]) == m and torch.equal(out[0, n:], new2[0, n:])
    # known tokens are never changed: the rule lowers a bond it may change instead
    keep[0, pair[(0, 2)]] = True
    out = rule(prev, new, True, keep)
    assert int(out[0, pair[(0, 2)]]) == a + 2 and int(out[0, pair[(0, 1)]]) == a


def test_constrained_sampling_decodes_raw_into_valid_molecules(tmp_path):
    """The bundled model with the valence rule: every raw-decoded sample is a molecule RDKit accepts, the
    scaffold stays, the run repeats from its seed, and the switch is refused where it does not apply."""
    import json

    from click.testing import CliRunner

    from polydiff.cli import cli
    from polydiff.errors import PolydiffError
    from polydiff.model import Model

    m = Model.load(polydiff_molecule.DEFAULT_MODEL, modality="molecule")
    # the bundle samples with the rule, reevaluating only the molecules that changed at the last step
    assert m.config["sample"]["sampler_args"] == {"constrain": True, "cache": True}
    plain = m.generate(96, seed=2, steps=16, decode="raw", sampler_args={"constrain": False})
    ruled = m.generate(96, seed=2, steps=16, decode="raw")
    assert all(x is not None for x in ruled) and sum(x is None for x in plain) > 0
    other = m.generate(48, seed=2, steps=16, decode="raw", sampler="confidence")  # the rule holds for it too
    assert all(x is not None for x in other)
    x1, _ = m.sample(32, seed=5, steps=12, sampler_args={"constrain": True})
    x2, _ = m.sample(32, seed=5, steps=12, sampler_args={"constrain": True})
    assert torch.equal(x1, x2)
    query = Chem.MolFromSmiles("C1CCOC1")
    mols = m.generate(24, seed=1, steps=12, scaffold="C1CCOC1", decode="raw", sampler_args={"constrain": True})
    # None only where RDKit perceives the kept ring as aromatic (exocyclic double bonds), so the scaffold's
    # single bonds no longer match: decoding refuses those
    assert all(x is None or x.HasSubstructMatch(query) for x in mols) and sum(x is not None for x in mols) >= 20
    r = CliRunner().invoke(cli, ["sample", "molecule", "-n", "20", "--seed", "3", "--steps", "12", "--decode", "raw",
                                 "--sampler-args", '{"constrain": true}', "--keep-invalid",
                                 "--out", str(tmp_path / "c.smi"), "--json"])
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "c.smi").read_text().splitlines()
    assert len(lines) == 20 and all(Chem.MolFromSmiles(s) is not None for s in lines)
    with pytest.raises(PolydiffError, match="categorical models only"):
        Model.load("qm9", modality="molecule").sample(2, steps=2, sampler_args={"constrain": True})
    with pytest.raises(PolydiffError, match="true, false or a function"):
        m.sample(2, steps=2, sampler_args={"constrain": "yes"})
    assert json.loads(r.stdout)["n"] == 20
