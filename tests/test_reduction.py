import itertools

import jax
import numpy as np
import pytest
import reference
from helpers import load_dexter, random_points, sample, tie_points
from scipy import stats as stats_

import hubjax
from hubjax import reduction

METHODS = list(reduction.METHODS)


def safe_div(num, den):
    """0 / 0 = 0 and x / 0 = inf: hubjax's documented convention for zero scales."""
    if den == 0:
        return 0.0 if num == 0 else np.inf
    return num / den


def np_mp_empiric_lists(a, t, dq, iq, dr, ir, num_ref, in_sample):
    """Empiric MP of one candidate pair from the two lists, decided point by point."""
    d, y = dq[a, t], iq[a, t]
    known_x = dict(zip(iq[a], dq[a], strict=True))
    known_y = dict(zip(ir[y], dr[y], strict=True))
    others = [j for j in range(num_ref) if j != y and not (in_sample and j == a)]
    count = 0
    for j in others:
        gx = known_x[j] > d if j in known_x else d < dq[a].max()
        gy = known_y[j] > d if j in known_y else d < dr[y].max()
        count += gx and gy
    return 1 - count / len(others)


def np_secondary(method, x, y, c, local_k, metric, stats="all"):
    """Plain NumPy/SciPy version of each formula; mutual proximity over all reference points
    (``stats="all"``) or over the candidate lists."""
    in_sample = y is None
    ref = x if in_sample else y
    dq, iq = reference.knn(x, y, k=c, metric=metric)
    dr, ir = reference.knn(ref, k=c, metric=metric)
    n, m = len(x), len(ref)
    full_q = reference.distances(x, ref, metric)  # every query to every reference point
    full_r = reference.distances(ref, ref, metric)
    others_q = [np.arange(m) != a if in_sample else np.ones(m, bool) for a in range(n)]
    others_r = [np.arange(m) != j for j in range(m)]
    s = np.empty((n, c))
    for a in range(n):
        for t in range(c):
            j, d = iq[a, t], dq[a, t]
            if method == "mp_empiric" and stats == "all":
                keep = others_q[a] & others_r[j]
                s[a, t] = 1 - np.mean((full_q[a, keep] > d) & (full_r[j, keep] > d))
            elif method == "mp_empiric":
                s[a, t] = np_mp_empiric_lists(a, t, dq, iq, dr, ir, m, in_sample)
            elif method == "mp_gaussian":
                rq = full_q[a, others_q[a]] if stats == "all" else dq[a]
                rr = full_r[j, others_r[j]] if stats == "all" else dr[j]
                p1 = stats_.norm.sf(d, rq.mean(), rq.std())
                p2 = stats_.norm.sf(d, rr.mean(), rr.std())
                s[a, t] = 1 - p1 * p2
            elif method == "local_scaling":
                s[a, t] = 1 - np.exp(-safe_div(d**2, dq[a, local_k - 1] * dr[j, local_k - 1]))
            elif method == "nicdm":
                s[a, t] = safe_div(d, np.sqrt(dq[a, :local_k].mean() * dr[j, :local_k].mean()))
            elif method == "csls":
                back = dr if in_sample else reference.knn(ref, x, k=local_k, metric=metric)[0]
                s[a, t] = 2 * d - dq[a, :local_k].mean() - back[j, :local_k].mean()
            elif method in ("dis_sim_local", "dis_sim_global"):
                if method == "dis_sim_local":
                    cx = ref[iq[a, :local_k]].mean(0)
                    cy = ref[ir[j, :local_k]].mean(0)
                else:
                    cx = cy = ref.mean(0)
                s[a, t] = (
                    np.sum((x[a] - ref[j]) ** 2)
                    - np.sum((x[a] - cx) ** 2)
                    - np.sum((ref[j] - cy) ** 2)
                )
    return s, iq, dq


