"""Exactness on data shaped like users' data, against a float64 NumPy reference.

A row counts as wrong when the float64 distances of the neighbours it returns differ from the
float64 k smallest by more than 1e-5 relative (closer gaps are float32 near-ties, not errors).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import HYPOTHESIS_SEED, engine_knn, examples, knn_dense, random_points, sample
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from jax.sharding import Mesh

import hubjax
from hubjax import distributed
from hubjax._src import finisher, numerics, search, sources
from hubjax._src.metric import COSINE, DOT, EUCLIDEAN, SQEUCLIDEAN

METRICS = ["sqeuclidean", "euclidean", "cosine", "dot"]


def reference_distances(x, y, metric):
    """float64 distances of the float32 inputs (the values hubjax is given)."""
    x = np.asarray(x, np.float32).astype(np.float64)
    y = np.asarray(y, np.float32).astype(np.float64)
    if metric == "dot":
        return -(x @ y.T)
    if metric == "cosine":
        # scale rows first so that 1e-30 / 1e30 data neither underflows nor overflows here
        xs = x / np.maximum(np.abs(x).max(1, keepdims=True), 1e-300)
        ys = y / np.maximum(np.abs(y).max(1, keepdims=True), 1e-300)
        nx, ny = np.linalg.norm(xs, axis=1), np.linalg.norm(ys, axis=1)
        sim = (xs @ ys.T) / np.maximum(np.outer(nx, ny), 1e-300)
        sim[(nx == 0)[:, None] | (ny == 0)[None, :]] = 0.0
        return 1.0 - sim
    scale = max(np.abs(x).max(), np.abs(y).max(), 1e-300)  # exact float64 arithmetic range
    d = (((x[:, None, :] - y[None, :, :]) / scale) ** 2).sum(-1) * scale**2
    return np.sqrt(d) if metric == "euclidean" else d


def wrong_rows(x, idx, metric, y=None, k=None):
    """Rows whose chosen neighbours are not the float64 k nearest (beyond float32 near-ties)."""
    in_sample = y is None
    d = reference_distances(x, x if in_sample else y, metric)
    if in_sample:
        np.fill_diagonal(d, np.inf)
    idx = np.asarray(idx)
    k = idx.shape[1]
    true = np.sort(d, axis=1)[:, :k]
    got = np.sort(np.take_along_axis(d, idx.astype(np.int64), axis=1), axis=1)
    tol = 1e-5 * np.maximum(np.abs(true).max(axis=1, keepdims=True), 1e-300)
    if metric == "cosine":
        # float32 unit vectors resolve 1 - cos to about 1e-7 absolute (documented): vectors
        # parallel to within that are near-ties
        tol = np.maximum(tol, 1e-6)
    return int((np.abs(got - true) > tol).any(axis=1).sum())


rng = np.random.default_rng(0)
CITY = np.c_[40.7 + 1e-2 * rng.random(1000), -74.0 + 1e-2 * rng.random(1000)].astype(np.float32)
OFFSET = (1000 + rng.standard_normal((800, 16))).astype(np.float32)
RELU = (np.maximum(rng.standard_normal((600, 64)) + 0.3, 0) * 5 + 0.0).astype(np.float32)
GAUSS = rng.standard_normal((400, 16)).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "x", "metric"),
    [
        ("city", CITY, "euclidean"),
        ("city", CITY, "sqeuclidean"),
        ("offset", OFFSET, "sqeuclidean"),
        ("offset", OFFSET, "cosine"),
        ("relu", RELU, "euclidean"),
        ("relu", RELU, "cosine"),
        ("relu", RELU, "dot"),
    ],
)
def test_uncentred_data_is_exact(name, x, metric):
    _, idx = hubjax.knn(x, k=5, metric=metric)
    assert wrong_rows(x, idx, metric) == 0, name


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e20, 1e30])
@pytest.mark.parametrize("metric", METRICS)
def test_extreme_scales(scale, metric):
    x = GAUSS * np.float32(scale)
    dist, idx = hubjax.knn(x, k=5, metric=metric)
    assert wrong_rows(x, idx, metric) == 0
    assert (np.asarray(idx) >= 0).all()
    if metric == "euclidean":  # representable in float32: reported to float32 accuracy
        ref = np.sort(reference_distances(x, x, metric) + np.diag([np.inf] * len(x)), 1)[:, :5]
        np.testing.assert_allclose(np.asarray(dist, np.float64), ref, rtol=1e-5)


def test_query_vs_reference_uncentred_and_distributed():
    y = CITY[:700]
    x = CITY[700:] + np.float32(1e-4)
    for metric in ("euclidean", "sqeuclidean"):
        one = hubjax.knn(x, y, k=5, metric=metric)
        assert wrong_rows(x, one[1], metric, y=y) == 0
        many = distributed.knn(x, y, k=5, metric=metric)
        np.testing.assert_array_equal(np.asarray(many[1]), np.asarray(one[1]))
        np.testing.assert_array_equal(np.asarray(many[0]), np.asarray(one[0]))


def test_distributed_in_sample_uncentred():
    one = hubjax.knn(OFFSET, k=5)
    many = distributed.knn(OFFSET, k=5)
    assert wrong_rows(OFFSET, many[1], "sqeuclidean") == 0
    np.testing.assert_array_equal(np.asarray(many[1]), np.asarray(one[1]))
    np.testing.assert_array_equal(np.asarray(many[0]), np.asarray(one[0]))


def test_recheck_equals_dense_reference():
    """The exact re-check path, forced on every row, gives the dense reference's answer."""
    x = jnp.asarray(CITY[:300])
    xp = EUCLIDEAN.prepare(x, jnp.float32, EUCLIDEAN.exponent(x))
    dist0 = jnp.zeros((300, 7))
    idx0 = jnp.zeros((300, 7), jnp.int32)
    ok = jnp.zeros(300, bool)
    _dist, idx = finisher.recheck(xp, xp, dist0, idx0, ok, 7, EUCLIDEAN, own=jnp.arange(300))
    ref = knn_dense(x, k=7, metric="sqeuclidean")
    np.testing.assert_array_equal(idx, ref[1])
    assert wrong_rows(CITY[:300], idx, "euclidean") == 0


