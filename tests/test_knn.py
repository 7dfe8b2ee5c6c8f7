import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import (
    HYPOTHESIS_SEED,
    assert_knn_close,
    assert_knn_exact,
    engine_knn,
    examples,
    knn_dense,
    random_points,
    sample,
    tie_points,
)
from hypothesis import given, seed, settings
from hypothesis import strategies as st

import hubjax
from hubjax._src import platforms, search, sources
from hubjax._src import select as _select

METRICS = ["sqeuclidean", "euclidean", "cosine", "dot"]
EXACT_ON_GRID = ["sqeuclidean", "euclidean", "dot"]  # integer data: exact float32 arithmetic


@pytest.mark.parametrize(
    ("metric", "include_self"),
    sample(itertools.product(METRICS, (False, True)), 4, key="in_sample_random"),
)
def test_in_sample_random(metric, include_self):
    x = random_points(203, 12, seed=3)
    got = hubjax.knn(x, k=7, metric=metric, include_self=include_self, block_size=64)
    ref = reference.knn(x, k=7, metric=metric, include_self=include_self)
    assert_knn_close(got, x, None, ref, metric)


@pytest.mark.parametrize("metric", METRICS)
def test_query_vs_reference_random(metric):
    x, y = random_points(77, 9, seed=4), random_points(131, 9, seed=5)
    got = hubjax.knn(x, y, k=10, metric=metric, block_size=16)
    assert_knn_close(got, x, y, reference.knn(x, y, k=10, metric=metric), metric)


@pytest.mark.parametrize(
    ("metric", "include_self", "block_size"),
    sample(itertools.product(EXACT_ON_GRID, (False, True), (1, 24, 1000)), 7, key="ties_exact"),
)
def test_ties_and_duplicates_exact(metric, include_self, block_size):
    x = tie_points(150, 3, seed=6)  # 27 distinct grid points: every point has duplicates
    got = hubjax.knn(x, k=9, metric=metric, include_self=include_self, block_size=block_size)
    assert_knn_exact(got, reference.knn(x, k=9, metric=metric, include_self=include_self))


@pytest.mark.parametrize("metric", EXACT_ON_GRID)
def test_ties_query_vs_reference_exact(metric):
    x, y = tie_points(61, 4, seed=7), tie_points(97, 4, seed=8)
    got = hubjax.knn(x, y, k=12, metric=metric, block_size=20)
    assert_knn_exact(got, reference.knn(x, y, k=12, metric=metric))


def test_ties_cosine_duplicates():
    base = random_points(20, 5, seed=9)
    x = np.concatenate([base, base, base[:7], np.zeros((2, 5), np.float32)])
    got = hubjax.knn(x, k=4, metric="cosine", block_size=8)
    ref = reference.knn(x, k=4, metric="cosine")
    assert_knn_close(got, x, None, ref, "cosine")
    # duplicates of a point are its nearest, in index order
    idx = np.asarray(got[1])
    assert idx[0, 0] == 20 and idx[20, 0] == 0 and idx[40, 0] == 0 and idx[40, 1] == 20


def test_all_points_identical():
    x = np.ones((10, 3), np.float32)
    dist, idx = hubjax.knn(x, k=9)
    np.testing.assert_array_equal(dist, 0.0)
    expected = np.array([[j for j in range(10) if j != i] for i in range(10)])
    np.testing.assert_array_equal(idx, expected)


