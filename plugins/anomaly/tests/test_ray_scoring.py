"""`polydiff score --engine ray`: the same bytes as local scoring for 1, 2 and 3 workers, a killed worker
recovered, an interrupted run resumed without rescoring its finished parts, bad rows reported with file and
line, and a one-line error without Ray. One local Ray instance (2 CPUs) serves the module."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from polydiff.cli import cli

ray = pytest.importorskip("ray")
pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

WORKER = b"ray::MapWorker(MapBatches(_ScorePieces))"

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "helpers"))
from ray_procs import kill_one_actor_after_first_part  # noqa: E402


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """A 60,000-row table with an identifier column, as CSV (a folder of two files too) and Parquet
    (row groups of 7,000 rows), and a detector fitted on other rows."""
    tmp = tmp_path_factory.mktemp("tables")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60_000, 5)) * [1, 2, 0.5, 1, 3]
    x[::997] += 6  # a few anomalies
    df = pd.DataFrame(x, columns=list("abcde"))
    df.insert(0, "key", [f"row{i}" for i in range(len(df))])
    df.to_csv(tmp / "t.csv", index=False)
    (tmp / "parts").mkdir()
    df.iloc[:25_000].to_csv(tmp / "parts" / "part-0.csv", index=False)
    df.iloc[25_000:].to_csv(tmp / "parts" / "part-1.csv", index=False)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp / "t.parquet", row_group_size=7_000)
    train = pd.DataFrame(rng.normal(size=(3_000, 5)) * [1, 2, 0.5, 1, 3], columns=list("abcde"))
    train.to_csv(tmp / "train.csv", index=False)
    run(["score", tmp / "train.csv", "--train", tmp / "train.csv", "--save-model", tmp / "det.safetensors",
         "--out", tmp / "train_scores.csv"])
    return tmp


def run(args, code=0):
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == code, r.output
    return r.output


def local(tables, data, out):
    run(["score", tables / data, "--model", tables / "det.safetensors", "--id", "key", "--out", out])
    return Path(out).read_bytes()


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_the_same_bytes_as_local_scoring_for_any_worker_count(ray_local, tables, tmp_path, workers):
    want = local(tables, "t.csv", tmp_path / "local.csv")
    run(["score", tables / "t.csv", "--model", tables / "det.safetensors", "--id", "key", "--engine", "ray",
         "--workers", workers, "--chunk-rows", 6_000, "--out", tmp_path / "ray.csv"])
    assert (tmp_path / "ray.csv").read_bytes() == want
    assert not (tmp_path / "ray.csv.partial").exists()
    if workers == 2:  # Parquet in, Parquet out; a folder of CSV files in, a folder of parts out
        want_pq = local(tables, "t.parquet", tmp_path / "local.parquet")
        run(["score", tables / "t.parquet", "--model", tables / "det.safetensors", "--id", "key", "--engine", "ray",
             "--workers", 2, "--out", tmp_path / "ray.parquet"])
        assert (tmp_path / "ray.parquet").read_bytes() == want_pq
        out = run(["score", tables / "parts", "--model", tables / "det.safetensors", "--id", "key", "--engine",
                   "ray", "--workers", 2, "--json", "--out", str(tmp_path / "folder") + "/"])
        assert json.loads(out)["rows"] == 60_000
        parts = sorted((tmp_path / "folder").glob("part-*.csv"))
        body = b"".join(p.read_bytes().split(b"\n", 1)[1] for p in parts)
        assert body == want.split(b"\n", 1)[1]


def test_unsupervised_fit_stays_local_and_matches(ray_local, tables, tmp_path):
    """Without --model the detector is fitted here on a sample of DATA, as local scoring does."""
    run(["score", tables / "t.parquet", "--id", "key", "--out", tmp_path / "local.csv", "--seed", 3])
    run(["score", tables / "t.parquet", "--id", "key", "--out", tmp_path / "ray.csv", "--seed", 3, "--engine", "ray",
         "--save-model", tmp_path / "d.safetensors"])
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert (tmp_path / "d.safetensors").exists()


def test_a_killed_worker_still_gives_the_complete_identical_output(ray_local, tables, tmp_path):
    from polydiff_anomaly.detector import DiffusionDetector
    from polydiff_anomaly.distributed import detector_identity, score_on_ray
    from polydiff_anomaly.table import Select

    want = local(tables, "t.csv", tmp_path / "local.csv")
    out = tmp_path / "ray.csv"
    det = DiffusionDetector.load(tables / "det.safetensors")
    t, killed = kill_one_actor_after_first_part(tmp_path / "ray.csv.partial", WORKER)
    summary, _, _ = score_on_ray(tables / "t.csv", out, lambda: det,
                                 identity=detector_identity(tables / "det.safetensors"),
                                 select=Select.parse(ids="key"), workers=2, progress=False, chunk_rows=500)
    t.join()
    assert killed, "no worker was killed"
    assert killed["parts_before"] < summary["pieces"], "the run ended before the kill"
    assert out.read_bytes() == want


def test_an_interrupted_run_resumes_without_rescoring_finished_parts(ray_local, tables, tmp_path):
    """The driver is killed mid-run (SIGKILL: no clean-up); `--resume` finishes from the parts it left."""
    want = local(tables, "t.csv", tmp_path / "local.csv")
    out, stage = tmp_path / "ray.csv", tmp_path / "ray.csv.partial"
    code = ("import sys; from polydiff_anomaly.detector import DiffusionDetector; "
            "from polydiff_anomaly.distributed import detector_identity, score_on_ray; "
            "from polydiff_anomaly.table import Select; "
            f"d = DiffusionDetector.load({str(tables / 'det.safetensors')!r}); "
            f"score_on_ray({str(tables / 't.csv')!r}, {str(out)!r}, lambda: d, "
            f"identity=detector_identity({str(tables / 'det.safetensors')!r}), select=Select.parse(ids='key'), "
            "workers=2, progress=False, chunk_rows=500)")
    p = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 180
    while time.time() < deadline and len(list(stage.glob("part-*"))) < 5 and p.poll() is None:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = {q.name: q.stat().st_mtime_ns for q in stage.glob("part-*")}
    assert 5 <= len(before) < 120, len(before)
    assert not out.exists()  # nothing half-written
    r = CliRunner().invoke(cli, ["score", str(tables / "t.csv"), "--model", str(tables / "det.safetensors"), "--id",
                                 "key", "--engine", "ray", "--workers", "2", "--out", str(out)])
    assert r.exit_code == 1 and "--resume" in r.output and len(r.output.strip().splitlines()) == 1
    # other pieces make another job: a one-line refusal, the parts kept
    r = CliRunner().invoke(cli, ["score", str(tables / "t.csv"), "--model", str(tables / "det.safetensors"), "--id",
                                 "key", "--engine", "ray", "--workers", "2", "--out", str(out), "--resume"])
    assert r.exit_code == 1 and "another job (it differs in chunk_rows, pieces)" in r.output
    assert len(list(stage.glob("part-*"))) == len(before)
    from polydiff_anomaly.detector import DiffusionDetector
    from polydiff_anomaly.distributed import detector_identity, score_on_ray
    from polydiff_anomaly.table import Select

    kept = {}
    from polydiff.engines import Stage

    real_write = Stage.write

    def spy(self, index, data):
        kept[index] = True
        return real_write(self, index, data)

    Stage.write = spy
    try:
        d = DiffusionDetector.load(tables / "det.safetensors")
        score_on_ray(tables / "t.csv", out, lambda: d, identity=detector_identity(tables / "det.safetensors"),
                     select=Select.parse(ids="key"), workers=2, progress=False, chunk_rows=500, resume=True)
    finally:
        Stage.write = real_write
    rescored = {f"part-{i:06d}.csv" for i in kept} & set(before)
    assert not rescored and len(kept) == 120 - len(before)
    assert out.read_bytes() == want and not stage.exists()


def test_bad_rows_are_reported_with_file_and_line_and_nothing_is_written(ray_local, tables, tmp_path):
    df = pd.read_csv(tables / "t.csv")
    df["c"] = df["c"].astype(object)
    df.loc[41_234, "c"] = "oops"
    df.to_csv(tmp_path / "bad.csv", index=False)
    local_r = CliRunner().invoke(cli, ["score", str(tmp_path / "bad.csv"), "--model", str(tables / "det.safetensors"),
                                       "--id", "key", "--out", str(tmp_path / "l.csv")])
    ray_r = CliRunner().invoke(cli, ["score", str(tmp_path / "bad.csv"), "--model", str(tables / "det.safetensors"),
                                     "--id", "key", "--engine", "ray", "--out", str(tmp_path / "r.csv")])
    assert local_r.exit_code == ray_r.exit_code == 1
    assert "lines 41236" in ray_r.output and "oops" in ray_r.output and "bad.csv" in ray_r.output and "'c'" in ray_r.output
    assert ray_r.output == local_r.output
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "r.csv.partial").exists()


def test_python_form_scores_a_ray_dataset(ray_local, tables):
    from polydiff_anomaly import DiffusionDetector
    from polydiff_anomaly.distributed import score_dataset

    det = DiffusionDetector.load(tables / "det.safetensors")
    df = pd.read_csv(tables / "t.csv").iloc[:20_000]
    ds = score_dataset(ray.data.from_pandas(df), tables / "det.safetensors", concurrency=2, batch_size=3_000)
    got = ds.to_pandas()
    assert list(got["key"]) == list(df["key"])
    assert np.array_equal(got["score"].to_numpy(), det.decision_function(df[list("abcde")]))
    assert set(got["is_anomaly"]) <= {0, 1}


def test_without_ray_the_engine_is_a_one_line_error(tables, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    r = CliRunner().invoke(cli, ["score", str(tables / "t.csv"), "--model", str(tables / "det.safetensors"),
                                 "--engine", "ray", "--out", str(tmp_path / "r.csv")])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == ["Error: --engine ray needs Ray Data, which is not installed: "
                                             "pip install 'polydiff[ray]'"]
    assert not (tmp_path / "r.csv").exists()


def test_a_cluster_that_does_not_answer_is_a_one_line_error(tables, tmp_path):
    import socket

    with socket.socket() as sk:  # a port nothing listens on
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    if ray.is_initialized():
        ray.shutdown()
    for address in (f"127.0.0.1:{port}", "auto"):
        r = CliRunner().invoke(cli, ["score", str(tables / "t.csv"), "--model", str(tables / "det.safetensors"),
                                     "--id", "key", "--engine", "ray", "--address", address,
                                     "--out", str(tmp_path / "r.csv")])
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
        assert "Ray cluster" in r.output
        assert not (tmp_path / "r.csv").exists() and not (tmp_path / "r.csv.partial").exists()
