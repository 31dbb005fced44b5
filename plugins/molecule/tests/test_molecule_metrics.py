"""Molecule metrics (validity, uniqueness, novelty, connectivity, distribution distances, FCD), the reference
sets, the grid pictures and ``polydiff evaluate molecule`` through the CLI. Small inputs only: the whole
file runs in well under a minute on one thread."""
import json
import os
import subprocess
import sys

import click
import pytest
import torch
from click.testing import CliRunner
from rdkit import Chem

import polydiff_molecule
from polydiff_molecule import datasets
from polydiff_molecule import metrics as M
from polydiff_molecule.draw import draw_frames, grid

try:
    import fcd  # noqa: F401

    HAVE_FCD = True
except ImportError:
    HAVE_FCD = False

needs_fcd = pytest.mark.skipif(not HAVE_FCD, reason="the optional fcd package is not installed")

# 9 items: 7 valid (CCO twice, benzene twice in two spellings), one None, one unparsable string
ITEMS = ["CCO", "OCC", "C1CC1", None, "C1=CC=CC=C1", "CC.O", "C1CC(", "c1ccccc1", Chem.MolFromSmiles("CN")]


@pytest.fixture(scope="module")
def sample_smiles():
    """The bundled 2,000 QM9 molecules (ordered by size) as canonical SMILES."""
    return [M.canonical_smiles(m) for m in datasets.qm9_sample()]


@pytest.fixture(scope="module")
def ref_file(tmp_path_factory, sample_smiles):
    """A 60-molecule reference file spread over the bundled sample."""
    path = tmp_path_factory.mktemp("ref") / "ref.smi"
    path.write_text("\n".join(sample_smiles[::33][:60]) + "\n")
    return path


# ------------------------------------------------------------------------------------------ basic metrics
def test_canonical_form_ignores_spelling_kekule_form_and_stereo():
    assert M.canonical_smiles("C1=CC=CC=C1") == M.canonical_smiles("c1ccccc1") == "c1ccccc1"
    assert M.canonical_smiles("C/C=C/C") == M.canonical_smiles("CC=CC") == "CC=CC"
    assert M.canonical_smiles("OCC") == M.canonical_smiles(Chem.MolFromSmiles("CCO")) == "CCO"
    assert M.canonical_smiles(None) is None and M.canonical_smiles("") is None and M.canonical_smiles("C1CC(") is None
    pentavalent = Chem.MolFromSmiles("CC(C)(C)(C)(C)C", sanitize=False)
    assert pentavalent is not None and M.canonical_smiles(pentavalent) is None


def test_known_values_on_a_hand_made_list():
    assert M.validity(ITEMS) == pytest.approx(7 / 9)
    assert M.uniqueness(ITEMS) == pytest.approx(5 / 7)  # CCO, C1CC1, c1ccccc1, CC.O, CN
    assert M.novelty(ITEMS, ["CCO", "c1ccccc1"]) == pytest.approx(3 / 5)
    assert M.novelty(ITEMS, {"CCO"}, assume_canonical=True) == pytest.approx(4 / 5)
    assert M.novelty(ITEMS, ["OCC"]) == pytest.approx(4 / 5)  # the training set is canonicalised too
    assert M.fraction_connected(ITEMS) == pytest.approx(6 / 7)  # CC.O has two fragments
    assert M.mean_fragments(ITEMS) == pytest.approx(8 / 7)
    assert M.rings_per_molecule(ITEMS) == pytest.approx(3 / 7)
    assert M.validity([]) is None and M.uniqueness([None]) is None and M.fraction_connected([None]) is None
    s = M.summarize(ITEMS)
    assert (s["n"], s["valid"], s["unique"]) == (9, 7, 5)
    assert s["valid_connected"] == pytest.approx(6 / 9)
    assert s["novelty"] is None and s["fcd"] is None and s["fcd_reason"] == "no reference set"


