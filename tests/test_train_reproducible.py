"""`polydiff train MODALITY --seed S` gives the same bundle, byte for byte, whatever ran before it: the
network's initial weights come from the seed, not from the global generator (which each run here leaves in a
different state, as a notebook or a long-lived process would)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from polydiff.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def _train(args, out):
    r = CliRunner().invoke(cli, ["train", *map(str, args), "--out", str(out), "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return (out / "model.safetensors").read_bytes()


def _points(tmp):
    rng = np.random.default_rng(0)
    np.savetxt(tmp / "p.csv", rng.normal(size=(200, 2)), delimiter=",", header="x,y", comments="")
    return ["points", "--data", tmp / "p.csv", "--steps", "3", "--batch-size", "16"]


def _tabular(tmp):
    rng = np.random.default_rng(1)
    np.savetxt(tmp / "t.csv", rng.normal(size=(120, 4)), delimiter=",", header="a,b,c,d", comments="")
    return ["tabular", "--data", tmp / "t.csv", "--steps", "3", "--batch-size", "16"]


def _image(tmp):
    from polydiff_image import io as image_io

    rng = np.random.default_rng(2)
    for cls in ("a", "b"):
        (tmp / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            image_io.write_png(tmp / "imgs" / cls / f"{i}.png", rng.integers(0, 256, (8, 8, 1), dtype=np.uint8))
    return ["image", "--data", tmp / "imgs", "--steps", "2", "--batch-size", "4"]


def _molecule(tmp):
    lines = (ROOT / "plugins/molecule/polydiff_molecule/data/qm9_sample.smi").read_text().splitlines()[:13]
    (tmp / "m.smi").write_text("\n".join(lines) + "\n")  # the header and 12 molecules
    return ["molecule", "--data", tmp / "m.smi", "--steps", "2", "--batch-size", "4"]


def _audio(tmp):
    return ["audio", "--recipe", "fsdd_sample", "--steps", "1", "--batch-size", "2"]


@pytest.mark.parametrize("setup", [_points, _tabular, _image, _molecule, _audio],
                         ids=["points", "tabular", "image", "molecule", "audio"])
def test_same_seed_same_bundle_bytes_through_the_cli(setup, tmp_path):
    pytest.importorskip(f"polydiff_{'anomaly' if setup is _tabular else setup.__name__[1:]}")
    args = setup(tmp_path)
    a = _train(args + ["--seed", "3"], tmp_path / "a")
    torch.rand(7)  # the global generator moves on between the runs
    b = _train(args + ["--seed", "3"], tmp_path / "b")
    assert a == b
    if setup is _points:
        assert _train(args + ["--seed", "4"], tmp_path / "c") != a