@pytest.mark.parametrize("m", sample([300, 512, 600], 2, key="recheck-columns"))
def test_recheck_column_tiles_equal_dense_reference(m):
    """Long feature vectors cut the re-check's columns into tiles of 256 (d = 4096): whole
    tiles, then a narrower last one (m = 300, 600), or whole tiles only (512); flagged rows
    get the dense answer, the others keep theirs."""
    rng = np.random.default_rng(m)
    x = jnp.asarray((50 + rng.standard_normal((m, 4096))).astype(np.float32))
    xp = SQEUCLIDEAN.prepare(x, jnp.float32, DOT.exponent(x))
    flagged = np.zeros(m, bool)
    flagged[rng.choice(m, 19, replace=False)] = True
    dist0 = jnp.full((m, 5), -1.0)
    idx0 = jnp.full((m, 5), -1, jnp.int32)
    recheck = jax.jit(
        lambda xp, ok: finisher.recheck(xp, xp, dist0, idx0, ok, 5, SQEUCLIDEAN, own=jnp.arange(m))
    )
    _dist, idx = recheck(xp, jnp.asarray(~flagged))
    ref = knn_dense(x, k=5, metric="sqeuclidean")
    np.testing.assert_array_equal(np.asarray(idx)[flagged], np.asarray(ref[1])[flagged])
    assert (np.asarray(idx)[~flagged] == -1).all()
    x64 = np.asarray(x, np.float64)
    d64 = ((x64[flagged, None, :] - x64[None, :, :]) ** 2).sum(-1)
    d64[np.arange(19), np.flatnonzero(flagged)] = np.inf
    want = np.argsort(d64, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(np.sort(np.asarray(idx)[flagged], 1), np.sort(want, 1))


# one metric a run: 8-9 s each (12 000 features)
@pytest.mark.parametrize("metric", sample([SQEUCLIDEAN, COSINE, DOT], 1, key="wide-rows"))
def test_wide_rows_that_fail_to_certify_are_ranked_again_with_a_longer_list(metric):
    """At 12 000 features the ranking's error bound (worst case of a 12 000-term sum) exceeds
    the gaps between near neighbours: many rows' k + SLACK candidates do not certify. Ranked
    again with a longer list (:func:`finisher.widen`), they certify and equal the dense
    reference bit for bit, before any per-pair re-check against all points."""
    n, k = 300, 10
    x = jnp.asarray(np.random.default_rng(3).standard_normal((n, 12_000)).astype(np.float32))

    @jax.jit
    def lists(x):
        xp, _, _ = metric.prepare_pair(x, None)
        shift = metric.centre(xp)
        source = search.choose_source(n, n, 12_000, k, True, search.Options(k, metric), "cpu")
        candidates = source.candidates(xp, xp, metric, shift, keep=k + finisher.SLACK + 1)
        dist, idx, ok = finisher.refine_lists(xp, xp, candidates, k, metric, own=True)
        own = jnp.arange(n, dtype=jnp.int32)
        return ok, finisher.widen(xp, xp, dist, idx, ok, k, metric, shift, own=own)

    ok, (_, idx, widened) = lists(x)
    assert np.mean(ok) < 0.7  # the premise: the short lists often fail here
    assert np.mean(widened) > 0.9
    rows = np.asarray(widened)
    want = np.asarray(search.knn_dense(x, k=k, metric=metric)[1])
    np.testing.assert_array_equal(np.asarray(idx)[rows], want[rows])
    dist, got = hubjax.knn(x, k=k, metric=metric.name)  # the whole search, bit for bit
    want_dist = np.asarray(search.knn_dense(x, k=k, metric=metric)[0])
    np.testing.assert_array_equal(got, want)
    assert np.asarray(dist).tobytes() == want_dist.tobytes()


def test_certificate_rejects_a_lost_neighbour():
    """With the slack removed the ranking alone misses neighbours; the certificate catches it."""
    x = jnp.asarray(OFFSET[:300] - 1000 + np.float32(3e4))  # offset far beyond the spread
    xp = SQEUCLIDEAN.prepare(x, jnp.float32, DOT.exponent(x))
    no_shift = jnp.zeros(16, jnp.float32)  # rank without the shift: cancellation
    candidates = sources.Strip(64).candidates(xp, xp, SQEUCLIDEAN, no_shift, keep=5 + 8 + 1)
    _, idx, ok = finisher.refine_lists(xp, xp, candidates, 5, SQEUCLIDEAN, own=True)
    ref = np.asarray(knn_dense(x, k=5)[1])
    wrong = (np.asarray(idx) != ref).any(axis=1)
    assert wrong.any()  # the unshifted ranking does lose neighbours here
    assert not np.asarray(ok)[wrong].any()  # and none of those rows is certified


# two metrics a run (each compiles six searches at 240 x 512: 5-6 s)
@pytest.mark.parametrize("metric", sample(METRICS, 2, key="bitwise-metrics"))
def test_bitwise_identical_across_blocks_engines_and_devices(metric):
    x = (random_points(240, 512, seed=21) + 3.0).astype(np.float32)
    base = engine_knn(
        jnp.asarray(x),
        None,
        k=12,
        metric=metric,
        include_self=False,
        block_size=240,
        engine="strip",
    )
    configs = (("strip", 7), ("strip", 100), ("symmetric", 96), ("symmetric", 64))
    for engine, block_size in sample(configs, 2, key=f"bitwise/{metric}"):
        got = engine_knn(
            jnp.asarray(x),
            None,
            k=12,
            metric=metric,
            include_self=False,
            block_size=block_size,
            engine=engine,
        )
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(base[1]))
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(base[0]))
    for devices in sample((1, 3, 8), 1, key=f"bitwise-devices/{metric}"):
        mesh = Mesh(np.asarray(jax.devices()[:devices]), ("p",))
        got = distributed.knn(x, k=12, metric=metric, mesh=mesh)
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(base[1]))
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(base[0]))


