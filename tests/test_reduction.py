import jax
import numpy as np
import pytest
import reference
from helpers import random_points, tie_points
from scipy import stats

import hubjax
from hubjax import reduction

METHODS = list(reduction.METHODS)


def safe_div(num, den):
    """0 / 0 = 0 and x / 0 = inf: hubjax's documented convention for zero scales."""
    if den == 0:
        return 0.0 if num == 0 else np.inf
    return num / den


def np_secondary(method, x, y, c, local_k, metric):
    """Plain NumPy/SciPy version of each formula on the exact candidate lists."""
    in_sample = y is None
    ref = x if in_sample else y
    dq, iq = reference.knn(x, y, k=c, metric=metric)
    dr, ir = reference.knn(ref, k=c, metric=metric)
    n = len(x)
    s = np.empty((n, c))
    for a in range(n):
        for t in range(c):
            j, d = iq[a, t], dq[a, t]
            if method == "mp_empiric":
                s[a, t] = 1 - np.sum((dq[a] > d) & (dr[j] > d)) / c
            elif method == "mp_gaussian":
                p1 = stats.norm.sf(d, dq[a].mean(), dq[a].std())
                p2 = stats.norm.sf(d, dr[j].mean(), dr[j].std())
                s[a, t] = 1 - p1 * p2
            elif method == "local_scaling":
                s[a, t] = 1 - np.exp(-safe_div(d**2, dq[a, local_k - 1] * dr[j, local_k - 1]))
            elif method == "nicdm":
                s[a, t] = safe_div(d, np.sqrt(dq[a, :local_k].mean() * dr[j, :local_k].mean()))
            elif method == "csls":
                back = dr if in_sample else reference.knn(ref, x, k=local_k, metric=metric)[0]
                s[a, t] = 2 * d - dq[a, :local_k].mean() - back[j, :local_k].mean()
            elif method == "dis_sim_local":
                cx = ref[iq[a, :local_k]].mean(0)
                cy = ref[ir[j, :local_k]].mean(0)
                s[a, t] = (
                    np.sum((x[a] - ref[j]) ** 2)
                    - np.sum((x[a] - cx) ** 2)
                    - np.sum((ref[j] - cy) ** 2)
                )
    return s, iq, dq


def np_reduced_knn(method, x, y, k, c, local_k, metric):
    """Ordered by (secondary, primary distance, index): hubjax's documented tie rule."""
    s, iq, dq = np_secondary(method, x, y, c, local_k, metric)
    out_s, out_i = np.empty((len(x), k)), np.empty((len(x), k), int)
    for a in range(len(x)):
        order = np.lexsort((iq[a], dq[a], s[a]))[:k]
        out_s[a], out_i[a] = s[a, order], iq[a, order]
    return out_s, out_i


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("in_sample", [True, False])
def test_methods_match_numpy_formulas(method, in_sample):
    x = random_points(60, 12, seed=1).astype(np.float64)
    y = None if in_sample else random_points(80, 12, seed=2).astype(np.float64)
    metric = "euclidean"
    local_k = 4
    got_s, got_i = hubjax.reduction.knn(
        x, y, k=5, method=method, candidates=15, metric=metric, local_k=local_k
    )
    ref_s, ref_i = np_reduced_knn(method, x, y, 5, 15, local_k, metric)
    np.testing.assert_allclose(got_s, ref_s, rtol=2e-4, atol=2e-4)
    # indices agree wherever the reference's secondary distances are not near-tied
    gaps = np.diff(ref_s, axis=1)
    clear = np.ones_like(ref_i, bool)
    clear[:, 1:] &= gaps > 1e-4
    clear[:, :-1] &= gaps > 1e-4
    np.testing.assert_array_equal(np.asarray(got_i)[clear], ref_i[clear])


@pytest.mark.parametrize("method", ["mp_empiric", "nicdm", "csls"])
def test_ties_and_duplicates_exact(method):
    x = tie_points(70, 3, seed=3)
    got_s, got_i = hubjax.reduction.knn(
        x, k=4, method=method, candidates=12, metric="sqeuclidean", local_k=3
    )
    ref_s, ref_i = np_reduced_knn(method, x, None, 4, 12, 3, "sqeuclidean")
    np.testing.assert_allclose(got_s, ref_s, rtol=1e-5, atol=1e-5)
    if method == "mp_empiric":  # exact rational values: (value, primary distance, index)
        np.testing.assert_array_equal(got_i, ref_i)
    assert not (np.asarray(got_i) == np.arange(70)[:, None]).any()


