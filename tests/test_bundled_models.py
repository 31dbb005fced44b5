"""Every bundled pretrained model, sampled through the command users run: `polydiff sample MODALITY --model
NAME` (few steps, to keep the suite short) writes its files, and the same seed writes the same bytes. A model
that is a task network (super-resolution) refuses `sample` with a one-line pointer to its verb, and that verb
runs. A bundled model no other test touches is caught here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import polydiff.plugins
from polydiff.cli import cli


def _bundled():
    reg = polydiff.plugins.registry()
    return sorted((m.name, name) for m in reg.modalities.values() for name in m.pretrained)


def _sample(modality, name, out):
    return CliRunner().invoke(cli, ["sample", modality, "--model", name, "-n", "2", "--steps", "3", "--seed", "0",
                                    "--out", str(out), "--json"])


@pytest.mark.parametrize("modality,name", _bundled(), ids=lambda v: str(v))
def test_bundled_model_samples_through_the_cli_and_repeats_from_its_seed(modality, name, tmp_path):
    first = _sample(modality, name, tmp_path / "a")
    if first.exit_code != 0 and "needs the low-resolution image" in first.stderr:
        assert first.stderr.strip().splitlines() == [first.stderr.strip()]  # one line, naming the verb to use
        from PIL import Image

        small = (np.random.default_rng(0).random((7, 7)) * 255).astype(np.uint8)
        Image.fromarray(small).save(tmp_path / "small.png")
        if "upscale" not in cli.commands:  # plugin verbs, as the polydiff command adds them
            polydiff.plugins.registry().add_commands(cli)
        res = CliRunner().invoke(cli, ["upscale", modality, str(tmp_path / "small.png"), "--model", name,
                                       "--factor", "4", "--steps", "3", "--out", str(tmp_path / "big.png")])
        assert res.exit_code == 0, res.output
        assert Image.open(tmp_path / "big.png").size == (28, 28)
        return
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["n"] == 2 and summary["invalid"] <= 2 and summary["steps"] == 3
    assert summary["model"].endswith(f"{name}.safetensors")
    files = [Path(p) for p in summary["files"]]
    assert files and all(f.exists() and f.stat().st_size > 0 for f in files)
    second = _sample(modality, name, tmp_path / "b")
    assert second.exit_code == 0, second.output
    again = [Path(p) for p in json.loads(second.stdout)["files"]]
    assert [f.name for f in files] == [g.name for g in again]
    for f, g in zip(files, again):  # the samples and their pictures
        assert f.read_bytes() == g.read_bytes(), f"{f.name} differs between two runs with the same seed"
