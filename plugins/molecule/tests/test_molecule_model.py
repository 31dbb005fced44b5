"""The molecule modality: conformance kit, network equivariance, masks, sampling options, property
conditioning, and train / sample through the CLI. Data: the bundled 2,000-molecule QM9 sample."""
import json
import os
import subprocess
import sys

import pytest
import torch
from rdkit import Chem

from polydiff.errors import InputError, PolydiffError
from polydiff.model import Model, default_config, merge_config
from polydiff.noising import add_noise
from polydiff.testing import check_modality, check_plugin

import polydiff_molecule
from polydiff_molecule import datasets
from polydiff_molecule.denoiser import NULL_PROP, GraphTransformer
from polydiff_molecule.encoder import GraphEncoder, MoleculeSet, configure, make_cond

TINY = {"network": {"hidden": 32, "edge_hidden": 16, "layers": 2, "heads": 4, "emb": 32, "ffn_mult": 2}}


@pytest.fixture(scope="module")
def modality():
    return check_plugin(polydiff_molecule, name="molecule").modality("molecule")


@pytest.fixture(scope="module")
def small():
    """200 molecules spread over the bundled sample (which is ordered by size), as SMILES."""
    mols = datasets.qm9_sample()
    assert len(mols) == 2000
    return [Chem.MolToSmiles(m) for m in mols[::10]]


@pytest.fixture(scope="module")
def encoder(small):
    return GraphEncoder().fit(small)


def some_smaller(small, k=4):
    """k molecules with 5-8 heavy atoms, so that a batch has padding slots."""
    out = [s for s in small if 5 <= Chem.MolFromSmiles(s).GetNumAtoms() <= 8][:k]
    assert len(out) == k
    return out


def tiny_net(enc, seed=0, randomize=True, **extra):
    cfg = configure(merge_config(default_config(), polydiff_molecule.DEFAULT_CONFIG, TINY,
                                 {"network": extra}), enc)
    torch.manual_seed(seed)
    net = GraphTransformer.from_config(cfg["network"])
    if randomize:  # the zero-initialised output layers would make any test of the outputs trivial
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn_like(p) * 0.2)
    return net.eval(), cfg


# ------------------------------------------------------------------------------------- conformance
def test_conformance(modality, small, tmp_path):
    model = check_modality(modality, small, tmp_path, config=TINY, write_suffix=".smi")
    assert model.config["network"]["max_atoms"] == 9 and model.config["network"]["n_atom_types"] == 4


def test_conformance_with_properties(modality, small, tmp_path):
    items = MoleculeSet(small[:80], properties=("logp", "qed"))
    model = check_modality(modality, items, tmp_path, config=TINY, write_suffix=".smi",
                           sample_options={"props": {"logp": 0.5}})
    assert model.encoder.properties == ("logp", "qed") and model.config["network"]["n_props"] == 2
    assert model.guidance == {"props": NULL_PROP}
    x, cond = model.sample(4, steps=3, seed=0, props="logp=0.5,qed=0.4", cfg_scale=2.0)
    assert torch.isfinite(x).all() and cond["props"].shape == (4, 2)
    assert (cond["props"][:, 0] - (0.5 - model.encoder.prop_mean[0]) / model.encoder.prop_std[0]).abs().max() < 1e-5
    _, unc = model.sample(2, steps=2, seed=0)
    assert (unc["props"] == NULL_PROP).all()
    with pytest.raises(InputError, match="unknown property 'mw'"):
        model.sample(2, steps=2, props="mw=100")


