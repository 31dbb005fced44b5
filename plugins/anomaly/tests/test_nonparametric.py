"""The dte-np internals: exact k-smallest search, the Gaussianizer, the reference budget, calibration."""
import numpy as np
import pytest
import torch
from scipy.stats import norm

from polydiff_anomaly import nonparametric as NP


@pytest.mark.parametrize("shape", [(7, 4096), (5, 16, 256), (3, 1000), (4, 130)])
def test_smallest_k_matches_topk(shape):
    d = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    d[..., 5] = d[..., 6]  # ties
    got = NP.smallest_k(d, 3).sort(-1).values
    want = torch.topk(d, 3, -1, largest=False).values.sort(-1).values
    assert torch.equal(got, want)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(9, 16, 256), (4, 64), (6, 3, 96), (2, 128)])
def test_smallest_k_of_short_rows_matches_topk_with_ties_and_inf(shape, k):
    """The short-row path (an insertion network per lane, then pairwise merges) is exact: ties, repeated
    minima and +inf (excluded neighbours) included."""
    g = torch.Generator().manual_seed(k)
    d = torch.randint(0, 20, shape, generator=g).float()  # many ties
    d[..., 3] = float("inf")
    d.view(-1, shape[-1])[0, :] = float("inf")  # a row of nothing but excluded neighbours
    d.view(-1, shape[-1])[-1, : shape[-1] - 2] = float("inf")  # a row with only two finite values
    got = NP.smallest_k(d, k).sort(-1).values
    want = torch.topk(d, k, -1, largest=False).values.sort(-1).values
    assert torch.equal(got, want)


def _train(n=5000, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(size=n), rng.exponential(size=n), rng.integers(0, 3, size=n)])[:, :d]
    return X.astype(np.float32)


def test_gaussianizer_maps_training_columns_onto_normal_quantiles():
    X = _train()
    g = NP.Gaussianizer().fit(X)
    Z = g.transform(X)
    for j in (0, 1):  # continuous columns: the transform is the normal quantile of the rank
        zs = np.sort(Z[:, j])
        want = norm.ppf((np.arange(len(zs)) + 1) / (len(zs) + 1))
        err = np.abs(zs - want)  # knots are subsampled to 1,024: exact at the knots, interpolated between
        assert err[50:-50].max() < 0.02 and err.max() < 0.2
    assert len(np.unique(Z[:, 2])) == 3  # ties share one value
    # monotone in every column, linear tails with slope 1/std beyond the training range
    x = np.linspace(-10, 10, 201, dtype=np.float32)[:, None].repeat(3, 1)
    z = g.transform(x)
    assert (np.diff(z, axis=0) >= 0).all()
    hi = X[:, 0].max()
    probe = np.array([[hi + 1, 0, 0], [hi + 2, 0, 0]], np.float32)
    step = np.diff(g.transform(probe)[:, 0])[0]
    assert step == pytest.approx(1 / X[:, 0].astype(np.float64).std(), rel=1e-4)


def test_gaussianizer_threaded_equals_sequential_and_round_trips():
    X = _train(n=30000)
    g = NP.Gaussianizer().fit(X)
    torch.set_num_threads(2)
    a = g.transform(X)  # 90,000 values: the column-parallel path
    torch.set_num_threads(1)
    try:
        b = g.transform(X)
    finally:
        torch.set_num_threads(2)
    assert np.array_equal(a, b)
    h = NP.Gaussianizer.from_tensors(g.tensors("g"), "g")
    assert np.array_equal(h.transform(X[:100]), a[:100])
    const = NP.Gaussianizer().fit(np.ones((10, 1), np.float32))
    assert np.isfinite(const.transform(np.array([[1.0], [3.0]], np.float32))).all()