def test_distribution_distances():
    assert M.atom_type_distance(ITEMS, ITEMS) == 0.0
    assert M.ring_size_distance(ITEMS, list(reversed(ITEMS))) == 0.0
    assert M.atom_type_histogram(["CO", "CC"]) == pytest.approx({"C": 0.75, "O": 0.25})
    assert M.atom_type_distance(["CO"], ["CC"]) == pytest.approx(0.5)
    assert M.atom_type_distance(["CF"], ["CN"]) == pytest.approx(0.5)
    assert M.ring_size_distance(["C1CC1"], ["C1CCCCC1"]) == pytest.approx(1.0)
    assert M.ring_size_distance(["C1CC1", "C1CCCCC1"], ["C1CCCCC1"]) == pytest.approx(0.5)
    assert M.ring_size_distance(["CC"], ["CO"]) == 0.0  # no ring on either side
    assert M.ring_size_distance(["CC"], ["C1CC1"]) == 1.0  # rings on one side only
    assert M.ring_size_histogram(["C1CCCCCCCC1", "C1CC1"])["8+"] == pytest.approx(0.5)
    assert M.atom_type_distance(ITEMS, ["CCCC"]) > 0 and M.ring_size_distance(ITEMS, ["C1CCC1"]) > 0


def test_registered_with_its_drawing():
    from polydiff.testing import check_plugin

    mod = check_plugin(polydiff_molecule, name="molecule").modality("molecule")
    assert mod.draw is draw_frames
    assert callable(M.METRICS["validity"]) and M.METRICS["fcd"] is M.fcd


# ------------------------------------------------------------------------------------------ FCD
@needs_fcd
def test_fcd_of_a_set_with_itself_is_zero_and_positive_against_another(sample_smiles, monkeypatch):
    import fcd.fcd

    calls = []
    real_load = torch.load

    def spy(*a, **kw):
        calls.append(kw.get("weights_only"))
        return real_load(*a, **kw)

    def refuse(*a, **kw):
        raise AssertionError("fcd.load_ref_model (a torch.load without weights_only) must not be called")

    monkeypatch.setattr(M, "_CHEMNET", None)
    monkeypatch.setattr(torch, "load", spy)
    monkeypatch.setattr(fcd.fcd, "load_ref_model", refuse)
    a = sample_smiles[::40]  # 50 molecules spread over every size
    small, large = sample_smiles[200:250], sample_smiles[-50:]
    assert len(a) == len(small) == len(large) == 50
    model = M.load_chemnet()
    assert calls == [True]  # the weights were read once, with the restricted unpickler
    assert abs(M.fcd(a, a, model)) < 1e-2
    far = M.fcd(small, large, model)
    assert far > 1.0
    assert M.fcd(a, large, model) > 0.0
    # a reference given as ChemNet statistics gives the same value as the molecules
    assert M.fcd(small, M.chemnet_stats(large, model), model) == pytest.approx(far, rel=1e-6)
    value, reason = M.fcd_or_reason(["CCO", None], a, model)
    assert value is None and "at least 2" in reason


@needs_fcd
def test_frechet_distance_matches_fcds_own_formula():
    import numpy as np
    from fcd import calculate_frechet_distance

    rng = np.random.default_rng(0)
    for rows in (40, 10):  # full-rank and singular covariances of 16 features
        a, b = rng.normal(size=(rows, 16)), rng.normal(size=(rows, 16)) * 1.5 + 0.3
        sa, sb = (a.mean(0), np.cov(a.T)), (b.mean(0), np.cov(b.T))
        expected = calculate_frechet_distance(mu1=sa[0], sigma1=sa[1], mu2=sb[0], sigma2=sb[1])
        assert M.frechet_distance(sa, sb) == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert abs(M.frechet_distance(sa, sa)) < 1e-6


def test_fcd_is_null_with_a_reason_without_the_fcd_package(monkeypatch, ref_file):
    monkeypatch.setattr(M, "_CHEMNET", None)
    monkeypatch.setitem(sys.modules, "fcd", None)  # import fcd raises ImportError
    value, reason = M.fcd_or_reason(["CCO", "CCN"], ["CCC", "CCCC"])
    assert value is None and "pip install fcd" in reason
    s = M.summarize(["CCO", "CCN", "CC"], M.load_reference(str(ref_file)))
    assert s["fcd"] is None and "pip install fcd" in s["fcd_reason"]
    assert s["novelty"] is not None and s["atom_type_tv"] is not None


