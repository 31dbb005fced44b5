"""``DiffusionDetector``: diffusion anomaly scores behind the estimator API data scientists already use.

    from polydiff_anomaly import DiffusionDetector

    det = DiffusionDetector(contamination=0.05).fit(X)    # array, DataFrame or file; method="dte-np"
    scores = det.decision_function(X_test)        # higher = more anomalous
    flags = det.predict(X_test)                   # 1 = anomaly, using threshold_ from the training scores
    det.save("detector.safetensors"); det = DiffusionDetector.load("detector.safetensors")

After ``fit``: ``decision_scores_`` (training scores), ``threshold_`` (their 1 - contamination quantile)
and ``labels_`` (training flags), as in PyOD. In novelty mode each training row is scored without itself as
a neighbour, as a new row from the same distribution would be, so ``predict`` flags about the contamination
fraction of new normal rows.
"""
from __future__ import annotations

import functools
import inspect
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from polydiff.errors import InputError, PolydiffError

__all__ = ["DiffusionDetector", "METHODS"]

#: scoring methods, default first: the plugin's own fitted scorers, then the core's denoiser-based ones
METHODS = ("dte-np", "dte", "elbo", "reconstruction")
#: the smallest batch dte-np scores in (see DiffusionDetector._score)
DTE_NP_BATCH = 65536


class DenoiserScorer:
    """Fitted state of the ``elbo`` and ``reconstruction`` scorers: a tabular diffusion model (EDM denoiser
    MLP) trained on the rows; scoring calls the core's modality-agnostic scorer of the same name."""

    def __init__(self, method: str, model):
        self.name, self.model = method, model

    @classmethod
    def fit(cls, x, *, method: str, encoder, seed: int = 0, steps=None, device=None, **_) -> "DenoiserScorer":
        from polydiff.model import Model, default_config, merge_config
        from polydiff.training import modality_trainer

        from . import tabular_modality

        modality = tabular_modality()
        overrides = {"train": {"seed": int(seed)}}
        if steps is not None:
            overrides["train"]["steps"] = int(steps)
        config = merge_config(default_config(), modality.default_config, overrides)
        trainer, _ = modality_trainer(modality, encoder, torch.from_numpy(np.asarray(x, np.float32)), {}, config,
                                      device=device)  # no callbacks: in memory, no files
        trainer.fit()
        net = trainer.net
        net.load_state_dict(trainer.ema)
        return cls(method, Model(modality, net, encoder, trainer.config, {"kind": "detector"}, device=device))

    @torch.no_grad()
    def score(self, x, seed: int = 0, batch_size: int = 8192) -> np.ndarray:
        from polydiff import scoring

        fn = getattr(scoring, self.name)
        x = torch.as_tensor(np.asarray(x, np.float32)).to(self.model.device)
        block = min(int(batch_size), 1024)
        return scoring.rowwise(lambda b: fn(self.model, b, {}, seed=int(seed)), x, block).cpu().double().numpy()

    def bundle(self):
        return ({f"ema.{k}": v for k, v in self.model.net.state_dict().items()}, {"config": self.model.config})

    @classmethod
    def load_with(cls, method, tensors, meta, encoder, device=None):
        from polydiff.checkpoint import split_prefix
        from polydiff.model import Model

        from . import tabular_modality

        modality = tabular_modality()
        config = meta["config"]
        net = modality.network(config["network"])
        net.load_state_dict(split_prefix(tensors, "ema"))
        return cls(method, Model(modality, net, encoder, config, {"kind": "detector"}, device=device))


def _engine(method: str):
    from .dte import NeuralDTE
    from .nonparametric import EmpiricalDTE

    table = {"dte-np": EmpiricalDTE, "dte": NeuralDTE, "elbo": DenoiserScorer, "reconstruction": DenoiserScorer}
    if method not in table:
        raise PolydiffError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    return table[method]