def np_reduced_knn(method, x, y, k, c, local_k, metric, stats="all"):
    """Ordered by (secondary, primary distance, index): hubjax's documented tie rule."""
    s, iq, dq = np_secondary(method, x, y, c, local_k, metric, stats)
    out_s, out_i = np.empty((len(x), k)), np.empty((len(x), k), int)
    for a in range(len(x)):
        order = np.lexsort((iq[a], dq[a], s[a]))[:k]
        out_s[a], out_i[a] = s[a, order], iq[a, order]
    return out_s, out_i


def assert_reduced_close(got, ref, tol):
    got_s, got_i = got
    ref_s, ref_i = ref
    np.testing.assert_allclose(got_s, ref_s, rtol=tol, atol=tol)
    # indices agree wherever the reference's secondary distances are not near-tied
    gaps = np.diff(ref_s, axis=1)
    clear = np.ones_like(ref_i, bool)
    clear[:, 1:] &= gaps > tol
    clear[:, :-1] &= gaps > tol
    np.testing.assert_array_equal(np.asarray(got_i)[clear], ref_i[clear])


VARIANTS = [(m, None) for m in METHODS if m not in reduction.MUTUAL_PROXIMITY] + [
    (m, s) for m in reduction.MUTUAL_PROXIMITY for s in reduction.STATS
]


@pytest.mark.parametrize(
    ("method", "stats", "in_sample"),
    sample([(*v, in_sample) for v in VARIANTS for in_sample in (True, False)], 8, key="formulas"),
)
def test_methods_match_numpy_formulas(method, stats, in_sample):
    x = random_points(60, 12, seed=1).astype(np.float64)
    y = None if in_sample else random_points(80, 12, seed=2).astype(np.float64)
    metric = "euclidean"
    params = {"local_k": 4} if method in reduction.USES_LOCAL_K else {}
    if stats:
        params["stats"] = stats
    got = hubjax.reduction.knn(x, y, k=5, method=method, candidates=15, metric=metric, **params)
    ref = np_reduced_knn(method, x, y, 5, 15, 4, metric, stats or "all")
    assert_reduced_close(got, ref, 2e-4)


@pytest.mark.parametrize(
    ("method", "metric"),
    sample(
        itertools.product(reduction.MUTUAL_PROXIMITY, ("cosine", "dot", "sqeuclidean")),
        3,
        key="mp_metrics",
    ),
)
def test_mutual_proximity_over_all_points_other_metrics(method, metric):
    x = random_points(50, 10, seed=7).astype(np.float64) + 3.0  # uncentred
    got = hubjax.reduction.knn(x, k=4, method=method, candidates=12, metric=metric)
    ref = np_reduced_knn(method, x, None, 4, 12, 1, metric, "all")
    assert_reduced_close(got, ref, 2e-4)


def test_empiric_lists_are_exact_when_they_hold_every_point():
    """With every other point a candidate, the list statistic is the all-points one."""
    x = random_points(40, 8, seed=8)
    lists = reduction.knn(x, k=39, method="mp_empiric", candidates=39, stats="candidates")
    full = reduction.knn(x, k=39, method="mp_empiric", candidates=39, stats="all")
    np.testing.assert_allclose(lists[0], full[0], atol=1e-6)


def test_empiric_statistics_over_a_fixed_sample():
    x = random_points(300, 16, seed=10)
    a = reduction.knn(x, k=5, method="mp_empiric", candidates=20, stats_sample=100)
    b = reduction.knn(x, k=5, method="mp_empiric", candidates=20, stats_sample=100)
    np.testing.assert_array_equal(a[1], b[1])  # the sample is fixed: reproducible
    full = reduction.knn(x, k=5, method="mp_empiric", candidates=20, stats_sample=None)
    # a sample of a third of the points keeps most of the exact neighbours
    pairs = zip(np.asarray(a[1]).tolist(), np.asarray(full[1]).tolist(), strict=True)
    overlap = np.mean([len(set(p) & set(q)) / 5 for p, q in pairs])
    assert overlap > 0.7
    with pytest.raises(ValueError, match="stats_sample"):
        reduction.knn(x, k=5, method="mp_empiric", stats_sample=1)
    with pytest.raises(ValueError, match="stats must be"):
        reduction.knn(x, k=5, method="mp_gaussian", stats="some")
    with pytest.raises(TypeError, match="Unknown parameter"):
        reduction.knn(x, k=5, method="nicdm", stats="all")


