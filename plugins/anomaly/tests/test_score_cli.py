"""`polydiff score` on tables: fit on --train or on DATA, flags, plot, saved detector, and bad input."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

RUN = [sys.executable, "-m", "polydiff.cli", "score"]


def _run(args, **kw):
    return subprocess.run(RUN + [str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("tables")
    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    test = pd.concat([train.iloc[:40], pd.DataFrame([[7.0, 7.0, -7.0]], columns=["a", "b", "c"])], ignore_index=True)
    train.to_csv(d / "train.csv", index=False)
    test.to_csv(d / "test.csv", index=False)
    r = _run(["test.csv", "--train", "train.csv", "--steps", "150", "--contamination", "0.05", "--out", "s.csv",
              "--plot", "h.png", "--save-model", "det.safetensors", "--json"], cwd=d)
    assert r.returncode == 0, r.stderr
    return d


def test_scores_flags_plot_and_saved_detector(tables):
    s = pd.read_csv(tables / "s.csv")
    assert list(s.columns) == ["score", "is_anomaly"] and len(s) == 41
    assert s["score"].iloc[40] == s["score"].max() and s["is_anomaly"].iloc[40] == 1
    assert (tables / "h.png").stat().st_size > 1000
    r = _run(["test.csv", "--model", "det.safetensors", "--out", "s2.csv"], cwd=tables)
    assert r.returncode == 0, r.stderr
    assert (tables / "s2.csv").read_text() == (tables / "s.csv").read_text()


@pytest.mark.parametrize("content, needle", [
    ("", "empty file"),
    ("a,b,c\n", "has a header but no rows"),
    ("a,b,c\n1,2,3\n4,five,6\n", "column 'b' has text ('five') on lines 3"),
    ("a,b,c\n1,2,3\n4,,6\n", "column 'b' has NaN on lines 3"),
    ("a,b,d\n1,2,3\n", "columns differ from the training table (missing 'c'; unexpected 'd')"),
])
def test_bad_tables_one_line_no_output(tables, content, needle):
    from click.testing import CliRunner

    from polydiff.cli import cli

    (tables / "bad.csv").write_text(content)
    out = tables / "never.csv"
    r = CliRunner().invoke(cli, ["score", str(tables / "bad.csv"), "--model", str(tables / "det.safetensors"),
                                 "--out", str(out)])
    assert r.exit_code == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and r.exception is None or isinstance(r.exception, SystemExit), r.stderr
    assert not out.exists() and not list(tables.glob(".never.csv.*"))


def test_model_file_that_is_not_a_bundle(tables):
    (tables / "fake.safetensors").write_bytes(b"not a bundle at all")
    r = _run(["test.csv", "--model", "fake.safetensors", "--out", "x.csv"], cwd=tables)
    assert r.returncode == 1 and "not a polydiff bundle" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_impute_median(tables):
    (tables / "nan.csv").write_text("a,b,c\n0,0,0\n1,,1\n" + "".join(f"{i%3},{i%5},{i%7}\n" for i in range(40)))
    r = _run(["nan.csv", "--impute", "median", "--steps", "30", "--out", "n.csv"], cwd=tables)
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tables / "n.csv")) == 42
