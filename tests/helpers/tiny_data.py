"""The smallest data each modality trains on, written to a folder (shared by the training tests)."""
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def points_csv(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savetxt(tmp / "p.csv", rng.normal(size=(200, 2)), delimiter=",", header="x,y", comments="")
    return tmp / "p.csv"


def table_csv(tmp: Path) -> Path:
    rng = np.random.default_rng(1)
    np.savetxt(tmp / "t.csv", rng.normal(size=(120, 4)), delimiter=",", header="a,b,c,d", comments="")
    return tmp / "t.csv"


def image_folder(tmp: Path) -> Path:
    from polydiff_image import io as image_io

    rng = np.random.default_rng(2)
    for cls in ("a", "b"):
        (tmp / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            image_io.write_png(tmp / "imgs" / cls / f"{i}.png", rng.integers(0, 256, (8, 8, 1), dtype=np.uint8))
    return tmp / "imgs"


def molecule_smi(tmp: Path) -> Path:
    lines = (ROOT / "plugins/molecule/polydiff_molecule/data/qm9_sample.smi").read_text().splitlines()[:13]
    (tmp / "m.smi").write_text("\n".join(lines) + "\n")  # the header and 12 molecules
    return tmp / "m.smi"