@pytest.mark.parametrize("method", ["mp_empiric", "nicdm", "csls"])
def test_ties_and_duplicates_exact(method):
    x = tie_points(70, 3, seed=3)
    params = {"stats": "candidates"} if method == "mp_empiric" else {"local_k": 3}
    got_s, got_i = hubjax.reduction.knn(
        x, k=4, method=method, candidates=12, metric="sqeuclidean", **params
    )
    ref_s, ref_i = np_reduced_knn(method, x, None, 4, 12, 3, "sqeuclidean", "candidates")
    np.testing.assert_allclose(got_s, ref_s, rtol=1e-5, atol=1e-5)
    if method == "mp_empiric":  # exact rational values: (value, primary distance, index)
        np.testing.assert_array_equal(got_i, ref_i)
    assert not (np.asarray(got_i) == np.arange(70)[:, None]).any()


def test_in_sample_lists_never_contain_self_even_with_duplicates():
    x = np.repeat(random_points(10, 4), 6, axis=0)
    for method in METHODS:
        _, idx = hubjax.reduction.knn(x, k=5, method=method, candidates=20)
        assert not (np.asarray(idx) == np.arange(60)[:, None]).any(), method


@pytest.mark.parametrize("method", sample(METHODS, 3, key="lowers_gaussian"))
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


@pytest.mark.parametrize(
    "method",
    sample(["mp_gaussian", "mp_empiric", "nicdm", "local_scaling"], 2, key="non_finite"),
)
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


@pytest.fixture(scope="module")
def dexter():
    return load_dexter()[0]


# dexter, k = 10, default settings (candidates = 50, stats = "all"): skewness 3.98 (cosine)
# and 3.33 (euclidean) without reduction; measured after: MP-empiric 0.68, MP-Gaussian 1.16,
# local scaling 1.65, NICDM 2.08, CSLS 2.13 (cosine); DisSimLocal 2.26, DisSimGlobal 1.05
# (euclidean).
@pytest.mark.parametrize("method", sample(METHODS, 2, key="lowers_dexter"))
def test_every_method_lowers_dexter_skewness_with_defaults(dexter, method):
    metric = "euclidean" if method.startswith("dis_sim") else "cosine"
    before = float(hubjax.hubness(dexter, k=10, metric=metric).k_skewness)
    after = float(hubjax.hubness(dexter, k=10, metric=metric, reduction=method).k_skewness)
    assert after < before - 0.8, (method, before, after)
    if method == "mp_gaussian":  # Schnitzer et al.'s all-points statistics: about 1.2
        assert after < 1.4


def test_candidate_only_mutual_proximity_is_the_weaker_option(dexter):
    """Statistics from 50 candidates do not lower dexter's hubness like all points do."""
    params = {"stats": "candidates"}
    few = hubjax.hubness(
        dexter, k=10, metric="cosine", reduction="mp_gaussian", reduction_params=params
    )
    assert float(few.k_skewness) > 3.5  # 4.22 measured: it raises hubness


def test_mp_empiric_does_not_favour_low_indices():
    """Rank-valued distances tie often; ties go by primary distance, so low indices do not
    become hubs (Spearman correlation of index and k-occurrence near 0)."""
    x = random_points(1000, 50, seed=11)
    counts = np.asarray(hubjax.hub_values(x, k=10))
    reduced = hubjax.hubness(x, k=10, reduction="mp_empiric")
    rho = stats_.spearmanr(np.arange(1000), np.asarray(reduced.k_occurrence)).statistic
    assert abs(rho) < 0.1
    assert float(reduced.k_skewness) < float(stats_.skew(counts)) - 1