def test_bitwise_identical_query_vs_reference_large_k():
    x = random_points(90, 600, seed=22) + 1.0
    y = random_points(301, 600, seed=23) + 1.0
    base = hubjax.knn(x, y, k=40, block_size=90)
    for block_size in sample((1, 17, 64), 2, key="large_k_blocks"):
        got = hubjax.knn(x, y, k=40, block_size=block_size)
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(base[1]))
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(base[0]))
    for devices in sample((3, 8), 1, key="large_k_devices"):
        mesh = Mesh(np.asarray(jax.devices()[:devices]), ("p",))
        got = distributed.knn(x, y, k=40, mesh=mesh)
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(base[1]))
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(base[0]))


def test_reported_distances_equal_pairwise_distances():
    x = RELU[:200]
    for metric in METRICS:
        dist, idx = hubjax.knn(x, k=6, metric=metric)
        full = np.asarray(hubjax.pairwise_distances(x, metric=metric))
        np.testing.assert_array_equal(np.asarray(dist), np.take_along_axis(full, idx, 1))


def test_non_finite_rows_are_nobodys_neighbour_and_nobodys_query_under_jit():
    x = random_points(300, 8, seed=24)
    bad = [4, 100, 299]
    x[4, 1] = np.nan
    x[100, 0] = np.inf
    x[299] = np.nan
    keep = np.setdiff1d(np.arange(300), bad)
    for include_self in (False, True):
        counts = jax.jit(lambda a, s=include_self: hubjax.hub_values(a, k=5, include_self=s))(x)
        counts = np.asarray(counts)
        assert counts.sum() == 297 * 5
        np.testing.assert_array_equal(counts[bad], 0)
        clean = hubjax.hub_values(x[keep], k=5, include_self=include_self)
        np.testing.assert_array_equal(counts[keep], clean)
        many = distributed.hub_values(x, k=5, include_self=include_self, check_finite=False)
        np.testing.assert_array_equal(np.asarray(many), counts)
    dist, idx = jax.jit(lambda a: hubjax.knn(a, k=5))(x)
    np.testing.assert_array_equal(np.asarray(idx)[bad], -1)
    assert np.isinf(np.asarray(dist)[bad]).all()
    assert (np.asarray(idx)[keep] >= 0).all()


