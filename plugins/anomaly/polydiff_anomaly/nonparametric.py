"""``dte-np``: nonparametric diffusion-time estimation, the plugin's default scorer.

Diffuse the training rows: at noise level sigma the data distribution becomes the mixture
``mean_i N(x; x_i, sigma^2 I)``, whose exact denoiser is a softmax-weighted average of training rows. Given a
clean row x, the posterior over the diffusion variance ``sigma^2`` that could have produced it is, keeping
only the k nearest training rows, an inverse-gamma distribution whose scale is the mean squared distance of
those rows (Livernoche et al. 2024, "On Diffusion Modeling for Anomaly Detection", the DTE-NP variant).
Its mode is proportional to that mean; the score of a row is its logarithm: the log of the estimated
diffusion time. A normal row sits where the diffused data is dense and needs almost no noise to be
explained; an anomaly needs a lot.

What this implementation adds to the published estimator. Every default was chosen by the selection
protocol of ``benchmarks/anomaly.py`` (chosen on one half of the ADBench datasets, reported on the other):

* **views.** The empirical diffusion runs on several copies of the rows, each a different metric, and the
  calibrated log-times are averaged with weights: the standardized features (``std``), the same features
  centred on their medians and divided by their interquartile spread (``robust``: a few extreme training
  values no longer shrink a column's weight; :class:`RobustScale`) and a per-feature Gaussianized copy
  (``gauss``: each column mapped through its empirical distribution onto normal quantiles; insensitive to
  skew and heavy tails, but it also amplifies the noise inside dense columns, so it weighs a quarter).
* **novelty mode** (``novelty=True``: fit on clean normal rows, score new ones): views std + robust +
  gauss/4, k = 3. Every training row is a reference: a table larger than the search budget is grouped by
  k-means (:class:`ClusterIndex`) and a query searches the rows of the clusters near it, about 1,024 rows
  (a quarter of the reference budget below), so large tables keep their local structure at a fixed cost
  per query. On a table whose varying columns are mostly binary, k is a share of the rows instead (3 per
  4,096, :func:`binary_k`): the nearest few distances there are mostly ties.
* **outlier mode** (the default, unsupervised: fit and score a table that contains its own anomalies): a
  small cluster of anomalies would explain itself, so the reference is 16 random bags of 256 rows (never
  more than a quarter of the table), a row's estimate is averaged over the bags (anomalies rarely land
  together in a small bag), on the robust view with k = 4, plus at half weight a marginal term: the
  closed-form diffusion time of the Gaussianized row under a standard normal data model, which grows with
  the mean squared Gaussianized value (tails of every column). On a table of more than 32 features each bag
  compares rows on its own random 32 of them (feature bagging).
* **calibration.** Components are combined as z-scores whose location and scale come from out-of-bag
  scores of training rows, so the score of a row never depends on the other rows being scored; blocks of a
  fixed shape make that hold bit for bit.

Scoring cost per row is independent of the training-set size: about 3 x 1,024 distance computations in
novelty mode and 4,096 in outlier mode. Beyond 24 features the novelty budget shrinks as 4,096 x 24 / d
rows per view, which keeps the cost per scored row about constant. Beyond 32 features the outlier mode's
bags shrink to 4,096 x 32 / (16 d) rows (at least 64) and each bag sees its own random 32 of the features
(feature bagging): half the distance arithmetic of comparing every feature at d = 64. With
``subspace_budget`` True the budget counts a bag's 32 features instead, so the bags keep 256 rows at any
width (the k-smallest search then sees twice the rows at d = 64, about a third slower to score).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Optional, Tuple

import numpy as np
import torch

__all__ = ["Gaussianizer", "RobustScale", "EmpiricalDTE", "knn_log_time", "subspace_log_time"]


class Gaussianizer:
    """Per-column monotone map onto N(0, 1) quantiles: midranks of the training values (ties share one
    quantile), linear interpolation between at most ``max_knots`` knots, linear tails with slope 1/std."""

    def __init__(self, max_knots: int = 1024):
        self.max_knots = int(max_knots)

    def fit(self, X: np.ndarray, sorted_cols: Optional[np.ndarray] = None) -> "Gaussianizer":
        """``sorted_cols``: :func:`sorted_columns` of ``X`` when the caller has it already."""
        from scipy.special import ndtri

        S = sorted_columns(X) if sorted_cols is None else sorted_cols
        n = S.shape[1]
        knots, z, slope = [], [], []
        for col in S:
            first = np.flatnonzero(np.concatenate([[True], col[1:] != col[:-1]]))  # the distinct values' first places
            u = col[first]
            last = np.append(first[1:], n)
            if len(u) > self.max_knots:
                sel = np.unique(np.linspace(0, len(u) - 1, self.max_knots).round().astype(int))
                u, first, last = u[sel], first[sel], last[sel]
            mid = (first + last - 1) / 2.0
            knots.append(u)
            z.append(ndtri((mid + 1.0) / (n + 1.0)))
            slope.append(1.0 / (col.std() + 1e-12))
        self._set(knots, z, np.asarray(slope))
        return self

    def _set(self, knots, z, slope):
        self.knots, self.z, self.slope = [np.asarray(k, np.float64) for k in knots], [np.asarray(v, np.float64) for v in z], slope
        self.n_features = len(self.knots)
        self._index = None

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The Gaussianized copy of ``X`` (float32). Large inputs look up most columns through a
        :class:`_KnotIndex` (the same values as ``np.interp``, bit for bit) in row blocks on the torch
        threads; the remaining columns go through ``np.interp`` one column per thread."""
        workers = max(1, torch.get_num_threads())
        if X.size < 65536:
            X = np.asarray(X, np.float64)
            out = np.empty(X.shape, np.float32)
            for j in range(X.shape[1]):
                self._column_into(X, out, j, j)
            return out
        if self._index is None:
            self._index = _KnotIndex(self)
        idx = self._index
        X = np.asarray(X)
        out = np.empty(X.shape, np.float32)
        tasks = []
        if len(idx.cols):
            every = len(idx.cols) == X.shape[1]
            rows = max(256, (1 << 15) // len(idx.cols))

            def block(a):  # one block of rows: its own small copies, in cache
                x = X[a:a + rows] if every else X[a:a + rows, idx.cols]
                v = idx.lookup(np.asarray(x, np.float64))
                if every:
                    out[a:a + rows] = v
                else:
                    out[a:a + rows, idx.cols] = v
            tasks += [lambda a=a: block(a) for a in range(0, len(X), rows)]
        if len(idx.rest):
            Xr = np.asfortranarray(X[:, idx.rest], dtype=np.float64)  # contiguous columns for np.interp
            orr = np.empty(Xr.shape, np.float32, order="F")
            tasks += [lambda i=i, j=j: self._column_into(Xr, orr, i, j) for i, j in enumerate(idx.rest)]
        if workers > 1 and len(tasks) > 1:  # numpy releases the GIL in these loops
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda f: f(), tasks))
        else:
            for f in tasks:
                f()
        if len(idx.rest):
            out[:, idx.rest] = orr
        return out

    def _column_into(self, X: np.ndarray, out: np.ndarray, i: int, j: int) -> None:
        """Column ``j`` of the map applied to column ``i`` of ``X`` (a column subset)."""
        u, z, x = self.knots[j], self.z[j], X[:, i]
        if len(u) == 1:
            out[:, i] = (x - u[0]) * self.slope[j]
            return
        v = np.interp(x, u, z)
        v += self.slope[j] * (np.maximum(x - u[-1], 0.0) + np.minimum(x - u[0], 0.0))
        out[:, i] = v

    # persistence: ragged per-column arrays flattened with offsets
    def tensors(self, prefix: str) -> Dict[str, torch.Tensor]:
        lengths = np.asarray([len(k) for k in self.knots], np.int64)
        return {f"{prefix}.knots": torch.from_numpy(np.concatenate(self.knots)),
                f"{prefix}.z": torch.from_numpy(np.concatenate(self.z)),
                f"{prefix}.lengths": torch.from_numpy(lengths),
                f"{prefix}.slope": torch.from_numpy(np.asarray(self.slope, np.float64))}

    @classmethod
    def from_tensors(cls, t: Dict[str, torch.Tensor], prefix: str) -> "Gaussianizer":
        g = cls()
        ends = np.cumsum(t[f"{prefix}.lengths"].numpy())
        starts = np.concatenate([[0], ends[:-1]])
        k, z = t[f"{prefix}.knots"].numpy(), t[f"{prefix}.z"].numpy()
        g._set([k[a:b] for a, b in zip(starts, ends)], [z[a:b] for a, b in zip(starts, ends)], t[f"{prefix}.slope"].numpy())
        return g