@needs_fcd
def test_an_fcd_of_few_molecules_carries_a_warning_in_the_summary_and_the_table(sample_smiles, tmp_path):
    ref_path = tmp_path / "ref.smi"
    ref_path.write_text("\n".join(sample_smiles) + "\n")
    ref = M.load_reference(str(ref_path))
    s = M.summarize(sample_smiles[:8], ref)
    assert s["fcd"] is not None and "FCD from 8 molecules" in s["fcd_warning"] and "1,000" in s["fcd_warning"]
    table = M.render_table({"samples_file": "x.smi", "n": 8, "results": {"file": s}})
    assert "fcd (file): warning: FCD from 8 molecules" in table


# ------------------------------------------------------------------------------------------ references
def test_qm9_reference_split_is_seeded_and_novelty_uses_the_whole_file(tmp_path, monkeypatch, sample_smiles):
    (tmp_path / "qm9").mkdir()
    rows = sample_smiles[:40]
    (tmp_path / "qm9" / "qm9_canonical_neutral.csv").write_text(
        "qm9_index,smiles\n" + "".join(f"{i + 1},{s}\n" for i, s in enumerate(rows)))
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    ref = M.load_reference("qm9", test_size=10, seed=0)
    expected = sorted(__import__("numpy").random.default_rng(0).permutation(40)[:10])
    assert ref.test.smiles == [rows[i] for i in expected]
    assert len(ref.train) == 40 and ref.split["size"] == 10 and ref.split["seed"] == 0
    assert "NOT held out" in ref.note
    again = M.load_reference("qm9", test_size=10, seed=0)
    assert again is ref  # built once per process and file
    assert M.load_reference("qm9", test_size=10, seed=1).test.smiles != ref.test.smiles
    (tmp_path / "qm9" / "qm9_canonical_neutral.csv").write_text(  # a changed file is read again
        "qm9_index,smiles\n" + "".join(f"{i + 1},{s}\n" for i, s in enumerate(rows[::-1])))
    changed = M.load_reference("qm9", test_size=10, seed=0)
    assert changed is not ref and changed.test.smiles == [rows[::-1][i] for i in expected]
    ref = M.load_reference("qm9", test_size=10, seed=0)
    s = M.summarize([rows[0], "CCCCCCCCCCCCC"], ref, with_fcd=False)
    assert s["novelty"] == pytest.approx(0.5)
    assert s["fcd_reason"] == "not computed"


def test_development_rows_are_disjoint_from_the_test_split_and_left_out_of_qm9_fit(tmp_path, monkeypatch,
                                                                                    sample_smiles):
    test, dev = M.qm9_split(133_885), M.qm9_dev_split(133_885)
    assert len(test) == len(dev) == 10_000 and not set(test) & set(dev)
    perm = __import__("numpy").random.default_rng(0).permutation(133_885)
    assert list(dev) == sorted(perm[10_000:20_000])
    with pytest.raises(M.InputError, match="need at least 20000 rows"):
        M.qm9_dev_split(15_000)
    # qm9_fit keeps exactly the rows in neither split (the sizes shrunk to fit a small file)
    (tmp_path / "qm9").mkdir()
    rows = sample_smiles[:40]
    (tmp_path / "qm9" / "qm9_canonical_neutral.csv").write_text(
        "qm9_index,smiles\n" + "".join(f"{i + 1},{s}\n" for i, s in enumerate(rows)))
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    split, dev_split = M.qm9_split, M.qm9_dev_split
    monkeypatch.setattr(M, "qm9_split", lambda n: split(n, 10))
    monkeypatch.setattr(M, "qm9_dev_split", lambda n: dev_split(n, 10))
    held = set(split(40, 10)) | set(dev_split(40, 10))
    assert len(held) == 20
    fit = datasets.qm9_fit()
    canon = lambda m: Chem.CanonSmiles(m if isinstance(m, str) else Chem.MolToSmiles(m))  # noqa: E731
    assert sorted(map(canon, fit)) == sorted(canon(rows[i]) for i in range(40) if i not in held)


def test_read_samples_keeps_empty_lines_as_invalid_samples(tmp_path):
    p = tmp_path / "s.smi"
    p.write_text("smiles\nCCO\n\nC1CC(\nc1ccccc1 name\n")
    assert M.read_samples(p) == ["CCO", None, "C1CC(", "c1ccccc1"]
    assert M.validity(M.read_samples(p)) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------ pictures
