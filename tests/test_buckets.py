"""Row-count buckets (``hubjax._src.buckets``): the sizes, and that a search padded with NaN rows
gives the real rows' neighbours and distances bit for bit, for every metric and reduction."""

import jax
import numpy as np
import pytest
from helpers import HYPOTHESIS_SEED, examples, sample
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from hubjax import measures, neighbors, reduction
from hubjax._src import buckets, numerics
from hubjax._src import metric as _metric


@seed(HYPOTHESIS_SEED)
@settings(max_examples=examples(200, 2000), deadline=None)
@given(st.integers(1, 10**9))
def test_a_bucket_holds_the_rows_with_at_most_a_quarter_of_padding(n):
    b = buckets.size(n)
    assert n <= b
    assert b == n if n <= 16 else b * 4 <= n * 5
    assert buckets.size(b) == b
    assert buckets.size(n + 1) >= b  # monotone


def test_cross_validation_folds_share_a_bucket():
    assert buckets.size(1437) == buckets.size(1438) == 1536  # digits, 5 folds: 1437/1438 rows
    assert buckets.size(359) == buckets.size(360) == 384
    # four sizes per doubling: 51 programs at most between 17 and 100 000 rows
    assert len({buckets.size(n) for n in range(17, 100_001)}) == 51


def test_pad_checks_the_real_rows_in_the_compute_dtype():
    x = np.random.default_rng(0).standard_normal((40, 3))
    padded = buckets.pad(x, "X")
    assert padded.shape == (40, 3) and padded.dtype == np.float32  # 40 is a bucket
    padded = buckets.pad(x[:33], "X")
    assert padded.shape == (40, 3)
    assert np.isnan(padded[33:]).all() and np.array_equal(padded[:33], x[:33].astype(np.float32))
    x[5, 1] = np.nan
    x[9, 0] = 1e300  # finite in float64, inf in float32: refused, not silently dropped
    with pytest.raises(ValueError, match=r"X has non-finite values .* 2 row\(s\): 5, 9"):
        buckets.pad(x, "X")


@seed(HYPOTHESIS_SEED)
@settings(max_examples=examples(20, 200), deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**32 - 1))
def test_statistics_over_all_points_ignore_padding_bit_for_bit(n, key):
    """``numerics.point_sum`` (mutual proximity's statistics over all points): zeros appended
    up to the bucket give the same bits."""
    a = np.random.default_rng(key).standard_normal((3, n)).astype(np.float32) * 1e3
    padded = np.concatenate([a, np.zeros((3, buckets.size(n) - n), np.float32)], axis=1)
    want = np.asarray(jax.jit(numerics.point_sum)(a))
    np.testing.assert_array_equal(np.asarray(jax.jit(numerics.point_sum)(padded)), want)
    np.testing.assert_allclose(want, a.astype(np.float64).sum(1), rtol=1e-5, atol=1e-2)


def _lists(x, y, **kw):
    dist = None
    if kw["reduction"] is None:
        dist, idx = neighbors.knn(
            x, y, k=kw["k"], metric=kw["metric"], check_finite=False, include_self=kw["self"]
        )
    else:
        idx, _ = measures.neighbour_lists(
            x,
            y,
            k=kw["k"],
            metric=kw["metric"],
            include_self=False,
            block_size=None,
            check_finite=False,
            reduction=kw["reduction"],
            candidates=20,
            reduction_params=None,
        )
    return (None if dist is None else np.asarray(dist)), np.asarray(idx)


def _cases():
    cases = []
    for metric in _metric.NAMES:
        for method in (None, *reduction.METHODS):
            try:
                if method is not None:
                    reduction.check_method(method, metric, {})
            except ValueError:
                continue  # not defined for this metric
            modes = ("in_sample", "queries") + (("include_self",) if method is None else ())
            cases += [(metric, method, mode) for mode in modes]
    return cases


CASES = _cases()


@pytest.mark.parametrize(("metric", "method", "mode"), sample(CASES, 6, key="buckets"))
def test_padded_search_is_the_unpadded_search_bit_for_bit(metric, method, mode):
    rng = np.random.default_rng(len(metric) + len(method or ""))
    # uncentred data with exact duplicates: the shift and the ties both matter
    x = (rng.standard_normal((53, 9)) * 3 + 40).astype(np.float32)
    x[7] = x[3]
    q = (rng.standard_normal((11, 9)) * 3 + 40).astype(np.float32)
    kw = dict(k=6, metric=metric, reduction=method, self=mode == "include_self")
    if mode != "queries":
        want = _lists(x, None, **kw)
        got = _lists(buckets.pad(x, "x"), None, **kw)
        rows = 53
    else:
        want = _lists(q, x, **kw)
        got = _lists(buckets.pad(q, "q"), buckets.pad(x, "x"), **kw)
        rows = 11
    assert buckets.pad(x, "x").shape[0] == 56
    np.testing.assert_array_equal(got[1][:rows], want[1])
    assert (got[1][rows:] == -1).all()  # padding rows are nobody's query
    if want[0] is not None:
        np.testing.assert_array_equal(got[0][:rows], want[0])  # distances too, bit for bit


def test_every_metric_and_reduction_is_in_the_grid():
    assert {m for m, _, _ in CASES} == set(_metric.NAMES)
    assert {r for _, r, _ in CASES} == {None, *reduction.METHODS}
