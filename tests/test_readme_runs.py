"""Every `polydiff` command of the README runs (training first, then the rest in the README's order) from one
empty folder: the inputs a
reader would hold (a table, a few points, recordings, an image) are written first, sizes are shrunk (-n,
--steps, training steps and batch) so that the whole README runs in about a minute, and each command must exit
0. `polydiff demo` is the Quick start's own command, run by its tests and by hand from a fresh clone."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import polydiff.plugins
from polydiff.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_WAVS = ROOT / "plugins" / "audio" / "polydiff_audio" / "data" / "fsdd_sample"


def _readme_commands():
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_commands", Path(__file__).parent / "test_docs_commands.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod._commands(ROOT / "README.md")


def _shrink(args):
    """The command with small sizes: at most 4 samples (8 for an evaluation), 2 sampling or training steps,
    small training batches."""
    args = list(args)
    out = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-n" and i + 1 < len(args):
            out += ["-n", str(min(int(args[i + 1]), 8 if args[0] == "evaluate" else 4))]
            i += 2
            continue
        if a == "--steps" and i + 1 < len(args):
            out += ["--steps", "2"]
            i += 2
            continue
        out.append(a)
        i += 1
    if out[0] == "train":
        if "--steps" not in out:
            out += ["--steps", "2"]
        out += ["--batch-size", "4"]
    if out[0] in ("sample", "inpaint", "denoise", "upscale") and "--steps" not in out:
        out += ["--steps", "2"]
    if out[0] == "ladder":  # a tiny search: the point is that the command runs
        out += ["--samples", "8", "--evals", "6", "--reference-steps", "4"]
    if out[:2] == ["evaluate", "molecule"] and "--reference" not in out:
        # the bundled 2,000-molecule reference: the default QM9 one parses 133,885 molecules and runs ChemNet on
        # 10,000 of them (about a minute; plugins/molecule/tests/test_molecule_metrics.py loads it with a small split)
        out += ["--reference", "qm9_sample"]
    if "--address" in out:  # a running cluster: the test's own local Ray stands in for it
        i = out.index("--address")
        del out[i:i + 2]
    if "torchrun" in out:  # the launcher is not here (tests/test_sharded_sampling.py runs it): one process
        out[out.index("torchrun")] = "local"
    return out


def _inputs(folder: Path):
    """What a reader of the README holds when they type its commands."""
    from PIL import Image

    rng = np.random.default_rng(0)
    table = "a,b,c\n" + "".join(f"{x:.4f},{y:.4f},{z:.4f}\n" for x, y, z in rng.normal(size=(200, 3)))
    for name in ("data.csv", "new.csv", "clean.csv"):
        (folder / name).write_text(table)
    import pandas as pd

    pd.read_csv(folder / "data.csv").to_parquet(folder / "newer.parquet")
    pd.read_csv(folder / "data.csv").to_parquet(folder / "big.parquet")
    (folder / "tables").mkdir()
    for i in range(2):
        (folder / "tables" / f"part-{i}.csv").write_text(table)
    pts = "x,y\n" + "".join(f"{x:.4f},{y:.4f}\n" for x, y in rng.normal(size=(64, 2)))
    (folder / "my_points.csv").write_text(pts)
    (folder / "points.csv").write_text(pts)
    wavs = sorted(SAMPLE_WAVS.glob("*.wav"))
    shutil.copy(wavs[0], folder / "take.wav")
    shutil.copy(wavs[1], folder / "noisy.wav")
    (folder / "my_recordings").mkdir()
    for w in wavs[:4]:
        shutil.copy(w, folder / "my_recordings" / w.name)
    digit = (rng.random((28, 28)) * 255).astype(np.uint8)
    Image.fromarray(digit).save(folder / "digit.png")
    Image.fromarray(digit).save(folder / "noisy.png")
    mask = np.zeros((28, 28), np.uint8)
    mask[8:20, 8:20] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    (folder / "sentences.txt").write_text("The Eagle is a pub near the river.\nThe vote was postponed.\n",
                                          encoding="utf-8")


def _small_image(folder: Path, factor: int):
    from PIL import Image

    Image.fromarray((np.random.default_rng(factor).random((28 // factor,) * 2) * 255).astype(np.uint8)).save(
        folder / "small.png")


def test_the_readme_runs(tmp_path, monkeypatch):
    if "upscale" not in cli.commands:
        polydiff.plugins.registry().add_commands(cli)
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    ran, runner = [], CliRunner()
    commands = _readme_commands()
    # the training runs first (the README shows sampling from runs/points before training it), then the rest,
    # each group in the README's order
    commands = [c for c in commands if c[1][0] == "train"] + [c for c in commands if c[1][0] != "train"]
    ray = _local_ray()
    try:
        ran = _run(commands, runner, tmp_path, monkeypatch)
    finally:
        if ray is not None:
            ray.shutdown()
    assert len(ran) >= 30, ran
    assert (tmp_path / "runs" / "points" / "model.safetensors").exists()
    assert (tmp_path / "scores2.csv").read_text().startswith("score,is_anomaly\n")


def _local_ray():
    """One local Ray (2 CPUs) for the README's --engine ray commands, or None without Ray."""
    try:
        import ray
    except ImportError:
        return None
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    return ray


def _interrupted_job(parts: Path, monkeypatch):
    """The parts folder a sampling job leaves when its output cannot be written (what `polydiff merge` reads):
    a small molecule job whose assembly is stopped."""
    from polydiff import generation
    from polydiff.plugins import registry

    def stop(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(generation, "assemble", stop)
        with pytest.raises(KeyboardInterrupt):
            generation.generate("qm9", registry().modality("molecule"), 4, parts.with_suffix(""), chunk=2,
                                sample_kw={"steps": 2}, progress=False)


def _run(commands, runner, tmp_path, monkeypatch):
    ran = []
    for line, args in commands:
        if args[0] == "demo":
            continue  # the Quick start's command: its own tests, and by hand from a fresh clone
        args = _shrink(args)
        if args[:2] == ["upscale", "image"]:
            _small_image(tmp_path, int(args[args.index("--factor") + 1]))
        if args[0] == "merge" and not Path(args[1]).exists():
            _interrupted_job(tmp_path / args[1], monkeypatch)
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, f"README.md:{line}: polydiff {' '.join(args)}\n{result.output}"
        ran.append(line)
    return ran