# ------------------------------------------------------------------------------------- network
@pytest.mark.parametrize("attention", ["pair", "dot"])
def test_permutation_equivariance(encoder, small, attention):
    net, _ = tiny_net(encoder, attention=attention)
    x, cond = encoder.encode(some_smaller(small))  # padding slots exist, to be permuted too
    g = torch.Generator().manual_seed(0)
    x = (x + 0.7 * torch.randn(x.shape, generator=g)) * cond["mask"]
    c_noise = torch.tensor([-0.5, 0.0, 0.3, 0.8])
    n = encoder.max_atoms
    perm = torch.randperm(n, generator=g)
    while torch.equal(perm, torch.arange(n)):
        perm = torch.randperm(n, generator=g)

    def permute(v, node_mask):
        nodes, edges = encoder.split(v)
        return encoder.join(nodes[:, perm], edges[:, perm][:, :, perm]), node_mask[:, perm]

    xp, nmp = permute(x, cond["node_mask"])
    condp = {"node_mask": nmp, "mask": encoder.element_mask(nmp)}
    assert not torch.equal(nmp, cond["node_mask"])  # the permutation mixes real and padding slots
    with torch.no_grad():
        out = net(x, c_noise, **cond)
        outp = net(xp, c_noise, **condp)
    expected, _ = permute(out * cond["mask"], cond["node_mask"])
    assert out.abs().max() > 0.1
    assert torch.allclose(outp * condp["mask"], expected, atol=1e-5), (outp * condp["mask"] - expected).abs().max()


@pytest.mark.parametrize("attention", ["pair", "dot"])
def test_padding_takes_no_part(encoder, small, attention):
    """Changing what sits in padding slots changes nothing on the real atoms."""
    net, _ = tiny_net(encoder, attention=attention)
    x, cond = encoder.encode(some_smaller(small))
    junk = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * (1 - cond["mask"])
    with torch.no_grad():
        a = net(x, torch.zeros(4), **cond) * cond["mask"]
        b = net(x + junk, torch.zeros(4), **cond) * cond["mask"]
    assert torch.allclose(a, b, atol=1e-6)


def test_network_config_errors():
    with pytest.raises(PolydiffError, match="lacks max_atoms"):
        GraphTransformer.from_config({"n_atom_types": 4})
    with pytest.raises(PolydiffError, match="unknown molecule network settings: widht"):
        GraphTransformer.from_config({"max_atoms": 9, "n_atom_types": 4, "widht": 3})
    with pytest.raises(PolydiffError, match="multiple of network.heads"):
        GraphTransformer.from_config({"max_atoms": 9, "n_atom_types": 4, "hidden": 30, "heads": 4})


# ------------------------------------------------------------------------------------- masks
def test_encode_zeroes_padding_and_masks(encoder, small):
    x, cond = encoder.encode(small)
    assert sorted(cond) == ["mask", "node_mask"]
    assert cond["mask"].shape == x.shape and cond["node_mask"].shape == (len(small), encoder.max_atoms)
    assert torch.equal(cond["mask"], encoder.element_mask(cond["node_mask"]))
    assert (x[cond["mask"] == 0] == 0).all() and (x[cond["mask"] == 1].abs() == 1).all()
    noisy = add_noise(x, torch.full((len(small),), 3.0), torch.randn_like(x), cond["mask"])
    assert (noisy[cond["mask"] == 0] == 0).all()


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m", "ddpm"])
def test_padding_stays_zero_through_sampling(modality, encoder, sampler):
    net, cfg = tiny_net(encoder)
    model = Model(modality, net, encoder, cfg, device="cpu")
    seen = []
    x, cond = model.sample(16, sampler=sampler, steps=5, seed=0, sizes=[1, 4, 7, 9] * 4,
                           callback=lambda info: seen.append(info["x"].clone()))
    pad = cond["mask"] == 0
    assert pad.any() and len(seen) == 5
    assert all((s[pad] == 0).all() for s in seen) and (x[pad] == 0).all()
    assert x[~pad].abs().max() > 0