def test_include_self_is_first_whatever_the_distances():
    x = np.array([[0.0], [0.0], [5.0]], np.float32)
    _, idx = hubjax.knn(x, k=2, include_self=True)
    np.testing.assert_array_equal(idx, [[0, 1], [1, 0], [2, 0]])
    _, idx = hubjax.knn(x, k=1, include_self=True)
    np.testing.assert_array_equal(idx, [[0], [1], [2]])
    # dot metric: self is first even though another point has a larger inner product
    dist, idx = hubjax.knn(
        np.array([[1.0], [2.0]], np.float32), k=2, metric="dot", include_self=True
    )
    np.testing.assert_array_equal(idx, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(dist, [[-1.0, -2.0], [-4.0, -2.0]])


def _engine(x, k, engine, block_size, group=None, include_self=False, metric="sqeuclidean"):
    return engine_knn(
        jnp.asarray(x),
        None,
        k=k,
        metric=metric,
        include_self=include_self,
        block_size=block_size,
        engine=engine,
        group=group,
    )


@pytest.mark.parametrize("k", [1, 5, 32, 33, 99])
def test_strip_engine_equals_dense_path_across_blocks_and_k(k):
    x = tie_points(100, 4, seed=10, levels=4)
    dense = knn_dense(jnp.asarray(x), k=k)
    configs = ((7, None), (32, 1), (100, 8), (100, None))
    for block_size, group in sample(configs, 2, key=f"strip_dense/{k}"):
        got = _engine(x, k, "strip", block_size, group)
        np.testing.assert_array_equal(got[1], dense[1])
        np.testing.assert_array_equal(got[0], dense[0])


@pytest.mark.parametrize(
    ("k", "metric"),
    sample(itertools.product((1, 10, 15), ("sqeuclidean", "dot")), 3, key="symmetric_ties"),
)
def test_symmetric_engine_equals_dense_path_on_ties(k, metric):
    x = tie_points(457, 3, seed=12, levels=4)  # 457: no block size divides it
    dense = knn_dense(jnp.asarray(x), k=k, metric=metric)
    for block_size, group in ((160, 8), (96, None)):
        assert sources.symmetric_plan(457, k, block_size) is not None
        got = _engine(x, k, "symmetric", block_size, group, metric=metric)
        np.testing.assert_array_equal(got[1], dense[1])
        np.testing.assert_array_equal(got[0], dense[0])


@pytest.mark.parametrize(
    ("metric", "include_self"),
    sample(itertools.product(METRICS, (False, True)), 3, key="symmetric_strip"),
)
def test_symmetric_engine_equals_strip_engine_random(metric, include_self):
    x = random_points(700, 24, seed=13)
    strip = _engine(x, 10, "strip", 128, include_self=include_self, metric=metric)
    for block_size in (224,):
        sym = _engine(x, 10, "symmetric", block_size, include_self=include_self, metric=metric)
        np.testing.assert_array_equal(sym[1], strip[1])
        np.testing.assert_array_equal(sym[0], strip[0])
    ref = reference.knn(x, k=10, metric=metric, include_self=include_self)
    assert_knn_close(sym, x, None, ref, metric)


def test_symmetric_engine_is_the_default_for_wide_data_and_vmaps():
    xb = np.stack([random_points(300, 512, seed=s) for s in range(2)])
    assert sources.symmetric_plan(300, 5, 100) is not None
    dist, idx = jax.vmap(lambda x: hubjax.knn(x, k=5, block_size=100))(xb)
    for b in range(2):
        assert_knn_close((dist[b], idx[b]), xb[b], None, reference.knn(xb[b], k=5), "sqeuclidean")
        np.testing.assert_array_equal(idx[b], _engine(xb[b], 5, "strip", 64)[1])


def test_symmetric_engine_with_non_finite_rows_under_jit():
    x = random_points(400, 8, seed=14)
    x[[3, 250], 0] = np.nan
    got = _engine(x, 6, "symmetric", 96)
    idx = np.asarray(got[1])
    assert not np.isin(idx[np.r_[0:3, 4:250, 251:400]], [3, 250]).any()
    np.testing.assert_array_equal(
        np.delete(idx, [3, 250], axis=0),
        np.delete(np.asarray(_engine(x, 6, "strip", 64)[1]), [3, 250], axis=0),
    )


def test_random_data_identical_across_block_sizes():
    x = random_points(300, 16, seed=11)
    first = hubjax.knn(x, k=10, block_size=300)
    for block_size in (1, 13, 128):
        got = hubjax.knn(x, k=10, block_size=block_size)
        np.testing.assert_array_equal(got[1], first[1])
        np.testing.assert_array_equal(got[0], first[0])


@pytest.mark.parametrize("k", [1, 3, 10, 31])
@pytest.mark.parametrize("group", [8, 32])
def test_two_stage_selection_equals_top_k(k, group):
    rng = np.random.default_rng(k)
    d = jnp.asarray(rng.integers(0, 5, size=(40, 64 * group)).astype(np.float32))
    d = d.at[3].set(jnp.inf)
    simple = _select.smallest_k_simple(d, k)
    fast = _select.smallest_k(d, k, group)
    np.testing.assert_array_equal(fast[1], simple[1])
    np.testing.assert_array_equal(fast[0], simple[0])
    by_columns = _select.smallest_k_columns(d.T, k, group)
    np.testing.assert_array_equal(by_columns[1], simple[1])
    np.testing.assert_array_equal(by_columns[0], simple[0])
    order = np.lexsort((np.broadcast_to(np.arange(d.shape[1]), d.shape), np.asarray(d)), axis=-1)
    np.testing.assert_array_equal(simple[1], order[:, :k])


def _exact_groups(minima, k):
    return jax.lax.top_k(-minima, k)[1]


def _miss_last(minima, k):  # every row: the k-th best group swapped for a far one
    chosen = _exact_groups(minima, k)
    return chosen.at[:, -1].set((chosen[:, -1] + minima.shape[1] // 2) % minima.shape[1])


def _miss_some(minima, k):  # every 16th row shifted by one group (within the exact budget)
    chosen = _exact_groups(minima, k)
    rows = (jnp.arange(minima.shape[0]) % 16 == 0)[:, None]
    return jnp.where(rows, (chosen + 1) % minima.shape[1], chosen)


def _repeat(minima, k):  # a position twice
    chosen = _exact_groups(minima, k)
    return chosen.at[:, 0].set(chosen[:, 1])


def _outside(minima, k):  # positions out of range, both ways
    chosen = _exact_groups(minima, k)
    return chosen.at[::2, 0].set(-1).at[1::2, -1].set(minima.shape[1])


def _reverse(minima, k):  # the worst groups
    return jax.lax.top_k(minima, k)[1]


@pytest.mark.parametrize(
    "choose",
    [
        _select.approx_groups,
        *sample(
            [_exact_groups, _miss_last, _miss_some, _repeat, _outside, _reverse],
            3,
            key="certified-choosers",
        ),
    ],
    ids=lambda choose: choose.__name__,
)
def test_certified_selection_has_the_bits_of_the_exact_one_whatever_it_is_given(choose):
    """The TPU's opt-in selection (HUBJAX_TPU_SELECT=approx_min_k) chooses the groups with
    lax.approx_min_k and certifies them from the group minima: every way a chooser can go
    wrong (a needed group missing in a few rows or in all, a position twice or out of range)
    is caught and the rows selected again, so the bits are the exact selection's. Ties
    (integer values), +inf rows, and row counts below and above the exact budget. Three of the
    six wrong choosers a run (``helpers.sample``), ``approx_min_k`` always."""
    rng = np.random.default_rng(7)
    for rows, k, group, width in ((40, 10, 32, 1024), (203, 19, 8, 1600), (9, 3, 16, 64)):
        d = jnp.asarray(rng.integers(0, 6, size=(rows, width)).astype(np.float32))
        d = d.at[3].set(jnp.inf).at[5, : width // 2].set(jnp.inf)
        want = _select.smallest_k(d, k, group)
        got = jax.jit(lambda d, k=k, g=group: _select.smallest_k_certified(d, k, g, choose))(d)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


@settings(max_examples=examples(3, 20), deadline=None)
@seed(HYPOTHESIS_SEED)
@given(
    rows=st.integers(1, 24),
    groups=st.integers(2, 40),
    group=st.sampled_from([2, 8]),
    levels=st.integers(1, 1000),
    data=st.data(),
)
def test_property_certified_selection_equals_top_k(rows, groups, group, levels, data):
    k = data.draw(st.integers(1, groups - 1))
    seed_ = data.draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed_)
    d = rng.integers(0, levels, size=(rows, groups * group)).astype(np.float32)
    choose = data.draw(st.sampled_from([_select.approx_groups, _miss_some, _reverse]))
    got = _select.smallest_k_certified(jnp.asarray(d), k, group, choose)
    order = np.lexsort((np.broadcast_to(np.arange(d.shape[1]), d.shape), d), axis=-1)[:, :k]
    np.testing.assert_array_equal(got[1], order)
    np.testing.assert_array_equal(got[0], np.take_along_axis(d, order, axis=-1))


def test_merge_smallest_k_orders_by_value_then_index():
    va = jnp.array([[1.0, 2.0, 2.0]])
    ia = jnp.array([[5, 7, 9]], jnp.int32)
    vb = jnp.array([[0.5, 2.0, 3.0]])
    ib = jnp.array([[8, 6, 1]], jnp.int32)
    v, i = _select.merge_smallest_k(va, ia, vb, ib, 4)
    np.testing.assert_array_equal(i, [[8, 5, 6, 7]])
    np.testing.assert_array_equal(v, [[0.5, 1.0, 2.0, 2.0]])
    # sort_small: same order from unsorted input
    v2, i2 = _select.sort_small(jnp.array([[3.0, 2.0, 0.5, 2.0]]), jnp.array([[1, 7, 8, 6]]), 3)
    np.testing.assert_array_equal(i2, [[8, 6, 7]])
    np.testing.assert_array_equal(v2, [[0.5, 2.0, 2.0]])


@pytest.mark.parametrize("include_self", [False, True])
def test_jit_and_vmap(include_self):
    xb = np.stack([tie_points(45, 3, seed=s) for s in range(3)])

    def f(x):
        return hubjax.knn(x, k=6, include_self=include_self, block_size=16)

    refs = [reference.knn(xb[b], k=6, include_self=include_self) for b in range(3)]
    assert_knn_exact(jax.jit(f)(xb[0]), refs[0])
    for fn in (jax.vmap(f), jax.jit(jax.vmap(f))):
        dist, idx = fn(xb)
        for b in range(3):
            assert_knn_exact((dist[b], idx[b]), refs[b])


def test_vmap_query_vs_reference():
    xb = np.stack([tie_points(20, 3, seed=s) for s in range(2)])
    yb = np.stack([tie_points(33, 3, seed=10 + s) for s in range(2)])
    dist, idx = jax.vmap(lambda x, y: hubjax.knn(x, y, k=5, block_size=8))(xb, yb)
    for b in range(2):
        assert_knn_exact((dist[b], idx[b]), reference.knn(xb[b], yb[b], k=5))


# one metric and one k a run (8 compilations, 10 s)
@pytest.mark.parametrize("metric", sample(METRICS, 1, key="self-query"))
def test_a_set_against_itself_is_one_array_with_the_query_mode_bits(metric):
    """``knn(x, x)`` with the same array object is searched as one array: in-sample, each
    point then merged into its own list at its place (``Options.self_query``; one device copy,
    one prepared copy, each pair of blocks ranked once). The lists are the query-mode search's
    of a copy, bit for bit: a duplicate with a smaller index comes before the point itself,
    ``dot`` puts the point wherever its inner products rank it, a zero row is at cosine
    distance 1 from itself, a NaN row is a sentinel row and nobody's neighbour. For k = 1, a k
    that divides nothing and k = n; eagerly, under the user's ``jit`` and under ``vmap``, with
    blocks that do not divide the points, and on the approximate path (query mode there)."""
    n = 203
    x = tie_points(n, 24, seed=4) + 30.0
    x[9] = x[10] = x[3]  # duplicates after the point
    x[1] = x[40]  # and before it
    x[20] = 0.0
    x[5, 2] = np.nan
    xb = np.stack([x, x[::-1].copy()])
    for k in sample([1, 6, n], 1, key=f"self-query-k/{metric}"):

        def same(a, k=k):
            return hubjax.knn(a, a, k=k, metric=metric, check_finite=False, block_size=48)

        def pair(a, b, k=k):
            return hubjax.knn(a, b, k=k, metric=metric, check_finite=False, block_size=48)

        want = pair(x, x.copy())
        assert search._one_array(x, x, search.Options(k, None))[1].self_query  # the premise
        for got in (same(x), jax.jit(same)(jnp.asarray(x))):
            assert np.asarray(got[1]).tobytes() == np.asarray(want[1]).tobytes()
            assert np.asarray(got[0]).tobytes() == np.asarray(want[0]).tobytes()
        assert (np.asarray(want[1])[5] == -1).all() and not (np.asarray(want[1]) == 5).any()
        np.testing.assert_array_equal(want[1], knn_dense(x, x.copy(), k=k, metric=metric)[1])
        got, wanted = jax.vmap(same)(xb), jax.vmap(pair)(xb, xb.copy())
        for a, b in zip(got, wanted, strict=True):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
        row = np.asarray(want[1])
        if metric in ("sqeuclidean", "euclidean") and k > 1:
            assert list(row[9][:3]) == [3, 9, 10] and list(row[40][:2]) == [1, 40]
    approx = hubjax.knn(x[:64], x[:64], k=3, approximate=True, check_finite=False, metric=metric)
    exact = hubjax.knn(x[:64], x[:64].copy(), k=3, check_finite=False, metric=metric)
    assert np.mean(np.asarray(approx[1]) == np.asarray(exact[1])) > 0.9


def test_vmap_in_groups_gives_the_loops_bits(monkeypatch):
    """A vmapped search runs its sets in groups (:func:`search.batch_group`; here forced to 2,
    so 5 sets make 3 groups, the last padded): the same bits as one call per set, in-sample,
    against a shared reference set and against one reference set per query set, and the hub
    values too."""
    asked = []

    def two(n, m, dim, platform, itemsize=4):
        asked.append((n, m, dim, platform))
        return 2

    monkeypatch.setattr(search, "batch_group", two)
    jax.clear_caches()
    try:
        xb = np.stack([random_points(70, 6, seed=s) + 50 for s in range(5)])  # uncentred
        yb = np.stack([random_points(90, 6, seed=10 + s) for s in range(5)])
        y = yb[0]
        cases = [
            (lambda x: hubjax.knn(x, k=7, metric="euclidean"), (xb,), (0,)),
            (lambda x: hubjax.knn(x, y, k=7, metric="cosine"), (xb,), (0,)),
            (lambda x, y: hubjax.knn(x, y, k=7), (xb, yb), (0, 0)),
            (lambda x: hubjax.hub_values(x, k=7), (xb,), (0,)),
        ]
        for fn, args, axes in cases:
            batched = jax.jit(jax.vmap(fn, in_axes=axes))(*args)
            for b in range(5):
                one = fn(*(a[b] for a in args))
                for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(one), strict=True):
                    np.testing.assert_array_equal(np.asarray(got)[b], np.asarray(want))
        assert {a[:3] for a in asked} == {(70, 70, 6), (70, 90, 6)}
    finally:
        jax.clear_caches()


def test_batch_groups_fill_one_strip_budget():
    """Large sets are searched one at a time under vmap, small ones many at a time, within the
    platform's strip budget."""
    for platform in platforms.PLATFORMS:
        budget = search.STRIP_BYTES[platform]
        assert search.batch_group(100_000, 100_000, 128, platform) == 1
        group = search.batch_group(300, 300, 16, platform)
        assert group > 1 and group * 300 * (320 + 16) * 4 <= budget


def test_second_call_does_not_recompile():
    x1, x2 = random_points(90, 8, seed=1), random_points(90, 8, seed=2)
    hubjax.knn(x1, k=5, metric="cosine")
    before = search._knn._cache_size()
    hubjax.knn(x2, k=5, metric="cosine")
    hubjax.knn(jnp.asarray(x2), k=5, metric="cosine")
    assert search._knn._cache_size() == before
    hubjax.knn(x2, k=6, metric="cosine")  # a new static k does compile: the guard can fail
    assert search._knn._cache_size() == before + 1
    hubjax.knn(x1, x1, k=5)  # one array: compiled once for its shapes
    hubjax.knn(x2, x2, k=5)
    assert search._knn._cache_size() == before + 2


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_inputs(dtype):
    x = jnp.asarray(tie_points(50, 4), dtype)
    dist, idx = hubjax.knn(x, k=5)
    assert dist.dtype == jnp.float32 and idx.dtype == jnp.int32
    assert_knn_exact((dist, idx), reference.knn(np.asarray(x.astype(jnp.float32)), k=5))


def test_integer_input_is_cast():
    x = tie_points(40, 3).astype(np.int64)
    assert_knn_exact(hubjax.knn(x, k=4), reference.knn(x, k=4))


def test_nan_rows_under_jit_are_nobodys_neighbour():
    x = random_points(30, 4)
    x[5, 2] = np.nan
    _, idx = jax.jit(lambda x: hubjax.knn(x, k=5))(x)
    idx = np.asarray(idx)
    others = np.delete(idx, 5, axis=0)
    assert not (others == 5).any()
    clean = np.delete(x, 5, axis=0)
    ref = reference.knn(clean, k=5)[1]
    np.testing.assert_array_equal(np.where(others >= 5, others - 1, others), ref)
