"""`polydiff score` on tables: fit on --train or on DATA, flags, plot, saved detector, and bad input."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from polydiff.errors import PolydiffError

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
    r = _run(["test.csv", "--train", "train.csv", "--contamination", "0.05", "--out", "s.csv",
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
    ("a,b,c\n1,2,3\n4,5,inf\n1,1,-inf\n", "column 'c' has infinite values on lines 3, 4"),
    ("a,b,d\n1,2,3\n", "columns differ from the training table (missing 'c'; unexpected 'd')"),
])
def test_bad_tables_one_line_no_output(tables, content, needle):
    from click.testing import CliRunner

    from polydiff.cli import cli

    (tables / "bad.csv").write_text(content)
    out = tables / "never.csv"
    r = CliRunner().invoke(cli, ["score", str(tables / "bad.csv"), "--model", str(tables / "det.safetensors"),
                                 "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit), r.exception
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert needle in err[0], err[0]
    assert not out.exists() and not list(tables.glob(".never.csv.*"))


def test_model_file_that_is_not_a_bundle(tables):
    (tables / "fake.safetensors").write_bytes(b"not a bundle at all")
    r = _run(["test.csv", "--model", "fake.safetensors", "--out", "x.csv"], cwd=tables)
    assert r.returncode == 1 and "not a polydiff bundle" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_impute_median(tables):
    (tables / "nan.csv").write_text("a,b,c\n0,0,0\n1,,1\n" + "".join(f"{i%3},{i%5},{i%7}\n" for i in range(40)))
    r = _run(["nan.csv", "--impute", "median", "--out", "n.csv"], cwd=tables)
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tables / "n.csv")) == 42


def _write_big_csv(path, rows, cols=20, seed=0, chunk=200_000):
    rng = np.random.default_rng(seed)
    header = ",".join(f"f{j}" for j in range(cols))
    with open(path, "w") as f:
        f.write(header + "\n")
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            block = rng.normal(size=(n, cols))
            if start == 0:
                block[:5] += 8.0  # five planted anomalies at the top
            pd.DataFrame(block).to_csv(f, header=False, index=False, float_format="%.4f")


def _peak_rss_mb(args, cwd):
    """Run `polydiff score ARGS` in a child and return (completed process, the child's peak RSS in MB)."""
    code = ("import resource, sys, runpy; sys.argv = ['polydiff', 'score'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('polydiff.cli', run_name='__main__')\n"
            "finally:\n    print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code] + [str(a) for a in args], cwd=cwd, capture_output=True,
                       text=True, timeout=600)
    kb = [int(l.split()[1]) for l in r.stderr.splitlines() if l.startswith("PEAK_RSS_KB")]
    return r, (kb[0] / 1024 if kb else None)


def test_a_million_rows_are_scored_with_bounded_memory(tmp_path):
    """1,000,000 rows x 20 columns (about 160 MB as float64) are fitted (unsupervised, on a sample) and
    scored chunk by chunk: the peak memory is about that of a 100,000-row file, not ten times more."""
    _write_big_csv(tmp_path / "small.csv", 100_000)
    _write_big_csv(tmp_path / "big.csv", 1_000_000)
    r_small, small = _peak_rss_mb(["small.csv", "--out", "small_scores.csv", "--json"], tmp_path)
    assert r_small.returncode == 0, r_small.stderr
    r_big, big = _peak_rss_mb(["big.csv", "--out", "big_scores.csv", "--json"], tmp_path)
    assert r_big.returncode == 0, r_big.stderr
    assert big - small < 120, (small, big)  # loading the big file whole would add well over 160 MB
    s = pd.read_csv(tmp_path / "big_scores.csv")
    assert len(s) == 1_000_000 and list(s.columns) == ["score", "is_anomaly"]
    top = np.argsort(-s["score"].to_numpy())[:5]
    assert sorted(top.tolist()) == [0, 1, 2, 3, 4]  # the planted rows, in their input positions


def test_method_choice_and_saved_method_mismatch(tables):
    r = _run(["test.csv", "--method", "dte", "--steps", "100", "--out", "d.csv", "--save-model", "dte.safetensors"],
             cwd=tables)
    assert r.returncode == 0, r.stderr
    assert "with dte:" in r.stdout
    r = _run(["test.csv", "--model", "dte.safetensors", "--method", "elbo", "--out", "x.csv"], cwd=tables)
    assert r.returncode == 1 and "dte.safetensors: a dte detector; method elbo needs a new detector" in r.stderr
    assert not (tables / "x.csv").exists()


def test_parquet_in_unsupervised_and_with_train(tmp_path):
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(500, 4)), columns=list("wxyz"))
    df.iloc[7] = [9.0, -9.0, 9.0, -9.0]
    df.to_parquet(tmp_path / "t.parquet")
    df.iloc[:250].drop(index=7).to_parquet(tmp_path / "clean.parquet")
    for extra in ([], ["--train", "clean.parquet"]):
        r = _run(["t.parquet", "--out", "s.csv", "--contamination", "0.01", "--json"] + extra, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        s = pd.read_csv(tmp_path / "s.csv")
        assert len(s) == 500 and s["score"].idxmax() == 7 and s["is_anomaly"].iloc[7] == 1
        assert json.loads(r.stdout)["rows"] == 500


def test_fit_errors_name_file_lines_also_when_the_rows_are_sampled(tmp_path):
    """A table fitted from a file is read through a reservoir sample; its errors still name file lines."""
    import re

    from polydiff_anomaly import DiffusionDetector

    rows = [f"{i},{i % 7}" for i in range(50)]
    rows[28] = "28,"  # data row 28: file line 30
    (tmp_path / "one.csv").write_text("a,b\n" + "\n".join(rows) + "\n")
    with pytest.raises(PolydiffError, match=r"column 'b' has NaN on lines 30 \("):
        DiffusionDetector().fit(tmp_path / "one.csv")
    many = [f"{i}," if i >= 18 else f"{i},{i % 7}" for i in range(50)]  # NaN on lines 20..51
    (tmp_path / "many.csv").write_text("a,b\n" + "\n".join(many) + "\n")
    with pytest.raises(PolydiffError) as info:
        DiffusionDetector(max_train_rows=10).fit(tmp_path / "many.csv")
    shown = [int(v) for v in re.search(r"on lines ([\d, ]+)", str(info.value)).group(1).split(", ")]
    assert shown and all(20 <= v <= 51 for v in shown), str(info.value)


def test_identifier_and_text_columns_are_set_aside_and_carried_into_the_output(tmp_path):
    """A table with a key and a text column: --id carries the key into the output, --exclude drops the text;
    the saved detector scores a new file the same way; --columns picks features by name."""
    from click.testing import CliRunner

    from polydiff.cli import cli

    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 3))
    X[-1] = [8.0, -8.0, 8.0]
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    df.insert(0, "key", [f"row-{i}" for i in range(len(df))])
    df["note"] = ["text, with a comma"] * len(df)
    df.to_csv(tmp_path / "t.csv", index=False)
    run = CliRunner()
    r = run.invoke(cli, ["score", str(tmp_path / "t.csv"), "--out", str(tmp_path / "s.csv")])
    assert r.exit_code == 1 and "column 'key' has text ('row-0')" in r.stderr, r.stderr
    r = run.invoke(cli, ["score", str(tmp_path / "t.csv"), "--id", "key", "--exclude", "note", "--out",
                         str(tmp_path / "s.csv"), "--save-model", str(tmp_path / "d.safetensors")])
    assert r.exit_code == 0, r.output
    s = pd.read_csv(tmp_path / "s.csv")
    assert list(s.columns) == ["key", "score", "is_anomaly"] and s["key"].tolist() == df["key"].tolist()
    assert s["score"].idxmax() == len(df) - 1
    bare = run.invoke(cli, ["score", str(tmp_path / "t.csv"), "--columns", "a,b,c", "--out", str(tmp_path / "b.csv")])
    assert bare.exit_code == 0, bare.output
    assert pd.read_csv(tmp_path / "b.csv")["score"].tolist() == s["score"].tolist()
    again = run.invoke(cli, ["score", str(tmp_path / "t.csv"), "--model", str(tmp_path / "d.safetensors"),
                             "--id", "key", "--exclude", "note", "--out", str(tmp_path / "s2.csv")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "s2.csv").read_text() == (tmp_path / "s.csv").read_text()
    bad = run.invoke(cli, ["score", str(tmp_path / "t.csv"), "--id", "nope", "--out", str(tmp_path / "x.csv")])
    assert bad.exit_code == 1 and bad.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 't.csv'}: no column 'nope' (columns: key, a, b, c, note)"]
    assert not (tmp_path / "x.csv").exists()


def test_a_detector_option_with_a_trained_model_is_an_error(tmp_path):
    from click.testing import CliRunner

    from polydiff.cli import cli

    (tmp_path / "p.csv").write_text("x,y\n0,1\n1,0\n")
    r = CliRunner().invoke(cli, ["score", str(tmp_path / "p.csv"), "--model", "points:shapes", "--impute", "median",
                                 "--out", str(tmp_path / "o.csv")])
    assert r.exit_code == 1
    assert r.stderr.strip() == "Error: --impute is an option of the tabular detector; it does not apply here"
    assert not (tmp_path / "o.csv").exists()