class DiffusionDetector:
    """A diffusion anomaly detector over the rows of a numeric table (higher score = more anomalous).

    Parameters
    ----------
    method : ``"dte-np"`` (default: nonparametric diffusion-time estimation, no training), ``"dte"`` (a network
        estimates the diffusion time, one forward per row), ``"elbo"`` or ``"reconstruction"`` (a trained
        diffusion denoiser; the core's scorers).
    novelty : ``False`` (default): the rows passed to ``fit`` may contain anomalies, as when a table is
        scored against itself. ``True``: they are clean, normal rows and the detector scores new rows
        (scikit-learn's novelty detection); ``dte-np`` then uses a sharper reference set.
    contamination : expected fraction of anomalies, in (0, 0.5]; sets ``threshold_`` from the training scores.
    steps : training steps of ``dte``, ``elbo`` and ``reconstruction`` (default: their own defaults).
    max_train_rows : rows beyond this are subsampled (seeded) before fitting, to bound fit time.
    impute : ``None`` (NaN is an error) or ``"median"`` (NaN filled with training medians).
    batch_size : rows per scoring batch.
    random_state : seed of every random choice (subsample, reference bags, training, scoring noise).
    device : ``"cpu"``, ``"cuda"`` ... for the network methods; default CUDA when present.
    """

    def __init__(self, method: str = "dte-np", novelty: bool = False, contamination: float = 0.05,
                 steps: Optional[int] = None, max_train_rows: int = 50_000, impute: Optional[str] = None,
                 batch_size: int = 65536, random_state: int = 0, device: Optional[str] = None):
        self.method = method
        self.novelty = novelty
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

    # scikit-learn finds what kind of estimator this is through these, without polydiff importing it:
    # Pipeline, clone, GridSearchCV and cross_val_score (with a scorer such as "roc_auc", which reads
    # decision_function: higher = more anomalous = label 1, PyOD's convention) work as with PyOD's detectors
    _estimator_type = "outlier_detector"  # scikit-learn < 1.6

    def __sklearn_tags__(self):
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(estimator_type="outlier_detector", target_tags=TargetTags(required=False),
                    non_deterministic=self.method in ("dte", "elbo", "reconstruction") and self.device not in (None, "cpu"),
                    input_tags=InputTags(allow_nan=self.impute == "median"))

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "engine_")

    def _check_params(self):
        _engine(self.method)
        if not (0 < float(self.contamination) <= 0.5):
            raise PolydiffError(f"contamination must be in (0, 0.5], got {self.contamination}")
        if self.steps is not None and self.method == "dte-np":
            raise PolydiffError(f"steps={self.steps} has no effect: dte-np trains nothing (steps applies to "
                                f"{', '.join(m for m in METHODS if m != 'dte-np')})")
        if self.steps is not None and int(self.steps) < 1:
            raise PolydiffError(f"steps must be at least 1, got {self.steps}")
        if int(self.max_train_rows) < 2:
            raise PolydiffError(f"max_train_rows must be at least 2, got {self.max_train_rows}")

    # ------------------------------------------------------------------ fitting and scoring
    def fit(self, X, y=None) -> "DiffusionDetector":
        """Fit on the rows of ``X`` (``y`` is ignored, as in PyOD's unsupervised detectors).

        ``X`` is an array, a DataFrame or a file. A CSV or Parquet file with more than ``max_train_rows``
        rows is read in chunks and reduced to a uniform random sample of that many rows; the column
        statistics, ``decision_scores_`` and ``threshold_`` then come from that sample."""
        from .encoder import TableEncoder

        from .table import is_streamable, sample_table

        self._check_params()
        if is_streamable(X):  # a CSV/Parquet file is sampled in chunks: memory bounded by max_train_rows
            X = sample_table(X, int(self.max_train_rows), seed=int(self.random_state))
        enc = TableEncoder(impute=self.impute).fit(X)
        x = enc.transform(X)
        rng = np.random.default_rng(self.random_state)
        sub = x
        if len(x) > self.max_train_rows:
            sub = x[np.sort(rng.choice(len(x), int(self.max_train_rows), replace=False))]
        self.encoder_ = enc
        self.engine_ = _engine(self.method).fit(sub, method=self.method, encoder=enc, seed=int(self.random_state),
                                                novelty=bool(self.novelty), steps=self.steps, device=self.device)
        self.n_features_in_ = len(enc.columns)
        self.feature_names_in_ = np.asarray(enc.columns, dtype=object)
        own = getattr(self.engine_, "train_scores", None)
        # training scores: the engine's own when it computed them for exactly these rows while fitting
        self.decision_scores_ = own.astype(np.float64) if own is not None and sub is x else self._score(x)
        self.threshold_ = float(np.quantile(self.decision_scores_, 1 - float(self.contamination)))
        d = self.decision_scores_
        self.score_stats_ = (float(d.min()), float(d.max()), float(d.mean()), float(d.std())) if len(d) else (0.0, 0.0, 0.0, 0.0)
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def _fitted(self):
        if not hasattr(self, "engine_"):
            raise _not_fitted_error()("this DiffusionDetector is not fitted yet; call fit(X) first")
        return self.engine_

    def _transform(self, X) -> np.ndarray:
        """``X`` encoded as the training rows were; an unnamed array of the wrong width gets scikit-learn's words."""
        from .table import read_table

        table = read_table(X)
        if all(c == f"x{j}" for j, c in enumerate(table.columns)) and len(table.columns) != self.n_features_in_:
            raise InputError(f"{table.source}: X has {len(table.columns)} features, but DiffusionDetector is "
                             f"expecting {self.n_features_in_} features as input")
        return self.encoder_.transform(table)

    def _score(self, x: np.ndarray) -> np.ndarray:
        eng = self._fitted()
        bs = int(self.batch_size)
        if isinstance(eng, DenoiserScorer):
            return eng.score(x, seed=int(self.random_state), batch_size=bs)
        # dte-np's memory per row is a few copies of the row, and its cluster index pays a fixed cost per
        # cluster per batch: it scores in batches of at least DTE_NP_BATCH rows (the scores do not depend on
        # the batching), so a small batch_size meant for the network methods does not slow it down
        bs = max(bs, DTE_NP_BATCH)
        return np.concatenate([eng.score(x[i:i + bs]) for i in range(0, len(x), bs)]) if len(x) else np.zeros(0)

    def decision_function(self, X) -> np.ndarray:
        """Anomaly score of every row of ``X`` (higher = more anomalous), in row order."""
        self._fitted()
        return self._score(self._transform(X)).astype(np.float64)

    def predict(self, X) -> np.ndarray:
        """1 for rows scoring above ``threshold_``, else 0."""
        self._fitted()
        return (self.decision_function(X) > self.threshold_).astype(int)

    def fit_predict(self, X, y=None) -> np.ndarray:
        """Fit on ``X`` and return its flags (``labels_``), as PyOD's ``fit_predict``."""
        return self.fit(X, y).labels_

    def predict_proba(self, X, method: str = "linear") -> np.ndarray:
        """Outlier probability of every row as PyOD computes it from the training scores: ``[:, 1]`` is the
        probability of being an anomaly. ``linear``: the score min-max scaled by the training scores' range,
        clipped to [0, 1]; ``unify``: erf of the score's z-score under the training scores (Kriegel et al. 2011)."""
        from scipy.special import erf

        self._fitted()
        if self.score_stats_ is None:
            raise PolydiffError("this detector was saved without its training-score statistics; "
                                "fit it again to use predict_proba")
        s = self.decision_function(X)
        lo, hi, mean, std = self.score_stats_
        if method == "linear":
            p = np.clip((s - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
        elif method == "unify":
            p = np.clip(erf((s - mean) / ((std if std > 0 else 1.0) * np.sqrt(2))), 0.0, 1.0)
        else:
            raise PolydiffError(f"predict_proba method must be 'linear' or 'unify', got {method!r}")
        return np.column_stack([1.0 - p, p])

    def score_file(self, data, out, *, chunk_rows: int = 100_000, flag: bool = True, progress: bool = True,
                   select=None) -> dict:
        """Score the table ``data`` (a file or a folder of CSV/Parquet files) chunk by chunk (bounded memory)
        into ``out``, a CSV file or, for a ``.parquet`` name, a Parquet file (row groups of ``chunk_rows``):
        the identifier columns of ``select`` (see :class:`polydiff_anomaly.table.Select`), then ``score`` and,
        when ``flag``, ``is_anomaly``; rows keep their input order. Written to a temporary file, then renamed,
        so a failure leaves no partial output. Returns a summary with the scores."""
        from tqdm.auto import tqdm

        from polydiff.checkpoint import atomic_writer

        from .distributed import ParquetSink, arrow_rows, csv_header, csv_rows, output_kind
        from .table import iter_table

        self._fitted()
        out = Path(out)
        kind = output_kind(out)
        if kind == "folder":
            raise PolydiffError(f"{out}: scores go to one CSV or Parquet file here; a folder of parts needs "
                                f"--engine ray")
        scores = []
        with atomic_writer(out, "wb") as f, tqdm(unit="rows", desc="scoring", leave=False,
                                                 disable=not progress or not sys.stderr.isatty()) as bar:
            sink = ParquetSink(f) if kind == "parquet" else None
            for chunk in iter_table(data, chunk_rows=chunk_rows, select=select):
                s = self.decision_function(chunk)
                if sink is not None:
                    sink.write(arrow_rows(chunk, s, self.threshold_, flag))
                else:
                    if not scores:
                        ids = None if chunk.ids is None else [str(c) for c in chunk.ids.columns]
                        f.write(csv_header(ids, flag))
                    f.write(csv_rows(chunk, s, self.threshold_, flag))
                scores.append(s)
                bar.update(len(s))
            if sink is not None:
                sink.close()
        s = np.concatenate(scores)
        return {"rows": int(len(s)), "flagged": int((s > self.threshold_).sum()) if flag else None,
                "threshold": self.threshold_, "out": str(out), "scores": s}

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> Path:
        """One safetensors file: the fitted scorer's tensors; parameters, encoder and threshold as JSON."""
        from polydiff.checkpoint import save_bundle

        eng = self._fitted()
        tensors, state = eng.bundle()
        meta = {"kind": "detector", "modality": "tabular", "encoder": self.encoder_.metadata(),
                "detector": {"params": self.get_params(), "threshold": self.threshold_, "method": self.method,
                             "score_stats": list(self.score_stats_), "state": state}}
        if isinstance(eng, DenoiserScorer):  # also loadable as a plain tabular model (polydiff sample/score --model)
            meta["config"] = eng.model.config
        return save_bundle(path, tensors, meta)

    @classmethod
    def load(cls, path) -> "DiffusionDetector":
        """Load a detector written by :meth:`save` (never unpickles)."""
        from polydiff.checkpoint import load_bundle

        from .encoder import TableEncoder

        tensors, meta = load_bundle(path)
        info = meta.get("detector")
        if meta.get("modality") not in (None, "tabular"):
            raise InputError(f"{path}: a {meta.get('modality')!r} bundle, not a tabular detector")
        if not info or "state" not in info:
            raise InputError(f"{path}: a polydiff bundle, but not a saved DiffusionDetector")
        det = cls(**{k: v for k, v in info["params"].items() if k in cls._param_names()})
        det.encoder_ = TableEncoder.from_metadata(meta.get("encoder"))
        eng = _engine(info["method"])
        try:
            if eng is DenoiserScorer:
                det.engine_ = DenoiserScorer.load_with(info["method"], tensors, info["state"], det.encoder_, det.device)
            else:
                det.engine_ = eng.load(tensors, info["state"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise InputError(f"{path}: damaged detector bundle ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        det.threshold_ = float(info["threshold"])
        det.score_stats_ = tuple(float(v) for v in info["score_stats"]) if "score_stats" in info else None
        det.n_features_in_ = len(det.encoder_.columns)
        det.feature_names_in_ = np.asarray(det.encoder_.columns, dtype=object)
        return det


def _not_fitted_error():
    """The error class for using an unfitted detector: a PolydiffError, and scikit-learn's NotFittedError too
    when scikit-learn is loaded (its model selection tools catch that class)."""
    return _sklearn_not_fitted() if "sklearn" in sys.modules else PolydiffError


@functools.lru_cache(maxsize=None)
def _sklearn_not_fitted():
    from sklearn.exceptions import NotFittedError

    return type("NotFittedError", (PolydiffError, NotFittedError), {"__module__": __name__})


def score_data(data, out, *, model=None, train=None, method: Optional[str] = None,
               contamination: Optional[float] = None, steps: Optional[int] = None, batch_size: Optional[int] = None,
               seed: int = 0, device=None, save_model=None, plot=None, progress: bool = True, echo=None,
               impute: Optional[str] = None, columns: Optional[str] = None, exclude: Optional[str] = None,
               ids: Optional[str] = None, engine: str = "local", address: Optional[str] = None,
               workers: Optional[int] = None, resume: bool = False, chunk_rows: Optional[int] = None) -> dict:
    """What ``polydiff score`` does for tables (the modality's ``score`` entry): fit a detector on ``train`` (or,
    unsupervised, on ``data`` itself) or load the saved detector ``model``, score ``data`` into ``out`` in
    input order, optionally save the detector and draw the score histogram. Returns the summary.

    ``columns`` / ``exclude``: comma-separated feature columns to use, or to leave out; ``ids``: identifier
    columns copied into ``out`` before the scores (never features). ``echo``: where progress lines go.
    ``engine="ray"``: score on Ray (``address``: a running cluster; ``workers``: actors), fitting stays here;
    ``resume``: finish an interrupted Ray run from its finished parts (see :mod:`polydiff_anomaly.distributed`)."""
    from polydiff.cli import article
    from polydiff.engines import check_engine_options
    from polydiff.viz import plot_histogram

    from .table import Select, is_streamable, read_table, sample_table

    check_engine_options(engine, address, workers)
    if chunk_rows is not None and chunk_rows < 1:
        raise PolydiffError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    chunk_rows = chunk_rows or 100_000
    if resume and engine != "ray":
        raise PolydiffError("--resume finishes an interrupted --engine ray run; local scoring writes its output "
                            "in one go")
    sel = Select.parse(columns, exclude, ids)
    if model is not None:
        det = DiffusionDetector.load(model)
        fixed = [name for name, v in (("contamination", contamination), ("impute", impute), ("steps", steps),
                                      ("train", train)) if v is not None]
        if fixed:
            raise PolydiffError(f"{model}: {fixed[0]} is fixed when a detector is fitted; refit without the saved "
                                f"detector to change it")
        if method and method != det.method:
            raise PolydiffError(f"{model}: {article(det.method)} {det.method} detector; method {method} needs a "
                                f"new detector (fit one without the saved detector)")
        fit = lambda: det  # noqa: E731
    else:
        kw = {k: v for k, v in (("method", method), ("batch_size", batch_size)) if v is not None}
        det = DiffusionDetector(**kw, novelty=train is not None, contamination=0.05 if contamination is None
                                else contamination, steps=steps, impute=impute, random_state=seed, device=device)
        det._check_params()  # a bad parameter stops before the table is read

        def fit():
            src = train if train is not None else data
            rows = (sample_table(src, int(det.max_train_rows), seed=int(seed), select=sel) if is_streamable(src)
                    else read_table(src, select=sel))
            t0 = time.perf_counter()
            det.fit(rows)
            if echo:  # after the fit, so that an error in the input stays the only line
                echo(f"fitted {article(det.method)} {det.method} detector on {len(rows):,} rows of {src} "
                     f"({time.perf_counter() - t0:.2f} s)")
            return det
    if engine == "ray":
        from .distributed import detector_identity, score_on_ray

        identity = (detector_identity(model) if model is not None else
                    {"fit": {**det.get_params(), "device": None}, "train": str(train) if train else None})
        res, det, scores = score_on_ray(data, out, fit, identity=identity, select=sel, flag=True, address=address,
                                        workers=workers, resume=resume, progress=progress, want_scores=bool(plot),
                                        chunk_rows=chunk_rows)
        if save_model:
            det.save(save_model)
        if plot:
            plot_histogram(scores, det.threshold_, plot, title=f"{det.method} scores of {Path(str(data)).name}")
        return {**res, "method": det.method,
                "model": str(save_model or model) if (save_model or model) else None}
    det = fit()
    if save_model:
        det.save(save_model)
    res = det.score_file(data, out, flag=True, progress=progress, select=sel, chunk_rows=chunk_rows)
    scores = res.pop("scores")
    if plot:
        plot_histogram(scores, det.threshold_, plot, title=f"{det.method} scores of {Path(str(data)).name}")
    return {**res, "method": det.method, "min": float(scores.min()), "max": float(scores.max()),
            "mean": float(scores.mean()), "model": str(save_model or model) if (save_model or model) else None}