def test_grid_writes_a_png_and_an_svg(tmp_path):
    out = grid(ITEMS, tmp_path / "sub" / "mols.png", n_cols=4)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = grid(["CCO", None], tmp_path / "mols.svg", legends=["ethanol", "nothing"])
    assert "<svg" in svg.read_text() and "legend" in svg.read_text()
    with pytest.raises(Exception, match="no molecules"):
        grid([], tmp_path / "none.png")
    assert not list(tmp_path.glob("*.tmp*"))


def test_draw_frames_draws_one_row_per_frame(tmp_path):
    from polydiff.model import Model

    model = Model.load("molecule:qm9", device="cpu")
    x, cond = model.encoder.encode(["CCO", "c1ccncc1", "CC#N"])
    frames = [torch.randn_like(x) * cond["mask"], x]
    out = draw_frames(model.encoder, frames, cond, tmp_path / "traj.png", titles=["noise", "final"])
    assert out.read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------------------ CLI
def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "polydiff.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_evaluates_a_samples_file(tmp_path, ref_file, sample_smiles):
    samples = tmp_path / "small.smi"
    # 6 samples: 4 valid (3 distinct, one of them in the reference, one two-fragment), one empty line, one bad
    samples.write_text(f"CCO\n\n{sample_smiles[0]}\nCCO\nC1CC(\nCC.N\n")
    r = run_cli("evaluate", "molecule", "--samples", samples, "--reference", ref_file, "--threads", "1", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    res = doc["results"]["file"]
    assert (res["n"], res["valid"], res["unique"]) == (6, 4, 3)
    assert res["validity"] == pytest.approx(4 / 6) and res["uniqueness"] == pytest.approx(3 / 4)
    assert res["connected"] == pytest.approx(3 / 4)
    assert res["novelty"] == pytest.approx(2 / 3)  # sample_smiles[0] is the reference's first molecule
    assert doc["reference"]["train_molecules"] == 60
    if HAVE_FCD:
        assert res["fcd"] is not None and res["fcd"] > 0
        assert "weights_only=True" in doc["fcd_weights"]
    else:
        assert res["fcd"] is None and res["fcd_reason"]


def test_cli_evaluates_the_bundled_model(tmp_path, ref_file):
    png = tmp_path / "mols.png"
    r = run_cli("evaluate", "molecule", "-n", 8, "--steps", 4, "--reference", ref_file, "--threads", "1",
                "--grid", png, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["n"] == 8 and doc["steps"] == 4 and doc["sampler"] == "ancestral" and doc["nfe"] == 4
    raw, val = doc["results"]["raw"], doc["results"]["valence"]
    assert val["validity"] == 1.0 and 0.0 <= raw["validity"] <= 1.0 and raw["n"] == val["n"] == 8
    gen = doc["generation"]
    assert gen["sampling_s"] > 0 and set(gen["decode_s"]) == {"raw", "valence"}
    assert gen["molecules_per_s"]["valence"] > 0 and gen["threads"] == 1
    assert png.read_bytes()[:4] == b"\x89PNG" and doc["grid"] == str(png)


def _cli():
    from polydiff.cli import _Group

    root = _Group("polydiff")
    polydiff_molecule.register_commands(root)
    return root


@pytest.mark.parametrize("args, words", [
    (["--samples", "no_such_file.smi"], "no_such_file.smi: no such file"),
    (["--model", "no_such_model", "-n", "2"], "no model file or pretrained model named 'no_such_model'"),
    (["--samples", "x.smi", "-n", "5"], "--samples evaluates a file; drop -n"),
    (["-n", "0"], "-n must be at least 1"),
    (["--sampler", "nope", "-n", "2"], "nope"),
])
def test_cli_errors_are_one_line(args, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.smi").write_text("CCO\n")
    r = CliRunner().invoke(_cli(), ["evaluate", "molecule", *args, "--reference", "qm9_sample"])
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], r.output


def test_evaluate_joins_an_existing_evaluate_group():
    root = click.Group("polydiff")

    @root.group("evaluate")
    def evaluate():
        """Someone else's evaluate group."""

    polydiff_molecule.register_commands(root)
    assert "molecule" in root.commands["evaluate"].commands