def sorted_columns(X: np.ndarray) -> np.ndarray:
    """The columns of ``X`` [n, d], each sorted, as the rows of a float64 array [d, n]; the columns are sorted
    in their own precision (the same order) on the torch threads. ``X`` is left as it is (a column-major
    ``X`` has a contiguous transpose, so the sort works on a copy, never on the caller's rows)."""
    Xt = np.array(np.asarray(X).T, order="C", copy=True)
    workers = max(1, min(torch.get_num_threads(), len(Xt)))
    if workers > 1 and Xt.size >= 65536:  # numpy's sort releases the GIL
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda part: part.sort(axis=1), np.array_split(Xt, workers)))
    else:
        Xt.sort(axis=1)
    return Xt.astype(np.float64, copy=False)


class _KnotIndex:
    """Finds, for many values at once, the knot interval of each (``np.interp``'s binary search) in a few
    vectorised steps instead of one binary search per value.

    Each column's values are mapped to cells of a uniform grid by a monotone map, ``asinh((x - m) / s)`` with
    the median knot ``m`` and half the interquartile knot range ``s`` (the asinh compresses heavy tails, so the
    cells stay about as fine as the knots). The knots that fall in a value's cell bound its interval; a few
    bisection steps over those knots finish the search, and the interpolation uses ``np.interp``'s formula, so
    the values are the same bit for bit. A value whose interval is not confirmed (the map's rounding) is
    recomputed with ``np.interp``. Columns whose cells would need more than ``max_steps`` bisection steps (a
    cluster of knots narrower than the float32 resolution of the map) are left to ``np.interp``.
    """

    def __init__(self, g: "Gaussianizer", per_knot: int = 8, max_steps: int = 2):
        self.g = g
        lens = np.asarray([len(k) for k in g.knots])
        self.G = G = int(min(per_knot * max(lens.max(), 1), 8192))
        cols, steps, params, cells = [], 0, [], []
        for j, (u, n) in enumerate(zip(g.knots, lens)):
            if n < 2:
                continue
            m = u[n // 2]
            s = (u[(3 * n) // 4] - u[n // 4]) / 2
            inv_s = np.float32(1.0 / s if s > 0 else 1.0 / (u[-1] - u[0]))
            t = np.arcsinh(((u - m) * inv_s).astype(np.float32))
            span = t[-1] - t[0]
            if not span > 0:
                continue
            p = (m, inv_s, t[0], np.float32(G) / span)
            c = self._cells(u[:, None], *(np.asarray([v]) for v in p))[:, 0]
            first = np.searchsorted(c, np.arange(G + 1), "left")  # knots in cells before each cell
            need = int(np.diff(first).max()).bit_length()  # bisection steps over a cell's knots + 1 candidates
            if need > max_steps:
                continue
            cols.append(j)
            params.append(p)
            cells.append(first)
            steps = max(steps, need)
        self.cols = np.asarray(cols, np.int64)
        self.rest = np.asarray([j for j in range(g.n_features) if j not in set(cols)], np.int64)
        self.steps = steps
        if not cols:
            return
        self.m, self.inv_s, self.lo_t, self.inv_w = (np.asarray(v) for v in zip(*params))
        self.m = self.m.astype(np.float64)
        lens_c = lens[self.cols]
        starts = np.concatenate([[0], np.cumsum(lens_c)[:-1]]).astype(np.int64)
        self.K = np.concatenate([g.knots[j] for j in cols])
        self.Z = np.concatenate([g.z[j] for j in cols])
        self.S = np.concatenate([np.append((g.z[j][1:] - g.z[j][:-1]) / (g.knots[j][1:] - g.knots[j][:-1]), 0.0)
                                 for j in cols])
        # flat int32 tables (the knots of all columns number far below 2**31): a column's block of G + 1 entries
        self.first_knot = (starts[:, None] + np.stack(cells)).reshape(-1).astype(np.int32)
        self.base = (np.arange(len(cols)) * (G + 1)).astype(np.int32)
        self.lo_cap, self.hi_cap = starts.astype(np.int32), (starts + lens_c - 2).astype(np.int32)
        ends = starts + lens_c - 1
        self.u0, self.u1, self.z0, self.z1 = self.K[starts], self.K[ends], self.Z[starts], self.Z[ends]
        self.tail = np.asarray(g.slope, np.float64)[self.cols]

    def _cells(self, x, m, inv_s, lo_t, inv_w):
        t = np.arcsinh(((x - m) * inv_s).astype(np.float32))
        t -= lo_t
        t *= inv_w
        np.clip(t, 0, self.G - 1, out=t)
        return t.astype(np.int32)

    def lookup(self, x: np.ndarray) -> np.ndarray:
        """The Gaussianized values of ``x`` [rows, len(cols)] (float64)."""
        K = self.K
        c = self._cells(x, self.m, self.inv_s, self.lo_t, self.inv_w)
        c += self.base
        lo = np.maximum(self.first_knot.take(c) - 1, self.lo_cap)
        hi = np.maximum(np.minimum(self.first_knot.take(c + 1) - 1, self.hi_cap), lo)
        for _ in range(self.steps):
            mid = (lo + hi + 1) >> 1
            go = x >= K.take(mid)
            lo = np.where(go, mid, lo)
            hi = np.where(go, hi, mid - 1)
        kj = K.take(lo)
        v = (x - kj) * self.S.take(lo) + self.Z.take(lo)  # np.interp's slope * (x - xp[j]) + fp[j]
        v = np.where(x < self.u0, self.z0, np.where(x >= self.u1, self.z1, v))
        bad = (x >= self.u0) & (x < self.u1) & ~((kj <= x) & (x < K.take(lo + 1)))
        for r, i in zip(*np.nonzero(bad)):
            j = self.cols[i]
            v[r, i] = np.interp(x[r, i], self.g.knots[j], self.g.z[j])
        v += self.tail * (np.maximum(x - self.u1, 0.0) + np.minimum(x - self.u0, 0.0))
        return v


def _merge_smallest(a: list, b: list, k: int) -> list:
    """The k smallest of two sorted k-lists, elementwise: a[0] <= a[1] <= ... (tensors), the same for b.
    The m-th smallest of the union is min over i + j = m of max(a_i, b_j) (a_0 = b_0 = -inf)."""
    out = []
    for m in range(1, k + 1):
        c = None
        for i in range(max(0, m - k), min(m, k) + 1):
            j = m - i
            v = b[j - 1] if i == 0 else a[i - 1] if j == 0 else torch.maximum(a[i - 1], b[j - 1])
            c = v if c is None else torch.minimum(c, v)
        out.append(c)
    return out


def smallest_k_columns(d: torch.Tensor, k: int, lanes: int = 16) -> torch.Tensor:
    """The k smallest values along dimension -2 of ``d`` [..., n, m] (``n`` a multiple of ``lanes``), as
    [..., k, m] in ascending order, exactly the values of ``torch.topk(d, k, -2, largest=False)``.

    No per-column selection: each column of ``n`` values is read as ``n / lanes`` slices of ``lanes`` values;
    every lane keeps its k smallest in a sorted insertion network of elementwise min / max, vectorised over all
    lanes and columns at once, and the lanes' sorted lists are merged pairwise. With the columns innermost
    (the scorer's layout: one column per scored row) every operation runs on contiguous memory, the halves of
    the merges included."""
    v = d.reshape(*d.shape[:-2], d.shape[-2] // lanes, lanes, d.shape[-1])
    best = [v[..., 0, :, :].clone()] + [torch.full(v.shape[:-3] + v.shape[-2:], float("inf"), dtype=d.dtype)
                                        for _ in range(k - 1)]
    for r in range(1, v.shape[-3]):
        e = v[..., r, :, :]
        for j in range(k - 1, 0, -1):  # insert e: every list element takes min(itself, max(its predecessor, e))
            torch.minimum(best[j], torch.maximum(best[j - 1], e), out=best[j])
        torch.minimum(best[0], e, out=best[0])
    while lanes > 1:
        lanes //= 2
        best = _merge_smallest([t[..., :lanes, :] for t in best], [t[..., lanes:, :] for t in best], k)
    return torch.cat(best, -2)


def _lanes_fit(n: int, k: int) -> bool:
    """Whether :func:`smallest_k_columns` serves ``n`` values per column (short columns, small k)."""
    return k <= 4 and n % 32 == 0 and 32 <= n <= 256


def smallest_k(d: torch.Tensor, k: int, block: int = 128) -> torch.Tensor:
    """The k smallest values along the last dimension (unsorted), exactly the values of
    ``torch.topk(..., largest=False)``.

    For long rows it is about three times faster than topk on a CPU: the row is cut into blocks, the k blocks
    with the smallest minima are kept (every one of the k smallest values lies in one of them, because those k
    block minima are themselves k values no larger than the k-th smallest block minimum), and topk runs on
    those k blocks only. Short rows (1 to 8 blocks of 32, k <= 4) go through :func:`smallest_k_columns`.
    """
    n = d.shape[-1]
    if _lanes_fit(n, k) and d.is_floating_point():
        return smallest_k_columns(d.transpose(-1, -2), k).transpose(-1, -2)
    nb = n // block
    if n % block or nb <= k:
        return torch.topk(d, min(k, n), -1, largest=False, sorted=False).values
    blocks = d.reshape(*d.shape[:-1], nb, block)
    keep = torch.topk(blocks.amin(-1), k, -1, largest=False, sorted=False).indices
    cand = torch.gather(blocks, -2, keep.unsqueeze(-1).expand(*keep.shape, block))
    return torch.topk(cand.flatten(-2), k, -1, largest=False, sorted=False).values


def _fixed_chunks(q: torch.Tensor, chunk: int, ids: Optional[torch.Tensor] = None):
    """(start, rows, block, block ids) for the rows of ``q`` in chunks of ``chunk`` rows, every block of the same
    shape: the last, short one is padded with zero rows (id -1), whose results the caller drops. A matrix
    product then runs the same kernel for every query, so a row's value does not depend on the rows scored
    with it."""
    n = len(q)
    pad = torch.zeros(chunk, q.shape[1], dtype=q.dtype) if n % chunk else None
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        qq = q[i:i + chunk]
        qid = None if ids is None else ids[i:i + chunk]
        if m < chunk:
            pad[:m] = qq
            qq = pad
            if qid is not None:
                qid = torch.cat([qid, torch.full((chunk - m,), -1, dtype=qid.dtype)])
        yield i, m, qq, qid


def knn_log_time(refs: torch.Tensor, bags: Tuple[Tuple[int, int], ...], q: torch.Tensor, k: int,
                 exclude: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, chunk: Optional[int] = None) -> torch.Tensor:
    """Mean over bags of log(mean of the k smallest squared distances from each row of ``q`` to the bag).

    ``refs`` holds the bags one after the other; ``bags`` is a tuple of (count, size) groups of equal-size
    bags. ``exclude=(ref_ids, query_ids)`` skips, for each query, the reference rows with its own id (used to
    compute out-of-bag scores of training rows). Queries go in chunks of ``chunk`` rows (default 1,024), so
    that the chunk-by-reference distance block stays in the CPU cache. When every bag is short (the outlier
    mode's bags) the block is laid out reference-by-query and searched with :func:`smallest_k_columns`;
    otherwise it is query-by-reference and searched with :func:`smallest_k`.

    Every chunk has the same shape (the last one is padded with zero rows), so the matrix product runs the
    same kernel for every query: a row's value does not depend on which rows were scored with it, bit for
    bit (a product with fewer rows may take another kernel, whose rounding differs in the last bits).
    """
    n = len(q)
    out = torch.empty(n, dtype=torch.float64)
    columns = all(_lanes_fit(size, min(k, size)) for _, size in bags) and refs.is_floating_point()
    r2 = (refs * refs).sum(1)
    r2 = r2[:, None] if columns else r2[None]
    chunk = max(1, int(chunk or 1024))
    # one distance block for every chunk: a fresh multi-megabyte tensor per chunk costs page faults
    block = torch.empty((len(refs), chunk) if columns else (chunk, len(refs)), dtype=refs.dtype)
    ids = None if exclude is None else exclude[0]
    for i, m, qq, qid in _fixed_chunks(q, chunk, None if exclude is None else exclude[1]):
        # |q - r|^2 = |q|^2 + |r|^2 - 2 q.r; |q|^2 is constant for a query, so it is added after the top-k
        if columns:
            part = torch.addmm(r2, refs, qq.T, alpha=-2, out=block)
        else:
            part = torch.addmm(r2, qq, refs.T, alpha=-2, out=block)
        if ids is not None:
            same = ids[:, None] == qid[None, :] if columns else ids[None, :] == qid[:, None]
            part.masked_fill_(same, float("inf"))
        q2 = (qq * qq).sum(1).double()
        tot = torch.zeros(len(qq), dtype=torch.float64)
        cnt = torch.zeros(len(qq), dtype=torch.float64)
        start = 0
        for count, size in bags:
            kk = min(k, size)
            if columns:  # [count, kk, queries] -> [queries, count, kk]
                v = smallest_k_columns(part[start:start + count * size].view(count, size, len(qq)), kk)
                v = v.permute(2, 0, 1)
            else:
                v = smallest_k(part[:, start:start + count * size].view(len(qq), count, size), kk)
            v = (v.double() + q2[:, None, None]).clamp_min_(0)
            s = torch.log(v.mean(2) + 1e-12)
            if exclude is not None:
                ok = torch.isfinite(v).all(2)
                tot += torch.where(ok, s, torch.zeros_like(s)).sum(1)
                cnt += ok.double().sum(1)
            else:
                tot += s.sum(1)
                cnt += count
            start += count * size
        out[i:i + m] = (tot / cnt.clamp_min(1))[:m]
    return out


def subspace_log_time(refs: torch.Tensor, size: int, feats: torch.Tensor, q: torch.Tensor, k: int,
                      exclude: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, chunk: int = 1024) -> torch.Tensor:
    """:func:`knn_log_time` over bags that each see their own features (feature bagging): bag ``b`` holds rows
    ``b * size`` to ``(b + 1) * size`` of ``refs`` [bags x size, f] and compares them with the columns
    ``feats[b]`` [f] of the queries ``q`` [n, d]; the result is the mean over bags of each bag's log-time.

    One batched product per chunk of queries (every bag's columns gathered at once), with the chunk shape
    fixed as in :func:`knn_log_time`, so a row's value does not depend on the rows scored with it."""
    nb, f = feats.shape
    n = len(q)
    kk = min(k, size)
    out = torch.empty(n, dtype=torch.float64)
    R = refs.reshape(nb, size, f)
    r2 = (R * R).sum(2, keepdim=True)  # [bags, size, 1]
    flat = feats.reshape(-1)
    ids = None if exclude is None else exclude[0].reshape(nb, size, 1)
    block = torch.empty((nb, size, chunk), dtype=refs.dtype)
    for i, m, qq, qid in _fixed_chunks(q, chunk, None if exclude is None else exclude[1]):
        qs = qq.t().contiguous().index_select(0, flat).view(nb, f, chunk)  # every bag's columns: [bags, f, chunk]
        part = torch.baddbmm(r2, R, qs, alpha=-2, out=block)  # -2 q.r + |r|^2: [bags, size, chunk]
        if ids is not None:
            part.masked_fill_(ids == qid[None, None, :], float("inf"))
        if _lanes_fit(size, kk):
            v = smallest_k_columns(part, kk)  # [bags, kk, chunk]
        else:
            v = torch.topk(part, kk, 1, largest=False).values
        q2 = (qs * qs).sum(1).double()  # [bags, chunk]
        v = (v.double() + q2[:, None, :]).clamp_min_(0)
        s = torch.log(v.mean(1) + 1e-12)  # [bags, chunk]
        ok = torch.isfinite(v).all(1)
        tot = torch.where(ok, s, torch.zeros_like(s)).sum(0)
        out[i:i + m] = (tot / ok.double().sum(0).clamp_min(1))[:m]
    return out


class ClusterIndex:
    """Every reference row of one view, grouped by k-means, so that a query compares itself with the rows
    near it instead of a random sample of the table.

    The rows are clustered into groups of about ``size``; a cluster's neighbourhood is the cluster itself and
    the clusters whose centroids are nearest to its centroid, taken until they hold ``budget`` rows. A query
    searches the neighbourhood of the cluster whose centroid is nearest to it: about ``budget`` distance
    computations per query, as for a random sample of ``budget`` rows, but the neighbours found are the
    query's nearest rows in the whole table or, near a cluster's edge, rows a little farther (never nearer).
    The search is exact within the neighbourhood and depends only on the query row (blocks are padded to a
    fixed granularity), so a row's value does not depend on the rows scored with it."""

    def __init__(self, refs, centroids, starts, neigh, neigh_start, ids=None):
        self.refs, self.centroids = refs, centroids
        self.starts, self.neigh, self.neigh_start = starts, neigh, neigh_start
        self.ids = ids  # training-row id of every reference row (needed only while calibrating)
        self._prepare()

    def _prepare(self):
        self.sizes = (self.starts[1:] - self.starts[:-1]).tolist()
        # the reference rows plus one dummy row at +inf distance, which pads every neighbourhood to whole
        # 64-row blocks (the blocked k-smallest search of smallest_k)
        self.refs_ext = torch.cat([self.refs, self.refs.new_zeros(1, self.refs.shape[1])])
        self.r2_ext = torch.cat([(self.refs * self.refs).sum(1), self.refs.new_full((1,), float("inf"))])
        ns, st = self.neigh_start.tolist(), self.starts.tolist()
        self.rows = []
        for h in range(len(self.sizes)):
            rows = torch.cat([torch.arange(st[c], st[c + 1]) for c in self.neigh[ns[h]:ns[h + 1]].tolist()])
            pad = -len(rows) % 64
            self.rows.append(torch.cat([rows, torch.full((pad,), len(self.refs), dtype=torch.int64)]))

    @classmethod
    def build(cls, X: torch.Tensor, ids: torch.Tensor, budget: int, size: int = 256, iters: int = 8,
              seed: int = 0, sample: int = 16384) -> "ClusterIndex":
        """k-means (``iters`` Lloyd steps from random rows, on a random ``sample`` of at most that many rows),
        every row assigned to its nearest centroid, clusters of more than twice ``size`` cut into pieces."""
        n = len(X)
        C = max(1, -(-n // size))
        g = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(n, generator=g)
        S = X[perm[:max(sample, C)]]
        cent = S[:C].clone()
        s2 = (S * S).sum(1)
        for _ in range(iters):
            assign = cls._nearest(S, cent)
            counts = torch.bincount(assign, minlength=C)
            sums = torch.zeros_like(cent).index_add_(0, assign, S)
            empty = counts == 0
            cent = sums / counts.clamp_min(1)[:, None]
            if empty.any():  # an empty cluster restarts at the row farthest from its centroid
                far = torch.topk(s2 - 2 * (S * cent[assign]).sum(1) + (cent[assign] ** 2).sum(1), int(empty.sum())).indices
                cent[empty] = S[far]
        assign = cls._nearest(X, cent)
        # clusters beyond twice the target size are cut into pieces (each with its own centroid)
        parts, pieces = [], []
        order = torch.argsort(assign, stable=True)
        counts = torch.bincount(assign, minlength=C).tolist()
        at = 0
        for c, cnt in enumerate(counts):
            rows = order[at:at + cnt]
            at += cnt
            if cnt == 0:
                continue
            k = max(1, -(-cnt // (2 * size))) if cnt > 2 * size else 1
            for piece in torch.tensor_split(rows, k):
                parts.append(piece)
                pieces.append(X[piece].mean(0))
        perm = torch.cat(parts)
        starts = torch.tensor([0] + list(np.cumsum([len(p) for p in parts])), dtype=torch.int64)
        cent = torch.stack(pieces)
        # neighbourhoods: nearest centroids first (the cluster itself has distance 0) until `budget` rows
        cc = ((cent[:, None, :] - cent[None, :, :]) ** 2).sum(-1)
        sizes = starts[1:] - starts[:-1]
        neigh, neigh_start = [], [0]
        for h in range(len(parts)):
            near = torch.argsort(cc[h], stable=True)
            take = int(torch.searchsorted(torch.cumsum(sizes[near], 0), budget)) + 1
            neigh.append(near[:take])
            neigh_start.append(neigh_start[-1] + len(neigh[-1]))
        return cls(X[perm].contiguous(), cent.contiguous(), starts, torch.cat(neigh),
                   torch.tensor(neigh_start, dtype=torch.int64), ids[perm])

    @staticmethod
    def _nearest(X: torch.Tensor, cent: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Index of the nearest centroid of every row (padded fixed-shape blocks: independent of the batch)."""
        c2 = (cent * cent).sum(1)[None]
        out = torch.empty(len(X), dtype=torch.int64)
        d = torch.empty(chunk, len(cent), dtype=X.dtype)  # reused: see log_time
        for i, m, part, _ in _fixed_chunks(X, chunk):
            # numpy's argmin: the same index (the first smallest) as torch's, about ten times faster on
            # these short rows
            out[i:i + m] = torch.from_numpy(torch.addmm(c2, part, cent.T, alpha=-2, out=d).numpy().argmin(1)[:m])
        return out

    def log_time(self, q: torch.Tensor, k: int, exclude: Optional[torch.Tensor] = None,
                 block: int = 1024) -> torch.Tensor:
        """log(mean of the k smallest squared distances) from every row of ``q`` to its neighbourhood's rows;
        ``exclude``: the training-row id of each query, whose own reference row is skipped. Queries are grouped
        by their nearest centroid; each group is compared with its neighbourhood in blocks of at most
        ``block`` rows, padded to whole 16 rows (the same kernel whatever a block's size)."""
        n = len(q)
        out = torch.empty(n, dtype=torch.float64)
        home = self._nearest(q, self.centroids)
        order = torch.argsort(home, stable=True)
        counts = torch.bincount(home, minlength=len(self.sizes)).tolist()
        if exclude is not None:
            # each training id is one reference row: find the column of a query's own row in its neighbourhood
            # (cluster offsets within the neighbourhood) instead of comparing every id of every column
            pos_of_id = torch.full((int(self.ids.max()) + 1,), -1, dtype=torch.int64)
            pos_of_id[self.ids] = torch.arange(len(self.ids))
            starts = self.starts
            cluster_of_pos = torch.repeat_interleave(torch.arange(len(self.sizes)), starts[1:] - starts[:-1])
            ns = self.neigh_start.tolist()
        # one buffer each for the neighbourhood rows, the query block and the distance block, reused for
        # every group: allocations of this size go to fresh pages on every call otherwise (glibc hands blocks
        # above its mmap threshold back to the system), which made the speed vary from process to process
        width = max((len(r) for r in self.rows), default=0)
        tall = -(-min(block, max(counts, default=0)) // 16) * 16
        refs_buf = q.new_empty(width, q.shape[1])
        r2_buf = self.r2_ext.new_empty(width)
        q_buf = q.new_zeros(tall, q.shape[1])
        d_buf = q.new_empty(tall * width)
        at = 0
        for h, cnt in enumerate(counts):
            if not cnt:
                continue
            group, at = order[at:at + cnt], at + cnt
            rows = self.rows[h]
            refs = torch.index_select(self.refs_ext, 0, rows, out=refs_buf[:len(rows)])
            r2 = torch.index_select(self.r2_ext, 0, rows, out=r2_buf[:len(rows)])[None]
            if exclude is not None:
                near = self.neigh[ns[h]:ns[h + 1]]
                offset = torch.full((len(self.sizes),), -1, dtype=torch.int64)
                sizes = starts[near + 1] - starts[near]
                offset[near] = torch.cumsum(sizes, 0) - sizes
                pos = pos_of_id[exclude[group]]
                known = pos >= 0
                pos = pos.clamp_min(0)
                c = cluster_of_pos[pos]
                col = offset[c] + (pos - starts[c])
                present = known & (offset[c] >= 0)  # the query's own row lies in its neighbourhood
            for i in range(0, cnt, block):
                idx = group[i:i + block]
                m = len(idx)
                qq = q_buf[:-(-m // 16) * 16]
                qq[m:] = 0
                torch.index_select(q, 0, idx, out=qq[:m])
                d = torch.addmm(r2, qq, refs.T, alpha=-2, out=d_buf[:len(qq) * len(rows)].view(len(qq), len(rows)))
                if exclude is not None:
                    sel = present[i:i + m]
                    d[torch.arange(m)[sel], col[i:i + m][sel]] = float("inf")
                v = smallest_k(d, k, block=64)[:m].double()
                v = (v + (qq[:m] * qq[:m]).sum(1).double()[:, None]).clamp_min_(0)
                out[idx] = torch.log(v.mean(1) + 1e-12)
        return out

    def tensors(self, prefix: str) -> Dict[str, torch.Tensor]:
        return {f"{prefix}.refs": self.refs, f"{prefix}.centroids": self.centroids, f"{prefix}.starts": self.starts,
                f"{prefix}.neigh": self.neigh, f"{prefix}.neigh_start": self.neigh_start}

    @classmethod
    def from_tensors(cls, t: Dict[str, torch.Tensor], prefix: str) -> "ClusterIndex":
        return cls(t[f"{prefix}.refs"].float().contiguous(), t[f"{prefix}.centroids"].float().contiguous(),
                   t[f"{prefix}.starts"].long(), t[f"{prefix}.neigh"].long(), t[f"{prefix}.neigh_start"].long())


def binary_k(sorted_cols: np.ndarray, k: int, fraction: float, share: int = 4096, cap: int = 64) -> int:
    """k for a table whose columns (``sorted_cols``: :func:`sorted_columns`) are mostly binary: when at least
    ``fraction`` of the columns that vary take exactly two values, the distances between rows take few
    values and the nearest few neighbours of a row are mostly ties, so k becomes a share of the rows (k per
    ``share`` rows, the resolution k has on a table of ``share`` rows), at most ``cap``; otherwise k."""
    n = sorted_cols.shape[1]
    if n < 2:
        return k
    distinct = 1 + (sorted_cols[:, 1:] != sorted_cols[:, :-1]).sum(1)
    varying = distinct > 1
    if not varying.any() or (distinct[varying] == 2).mean() < fraction:
        return k
    return int(min(cap, max(k, round(k * n / share))))


class RobustScale:
    """Per-column rescaling by a robust spread: a column is centred on its median and divided by its
    interquartile range (over 1.349, the IQR of a unit normal) instead of its standard deviation, so a few
    extreme training values no longer shrink the column's weight in distances. The factor over the standard
    deviation's scale is capped at ``cap``; a column whose middle half is constant keeps the standard scale."""

    def __init__(self, cap: float = 10.0):
        self.cap = float(cap)

    def fit(self, X: np.ndarray, sorted_cols: Optional[np.ndarray] = None) -> "RobustScale":
        """``sorted_cols``: :func:`sorted_columns` of ``X`` when the caller has it already."""
        X = np.asarray(X, np.float64)
        if sorted_cols is None:
            q25, q50, q75 = np.percentile(X, [25, 50, 75], axis=0)
        else:  # the same quantiles (they depend on the values only), found quickly in sorted rows
            q25, q50, q75 = np.percentile(sorted_cols, [25, 50, 75], axis=1)
        sd = X.std(0)
        iqr_sd = (q75 - q25) / 1.349
        ok = iqr_sd > 1e-9 * np.maximum(sd, 1e-12)
        self.median = q50
        self.factor = np.where(ok, np.minimum(sd / np.where(ok, iqr_sd, 1.0), self.cap), 1.0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """float32 ``(X - median) * factor``, computed in float64."""
        from .encoder import standardize

        return standardize(X, self.median, self.factor)

    def tensors(self, prefix: str) -> Dict[str, torch.Tensor]:
        return {f"{prefix}.median": torch.from_numpy(self.median), f"{prefix}.factor": torch.from_numpy(self.factor)}

    @classmethod
    def from_tensors(cls, t: Dict[str, torch.Tensor], prefix: str) -> "RobustScale":
        r = cls()
        r.median, r.factor = t[f"{prefix}.median"].double().numpy(), t[f"{prefix}.factor"].double().numpy()
        return r


#: the two operating modes; see the module docstring. ``views``: the weight of each view's calibrated
#: log-time in the score; ``marginal``: the weight of the Gaussianized marginal term (0: not used); ``k``:
#: neighbours per estimate. ``ref_budget`` caps reference rows x features (the distance computation's cost
#: per scored row and view): beyond 24 features the novelty reference shrinks from 4,096 rows, beyond 32 the
#: outlier mode's bags shrink from 256 rows, to no fewer than ``min_refs`` rows in all. ``index``: a table
#: larger than ``index_fraction`` of that budget keeps every row as a reference, searched through a
#: :class:`ClusterIndex` (neighbourhoods of that many rows). ``bag_fraction``: no bag holds more than that
#: fraction of the table. ``binary_fraction``: a table whose varying columns are at least that fraction binary
#: sizes k as a share of its rows (:func:`binary_k`). ``budget_bags``: the reference budget shrinks the number
#: of outlier bags instead of their rows (used by the small-bag configurations of the benchmark). The defaults were chosen by the selection protocol of ``benchmarks/anomaly.py``.
NOVELTY = {"views": {"std": 1.0, "robust": 1.0, "gauss": 0.25}, "k": 3, "bags": ((1, 4096),), "marginal": 0.0,
           "ref_budget": 4096 * 24, "min_refs": 1024, "index": True, "index_fraction": 0.25, "binary_fraction": 0.8}
OUTLIER = {"views": {"robust": 1.0}, "k": 4, "bags": ((16, 256),), "marginal": 0.5, "bag_fraction": 0.25,
           "ref_budget": 4096 * 32, "min_refs": 1024, "subspace": 32, "subspace_budget": False}
VIEWS = ("std", "robust", "gauss")


class EmpiricalDTE:
    """Fitted state of the ``dte-np`` scorer over already standardized rows (float32 arrays)."""

    name = "dte-np"

    def __init__(self, novelty: bool = False, k: Optional[int] = None, n_calib: int = 2048, mode: Optional[dict] = None):
        self.novelty, self.n_calib = bool(novelty), int(n_calib)
        mode = dict(mode or (NOVELTY if self.novelty else OUTLIER))
        self.k = int(k if k is not None else mode.get("k", 3))
        self.weights = {v: float(w) for v, w in dict(mode["views"]).items() if float(w) > 0}
        unknown = set(self.weights) - set(VIEWS)
        if unknown or not self.weights:
            raise ValueError(f"dte-np views must be weights over {', '.join(VIEWS)}, got {mode['views']!r}")
        self.views = tuple(v for v in VIEWS if v in self.weights)
        self.marginal = float(mode.get("marginal", 0.0))
        self.bag_spec = tuple(tuple(b) for b in mode["bags"])
        self.ref_budget, self.min_refs = mode.get("ref_budget"), int(mode.get("min_refs", 1))
        self.bag_fraction = mode.get("bag_fraction")
        #: outlier mode on a table wider than this: each bag sees its own random subset of this many features
        #: (feature bagging); None: every feature
        self.subspace = int(mode["subspace"]) if mode.get("subspace") else None
        self.feats: Optional[torch.Tensor] = None  # [bags, subspace] feature indices, when subspaces are used
        #: with subspaces, whether the reference budget counts a bag's features (larger bags, more search per
        #: row) or the table's (bags as without subspaces, half the distance arithmetic at twice the subspace)
        self.subspace_budget = bool(mode.get("subspace_budget", True))
        #: whether the reference budget shrinks the number of bags (each keeps its rows) instead of their size
        self.budget_bags = bool(mode.get("budget_bags", False))
        self.view_refs = {v: float(f) for v, f in dict(mode.get("view_refs") or {}).items() if v in self.weights}
        self.use_index = bool(mode.get("index", False))
        self.index_fraction = float(mode.get("index_fraction", 1.0))
        #: tables whose varying columns are at least this fraction binary size k as a share of the reference
        #: rows (``binary_share`` rows per unit of k); None: k is the count above
        self.binary_fraction = mode.get("binary_fraction")
        self.binary_share = int(mode.get("binary_share") or 4096)
        self.index: Dict[str, ClusterIndex] = {}
        #: scores of the training rows, each left out of its own neighbourhood (set by a fit with an index)
        self.train_scores: Optional[np.ndarray] = None

    def _bag_spec(self, d: int, n: Optional[int] = None):
        """The bag layout for ``d`` features and ``n`` training rows: the reference rows (all bags) capped by the
        reference budget, a single bag in steps of 128 rows, equal bags in steps of 32; with ``bag_fraction``,
        bags of several also hold at most that fraction of the rows (no fewer than 32), so that a small table's
        bags still leave most rows out."""
        out = []
        if self._subspaces(d) and self.subspace_budget:
            d = self.subspace
        for count, size in self.bag_spec:
            step = 128 if count == 1 else 32
            if self.ref_budget and self.budget_bags and count > 1:  # the budget takes bags away, not rows
                count = min(count, max(1, max(self.min_refs, self.ref_budget // max(d, 1)) // size))
            elif self.ref_budget:
                cap = max(self.min_refs // count, self.ref_budget // max(d, 1) // count // step * step)
                size = min(size, cap)
            if self.bag_fraction and count > 1 and n:
                size = min(size, max(32, int(n * self.bag_fraction) // 32 * 32))
            out.append((count, size))
        return tuple(out)

    def _subspaces(self, d: int) -> bool:
        """Whether bags of a ``d``-feature table see subsets of the features: outlier mode, one group of
        several bags, and more features than the subspace holds."""
        return (not self.novelty and self.subspace is not None and d > self.subspace and not self.view_refs
                and len(self.bag_spec) == 1 and self.bag_spec[0][0] > 1)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, x, *, seed: int = 0, novelty: bool = False, mode: Optional[dict] = None, **_) -> "EmpiricalDTE":
        self = cls(novelty=novelty, mode=mode)
        X = np.asarray(x, np.float32)
        n = len(X)
        rng = np.random.default_rng(seed)
        need_gauss, need_robust = "gauss" in self.views or self.marginal > 0, "robust" in self.views
        S = sorted_columns(X) if need_gauss or need_robust or self.binary_fraction else None
        if self.binary_fraction:
            self.k = binary_k(S, self.k, self.binary_fraction, self.binary_share)
        self.gauss = Gaussianizer().fit(X, S) if need_gauss else None
        self.robust = RobustScale().fit(X, S) if need_robust else None
        del S
        spec = self._bag_spec(X.shape[1], n)
        if self.use_index and len(spec) == 1 and spec[0][0] == 1:
            budget = max(128, int(spec[0][1] * self.index_fraction))
            if budget < n:
                return self._fit_index(X, budget, rng, seed)
        idx, bags = [], []
        for count, size in spec:
            if size >= n:
                idx.append(np.arange(n))
                bags.append((1, n))
            else:
                idx += [rng.choice(n, size, replace=False) for _ in range(count)]
                bags.append((count, size))
        src = np.concatenate(idx)
        self.bags = tuple(bags)
        if self._subspaces(X.shape[1]) and len(idx) > 1:
            d = X.shape[1]
            self.feats = torch.from_numpy(np.stack([np.sort(rng.choice(d, self.subspace, replace=False))
                                                    for _ in idx]).astype(np.int64))
        self.refs, ids = {}, {}
        for v in self.views:
            keep = self._view_rows(v)
            ids[v] = torch.from_numpy(src[keep].astype(np.int64))
            rows = self._view(X[src[keep]], v)
            if self.feats is not None:  # each bag's rows keep that bag's features only
                size = self.bags[0][1]
                rows = np.concatenate([rows[b * size:(b + 1) * size][:, f] for b, f in enumerate(self.feats.numpy())])
            self.refs[v] = torch.from_numpy(np.ascontiguousarray(rows))
        # calibration: out-of-bag log-times of training rows (a row never counts as its own neighbour)
        cal = np.sort(rng.choice(n, min(self.n_calib, n), replace=False))
        if self.novelty:  # every training row left out of its own reference: its score as a new row's
            comps = self._components(X, exclude=(ids, torch.arange(n)))
            self.stats = {name: (float(np.median(c[cal])), float(c[cal].std()) + 1e-6) for name, c in comps.items()}
            self.train_scores = self._combine(comps)
            return self
        comps = self._components(X[cal], exclude=(ids, torch.from_numpy(cal.astype(np.int64))))
        self.stats = {name: (float(np.median(c)), float(c.std()) + 1e-6) for name, c in comps.items()}
        return self

    def _fit_index(self, X: np.ndarray, budget: int, rng, seed: int) -> "EmpiricalDTE":
        """Novelty mode on a table larger than the reference budget: every row is a reference, searched
        through a :class:`ClusterIndex` at the budget's cost per query."""
        n = len(X)
        self.bags = ((1, budget),)
        ids = torch.arange(n)
        g = self.gauss.transform(X) if self.gauss is not None else None
        comps = {}
        for j, v in enumerate(self.views):
            part = budget if v not in self.view_refs else max(128, int(budget * self.view_refs[v]))
            Xv = torch.from_numpy(np.ascontiguousarray(self._view(X, v, g)))
            self.index[v] = ClusterIndex.build(Xv, ids, part, seed=seed * 101 + j)
            # every training row's log-time with the row itself left out of its neighbourhood: the same
            # values a query with that row's features would get from the other rows
            comps[v] = self.index[v].log_time(Xv, self.k, exclude=ids).numpy()
        if self.marginal > 0:
            comps["marginal"] = (g.astype(np.float64) ** 2).mean(1)
        self.refs = {}
        cal = np.sort(rng.choice(n, min(self.n_calib, n), replace=False))
        self.stats = {name: (float(np.median(c[cal])), float(c[cal].std()) + 1e-6) for name, c in comps.items()}
        self.train_scores = self._combine(comps)
        for index in self.index.values():
            index.ids = None  # row ids serve the calibration only
        return self

    def _view_bags(self, view: str):
        """The bag layout of ``view``: with a ``view_refs`` fraction, the first part of every bag (whole
        multiples of 32 rows for bags of several), else the full bags."""
        f = self.view_refs.get(view)
        if not f or f >= 1:
            return self.bags
        return tuple((count, min(size, max(32, int(size * f) // (32 if count > 1 else 1) * (32 if count > 1 else 1))))
                     for count, size in self.bags)

    def _view_rows(self, view: str) -> np.ndarray:
        """Positions, in the full reference rows, of the rows ``view`` searches."""
        keep, start = [], 0
        for (count, size), (_, part) in zip(self.bags, self._view_bags(view)):
            for b in range(count):
                keep.append(np.arange(start + b * size, start + b * size + part))
            start += count * size
        return np.concatenate(keep)

    def _view(self, X: np.ndarray, view: str, gauss: Optional[np.ndarray] = None) -> np.ndarray:
        if view == "std":
            return np.ascontiguousarray(X, np.float32)
        if view == "robust":
            return self.robust.transform(X)
        if view == "gauss":
            return gauss if gauss is not None else self.gauss.transform(X)
        raise ValueError(f"unknown view {view!r}")

    def _components(self, X: np.ndarray, exclude=None) -> Dict[str, np.ndarray]:
        out = {}
        g = self.gauss.transform(X) if self.gauss is not None else None
        for v in self.views:
            q = torch.from_numpy(np.ascontiguousarray(self._view(X, v, g)))
            if v in self.index:
                out[v] = self.index[v].log_time(q, self.k, exclude=None if exclude is None else exclude[1]).numpy()
            elif self.feats is not None:
                ex = None if exclude is None else (exclude[0][v], exclude[1])
                out[v] = subspace_log_time(self.refs[v], self.bags[0][1], self.feats, q, self.k, exclude=ex).numpy()
            else:
                ex = None if exclude is None else (exclude[0][v], exclude[1])
                out[v] = knn_log_time(self.refs[v], self._view_bags(v), q, self.k, exclude=ex).numpy()
        if self.marginal > 0:
            # diffusion time of the Gaussianized row under N(0, I) data: sigma^2 = mean(g^2) - 1 (mode)
            out["marginal"] = (g.astype(np.float64) ** 2).mean(1)
        return out

    # ------------------------------------------------------------------ scoring
    def score(self, x) -> np.ndarray:
        """The weighted mean of the calibrated components (z-scores under the out-of-bag training rows)."""
        X = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
        return self._combine(self._components(X))

    def _combine(self, comps: Dict[str, np.ndarray]) -> np.ndarray:
        weights = {**self.weights, "marginal": self.marginal}
        total = np.zeros(len(next(iter(comps.values()))))
        for name, c in comps.items():
            med, sd = self.stats[name]
            total += weights[name] * (c - med) / sd
        return total / sum(weights[name] for name in comps)

    # ------------------------------------------------------------------ persistence
    def bundle(self) -> Tuple[Dict[str, torch.Tensor], dict]:
        tensors = {f"refs.{v}": r.contiguous() for v, r in self.refs.items()}
        for v, index in self.index.items():
            tensors.update(index.tensors(f"index.{v}"))
        if self.gauss is not None:
            tensors.update(self.gauss.tensors("gauss"))
        if self.robust is not None:
            tensors.update(self.robust.tensors("robust"))
        if self.feats is not None:
            tensors["feats"] = self.feats.contiguous()
        meta = {"novelty": self.novelty, "k": self.k, "n_calib": self.n_calib, "bags": [list(b) for b in self.bags],
                "views": self.weights, "view_refs": self.view_refs, "marginal": self.marginal,
                "index": sorted(self.index), "subspace": self.subspace,
                "stats": {k: list(v) for k, v in self.stats.items()}}
        return tensors, meta

    @classmethod
    def load(cls, tensors: Dict[str, torch.Tensor], meta: dict) -> "EmpiricalDTE":
        stats = meta["stats"]
        if "views" in meta:
            mode = {"views": meta["views"], "marginal": meta.get("marginal", 0.0), "view_refs": meta.get("view_refs")}
        else:  # written before views had weights: every component it calibrated counts once
            mode = {"views": {v: 1.0 for v in stats if v in VIEWS}, "marginal": 1.0 if "marginal" in stats else 0.0}
        self = cls(novelty=meta["novelty"], k=meta["k"], n_calib=meta["n_calib"],
                   mode={**mode, "bags": meta["bags"], "subspace": meta.get("subspace")})
        self.bags = tuple(tuple(int(v) for v in b) for b in meta["bags"])
        self.index = {v: ClusterIndex.from_tensors(tensors, f"index.{v}") for v in meta.get("index", [])}
        self.refs = {v: tensors[f"refs.{v}"].float().contiguous() for v in self.views if v not in self.index}
        self.gauss = Gaussianizer.from_tensors(tensors, "gauss") if "gauss.knots" in tensors else None
        self.robust = RobustScale.from_tensors(tensors, "robust") if "robust.median" in tensors else None
        self.stats = {k: (float(v[0]), float(v[1])) for k, v in stats.items()}
        self.feats = tensors["feats"].long() if "feats" in tensors else None
        return self