# ------------------------------------------------------------------------------------- make_cond / decode
def test_make_cond_sizes(encoder):
    cond = make_cond(encoder, 500, size_seed=3)
    sizes = cond["node_mask"].sum(1).long()
    assert torch.equal(cond["mask"], encoder.element_mask(cond["node_mask"]))
    assert sizes.min() >= 1 and sizes.max() <= encoder.max_atoms
    hist = torch.bincount(sizes, minlength=encoder.max_atoms + 1).float() / 500
    ref = torch.tensor(encoder.size_counts, dtype=torch.float) / sum(encoder.size_counts)
    assert (hist - ref).abs().max() < 0.08
    assert torch.equal(make_cond(encoder, 50, size_seed=3)["node_mask"], make_cond(encoder, 50, size_seed=3)["node_mask"])
    assert not torch.equal(make_cond(encoder, 50, size_seed=3)["node_mask"], make_cond(encoder, 50, size_seed=4)["node_mask"])
    assert make_cond(encoder, 4, atoms=5)["node_mask"].sum(1).tolist() == [5.0] * 4
    assert make_cond(encoder, 3, sizes=[1, 2, 9])["node_mask"].sum(1).tolist() == [1.0, 2.0, 9.0]
    with pytest.raises(InputError, match="between 1 and 9"):
        make_cond(encoder, 2, atoms=10)
    with pytest.raises(TypeError):  # decoding choices are not conditions: they go to decode, not make_cond
        make_cond(encoder, 2, decode="raw")
    with pytest.raises(InputError, match="unknown decode mode 'argmax'"):
        encoder.decode(*encoder.encode(["CCO"]), decode="argmax")
    with pytest.raises(InputError, match="without property conditioning"):
        make_cond(encoder, 2, props="qed=0.5")


def test_decode_modes_and_write(encoder, small, tmp_path):
    x, cond = encoder.encode(small[:6])
    noisy = (x + 1.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))) * cond["mask"]
    raw = encoder.decode(noisy, cond, decode="raw")
    assert [type(m) for m in encoder.decode(noisy, cond, mode="raw")] == [type(m) for m in raw]
    val = encoder.decode(noisy, cond)  # valence, the default
    assert type(raw) is list and all(m is not None for m in val) and any(m is None for m in raw)
    kept = encoder.write(raw, tmp_path / "keep.smi")[0].read_text().split("\n")[:-1]  # line i = sample i
    dropped = encoder.write(raw, tmp_path / "drop.smi", keep_invalid=False)[0].read_text().splitlines()
    assert len(kept) == 6 and dropped == [s for s in kept if s]


def test_read_skips_unusable_with_count(tmp_path, small):
    p = tmp_path / "mixed.smi"
    p.write_text("\n".join(small[:5] + ["C1CC", "[NH3]->[Cu]"]) + "\n")
    with pytest.warns(UserWarning, match=r"skipped 1 unparsable record\(s\) and 1 molecule\(s\) that cannot be "
                                         r"encoded .*unsupported bond type DATIVE.*using 5 of 7"):
        mols = GraphEncoder().read(p)
    assert len(mols) == 5
    enc = GraphEncoder().fit(small[:5])
    p2 = tmp_path / "oov.smi"
    p2.write_text("CCO\nCCS\n")
    with pytest.warns(UserWarning, match="atom S is not in the vocabulary"):
        assert len(enc.read(p2)) == 1


