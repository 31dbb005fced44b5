"""DiffusionDetector: the PyOD / scikit-learn estimator behaviour."""
import numpy as np
import pandas as pd
import pytest

from polydiff.errors import PolydiffError
from polydiff_anomaly import DiffusionDetector


def _data(seed=0):
    rng = np.random.default_rng(seed)
    normal = rng.normal(size=(400, 4))
    outliers = rng.normal(size=(8, 4)) * 0.5 + 6.0
    return normal, outliers


@pytest.fixture(scope="module")
def fitted():
    normal, _ = _data()
    return DiffusionDetector(steps=200, contamination=0.1, random_state=0).fit(pd.DataFrame(normal, columns=list("abcd")))


def test_fit_sets_pyod_attributes(fitted):
    assert fitted.decision_scores_.shape == (400,)
    assert np.isclose(fitted.labels_.mean(), 0.1, atol=0.01)
    assert fitted.threshold_ == pytest.approx(np.quantile(fitted.decision_scores_, 0.9))
    assert list(fitted.feature_names_in_) == list("abcd") and fitted.n_features_in_ == 4


def test_outliers_score_higher_and_are_flagged(fitted):
    normal, outliers = _data(1)
    frame = pd.DataFrame(np.vstack([normal[:100], outliers]), columns=list("abcd"))
    s = fitted.decision_function(frame)
    assert s[100:].min() > np.quantile(s[:100], 0.95)
    assert fitted.predict(frame)[100:].all()


def test_numpy_and_dataframe_agree_and_rows_are_independent(fitted):
    normal, _ = _data(2)
    a = fitted.decision_function(pd.DataFrame(normal, columns=list("abcd")))
    b = fitted.decision_function(normal)
    c = fitted.decision_function(normal[::-1])[::-1]
    assert np.allclose(a, b) and np.allclose(a, c, rtol=1e-5, atol=1e-7)


def test_params_round_trip():
    det = DiffusionDetector()
    p = det.get_params()
    assert p["method"] == "elbo" and p["contamination"] == 0.05
    assert det.set_params(contamination=0.2).contamination == 0.2
    with pytest.raises(ValueError, match="invalid parameter 'nope'"):
        det.set_params(nope=1)
    with pytest.raises(PolydiffError, match="contamination must be in"):
        DiffusionDetector(contamination=0.9).fit(np.zeros((10, 2)))
    with pytest.raises(PolydiffError, match="not fitted yet"):
        DiffusionDetector().decision_function(np.zeros((2, 2)))


def test_save_load_gives_identical_scores(fitted, tmp_path):
    normal, outliers = _data(3)
    X = np.vstack([normal[:50], outliers])
    p = fitted.save(tmp_path / "det.safetensors")
    again = DiffusionDetector.load(p)
    assert again.get_params() == fitted.get_params() and again.threshold_ == fitted.threshold_
    assert np.array_equal(again.decision_function(X), fitted.decision_function(X))