def test_in_sample_lists_never_contain_self_even_with_duplicates():
    x = np.repeat(random_points(10, 4), 6, axis=0)
    for method in METHODS:
        _, idx = hubjax.reduction.knn(x, k=5, method=method, candidates=20)
        assert not (np.asarray(idx) == np.arange(60)[:, None]).any(), method


@pytest.mark.parametrize("method", METHODS)
def test_reduction_lowers_skewness_on_gaussian_data(method):
    x = random_points(800, 100, seed=4)
    before = float(hubjax.hubness(x, k=10).k_skewness)
    after = float(hubjax.hubness(x, k=10, reduction=method, candidates=40).k_skewness)
    assert after < before - 0.3, (method, before, after)


def test_report_with_reduction_counts_reduced_lists():
    x = random_points(120, 30, seed=5)
    _, idx = hubjax.reduction.knn(x, k=6, method="local_scaling", candidates=25, local_k=7)
    report = hubjax.hubness(
        x, k=6, reduction="local_scaling", candidates=25, reduction_params={"local_k": 7}
    )
    np.testing.assert_array_equal(report.k_occurrence, reference.k_occurrence(idx, 120))


def test_jit_and_vmap():
    xb = np.stack([random_points(50, 8, seed=s) for s in range(3)])

    def f(x):
        return hubjax.reduction.knn(x, k=3, method="mp_gaussian", candidates=10)

    got = jax.jit(jax.vmap(f))(xb)
    for b in range(3):
        single = f(xb[b])
        np.testing.assert_array_equal(got[1][b], single[1])
        np.testing.assert_allclose(got[0][b], single[0], rtol=1e-6)


def test_candidates_clipped_and_bad_arguments():
    x = random_points(20, 3)
    _, idx = hubjax.reduction.knn(x, k=5, method="nicdm", candidates=500)
    assert idx.shape == (20, 5)
    with pytest.raises(ValueError, match="Unknown reduction method"):
        hubjax.reduction.knn(x, k=3, method="magic")
    with pytest.raises(TypeError, match="Unknown parameter"):
        hubjax.reduction.knn(x, k=3, method="nicdm", sigma=2)
    with pytest.raises(ValueError, match="k=30 is larger than"):
        hubjax.reduction.knn(x, k=30, method="nicdm")
    with pytest.raises(ValueError, match="local_k=12 is larger than candidates=10"):
        hubjax.reduction.knn(x, k=3, method="nicdm", candidates=10, local_k=12)
    with pytest.raises(ValueError, match="Euclidean"):
        hubjax.reduction.knn(x, k=3, method="dis_sim_local", metric="cosine")
    with pytest.raises(ValueError, match="include_self"):
        hubjax.hubness(x, k=3, reduction="nicdm", include_self=True)


def test_csls_with_fewer_queries_than_local_k_is_refused():
    x, y = random_points(6, 4, seed=1), random_points(40, 4, seed=2)
    with pytest.raises(ValueError, match="only 6 queries"):
        reduction.knn(x, y, k=3, method="csls")
    dist, _idx = reduction.knn(x, y, k=3, method="csls", local_k=5)
    assert np.isfinite(np.asarray(dist)).all()


def test_mutual_proximity_on_few_points_needs_no_local_k():
    x = random_points(5, 3, seed=3)
    for method in ("mp_gaussian", "mp_empiric"):
        _, idx = reduction.knn(x, k=2, method=method)
        assert (np.asarray(idx) != np.arange(5)[:, None]).all()
    with pytest.raises(ValueError, match="local_k=5 is larger than candidates=4"):
        reduction.knn(x, k=2, method="nicdm")


@pytest.mark.parametrize("method", ["mp_gaussian", "mp_empiric", "nicdm", "local_scaling"])
def test_non_finite_rows_do_not_disturb_the_finite_ones(method):
    x = random_points(120, 6, seed=4)
    bad = [10, 77]
    y = x.copy()
    y[bad, 2] = np.nan
    keep = np.setdiff1d(np.arange(120), bad)
    _, idx = jax.jit(lambda a: reduction.knn(a, k=5, method=method, candidates=20))(y)
    idx = np.asarray(idx)
    np.testing.assert_array_equal(idx[bad], -1)
    _, clean = reduction.knn(x[keep], k=5, method=method, candidates=20)
    np.testing.assert_array_equal(idx[keep], keep[np.asarray(clean)])
    assert (idx[keep] != keep[:, None]).all()