def test_fewer_finite_candidates_than_k_give_sentinel_slots():
    x = np.array([[0.0], [1.0], [np.nan], [np.nan]], np.float32)
    dist, idx = hubjax.knn(x, k=3, check_finite=False)
    np.testing.assert_array_equal(np.asarray(idx), [[1, -1, -1], [0, -1, -1], [-1] * 3, [-1] * 3])
    assert np.isinf(np.asarray(dist)[:, 1:]).all()
    np.testing.assert_array_equal(hubjax.hub_values(x, k=3, check_finite=False), [1, 1, 0, 0])


def test_k_occurrence_refuses_int64_indices_out_of_range():
    idx = np.array([[0, 2**32 + 1]], np.int64)
    with pytest.raises(ValueError, match="4294967297"):
        hubjax.k_occurrence(idx, 3)
    np.testing.assert_array_equal(hubjax.k_occurrence(np.array([[0, -1, 2]]), 3), [1, 0, 1])
    with pytest.raises(ValueError, match="-2"):
        hubjax.k_occurrence(np.array([[0, -2]]), 3)


def test_hub_histogram_refuses_counts_beyond_int32():
    with pytest.raises(ValueError, match="int32"):
        hubjax.hub_histogram(np.array([0, 2**31], np.int64))


@st.composite
def point_sets(draw):
    # few distinct shapes (each one compiles); hypothesis explores the values
    n = draw(st.sampled_from([9, 41, 70]))
    d = draw(st.sampled_from([1, 5, 33]))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["gauss", "grid", "relu"]))
    r = np.random.default_rng(seed)
    if kind == "gauss":
        x = r.standard_normal((n, d))
    elif kind == "grid":
        x = r.integers(0, 3, size=(n, d)).astype(np.float64)
    else:
        x = np.maximum(r.standard_normal((n, d)), 0)
    offset = draw(st.sampled_from([0.0, 1.0, 100.0, 1e4]))
    scale = draw(st.sampled_from([1e-25, 1e-3, 1.0, 1e3, 1e25]))
    x = ((x + offset) * scale).astype(np.float32)
    dup = draw(st.integers(0, n // 3))
    if dup:
        x[n - dup :] = x[:dup]
    return x


@settings(
    max_examples=examples(10, 30),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@seed(HYPOTHESIS_SEED)
@given(x=point_sets(), metric=st.sampled_from(METRICS), data=st.data())
def test_property_matches_float64_reference(x, metric, data):
    n = x.shape[0]
    k = data.draw(st.sampled_from([1, 4, n - 1]))
    block = data.draw(st.sampled_from([None, 5]))
    dist, idx = hubjax.knn(x, k=k, metric=metric, block_size=block)
    idx = np.asarray(idx)
    assert ((idx >= 0) & (idx < n)).all()
    assert (idx != np.arange(n)[:, None]).all()
    assert all(len(set(row)) == k for row in idx.tolist())
    assert wrong_rows(x, idx, metric) == 0
    dense = knn_dense(jnp.asarray(x), k=k, metric=metric)
    np.testing.assert_array_equal(idx, np.asarray(dense[1]))
    np.testing.assert_array_equal(np.asarray(dist), np.asarray(dense[0]))


@settings(max_examples=examples(5, 12), deadline=None)
@seed(HYPOTHESIS_SEED)
@given(x=point_sets(), data=st.data())
def test_property_nan_rows_do_not_change_the_others(x, data):
    n = x.shape[0]
    bad = sorted(set(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3))))
    keep = np.setdiff1d(np.arange(n), bad)
    if len(keep) < 2:
        return
    k = data.draw(st.sampled_from([1, min(4, len(keep) - 1)]))
    y = x.copy()
    y[bad, 0] = np.nan
    counts = np.asarray(jax.jit(lambda a: hubjax.hub_values(a, k=k))(y))
    np.testing.assert_array_equal(counts[keep], hubjax.hub_values(x[keep], k=k))
    np.testing.assert_array_equal(counts[bad], 0)


def test_row_blocked_reductions_and_wide_tiles_keep_the_bits(monkeypatch):
    """Squared norms are reduced in row blocks once their elementwise input would pass
    ``numerics.REDUCE_BLOCK_BYTES`` (XLA:CPU writes that input in full: at 2 000 x 20 000 one
    more copy of the points), and from 512 features the tiled source reads its tiles from the
    prepared points instead of written reference operands. Forced to blocks of 25 rows (203
    points: the last block overlaps), the prepared points, their norms and the ranking
    offsets (everything the search reads of them) have the unblocked bits under ``jit`` and
    ``vmap``; at 600 features the tiled source equals the dense reference bit for bit."""
    x = jnp.asarray(random_points(203, 40, seed=5) + 3.0)

    @jax.jit
    def pieces(x):
        out = []
        for metric in (SQEUCLIDEAN, COSINE, DOT):
            p = metric.prepare(x, jnp.float32, metric.exponent(x))
            out += [*p, *metric.ranking_offsets(p, metric.centre(p), 256)]
        return out

    def run():
        jax.clear_caches()
        return [*pieces(x), *jax.vmap(pieces)(x[:200].reshape(2, 100, 40))]

    unblocked = run()
    monkeypatch.setattr(numerics, "REDUCE_BLOCK_BYTES", 4096)
    blocked = run()
    for a, b in zip(unblocked, blocked, strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    wide = jnp.asarray(random_points(301, 600, seed=6) + 2.0)
    for metric in sample(["sqeuclidean", "cosine", "dot"], 1, key="wide-tiles"):
        got = engine_knn(wide, k=9, metric=metric, engine="tiled", block_size=100)
        want = knn_dense(wide, k=9, metric=metric)
        np.testing.assert_array_equal(got[1], want[1])
        assert np.asarray(got[0]).tobytes() == np.asarray(want[0]).tobytes()
    jax.clear_caches()
