"""The tabular modality: encoder behaviour and the core conformance kit."""
import numpy as np
import pandas as pd
import pytest

import polydiff_anomaly
from polydiff.errors import InputError
from polydiff.testing import check_modality, check_plugin
from polydiff_anomaly.encoder import TableEncoder

TINY = {"network": {"hidden": 16, "depth": 1, "emb": 8}}


@pytest.fixture(scope="module")
def tabular():
    return check_plugin(polydiff_anomaly, name="anomaly").modality("tabular")


def _frame(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(5, 2, size=n), "const": np.ones(n)})


def test_conformance(tabular, tmp_path):
    check_modality(tabular, _frame(), tmp_path, config=TINY, write_suffix=".csv", atol=1e-5)


def test_encoder_standardises_and_keeps_columns():
    enc = TableEncoder().fit(_frame(200))
    x = enc.transform(_frame(200))
    assert np.allclose(x[:, :2].std(0), 0.5, atol=1e-5) and np.allclose(x[:, 2], 0)
    assert enc.columns == ["a", "b", "const"]
    shuffled = _frame(200)[["const", "b", "a"]]
    assert np.array_equal(enc.transform(shuffled), x)
    with pytest.raises(InputError, match="missing 'const'"):
        enc.transform(_frame(5)[["a", "b"]])


def test_median_imputation_is_explicit():
    df = _frame(20)
    df.loc[3, "b"] = np.nan
    with pytest.raises(InputError, match="column 'b' has NaN on rows 3"):
        TableEncoder().fit(df)
    enc = TableEncoder(impute="median").fit(df)
    assert np.isfinite(enc.transform(df)).all()
    assert np.isclose(enc.metadata()["median"][1], np.nanmedian(df["b"]))


def test_train_and_score_through_the_cli(tmp_path):
    """`polydiff train tabular` then `polydiff score`: one score per row, in order, far rows highest."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    normal = pd.DataFrame(rng.normal(size=(300, 3)), columns=["u", "v", "w"])
    normal.to_csv(tmp_path / "train.csv", index=False)
    test = pd.concat([normal.iloc[:50], pd.DataFrame([[8.0, -8.0, 8.0], [0.0, 9.0, -9.0]], columns=["u", "v", "w"])])
    test[["w", "u", "v"]].to_parquet(tmp_path / "test.parquet")  # other column order, other format
    run = [sys.executable, "-m", "polydiff.cli"]
    r = subprocess.run(run + ["train", "tabular", "--data", str(tmp_path / "train.csv"), "--steps", "150",
                              "--batch-size", "128", "--out", str(tmp_path / "run"), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(run + ["score", str(tmp_path / "test.parquet"), "--model", str(tmp_path / "run/model.safetensors"),
                              "--out", str(tmp_path / "s.csv")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    scores = pd.read_csv(tmp_path / "s.csv")
    assert list(scores.columns) == ["score"] and len(scores) == 52  # one row per input row, in order
    assert scores["score"].iloc[50:].min() > scores["score"].iloc[:50].max()
