"""`polydiff demo` for molecules: the bundled checkpoint samples, decodes and draws."""
from pathlib import Path

from rdkit import Chem

from polydiff_molecule.demo import run


def test_demo_writes_molecules_and_grid(tmp_path):
    lines = []
    res = run(tmp_path, echo=lines.append, n=6, seed=1)
    smi = (tmp_path / "molecules.smi").read_text().split()
    assert res["valence_validity"] == 1.0  # valence decoding never yields an invalid molecule
    assert 0.0 <= res["raw_validity"] <= 1.0 and 0.0 < res["uniqueness"] <= 1.0
    assert len(smi) == 6 and all(Chem.MolFromSmiles(s) is not None for s in smi)
    png = Path(tmp_path / "molecules.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("validity" in line for line in lines)