# ------------------------------------------------------------------------------------- CLI
def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see one_thread()
    return subprocess.run([sys.executable, "-m", "polydiff.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_train_and_sample(tmp_path, small):
    data = tmp_path / "small.smi"
    data.write_text("\n".join(small + ["[NH3]->[Cu]"]) + "\n")
    run = tmp_path / "run"
    r = run_cli("train", "molecule", "--data", data, "--steps", 20, "--batch-size", 16, "--out", run, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["step"] == 20
    assert "skipped 1 molecule(s) that cannot be encoded" in r.stderr and "using 200 of 201" in r.stderr
    model = run / "model.safetensors"

    keep = tmp_path / "keep.smi"
    r = run_cli("sample", "molecule", "--model", model, "-n", 8, "--steps", 4, "--decode", "raw", "--keep-invalid",
                "--out", keep)
    assert r.returncode == 0, r.stderr
    kept = keep.read_text().split("\n")
    assert kept[-1] == "" and len(kept) == 9  # 8 lines, each ended by a newline
    drop = tmp_path / "drop.smi"
    r = run_cli("sample", "molecule", "--model", model, "-n", 8, "--steps", 4, "--decode", "raw", "--out", drop)
    assert r.returncode == 0, r.stderr
    assert drop.read_text().splitlines() == [s for s in kept[:-1] if s]

    val = tmp_path / "valence.smi"
    r = run_cli("sample", "molecule", "--model", model, "-n", 8, "--steps", 4, "--out", val, "--json")
    assert r.returncode == 0, r.stderr
    lines = val.read_text().splitlines()
    assert len(lines) == 8 and all(Chem.MolFromSmiles(s) is not None for s in lines)

    scaf = tmp_path / "scaffold.smi"
    r = run_cli("sample", "molecule", "--model", model, "-n", 12, "--steps", 4, "--scaffold", "C1CC1O",
                "--out", scaf)
    assert r.returncode == 0, r.stderr
    query = Chem.MolFromSmiles("C1CC1O")
    got = [Chem.MolFromSmiles(s) for s in scaf.read_text().splitlines()]
    assert len(got) == 12 and all(m is not None and m.HasSubstructMatch(query) for m in got)
    # an aromatic scaffold: a sample whose ring system loses the ring's aromaticity does not contain it as a
    # substructure, and is reported as invalid (an empty line with --keep-invalid)
    arom = tmp_path / "aromatic.smi"
    r = run_cli("sample", "molecule", "--model", model, "-n", 12, "--steps", 4, "--scaffold", "c1ccccc1",
                "--keep-invalid", "--out", arom, "--json")
    assert r.returncode == 0, r.stderr
    lines = arom.read_text().split("\n")[:12]
    benzene = Chem.MolFromSmiles("c1ccccc1")
    assert all(Chem.MolFromSmiles(s).HasSubstructMatch(benzene) for s in lines if s)
    assert json.loads(r.stdout)["invalid"] == sum(1 for s in lines if not s)
    r = run_cli("sample", "molecule", "--model", model, "-n", 2, "--scaffold", "C1CC", "--out", tmp_path / "x.smi")
    assert r.returncode == 1 and "scaffold 'C1CC' is not a valid SMILES" in r.stderr

    r = run_cli("sample", "molecule", "--model", model, "-n", 2, "--decode", "argmax", "--out", tmp_path / "x.smi")
    assert r.returncode == 2 and "Invalid value for '--decode'" in r.stderr
    r = run_cli("sample", "molecule", "--model", model, "-n", 2, "--atoms", 12, "--out", tmp_path / "x.smi")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == \
        "Error: number of atoms must be between 1 and 9 (this model's max_atoms), got 12"


def test_cli_train_strict_fails_on_the_first_bad_record(tmp_path):
    data = tmp_path / "bad.smi"
    data.write_text("CCO\nnot_a_smiles\nc1ccccc1\n")
    run = tmp_path / "run"
    r = run_cli("train", "molecule", "--data", data, "--steps", 1, "--strict", "--out", run)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "line 2" in r.stderr and "not_a_smiles" in r.stderr
    assert not run.exists()
    # the same file without --strict: skipped with a one-line warning that counts it
    r = run_cli("train", "molecule", "--data", data, "--steps", 1, "--batch-size", 2, "--out", run, "--json")
    assert r.returncode == 0, r.stderr
    assert "warning: " in r.stderr and "skipped 1 unparsable record(s); using 2 of 3" in r.stderr


def test_a_scaffold_is_a_typed_masked_conditioning_control_not_cond(encoder):
    """With a scaffold make_cond returns (cond, Known): the known values, their mask and the resampling passes
    travel in the control; cond keeps only conditions (masks, the kept bonds decode reads, the scaffold)."""
    from polydiff.sampling import Known

    plain = make_cond(encoder, 3)
    assert isinstance(plain, dict)
    cond, known = make_cond(encoder, 3, scaffold="C1CCOC1", resample=2)
    assert isinstance(known, Known) and known.resample == 2
    assert known.values.shape == cond["mask"].shape == known.mask.shape
    assert not {"known", "known_mask", "resample"} & set(cond)
    assert torch.equal(cond["fixed"], known.mask) and cond["scaffold"] == "C1CCOC1"
