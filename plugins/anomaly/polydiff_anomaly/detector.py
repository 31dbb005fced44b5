"""``DiffusionDetector``: diffusion anomaly scores behind the estimator API data scientists already use.

    from polydiff_anomaly import DiffusionDetector

    det = DiffusionDetector(method="elbo", contamination=0.05).fit(X_train)   # array, DataFrame or file
    scores = det.decision_function(X_test)        # higher = more anomalous
    flags = det.predict(X_test)                   # 1 = anomaly, using threshold_ from the training scores
    det.save("detector.safetensors"); det = DiffusionDetector.load("detector.safetensors")

After ``fit``: ``decision_scores_`` (training scores), ``threshold_`` (their 1 - contamination quantile)
and ``labels_`` (training flags), as in PyOD.
"""
from __future__ import annotations

import inspect
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from polydiff.errors import InputError, PolydiffError

__all__ = ["DiffusionDetector", "METHODS"]

#: scoring methods available to the detector, each a core or plugin scorer fn(model, x, cond) -> [batch]
METHODS = ("elbo", "reconstruction")


def _scorer(method: str):
    from polydiff import scoring

    table = {"elbo": scoring.elbo, "reconstruction": scoring.reconstruction}
    if method not in table:
        raise PolydiffError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    return table[method]


class DiffusionDetector:
    """A tabular diffusion model fitted on (mostly) normal rows, scoring rows by how hard they are to denoise.

    Parameters
    ----------
    method : scoring method, one of ``METHODS``.
    contamination : expected fraction of anomalies in the training data, in (0, 0.5]; sets ``threshold_``.
    steps : training steps (default: the tabular modality's default).
    max_train_rows : rows beyond this are subsampled (seeded) for training, to bound fit time.
    impute : ``None`` (NaN is an error) or ``"median"`` (NaN filled with training medians).
    batch_size : rows per scoring batch.
    random_state : seed of the subsample, the training run and the scoring noise.
    device : ``"cpu"``, ``"cuda"`` ...; default CUDA when present.
    """

    def __init__(self, method: str = "elbo", contamination: float = 0.05, steps: Optional[int] = None,
                 max_train_rows: int = 50_000, impute: Optional[str] = None, batch_size: int = 8192,
                 random_state: int = 0, device: Optional[str] = None):
        self.method = method
        self.contamination = contamination
        self.steps = steps
        self.max_train_rows = max_train_rows
        self.impute = impute
        self.batch_size = batch_size
        self.random_state = random_state
        self.device = device

    # ------------------------------------------------------------------ scikit-learn protocol
    @classmethod
    def _param_names(cls):
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params) -> "DiffusionDetector":
        for k, v in params.items():
            if k not in self._param_names():
                raise ValueError(f"invalid parameter {k!r} for DiffusionDetector; valid: {', '.join(self._param_names())}")
            setattr(self, k, v)
        return self

    def __repr__(self):
        return "DiffusionDetector(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def _check_params(self):
        _scorer(self.method)
        if not (0 < float(self.contamination) <= 0.5):
            raise PolydiffError(f"contamination must be in (0, 0.5], got {self.contamination}")
        if int(self.max_train_rows) < 2:
            raise PolydiffError(f"max_train_rows must be at least 2, got {self.max_train_rows}")

    # ------------------------------------------------------------------ fitting and scoring
    def fit(self, X, y=None) -> "DiffusionDetector":
        """Fit on the rows of ``X`` (``y`` is ignored, as in PyOD's unsupervised detectors)."""
        from polydiff.model import Model, default_config, merge_config
        from polydiff.training import Trainer

        from . import tabular_modality
        from .encoder import TableEncoder

        self._check_params()
        modality = tabular_modality()
        enc = TableEncoder(impute=self.impute).fit(X)
        x = enc.transform(X)
        rng = np.random.default_rng(self.random_state)
        if len(x) > self.max_train_rows:
            x = x[np.sort(rng.choice(len(x), int(self.max_train_rows), replace=False))]
        overrides = {"train": {"seed": int(self.random_state)}}
        if self.steps is not None:
            overrides["train"]["steps"] = int(self.steps)
        config = modality.configure(merge_config(default_config(), modality.default_config, overrides), enc)
        config["train"]["log_every"] = config["train"]["ckpt_every"] = 10**9  # no intermediate files
        net = modality.network(config["network"])
        with tempfile.TemporaryDirectory(prefix="polydiff-detector-") as tmp:
            trainer = Trainer(net, torch.from_numpy(x), {}, config, tmp, modality=modality.name,
                              encoder_meta=enc.metadata(), device=self.device, progress=False)
            trainer.fit()
            net.load_state_dict(trainer.ema)
        self.model_ = Model(modality, net, enc, config, {"kind": "detector"}, device=self.device)
        self.n_features_in_ = len(enc.columns)
        self.feature_names_in_ = np.asarray(enc.columns, dtype=object)
        self.decision_scores_ = self.decision_function(X)
        self.threshold_ = float(np.quantile(self.decision_scores_, 1 - float(self.contamination)))
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def _fitted(self):
        if not hasattr(self, "model_"):
            raise PolydiffError("this DiffusionDetector is not fitted yet; call fit(X) first")
        return self.model_

    @torch.no_grad()
    def decision_function(self, X) -> np.ndarray:
        """Anomaly score of every row of ``X`` (higher = more anomalous), in row order."""
        model = self._fitted()
        x = torch.from_numpy(model.encoder.transform(X)).to(model.device)
        fn = _scorer(self.method)
        out = [fn(model, x[i:i + self.batch_size], {}, seed=int(self.random_state)).cpu()
               for i in range(0, len(x), int(self.batch_size))]
        return torch.cat(out).double().numpy()

    def predict(self, X) -> np.ndarray:
        """1 for rows scoring above ``threshold_``, else 0."""
        self._fitted()
        return (self.decision_function(X) > self.threshold_).astype(int)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> Path:
        """One safetensors bundle: EMA weights, config, encoder metadata, parameters and threshold."""
        model = self._fitted()
        model.meta = {"kind": "detector", "detector": {"params": self.get_params(), "threshold": self.threshold_}}
        return model.save(path)

    @classmethod
    def load(cls, path) -> "DiffusionDetector":
        """Load a detector written by :meth:`save` (never unpickles)."""
        from polydiff.model import Model

        from . import tabular_modality

        model = Model.load(path, modality=tabular_modality())
        info = model.meta.get("detector")
        if not info:
            raise InputError(f"{path}: a tabular model, but not a saved DiffusionDetector")
        det = cls(**info["params"])
        det.model_ = model
        det.threshold_ = float(info["threshold"])
        det.n_features_in_ = len(model.encoder.columns)
        det.feature_names_in_ = np.asarray(model.encoder.columns, dtype=object)
        return det


