import jax
import numpy as np
import pytest
from helpers import random_points

import hubjax

X = random_points(10, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "k must be >= 1"),
        ({"k": 10}, ValueError, "k=10 is larger than the 9 candidates"),
        ({"k": 11, "include_self": True}, ValueError, "k=11 is larger than the 10"),
        ({"k": 2.0}, TypeError, "k must be a Python int"),
        ({"k": True}, TypeError, "k must be a Python int"),
        ({"k": 2, "metric": "manhattan"}, ValueError, "Unknown metric"),
        ({"k": 2, "block_size": 0}, ValueError, "block_size must be >= 1"),
    ],
)
def test_knn_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        hubjax.knn(X, **kwargs)


def test_k_equal_to_candidates_is_allowed():
    assert hubjax.knn(X, k=9)[1].shape == (10, 9)
    assert hubjax.knn(X, k=10, include_self=True)[1].shape == (10, 10)
    assert hubjax.knn(X, X[:4], k=4)[1].shape == (10, 4)
    with pytest.raises(ValueError, match="y has 4 points"):
        hubjax.knn(X, X[:4], k=5)


@pytest.mark.parametrize(
    ("x", "y", "error", "match"),
    [
        (X, random_points(5, 4), ValueError, "same number of features"),
        (np.zeros((0, 3)), None, ValueError, "empty"),
        (np.zeros((4, 0)), None, ValueError, "empty"),
        (X, np.zeros((0, 3)), ValueError, "y is empty"),
        (X[0], None, ValueError, "must have shape \\[num_points, num_features\\]"),
        (X[None], None, ValueError, "jax.vmap"),
        (X.astype(np.complex64), None, TypeError, "real-valued"),
        (np.array([["a", "b"], ["c", "d"]]), None, TypeError, "numeric"),
    ],
)
def test_bad_arrays(x, y, error, match):
    with pytest.raises(error, match=match):
        hubjax.knn(x, y, k=1)
    with pytest.raises(error, match=match):
        hubjax.hubness(x, y, k=1)
    if y is None:
        with pytest.raises(error, match=match):
            hubjax.hub_values(x, k=1)
    with pytest.raises(error, match=match):
        hubjax.pairwise_distances(x, y)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_reported(bad):
    x = X.copy()
    x[[2, 7], 1] = bad
    with pytest.raises(ValueError, match=r"non-finite values .* 2 row\(s\): 2, 7"):
        hubjax.knn(x, k=3)
    with pytest.raises(ValueError, match="non-finite"):
        hubjax.hub_values(x, k=3)
    with pytest.raises(ValueError, match="y has non-finite"):
        hubjax.knn(X, x, k=3)
    hubjax.knn(x, k=3, check_finite=False)  # opt-out: runs
    jax.jit(lambda a: hubjax.knn(a, k=3))(x)  # under jit: not checkable, runs


def test_errors_are_raised_under_jit_too():
    with pytest.raises(ValueError, match="larger than"):
        jax.jit(lambda a: hubjax.knn(a, k=10))(X)
    with pytest.raises(ValueError, match="same number of features"):
        jax.jit(lambda a, b: hubjax.knn(a, b, k=1))(X, random_points(3, 2))


def test_k_occurrence_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        hubjax.k_occurrence(np.array([[0, 5]]), 5)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        hubjax.k_occurrence(np.array([[-2, 2]]), 5)
    with pytest.raises(TypeError, match="integers"):
        hubjax.k_occurrence(np.array([[0.0, 1.0]]), 5)
    with pytest.raises(TypeError, match="num_points must be a Python int"):
        jax.jit(lambda n: hubjax.k_occurrence(np.array([[0, 1]]), n))(5)


def test_histogram_and_measures_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        hubjax.hub_histogram(np.array([1, -1]))
    with pytest.raises(TypeError, match="integers"):
        hubjax.hub_histogram(np.array([1.5]))
    with pytest.raises(ValueError, match="non-empty vector"):
        hubjax.hub_histogram(np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="non-empty vector"):
        hubjax.gini(np.zeros((0,), int))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_block_size_is_checked_the_same_everywhere(bad):
    error = TypeError if isinstance(bad, (float, bool)) else ValueError
    calls = [
        lambda: hubjax.knn(X, k=2, block_size=bad),
        lambda: hubjax.hub_values(X, k=2, block_size=bad),
        lambda: hubjax.hubness(X, k=2, block_size=bad),
        lambda: hubjax.reduction.knn(X, k=2, method="mp_gaussian", block_size=bad),
        lambda: hubjax.distributed.knn(X, k=2, block_size=bad),
        lambda: hubjax.distributed.hub_values(X, k=2, block_size=bad),
    ]
    for call in calls:
        with pytest.raises(error, match="block_size"):
            call()


def test_include_self_with_y_is_refused():
    with pytest.raises(ValueError, match="in-sample"):
        hubjax.knn(X, X[:5], k=2, include_self=True)


def test_pairwise_nan_row_is_infinitely_far_even_from_itself():
    x = random_points(4, 3)
    x[2, 0] = np.nan
    d = np.asarray(hubjax.pairwise_distances(x))
    assert np.isinf(d[2]).all() and np.isinf(d[:, 2]).all()
    assert np.isfinite(np.delete(np.delete(d, 2, 0), 2, 1)).all()


def test_metrics_refuse_non_finite_rows():
    real, fake = random_points(40, 4, seed=1), random_points(40, 4, seed=2)
    fake[7, 1] = np.inf
    for fn in (
        hubjax.metrics.precision_recall,
        hubjax.metrics.density_coverage,
        hubjax.metrics.frechet_distance,
    ):
        with pytest.raises(ValueError, match=r"fake has non-finite values .* row\(s\): 7"):
            fn(real, fake)


def test_measures_are_exact_on_constant_counts_at_large_m():
    counts = np.full(2_500_000, 10, np.int32)
    assert np.isnan(float(hubjax.k_skewness(counts)))
    assert float(hubjax.gini(counts)) == 0.0
    assert float(hubjax.robinhood(counts)) == 0.0
    assert float(hubjax.atkinson(counts)) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        hubjax.k_skewness(np.array([3, -1, 2]))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_host_check_finds_every_bad_row_across_its_chunks(monkeypatch, dtype):
    """The NumPy check reads a few rows at a time (no boolean copy of the whole input): rows
    at chunk edges and in the last, partial chunk are found, in every float dtype."""
    from hubjax._src import checks

    x = random_points(103, 5).astype(dtype)
    bad = [0, 9, 10, 11, 57, 102]
    x[bad[:3], 1] = np.nan
    x[bad[3:], 4] = -np.inf
    monkeypatch.setattr(checks, "_HOST_CHECK_BYTES", 10 * 5 * x.itemsize)  # 10 rows a step
    with pytest.raises(ValueError, match=r"in 6 row\(s\): 0, 9, 10, 11, 57, \.\.\."):
        checks.check_finite(x, "x")
    checks.check_finite(np.delete(x, bad, axis=0), "x")  # the rest passes