@pytest.mark.parametrize("d,refs", [(8, 4096), (24, 4096), (32, 3072), (64, 1536), (100, 1024), (1000, 1024)])
def test_novelty_neighbourhoods_follow_the_reference_budget(d, refs):
    """Up to 24 features a query searches 1,024 reference rows (a quarter of the 4,096-row budget); beyond, the
    budget shrinks as 4,096 x 24 / d rows, to no fewer than 1,024 (so 256 searched)."""
    X = np.random.default_rng(0).normal(size=(3000, d)).astype(np.float32)
    est = NP.EmpiricalDTE.fit(X, novelty=True)
    assert est.bags == ((1, refs // 4),) and set(est.index) == set(est.views)
    for index in est.index.values():
        assert index.refs.shape == (3000, d)
        assert min(len(r) for r in index.rows) >= refs // 4 and max(len(r) for r in index.rows) <= refs // 4 + 640


@pytest.mark.parametrize("d,size", [(8, 256), (32, 256), (40, 192), (64, 128), (100, 64), (1000, 64)])
def test_outlier_bags_see_at_most_32_features(d, size):
    """The default outlier bags: 16 of 256 rows up to 32 features, then 4,096 x 32 / (16 d) rows (steps of
    32, at least 64); beyond 32 features each bag compares its own 32 of them."""
    X = np.random.default_rng(0).normal(size=(3000, d)).astype(np.float32)
    est = NP.EmpiricalDTE.fit(X, novelty=False)
    assert est.bags == ((16, size),) and est.refs["robust"].shape == (16 * size, min(d, 32))
    assert (est.feats is None) == (d <= 32)
    # the budget counted in a bag's features instead: 256 rows at every width
    wide = NP.EmpiricalDTE.fit(X, novelty=False, mode={**NP.OUTLIER, "subspace_budget": True})
    assert wide.bags == ((16, 256),) and wide.refs["robust"].shape == (16 * 256, min(d, 32))


@pytest.mark.parametrize("d,size", [(8, 256), (32, 256), (40, 192), (64, 128), (100, 64), (1000, 64)])
def test_outlier_bags_without_subspaces_shrink_beyond_32_features(d, size):
    """Without feature bagging: 16 bags of 256 rows up to 32 features; then 4,096 x 32 / (16 d) rows per bag
    in steps of 32, at least 1,024 reference rows in all."""
    X = np.random.default_rng(0).normal(size=(3000, d)).astype(np.float32)
    est = NP.EmpiricalDTE.fit(X, novelty=False, mode={**NP.OUTLIER, "subspace": None})
    assert est.bags == ((16, size),) and est.refs["robust"].shape == (16 * size, d)


@pytest.mark.parametrize("d,count", [(8, 128), (32, 128), (64, 64), (100, 40), (1000, 32)])
def test_the_budget_can_take_bags_away_instead_of_rows(d, count):
    """``budget_bags``: many small bags keep their rows on a wide table, and the reference budget
    (4,096 x 32 / d rows, at least 1,024) decides how many there are; the scores are each bag's exact
    log-time in its own features, averaged."""
    X = np.random.default_rng(0).normal(size=(3000, d)).astype(np.float32)
    mode = {**NP.OUTLIER, "bags": ((128, 32),), "budget_bags": True}
    est = NP.EmpiricalDTE.fit(X, novelty=False, mode=mode)
    assert est.bags == ((count, 32),) and est.refs["robust"].shape == (count * 32, min(d, 32))
    if d > 32:
        assert tuple(est.feats.shape) == (count, 32)
    q = torch.from_numpy(est.robust.transform(X[:40]))
    refs = est.refs["robust"]
    feats = est.feats if est.feats is not None else [torch.arange(d)] * count
    want = torch.stack([_exact_log_time(refs[b * 32:(b + 1) * 32], q[:, f], est.k) for b, f in enumerate(feats)]).mean(0)
    got = (NP.subspace_log_time(refs, 32, est.feats, q, est.k) if est.feats is not None
           else NP.knn_log_time(refs, est.bags, q, est.k))
    assert torch.allclose(got.double(), want.double(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n,size", [(129, 32), (300, 64), (700, 160), (3000, 256)])
def test_outlier_bags_leave_most_rows_of_a_small_table_out(n, size):
    """No bag holds more than a quarter of the table (whole 32 rows, at least 32): a small table's anomalies
    rarely meet in a bag."""
    X = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    assert NP.EmpiricalDTE.fit(X, novelty=False).bags == ((16, size),)


def test_scores_do_not_depend_on_the_rows_scored_together_and_rank_outliers_high():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 5)).astype(np.float32)
    for novelty in (True, False):
        est = NP.EmpiricalDTE.fit(X, novelty=novelty, seed=0)
        Q = np.vstack([rng.normal(size=(200, 5)), rng.normal(size=(20, 5)) * 0.5 + 6]).astype(np.float32)
        s = est.score(Q)
        assert np.allclose(est.score(Q[:7]), s[:7])
        assert s[200:].min() > np.quantile(s[:200], 0.95)


def test_out_of_bag_exclusion_skips_a_rows_own_copy():
    refs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    q = refs[:1]
    with_self = NP.knn_log_time(refs, ((1, 4),), q, 1)
    excluded = NP.knn_log_time(refs, ((1, 4),), q, 1, exclude=(torch.arange(4), torch.tensor([0])))
    assert with_self.item() < -20  # log of ~0: the row itself
    assert excluded.item() == pytest.approx(np.log(1.0 + 1e-12), abs=1e-6)  # nearest other row at distance 1


@pytest.mark.parametrize("k,n", [(1, 160), (3, 160), (4, 160), (4, 32), (3, 32)])
def test_smallest_k_columns_matches_topk_along_the_column(k, n):
    g = torch.Generator().manual_seed(10 + k)
    d = torch.randint(0, 15, (3, n, 37), generator=g).float()  # [bags, values, queries], many ties
    d[:, 7] = float("inf")
    d[1, :, 0] = float("inf")  # a column of nothing but excluded neighbours
    got = NP.smallest_k_columns(d, k)
    want = torch.topk(d, k, -2, largest=False).values.sort(-2).values
    assert got.shape == (3, k, 37)
    assert torch.equal(got, want)  # ascending, exact


def _brute_log_time(refs, bags, q, k, exclude=None):
    d2 = ((q[:, None, :].double() - refs[None].double()) ** 2).sum(-1)
    if exclude is not None:
        ids, qids = exclude
        d2[ids[None, :] == qids[:, None]] = float("inf")
    out, start = [], 0
    for count, size in bags:
        for _ in range(count):
            v = torch.topk(d2[:, start:start + size], min(k, size), -1, largest=False).values
            out.append(torch.where(torch.isfinite(v).all(1), torch.log(v.mean(1) + 1e-12), torch.nan))
            start += size
    return torch.nanmean(torch.stack(out, 1), 1)


@pytest.mark.parametrize("bags", [((6, 64),), ((2, 96), (3, 128)), ((1, 300),), ((1, 20), (2, 64))])
@pytest.mark.parametrize("chunk", [None, 7])
def test_knn_log_time_matches_brute_force_in_both_layouts(bags, chunk):
    """Short bags take the reference-by-query layout, other bags the query-by-reference one; both give the
    brute-force value, with out-of-bag exclusion and a last chunk shorter than the others."""
    g = torch.Generator().manual_seed(3)
    n_ref = sum(c * s for c, s in bags)
    refs = torch.randn(n_ref, 5, generator=g)
    q = torch.cat([refs[:11], torch.randn(30, 5, generator=g)])  # some queries are reference rows
    ids = torch.randint(0, 40, (n_ref,), generator=g)
    ids[:11] = torch.arange(11)
    ex = (ids, torch.arange(len(q)))
    for exclude in (None, ex):
        got = NP.knn_log_time(refs, bags, q, 3, exclude=exclude, chunk=chunk)
        want = _brute_log_time(refs, bags, q, 3, exclude=exclude)
        assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def _mixed_columns(n, rng):
    return np.column_stack([
        rng.normal(size=n), rng.lognormal(0, 2, n), rng.integers(0, 5, n), rng.standard_t(1, n),
        np.where(rng.random(n) < 0.97, rng.normal(0, 1e-3, n), 1e6 + rng.normal(size=n)),  # a far, tight cluster
        rng.exponential(size=n) ** 3, np.full(n, 3.0), rng.normal(size=n) * 5 + 2,
    ]).astype(np.float32)


def test_gaussianizer_knot_index_gives_np_interp_values_bit_for_bit():
    rng = np.random.default_rng(4)
    g = NP.Gaussianizer().fit(_mixed_columns(20000, rng))
    X = _mixed_columns(30000, rng)
    X[:500] = _mixed_columns(20000, np.random.default_rng(4))[:500]  # training values: exactly on knots
    X[500:600] *= 1000  # far beyond the training range
    want = np.column_stack([np.interp(X[:, j].astype(np.float64), g.knots[j], g.z[j])
                            + g.slope[j] * (np.maximum(X[:, j] - g.knots[j][-1], 0.0)
                                            + np.minimum(X[:, j] - g.knots[j][0], 0.0))
                            if len(g.knots[j]) > 1 else (X[:, j] - g.knots[j][0]) * g.slope[j]
                            for j in range(X.shape[1])]).astype(np.float32)
    got = g.transform(X)  # 240,000 values: the knot index serves the well-spread columns
    assert len(g._index.cols) >= 3 and len(g._index.rest) >= 1
    assert np.array_equal(got, want)
    # a wrong cell table is caught: every value's interval is checked and recomputed when it is not confirmed
    g._index.first_knot[:] = g._index.lo_cap.repeat(g._index.G + 1)
    assert np.array_equal(g.transform(X), want)


def _blobs(n=6000, d=5, centers=40, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d)) * 4
    return (c[rng.integers(0, centers, n)] + rng.normal(size=(n, d)) * rng.uniform(0.2, 1.0, size=(n, 1))).astype(np.float32)


def _exact_log_time(refs, q, k, exclude=None):
    d2 = ((q[:, None, :].double() - refs[None, :, :].double()) ** 2).sum(-1)
    if exclude is not None:
        d2[exclude[:, None] == torch.arange(len(refs))[None, :]] = float("inf")
    return torch.log(torch.topk(d2, k, 1, largest=False).values.mean(1) + 1e-12)


def test_cluster_index_with_the_whole_table_as_neighbourhood_is_exact():
    X = torch.from_numpy(_blobs(3000))
    q = torch.from_numpy(_blobs(500, seed=1))
    index = NP.ClusterIndex.build(X, torch.arange(len(X)), budget=len(X))
    assert torch.allclose(index.log_time(q, 3), _exact_log_time(X, q, 3), atol=1e-4)
    assert torch.allclose(index.log_time(q, 8), _exact_log_time(X, q, 8), atol=1e-4)
    # the training rows themselves, each skipping its own copy
    rows = torch.arange(0, 3000, 7)
    got = index.log_time(X[rows], 3, exclude=rows)
    assert torch.allclose(got, _exact_log_time(X, X[rows], 3, exclude=rows), atol=1e-4)


def test_cluster_index_finds_the_nearest_rows_at_a_fraction_of_the_cost():
    X = torch.from_numpy(_blobs(20000))
    q = torch.from_numpy(_blobs(2000, seed=2))
    index = NP.ClusterIndex.build(X, torch.arange(len(X)), budget=1024)
    sizes = np.diff(index.starts.numpy())
    assert sizes.max() <= 512 and len(index.rows[0]) <= 1024 + 512 + 127  # bounded work per query
    exact = _exact_log_time(X, q, 3)
    got = index.log_time(q, 3)
    err = (got - exact).numpy()
    assert (err >= -1e-4).all()  # a neighbourhood's nearest rows are never nearer than the table's
    # 40 overlapping blobs searched through 5 % of the rows: most queries find their exact nearest rows,
    # the others rows slightly farther; the ranking of the queries hardly moves
    assert (np.abs(err) < 1e-4).mean() > 0.6 and np.quantile(err, 0.9) < 0.2
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(rank(got.numpy()), rank(exact.numpy()))[0, 1] > 0.99


def test_cluster_index_scores_a_row_the_same_bytes_whatever_rows_come_with_it():
    X = torch.from_numpy(_blobs(8000))
    index = NP.ClusterIndex.build(X, torch.arange(len(X)), budget=512)
    q = torch.from_numpy(_blobs(3000, seed=3))
    full = index.log_time(q, 3)
    assert torch.equal(index.log_time(q[:7], 3), full[:7])
    perm = torch.randperm(3000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(index.log_time(q[perm], 3), full[perm])
    again = NP.ClusterIndex.from_tensors(index.tensors("i"), "i")
    assert torch.equal(again.log_time(q, 3), full)


def test_novelty_mode_indexes_every_row_of_a_large_table():
    X = _blobs(6000, d=6)
    est = NP.EmpiricalDTE.fit(X, novelty=True, seed=0)
    assert set(est.index) == set(est.views) and all(len(i.refs) == 6000 for i in est.index.values())
    small = NP.EmpiricalDTE.fit(X[:800], novelty=True, seed=0)
    assert not small.index and all(len(r) == 800 for r in small.refs.values())  # small tables: every row, exactly
    Q = np.vstack([_blobs(300, d=6, seed=4), np.random.default_rng(5).normal(size=(20, 6)).astype(np.float32) * 3 + 25])
    s = est.score(Q)
    assert s[300:].min() > np.quantile(s[:300], 0.99)
    tensors, meta = est.bundle()
    assert np.array_equal(NP.EmpiricalDTE.load(tensors, meta).score(Q), s)
    assert np.array_equal(est.score(Q[::-1])[::-1], s) and np.array_equal(est.score(Q[5:9]), s[5:9])



def test_binary_tables_size_k_as_a_share_of_the_rows():
    rng = np.random.default_rng(0)
    binary = (rng.random((8192, 20)) < 0.3).astype(np.float32)
    S = NP.sorted_columns(binary)
    assert NP.binary_k(S, 3, 0.8) == 6  # 3 per 4,096 rows
    assert NP.binary_k(S, 3, 0.8, share=1024) == 24 and NP.binary_k(S, 3, 0.8, share=64) == 64  # capped
    assert NP.binary_k(NP.sorted_columns(binary[:1000]), 3, 0.8) == 3  # never below k
    # constant columns do not count; a continuous minority above 20 % keeps k
    const = np.zeros((8192, 30), np.float32)
    cont = rng.normal(size=(8192, 2)).astype(np.float32)
    assert NP.binary_k(NP.sorted_columns(np.hstack([binary[:, :8], const, cont])), 3, 0.8) == 6  # 8 of 10
    assert NP.binary_k(NP.sorted_columns(np.hstack([binary[:, :5], const, cont])), 3, 0.8) == 3  # 5 of 7
    assert NP.binary_k(NP.sorted_columns(cont), 3, 0.8) == 3

    # in the scorer: the fitted k is the share, stored in the bundle, and the scores reload exactly
    mode = {**NP.NOVELTY, "binary_fraction": 0.8}
    est = NP.EmpiricalDTE.fit(binary, novelty=True, seed=0, mode=mode)
    assert est.k == 6 and NP.EmpiricalDTE.fit(binary, novelty=True, seed=0, mode={**mode, "binary_fraction": None}).k == 3
    tensors, meta = est.bundle()
    assert meta["k"] == 6 and np.array_equal(NP.EmpiricalDTE.load(tensors, meta).score(binary[:300]), est.score(binary[:300]))


@pytest.mark.parametrize("novelty", [False, True])
def test_fitting_leaves_the_callers_rows_as_they_were(novelty):
    """A column-major table (its transpose is contiguous) was sorted in place by the column statistics,
    so scoring the same array after fitting scored scrambled rows."""
    X = np.asfortranarray(_blobs(600, d=5, seed=1))
    before = X.copy()
    est = NP.EmpiricalDTE.fit(X, novelty=novelty, seed=0)
    assert np.array_equal(X, before)
    assert np.array_equal(est.score(X), est.score(np.ascontiguousarray(before)))


@pytest.mark.parametrize("budget,size", [(True, 256), (False, 96)])
def test_outlier_bags_see_their_own_features_beyond_the_subspace_width(budget, size):
    """Feature bagging: on a table wider than ``subspace`` each outlier bag sees its own random subset of
    that many features and keeps 256 rows (the budget counts the bag's features) or the rows the table's
    width allows (``subspace_budget`` False); the log-time is each bag's exact one in its subspace, averaged."""
    X = np.hstack([_blobs(3000, d=40, seed=2), _blobs(3000, d=40, seed=3)])  # 80 features
    mode = {**NP.OUTLIER, "subspace": 32, "subspace_budget": budget}
    est = NP.EmpiricalDTE.fit(X, seed=0, mode=mode)
    assert est.bags == ((16, size),) and tuple(est.feats.shape) == (16, 32)
    assert all(len(set(f.tolist())) == 32 and f.tolist() == sorted(f.tolist()) for f in est.feats)
    assert tuple(est.refs["robust"].shape) == (16 * size, 32)
    assert NP.EmpiricalDTE.fit(X, seed=0, mode={**mode, "subspace": None}).bags == ((16, 96),)  # 32 x 4096 / 80 / 16

    q = torch.from_numpy(est.robust.transform(X[:50]))
    refs = est.refs["robust"]
    want = torch.stack([_exact_log_time(refs[b * size:(b + 1) * size], q[:, f], est.k) for b, f in enumerate(est.feats)]).mean(0)
    got = NP.subspace_log_time(refs, size, est.feats, q, est.k)
    assert torch.allclose(got, want.to(got.dtype), rtol=1e-4, atol=1e-4)

    s = est.score(X[:700])
    assert np.array_equal(est.score(X[100:700]), s[100:]) and np.array_equal(est.score(X[:700][::-1])[::-1], s)
    tensors, meta = est.bundle()
    assert np.array_equal(NP.EmpiricalDTE.load(tensors, meta).score(X[:700]), s)
    # a table no wider than the subspace: every bag sees every feature, exactly as without the option
    narrow = X[:, :32]
    a, b = NP.EmpiricalDTE.fit(narrow, seed=0, mode=mode), NP.EmpiricalDTE.fit(narrow, seed=0, mode={**mode, "subspace": None})
    assert a.feats is None and np.array_equal(a.score(narrow[:300]), b.score(narrow[:300]))
