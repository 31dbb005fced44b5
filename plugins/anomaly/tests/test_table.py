"""Reading tables: formats, and one-line errors that name the file, column and first bad rows."""
import numpy as np
import pandas as pd
import pytest

from polydiff.errors import InputError
from polydiff_anomaly.table import align_columns, check_finite, iter_table, read_table


def test_formats_agree(tmp_path):
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4, 5, 6], "c": [True, False, True]})
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    np.save(tmp_path / "t.npy", df.to_numpy(dtype=float))
    np.savez(tmp_path / "t.npz", X=df.to_numpy(dtype=float), y=np.zeros(3))
    ref = df.to_numpy(dtype=float)
    for name in ("t.csv", "t.parquet", "t.npy", "t.npz"):
        t = read_table(tmp_path / name)
        assert np.array_equal(t.values, ref), name
    assert read_table(tmp_path / "t.csv").columns == ["a", "b", "c"]
    assert read_table(df).columns == ["a", "b", "c"]
    assert read_table(ref).columns == ["x0", "x1", "x2"]


@pytest.mark.parametrize("content, needle", [
    ("", "empty file"),
    ("a,b\n", "has a header but no rows"),
    ("a,b\n1,2\n3,hello\n4,5\n6,x\n", "column 'b' has text ('hello') on lines 3, 5"),
])
def test_bad_csv(tmp_path, content, needle):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        read_table(p)


def test_nan_and_inf_name_column_and_lines(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("a,b\n1,2\n3,\n4,5\n")
    t = read_table(p)
    with pytest.raises(InputError, match=r"column 'b' has NaN on lines 3 \(use --impute median"):
        check_finite(t)
    filled = check_finite(t, medians=np.array([0.0, 9.0]))
    assert filled[1, 1] == 9.0
    p.write_text("a,b\n1,2\ninf,3\n")
    with pytest.raises(InputError, match="column 'a' has infinite values on lines 3"):
        check_finite(read_table(p))


def test_columns_must_match_training(tmp_path):
    t = read_table(pd.DataFrame({"b": [1.0], "a": [2.0]}))
    assert align_columns(t, ["a", "b"]).values.tolist() == [[2.0, 1.0]]
    with pytest.raises(InputError, match="missing 'c'; unexpected 'b'"):
        align_columns(t, ["a", "c"])


def test_unsupported_and_missing(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(InputError, match="unsupported table format"):
        read_table(tmp_path / "t.xlsx")


def test_iter_table_chunks_keep_line_numbers(tmp_path):
    p = tmp_path / "big.csv"
    rows = ["a,b"] + [f"{i},{i}" for i in range(10)]
    rows[8] = "7,oops"  # line 9 of the file
    p.write_text("\n".join(rows) + "\n")
    chunks = iter_table(p, chunk_rows=3)
    assert next(chunks).values[:, 0].tolist() == [0, 1, 2]
    assert next(chunks).values[:, 0].tolist() == [3, 4, 5]
    with pytest.raises(InputError, match="column 'b' has text .* on lines 9"):
        next(chunks)
