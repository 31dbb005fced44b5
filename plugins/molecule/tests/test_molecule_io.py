"""Molecule files: readers, strictness, one-line errors, atomic writers, RDKit messages on logging."""
import gzip
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from rdkit import Chem

import polydiff.checkpoint
from polydiff.errors import InputError

from polydiff_molecule import io as molio
from polydiff_molecule.graph import GraphCodec

SMILES = ["CCO", "c1ccccc1", "CC(=O)[O-]", "N#CC"]


def canon(mols):
    return [Chem.MolToSmiles(m) for m in mols]


def expected(smiles=SMILES):
    return [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in smiles]


def one_line(err):
    text = str(err.value)
    assert text and "\n" not in text, text
    return text


def write_sdf_fixture(path, smiles, bad_after=None):
    """An SD file made with RDKit's SDWriter; ``bad_after=i`` inserts a broken record after record i."""
    blocks = []
    for i, s in enumerate(smiles):
        blocks.append(Chem.MolToMolBlock(Chem.MolFromSmiles(s)) + "$$$$\n")
        if bad_after == i:
            # a carbon with five bonds: parses, fails sanitization
            bad = Chem.RWMol()
            for _ in range(6):
                bad.AddAtom(Chem.Atom(6))
            for j in range(1, 6):
                bad.AddBond(0, j, Chem.BondType.SINGLE)
            bad_mol = bad.GetMol()
            bad_mol.UpdatePropertyCache(strict=False)
            blocks.append(Chem.MolToMolBlock(bad_mol, kekulize=False) + "$$$$\n")
    text = "".join(blocks)
    if str(path).endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_package_import_is_cheap_and_registered():
    code = "import sys, polydiff_molecule; print('rdkit' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    eps = {ep.name: ep.value for ep in entry_points(group="polydiff")}
    assert eps.get("molecule") == "polydiff_molecule"


# ------------------------------------------------------------------------------------------ readers
def test_read_smi(tmp_path):
    p = tmp_path / "a.smi"
    p.write_text("smiles name\n\nCCO ethanol\n  c1ccccc1\tbenzene ring\n\nCC(=O)[O-]\nN#CC\n")
    mols, invalid = molio.read_molecules(p)
    assert canon(mols) == expected() and invalid == 0
    assert mols[0].GetProp("_Name") == "ethanol" and mols[1].GetProp("_Name") == "benzene ring"


@pytest.mark.parametrize("name,column", [("a.csv", "smiles"), ("b.csv", "SMILES"), ("c.csv.gz", "Smiles")])
def test_read_csv(tmp_path, name, column):
    text = f"id,{column},value\n" + "".join(f"{i},{s},{i * 0.5}\n" for i, s in enumerate(SMILES)) + "\n"
    p = tmp_path / name
    if name.endswith(".gz"):
        p.write_bytes(gzip.compress(text.encode()))
    else:
        p.write_text(text)
    result = molio.read_molecules(p)
    assert canon(result.mols) == expected() and result.invalid == 0


@pytest.mark.parametrize("name", ["a.sdf", "a.sdf.gz"])
def test_read_sdf(tmp_path, name):
    p = write_sdf_fixture(tmp_path / name, SMILES)
    mols, invalid = molio.read_molecules(p)
    assert canon(mols) == expected() and invalid == 0


def test_strict_and_lenient_bad_records(tmp_path):
    smi = tmp_path / "bad.smi"
    smi.write_text("CCO\n\nC1CC\nc1ccccc1\nnot_a_smiles\n")
    mols, invalid = molio.read_molecules(smi)
    assert canon(mols) == expected(["CCO", "c1ccccc1"]) and invalid == 2
    with pytest.raises(InputError) as err:
        molio.read_molecules(smi, strict=True)
    assert one_line(err).startswith(f"{smi}: line 3: invalid SMILES 'C1CC'")

    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("name,smiles\na,CCO\nb,\nc,C(C\n")
    assert molio.read_molecules(csv_file).invalid == 2
    with pytest.raises(InputError) as err:
        molio.read_molecules(csv_file, strict=True)
    assert one_line(err).startswith(f"{csv_file}: line 3: invalid SMILES ''")

    sdf = write_sdf_fixture(tmp_path / "bad.sdf", ["CCO", "CCN"], bad_after=0)
    mols, invalid = molio.read_molecules(sdf)
    assert canon(mols) == ["CCO", "CCN"] and invalid == 1
    with pytest.raises(InputError) as err:
        molio.read_molecules(sdf, strict=True)
    assert one_line(err).startswith(f"{sdf}: SDF record 2: invalid molecule")


def test_file_errors_are_one_line(tmp_path):
    cases = []
    cases.append((tmp_path / "missing.smi", "no such file"))
    (tmp_path / "empty.smi").write_text("")
    cases.append((tmp_path / "empty.smi", "empty file"))
    (tmp_path / "blank.csv").write_text("\n\n")
    cases.append((tmp_path / "blank.csv", "empty file"))
    (tmp_path / "empty.sdf.gz").write_bytes(gzip.compress(b""))
    cases.append((tmp_path / "empty.sdf.gz", "empty file"))
    (tmp_path / "mols.txt").write_text("CCO\n")
    cases.append((tmp_path / "mols.txt", "unsupported file type"))
    (tmp_path / "nocol.csv").write_text("id,structure\n1,CCO\n")
    cases.append((tmp_path / "nocol.csv", "no 'smiles' column (columns found: 'id', 'structure')"))
    (tmp_path / "broken.smi.gz").write_bytes(b"not gzip at all")
    cases.append((tmp_path / "broken.smi.gz", "cannot read"))
    for path, words in cases:
        with pytest.raises(InputError) as err:
            molio.read_molecules(path)
        text = one_line(err)
        assert str(path) in text and words in text, text