def score_file(det: DiffusionDetector, data, out, *, chunk_rows: int = 100_000, flag: bool = True,
               progress: bool = True) -> dict:
    """Score DATA chunk by chunk (bounded memory) into a CSV at ``out`` with columns ``score`` and, when
    ``flag``, ``is_anomaly``; rows keep their input order. Written to a temporary file, then renamed,
    so a failure leaves no partial output. Returns a summary with the scores."""
    import os
    import sys

    from tqdm.auto import tqdm

    from .table import iter_table

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    scores = []
    try:
        with os.fdopen(fd, "w") as f, tqdm(unit="rows", desc="scoring", disable=not progress or not sys.stderr.isatty(), leave=False) as bar:
            f.write("score,is_anomaly\n" if flag else "score\n")
            for chunk in iter_table(data, chunk_rows=chunk_rows):
                s = det.decision_function(chunk)
                if flag:
                    f.writelines(f"{v:.8g},{int(v > det.threshold_)}\n" for v in s)
                else:
                    f.writelines(f"{v:.8g}\n" for v in s)
                scores.append(s)
                bar.update(len(s))
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    s = np.concatenate(scores)
    return {"rows": int(len(s)), "flagged": int((s > det.threshold_).sum()) if flag else None,
            "threshold": det.threshold_, "out": str(out), "scores": s}


from polydiff.viz import plot_histogram  # noqa: E402  (re-exported for `polydiff score --plot`)
