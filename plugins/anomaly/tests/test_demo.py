"""The tabular part of `polydiff demo`: breast-cancer rows with ~5% malignant anomalies."""
from polydiff_anomaly.demo import breast_cancer, run


def test_breast_cancer_table_has_five_percent_malignant_rows():
    X, y = breast_cancer()
    assert X.shape == (376, 30) and y.sum() == 19 and not X.isna().any().any()


def test_demo_scores_without_labels_and_draws_the_histogram(tmp_path):
    lines = []
    res = run(tmp_path, echo=lines.append)
    assert res["auroc"] > 0.9  # unsupervised: the labels are only used to report the AUROC
    assert any("AUROC" in line for line in lines)
    assert (tmp_path / "scores.png").stat().st_size > 5000 and (tmp_path / "breast_cancer_5pct.csv").exists()