def test_encoder_read_folder_and_all_invalid(tmp_path):
    enc = GraphCodec()
    (tmp_path / "only.smi").write_text("CCO\nC1CC\n")
    assert canon(enc.read(tmp_path)) == ["CCO"]
    with pytest.raises(InputError, match="C1CC"):
        enc.read(tmp_path / "only.smi", strict=True)
    (tmp_path / "worse.smi").write_text("C1CC\n")
    with pytest.raises(InputError, match="no valid molecule"):
        enc.read(tmp_path / "worse.smi")
    with pytest.raises(InputError, match="2 molecule files"):
        enc.read(tmp_path)


# ------------------------------------------------------------------------------------------ writers
def test_write_smiles_keep_invalid_keeps_numbering(tmp_path):
    items = [Chem.MolFromSmiles("OCC"), None, "C1CC", "C1=CC=CC=C1", Chem.Mol()]
    p = molio.write_smiles(items, tmp_path / "out.smi", keep_invalid=True)
    assert p.read_text().split("\n") == ["CCO", "", "", "c1ccccc1", "", ""]
    molio.write_smiles(items, tmp_path / "dense.smi")
    assert (tmp_path / "dense.smi").read_text() == "CCO\nc1ccccc1\n"
    molio.write_smiles(items, tmp_path / "out.smi.gz", keep_invalid=True)
    assert gzip.decompress((tmp_path / "out.smi.gz").read_bytes()).decode() == p.read_text()
    mols, invalid = molio.read_molecules(p)
    assert canon(mols) == ["CCO", "c1ccccc1"] and invalid == 0  # empty lines are blank, not records


def test_write_sdf_round_trip(tmp_path):
    items = ["CCO", None, "CC(=O)[O-]", "c1ccccc1"]
    p = molio.write_sdf(items, tmp_path / "out.sdf")
    mols, invalid = molio.read_molecules(p)
    assert canon(mols) == expected(["CCO", "CC(=O)[O-]", "c1ccccc1"]) and invalid == 0
    assert [m.GetProp("_Name") for m in mols] == ["sample_0", "sample_2", "sample_3"]
    molio.write_sdf(items, tmp_path / "out.sdf.gz")
    assert canon(molio.read_molecules(tmp_path / "out.sdf.gz").mols) == canon(mols)


def test_writers_are_atomic(tmp_path, monkeypatch):
    p = tmp_path / "keep.smi"
    molio.write_smiles(["CCO"], p)
    molio.write_smiles(["CCN", "CCC"], p)  # replaces
    assert p.read_text() == "CCN\nCCC\n"

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(polydiff.checkpoint.os, "replace", fail)
    for writer, target in ((molio.write_smiles, p), (molio.write_sdf, tmp_path / "keep.sdf")):
        with pytest.raises(OSError, match="disk full"):
            writer(["c1ccccc1"], target)
    monkeypatch.undo()
    assert p.read_text() == "CCN\nCCC\n" and not (tmp_path / "keep.sdf").exists()
    assert sorted(os.listdir(tmp_path)) == ["keep.smi"]  # no temporary file left behind


def test_encoder_write_by_suffix(tmp_path):
    enc = GraphCodec()
    mols = [Chem.MolFromSmiles("CCO"), None, Chem.MolFromSmiles("CN")]
    [smi] = enc.write(mols, tmp_path / "s.smi")
    assert smi.read_text() == "CCO\n\nCN\n"
    [folder_file] = enc.write(mols, tmp_path / "run")
    assert folder_file == tmp_path / "run" / "samples.smi" and folder_file.read_text() == "CCO\n\nCN\n"
    [sdf] = enc.write(mols, tmp_path / "s.sdf.gz")
    assert canon(molio.read_molecules(sdf).mols) == ["CCO", "CN"]
    with pytest.raises(InputError, match="cannot write molecules to '.png' files"):
        enc.write(mols, tmp_path / "s.png")


# ------------------------------------------------------------------------------------------ logging
def test_rdkit_messages_go_to_logging_not_stderr(tmp_path, capfd, caplog):
    p = tmp_path / "bad.smi"
    p.write_text("C1CC\nCCO\n")
    capfd.readouterr()
    with caplog.at_level("DEBUG", logger=molio.LOGGER_NAME):
        mols, invalid = molio.read_molecules(p)
        Chem.MolFromSmiles("C(C)(C)(C)(C)C")  # any later RDKit message in the process, too
    out, err = capfd.readouterr()
    assert (len(mols), invalid) == (1, 1)
    assert err == "" and out == ""
    messages = [r.getMessage() for r in caplog.records if r.name == molio.LOGGER_NAME]
    assert any("unclosed ring" in m and "C1CC" in m for m in messages), messages
    assert any("Explicit valence" in m for m in messages), messages
    assert not any(m.startswith("[") for m in messages)  # RDKit's timestamp is stripped
