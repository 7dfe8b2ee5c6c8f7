import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import random_points, tie_points
from scipy import stats

import hubjax

COUNT_SETS = {
    "skewed": np.random.default_rng(0).poisson(np.random.default_rng(1).gamma(0.5, 20, 400)),
    "flat": np.full(100, 10) + np.arange(100) % 3,
    "one_hub": np.array([0] * 50 + [200]),
}


@pytest.mark.parametrize("name", list(COUNT_SETS))
def test_measures_match_formulas(name):
    counts = COUNT_SETS[name]
    expected = reference.measures(counts, k=10)
    for measure, value in expected.items():
        fn = getattr(hubjax, measure)
        got = fn(counts, k=10) if measure == "hub_occurrence" else fn(counts)
        np.testing.assert_allclose(float(got), value, rtol=2e-5, atol=1e-6, err_msg=measure)


def test_constant_counts_give_nan_skewness_like_scipy():
    counts = np.full(20, 5)
    assert np.isnan(float(hubjax.k_skewness(counts)))
    assert np.isnan(float(hubjax.k_skewness_truncnorm(counts)))
    assert float(hubjax.gini(counts)) == 0.0 and float(hubjax.robinhood(counts)) == 0.0


def test_atkinson_eps_one_is_geometric_mean():
    o = np.array([1.0, 2.0, 4.0, 8.0])
    expected = 1 - np.exp(np.mean(np.log(o))) / o.mean()
    np.testing.assert_allclose(float(hubjax.atkinson(o, eps=1)), expected, rtol=1e-6)


def test_atkinson_takes_a_traced_eps_under_jit_and_vmap():
    o = np.array([0.0, 1.0, 2.0, 4.0, 8.0, 3.0])
    eps = np.array([0.25, 0.5, 1.0, 2.0])

    def expected(e):
        with np.errstate(divide="ignore"):
            if e == 1:
                return 1 - np.exp(np.mean(np.log(o))) / o.mean()
            return 1 - np.mean(o ** (1 - e)) ** (1 / (1 - e)) / o.mean()

    batched = jax.jit(jax.vmap(lambda e: hubjax.atkinson(o.astype(np.float32), eps=e)))(eps)
    for e, got in zip(eps, np.asarray(batched), strict=True):
        np.testing.assert_allclose(got, expected(e), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(float(hubjax.atkinson(o, eps=float(e))), got, rtol=1e-6)


@pytest.mark.parametrize("include_self", [False, True])
def test_hubness_report_in_sample(include_self):
    x = random_points(211, 32, seed=5)
    report = hubjax.hubness(x, k=6, include_self=include_self, block_size=64)
    idx = reference.knn(x, k=6, include_self=include_self)[1]
    counts = reference.k_occurrence(idx, 211)
    np.testing.assert_array_equal(report.k_occurrence, counts)
    np.testing.assert_array_equal(report.histogram, np.bincount(counts, minlength=212))
    assert report.histogram.shape == (212,)
    for measure, value in reference.measures(counts, k=6).items():
        np.testing.assert_allclose(report.measures()[measure], value, rtol=2e-5, atol=1e-6)
    assert "k_skewness" in str(report)


def test_hubness_report_query_vs_reference():
    x, y = tie_points(50, 3, seed=1), tie_points(80, 3, seed=2)
    report = hubjax.hubness(x, y, k=4, metric="euclidean", hub_size=1.5)
    counts = reference.k_occurrence(reference.knn(x, y, k=4)[1], 80)
    np.testing.assert_array_equal(report.k_occurrence, counts)
    assert report.histogram.shape == (51,)
    np.testing.assert_allclose(
        float(report.hub_occurrence),
        reference.measures(counts, 4, hub_size=1.5)["hub_occurrence"],
        rtol=1e-6,
    )


def test_hubness_report_vmap_and_jit():
    xb = np.stack([random_points(60, 24, seed=s) for s in range(3)])
    reports = jax.jit(jax.vmap(lambda x: hubjax.hubness(x, k=5)))(xb)
    assert reports.k_skewness.shape == (3,)
    assert reports.histogram.shape == (3, 61)
    for b in range(3):
        counts = reference.k_occurrence(reference.knn(xb[b], k=5)[1], 60)
        np.testing.assert_array_equal(reports.k_occurrence[b], counts)
        np.testing.assert_allclose(
            reports.gini[b], reference.measures(counts, 5)["gini"], rtol=2e-5
        )


def test_measures_jit_vmap():
    counts = jnp.asarray(np.random.default_rng(3).poisson(5.0, size=(4, 200)))
    got = jax.jit(jax.vmap(hubjax.k_skewness))(counts)
    np.testing.assert_allclose(got, stats.skew(np.asarray(counts, np.float64), axis=1), rtol=1e-4)


def test_hubness_grows_with_dimension():
    low = hubjax.hubness(random_points(1000, 2, seed=0), k=10)
    high = hubjax.hubness(random_points(1000, 256, seed=0), k=10)
    assert float(high.k_skewness) > float(low.k_skewness) + 0.5
    assert float(high.antihub_occurrence) > float(low.antihub_occurrence)


def test_report_is_a_pytree():
    report = hubjax.hubness(random_points(30, 4), k=3)
    leaves = jax.tree.leaves(report)
    assert len(leaves) == 10
    doubled = jax.tree.map(lambda a: a * 2, report)
    assert doubled.k == 3 and int(doubled.k_occurrence.sum()) == 2 * 90
