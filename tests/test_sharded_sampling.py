"""`polydiff sample --engine local|ray|torchrun`: chunks seeded by (seed, chunk) give the same bytes in one
process (one chunk after another or several at once in threads), on Ray with 1, 2 and 3 workers and under torchrun with 2 processes; an interrupted job resumes
without redrawing its finished chunks; nothing half-written is left in OUT."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from polydiff.cli import cli

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))
from ray_procs import kill_one_actor_after_first_part  # noqa: E402

pytest.importorskip("polydiff_points")


def sample(args, code=0):
    r = CliRunner().invoke(cli, ["sample", *map(str, args)], catch_exceptions=False)
    assert r.exit_code == code, r.output
    return r.output


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """60 points in chunks of 8 (the last one 4), drawn in this process."""
    out = tmp_path_factory.mktemp("ref") / "p.csv"
    sample(["points", "-n", 60, "--chunk", 8, "--seed", 5, "--engine", "local", "--out", out])
    return out.read_bytes()


def test_chunks_do_not_depend_on_each_other(reference, tmp_path):
    """A longer job draws the same first samples: sample i depends on (seed, i // chunk, i % chunk) only."""
    sample(["points", "-n", 68, "--chunk", 8, "--seed", 5, "--engine", "local", "--out", tmp_path / "p.csv"])
    ref, longer = reference.decode().splitlines(), (tmp_path / "p.csv").read_text().splitlines()
    assert longer[:57] == ref[:57]  # the header and the 7 whole chunks (the 8th was 4 samples long before)
    sample(["points", "-n", 60, "--chunk", 8, "--seed", 6, "--engine", "local", "--out", tmp_path / "q.csv"])
    assert (tmp_path / "q.csv").read_bytes() != reference


def test_torchrun_with_two_processes_gives_the_same_bytes(reference, tmp_path):
    out = tmp_path / "p.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        "29533", "-m", "polydiff.cli", "sample", "points", "-n", "60", "--chunk", "8", "--seed", "5",
                        "--engine", "torchrun", "--out", str(out)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert out.read_bytes() == reference
    assert not Path(str(out) + ".partial").exists()


def test_an_interrupted_job_resumes_without_redrawing_finished_chunks(reference, tmp_path, monkeypatch):
    from polydiff import generation

    real = generation.sample_chunk
    drawn = []

    def stop_after_three(model, c, **kw):
        if len(drawn) == 3:
            raise KeyboardInterrupt
        drawn.append(c)
        return real(model, c, **kw)

    monkeypatch.setattr(generation, "sample_chunk", stop_after_three)
    out = tmp_path / "p.csv"
    r = CliRunner().invoke(cli, ["sample", "points", "-n", "60", "--chunk", "8", "--seed", "5", "--engine", "local",
                                 "--workers", "1", "--out", str(out)])
    assert r.exit_code != 0  # interrupted (Ctrl-C)
    assert not out.exists() and len(list(Path(str(out) + ".partial").glob("part-*"))) == 3
    r = CliRunner().invoke(cli, ["sample", "points", "-n", "60", "--chunk", "8", "--seed", "5", "--engine", "local",
                                 "--out", str(out)])
    assert r.exit_code == 1 and "--resume" in r.output
    r = CliRunner().invoke(cli, ["sample", "points", "-n", "60", "--chunk", "8", "--seed", "7", "--engine", "local",
                                 "--out", str(out), "--resume"])
    assert r.exit_code == 1 and "another job (it differs in seed)" in r.output
    monkeypatch.setattr(generation, "sample_chunk", real)
    redrawn = []
    monkeypatch.setattr(generation, "sample_chunk", lambda model, c, **kw: redrawn.append(c) or real(model, c, **kw))
    sample(["points", "-n", 60, "--chunk", 8, "--seed", 5, "--engine", "local", "--resume", "--out", out])
    assert sorted(redrawn) == [3, 4, 5, 6, 7]
    assert out.read_bytes() == reference and not Path(str(out) + ".partial").exists()


@pytest.mark.parametrize("workers", [1, 3])
def test_local_workers_give_the_same_bytes(reference, tmp_path, workers):
    """The reference is drawn with a thread per CPU; one chunk after another, or three at once, the same."""
    out = tmp_path / "p.csv"
    sample(["points", "-n", 60, "--chunk", 8, "--seed", 5, "--engine", "local", "--workers", workers, "--out", out])
    assert out.read_bytes() == reference


def test_a_failing_chunk_among_threads_keeps_the_finished_ones(reference, tmp_path, monkeypatch):
    """Chunk 5 fails while others are drawn at once: the job stops, every other chunk that was begun
    is kept, and --resume draws only what is missing."""
    from polydiff import generation

    real = generation.sample_chunk

    def fail_on_five(model, c, **kw):
        if c == 5:
            raise RuntimeError("chunk five failed")
        return real(model, c, **kw)

    monkeypatch.setattr(generation, "sample_chunk", fail_on_five)
    out = tmp_path / "p.csv"
    r = CliRunner().invoke(cli, ["sample", "points", "-n", "60", "--chunk", "8", "--seed", "5", "--engine", "local",
                                 "--workers", "2", "--out", str(out)])
    assert r.exit_code != 0 and not out.exists()
    parts = sorted(p.name for p in Path(str(out) + ".partial").glob("part-*"))
    assert 5 <= len(parts) <= 7 and not any("5" in p.split("-")[1].split(".")[0] for p in parts), parts
    redrawn = []
    monkeypatch.setattr(generation, "sample_chunk", lambda model, c, **kw: redrawn.append(c) or real(model, c, **kw))
    sample(["points", "-n", 60, "--chunk", 8, "--seed", 5, "--engine", "local", "--resume", "--out", out])
    assert 5 in redrawn and len(redrawn) == 8 - len(parts)
    assert out.read_bytes() == reference


def test_engine_options_need_an_engine_and_bad_values_are_one_line(tmp_path):
    for args, words in ((["--workers", "2"], "apply with --engine"),
                        (["--engine", "local", "--chunk", "0"], "--chunk must be at least 1"),
                        (["--engine", "local", "--workers", "0"], "--workers must be at least 1"),
                        (["--engine", "local", "--address", "localhost:1"], "--address applies to --engine ray"),
                        (["--engine", "torchrun"], "runs under torchrun")):
        r = CliRunner().invoke(cli, ["sample", "points", "-n", "4", "--out", str(tmp_path / "p.csv"), *args])
        assert r.exit_code == 1 and words in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not list(tmp_path.iterdir())


class TestRay:
    ray = None

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def ray_local(cls):
        ray = pytest.importorskip("ray")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        yield
        ray.shutdown()

    @pytest.mark.parametrize("workers", [1, 2, 3])
    def test_ray_workers_give_the_same_bytes(self, reference, tmp_path, workers):
        out = tmp_path / "p.csv"
        sample(["points", "-n", 60, "--chunk", 8, "--seed", 5, "--engine", "ray", "--workers", workers, "--out", out])
        assert out.read_bytes() == reference

    def test_a_killed_worker_still_gives_the_complete_identical_output(self, tmp_path):
        """One sampling actor's process is killed once the first chunk is written: Ray restarts it and
        draws its chunk again; the output equals the one drawn in this process."""
        pytest.importorskip("polydiff_image")
        args = ["image", "-n", 40, "--chunk", 1, "--steps", 4, "--seed", 2]
        sample(args + ["--engine", "local", "--out", tmp_path / "a.npz"])
        t, killed = kill_one_actor_after_first_part(tmp_path / "b.npz.partial",
                                                    b"ray::MapWorker(MapBatches(_SampleChunks))")
        sample(args + ["--engine", "ray", "--workers", 2, "--out", tmp_path / "b.npz"])
        t.join()
        assert killed and killed["parts_before"] < 40, killed
        assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()

    def test_images_too(self, tmp_path):
        pytest.importorskip("polydiff_image")
        args = ["image", "-n", 6, "--chunk", 2, "--steps", 4, "--seed", 1]
        sample(args + ["--engine", "local", "--out", tmp_path / "a.npz"])
        sample(args + ["--engine", "ray", "--workers", 2, "--out", tmp_path / "b.npz"])
        assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
        # an output the encoder refuses: one line, the drawn samples kept, and `polydiff merge` writes them
        r = CliRunner().invoke(cli, ["sample", *map(str, args), "--engine", "local", "--out", str(tmp_path / "c.png")])
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1 and "polydiff merge" in r.output
        assert not (tmp_path / "c.png").exists()
        r = CliRunner().invoke(cli, ["merge", str(tmp_path / "c.png.partial"), "--out", str(tmp_path / "c.npz")])
        assert r.exit_code == 0, r.output
        assert (tmp_path / "c.npz").read_bytes() == (tmp_path / "a.npz").read_bytes()
