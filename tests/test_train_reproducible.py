"""`polydiff train MODALITY --seed S` gives the same bundle, byte for byte, whatever ran before it: the
network's initial weights come from the seed, not from the global generator (which each run here leaves in a
different state, as a notebook or a long-lived process would)."""
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from polydiff.cli import cli

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))
import tiny_data  # noqa: E402


def _train(args, out):
    r = CliRunner().invoke(cli, ["train", *map(str, args), "--out", str(out), "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return (out / "model.safetensors").read_bytes()


def _points(tmp):
    return ["points", "--data", tiny_data.points_csv(tmp), "--steps", "3", "--batch-size", "16"]


def _tabular(tmp):
    return ["tabular", "--data", tiny_data.table_csv(tmp), "--steps", "3", "--batch-size", "16"]


def _image(tmp):
    return ["image", "--data", tiny_data.image_folder(tmp), "--steps", "2", "--batch-size", "4"]


def _molecule(tmp):
    return ["molecule", "--data", tiny_data.molecule_smi(tmp), "--steps", "2", "--batch-size", "4"]


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
