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


@pytest.fixture(scope="module", params=["dte-np", "dte-np-novelty", "dte", "elbo", "reconstruction"])
def fitted(request):
    normal, _ = _data()
    method, novelty = request.param.replace("-novelty", ""), request.param.endswith("-novelty")
    det = DiffusionDetector(method=method, novelty=novelty, steps=None if method == "dte-np" else 300,
                            contamination=0.1, random_state=0)
    return det.fit(pd.DataFrame(normal, columns=list("abcd")))


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
    assert p["method"] == "dte-np" and p["contamination"] == 0.05 and p["novelty"] is False
    assert det.set_params(contamination=0.2).contamination == 0.2
    with pytest.raises(ValueError, match="invalid parameter 'nope'"):
        det.set_params(nope=1)
    with pytest.raises(PolydiffError, match="contamination must be in"):
        DiffusionDetector(contamination=0.9).fit(np.zeros((10, 2)))
    with pytest.raises(PolydiffError, match="not fitted yet"):
        DiffusionDetector().decision_function(np.zeros((2, 2)))
    with pytest.raises(PolydiffError, match="unknown method 'knn'"):
        DiffusionDetector(method="knn").fit(np.zeros((10, 2)))


def test_save_load_gives_identical_scores(fitted, tmp_path):
    normal, outliers = _data(3)
    X = np.vstack([normal[:50], outliers])
    p = fitted.save(tmp_path / "det.safetensors")
    again = DiffusionDetector.load(p)
    assert again.get_params() == fitted.get_params() and again.threshold_ == fitted.threshold_
    assert np.array_equal(again.decision_function(X), fitted.decision_function(X))


def test_saved_detector_is_safetensors_without_pickle(fitted, tmp_path):
    p = fitted.save(tmp_path / "det.safetensors")
    from polydiff.checkpoint import read_meta

    meta = read_meta(p)
    assert meta["kind"] == "detector" and meta["detector"]["method"] == fitted.method
    assert b"pickle" not in p.read_bytes()[:8] and p.read_bytes()[8:9] == b"{"


def test_not_a_detector_bundle_is_refused(tmp_path):
    from polydiff.checkpoint import save_bundle
    import torch

    p = save_bundle(tmp_path / "x.safetensors", {"w": torch.zeros(2)}, {"kind": "model", "modality": "tabular"})
    with pytest.raises(PolydiffError, match="not a saved DiffusionDetector"):
        DiffusionDetector.load(p)


def _auroc(y, s):
    from scipy.stats import rankdata

    r = rankdata(s)
    pos = y == 1
    return (r[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum())


def test_dte_np_outlier_mode_resists_a_cluster_of_anomalies():
    """Fitted on a table holding a tight cluster of anomalies, the outlier mode still ranks them on top,
    while the novelty mode (which trusts its training rows) lets the cluster explain itself."""
    rng = np.random.default_rng(5)
    normal = rng.normal(size=(2000, 5))
    cluster = rng.normal(size=(12, 5)) * 0.05 + 3.0  # 0.6% of the rows
    X = np.vstack([normal, cluster])
    y = np.r_[np.zeros(len(normal)), np.ones(len(cluster))]
    outlier = DiffusionDetector().fit(X).decision_scores_
    novelty = DiffusionDetector(novelty=True).fit(X).decision_scores_
    assert _auroc(y, outlier) > 0.99
    assert _auroc(y, novelty) < 0.5


def test_dte_np_needs_no_training_steps_and_scales_with_the_reference_not_the_data():
    rng = np.random.default_rng(0)
    det = DiffusionDetector(novelty=True).fit(rng.normal(size=(20_000, 8)))
    index = det.engine_.index["std"]  # every row kept, each query searching about 1,024 of them
    assert index.refs.shape == (20_000, 8) and max(len(r) for r in index.rows) <= 1024 + 512 + 127
    det = DiffusionDetector().fit(rng.normal(size=(20_000, 8)))
    assert det.engine_.refs["robust"].shape == (16 * 256, 8)  # 16 bags of 256 rows


@pytest.mark.parametrize("n,d", [(600, 5), (900, 40), (6000, 8)])  # a full reference, a wide one, the index
def test_novelty_threshold_flags_the_contamination_fraction_of_new_normal_rows(n, d):
    """In novelty mode a training row is not its own neighbour when the threshold is set: otherwise every
    training score is too low and predict flags most new rows from the training distribution."""
    rng = np.random.default_rng(7)
    det = DiffusionDetector(novelty=True, contamination=0.05).fit(rng.normal(size=(n, d)))
    flagged = det.predict(rng.normal(size=(4000, d))).mean()
    assert 0.025 < flagged < 0.09, flagged
    # the scores of new rows are those of the scorer; only the training rows leave themselves out
    fresh = rng.normal(size=(50, d))
    assert np.array_equal(det.decision_function(fresh), det.decision_function(np.vstack([fresh, fresh]))[:50])


def test_options_that_would_do_nothing_are_errors():
    X = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(PolydiffError, match=r"steps=50 has no effect: dte-np trains nothing \(steps applies to dte, elbo, reconstruction\)"):
        DiffusionDetector(steps=50).fit(X)
    with pytest.raises(PolydiffError, match="steps must be at least 1, got 0"):
        DiffusionDetector(method="dte", steps=0).fit(X)
