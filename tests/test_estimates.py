"""Sampled-query hubness estimates: exact unbiasedness of the moments, bit-identical lists,
interval coverage at 5 % of the queries, and the front ends."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import hubjax
from hubjax import estimates
from hubjax._src import search
from hubjax._src.metric import resolve

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ``python -m tests.test_estimates``
from helpers import default_level_env, random_points, sample

N, K = 2000, 10


@pytest.fixture(scope="module")
def gaussian():
    x = random_points(N, 64, seed=1)
    counts = np.asarray(hubjax.hub_values(x, k=K))
    return x, counts


def central_moments(counts):
    c = counts - counts.mean()
    return np.mean(c**2), np.mean(c**3)


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine", "dot"])
def test_sampled_lists_are_the_in_sample_rows(metric):
    x = random_points(300, 8, seed=2) + np.float32(20.0)
    x[40] = x[3]  # a duplicate: its twin is at distance 0
    _, full = hubjax.knn(x, k=6, metric=metric)
    queries = jnp.asarray([0, 3, 40, 41, 299], jnp.int32)
    got = search.sampled_lists(jnp.asarray(x), queries, 6, resolve(metric), None)
    np.testing.assert_array_equal(got, np.asarray(full)[np.asarray(queries)])


def test_moment_estimators_are_exactly_unbiased():
    """Averaged over every possible sample of queries, the estimates equal the exact moments."""
    x = random_points(9, 3, seed=3)
    _, lists = hubjax.knn(x, k=3)
    lists = np.asarray(lists)
    exact = central_moments(np.bincount(lists.ravel(), minlength=9).astype(float))
    s = 4
    got = []
    for queries in itertools.combinations(range(9), s):
        c = jnp.asarray(np.bincount(lists[list(queries)].ravel(), minlength=9), jnp.float32)
        got.append(estimates._moments(c, c, c, n=9, pairs=s * 3, triples=s * 3 * 2, s=s, k=3))
    np.testing.assert_allclose(np.mean(got, axis=0), exact, rtol=1e-5, atol=1e-5)


def test_all_queries_give_the_exact_skewness(gaussian):
    x, counts = gaussian
    est = hubjax.sampled_hubness(x, k=K, num_queries=N, key=jax.random.key(0))
    np.testing.assert_array_equal(est.sampled_occurrence, counts)
    np.testing.assert_allclose(est.measures["k_skewness"], stats.skew(counts), rtol=1e-4)
    truncnorm = float(hubjax.k_skewness_truncnorm(counts))
    np.testing.assert_allclose(est.measures["k_skewness_truncnorm"], truncnorm, rtol=1e-4)
    for name in estimates.ESTIMATED:  # every point a query: no sampling error is left
        low, high = est.interval(name)
        assert low == high == float(est.measures[name]), (name, low, high)


def test_interval_covers_the_exact_skewness_at_the_fewest_queries(gaussian):
    """>= 90 % of 50 seeds with the fewest queries served by default (10 % of the points)."""
    x, counts = gaussian
    truth = stats.skew(counts)
    fewest = max(estimates.MIN_QUERIES, round(estimates.MIN_SHARE * N))
    run = jax.jit(lambda key: hubjax.sampled_hubness(x, k=K, num_queries=fewest, key=key))
    covered = []
    for seed in range(50):
        est = run(jax.random.key(seed))
        lo, hi = est.interval("k_skewness")
        covered.append(lo <= truth <= hi)
    assert np.mean(covered) >= 0.9, np.mean(covered)


def test_same_key_same_result_and_no_recompile(gaussian):
    x, _ = gaussian
    a = hubjax.sampled_hubness(x, k=K, num_queries=200, key=jax.random.key(7))
    b = hubjax.sampled_hubness(x, k=K, num_queries=200, key=jax.random.key(7))
    assert jax.tree.all(jax.tree.map(lambda u, v: bool(jnp.array_equal(u, v)), a, b))
    before = estimates._sampled._cache_size()
    hubjax.sampled_hubness(x, k=K, num_queries=200, key=jax.random.key(8))
    assert estimates._sampled._cache_size() == before
    assert "k_skewness" in str(a) and "200 of 2000" in str(a)


def test_vmap_over_keys(gaussian):
    x, _ = gaussian
    keys = jax.random.split(jax.random.key(3), 3)
    batched = jax.vmap(lambda key: hubjax.sampled_hubness(x, k=K, num_queries=200, key=key))(keys)
    for i in range(3):
        single = hubjax.sampled_hubness(x, k=K, num_queries=200, key=keys[i])
        np.testing.assert_allclose(
            batched.measures["k_skewness"][i], single.measures["k_skewness"], rtol=1e-6
        )


def test_hubness_front_end_and_errors(gaussian):
    x, _ = gaussian
    est = hubjax.hubness(x, k=K, num_queries=200, key=jax.random.key(1))
    assert isinstance(est, hubjax.SampledHubnessReport)
    assert est.num_queries == 200 and est.queries.shape == (200,)
    # under 10 % of the points only when the caller accepts it (min_share)
    for few in (100, 199):
        with pytest.raises(ValueError, match=f"num_queries={few} is .* below min_share=0.1 "):
            hubjax.hubness(x, k=K, num_queries=few, key=jax.random.key(0))
    est = hubjax.hubness(x, k=K, num_queries=100, key=jax.random.key(1), min_share=0.05)
    assert est.num_queries == 100
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="min_share must lie in"):
            hubjax.sampled_hubness(x, k=K, num_queries=200, key=jax.random.key(0), min_share=bad)
    with pytest.raises(ValueError, match="num_queries=2000000"):
        hubjax.sampled_hubness(x, k=K, num_queries=2_000_000, key=jax.random.key(0))
    for few in (2, 30, 99):
        with pytest.raises(ValueError, match=f"num_queries={few} is too few: .* at least 100"):
            hubjax.sampled_hubness(x, k=K, num_queries=few, key=jax.random.key(0))
    with pytest.raises(ValueError, match="confidence"):
        hubjax.sampled_hubness(x, k=K, num_queries=200, key=jax.random.key(0), confidence=1.5)
    with pytest.raises(ValueError, match="key"):
        hubjax.hubness(x, k=K, num_queries=200)
    with pytest.raises(ValueError, match="in-sample"):
        hubjax.hubness(x, x[:10], k=K, num_queries=200, key=jax.random.key(0))


def _weighted_direct(lists, w, n, k):
    """The weighted estimates of ``estimates._weighted`` from scratch: the per-point power
    sums over the lists, each query counted w times."""
    p = [np.zeros(n) for _ in range(3)]
    for q, row in enumerate(lists):
        for j in range(3):
            np.add.at(p[j], row[row >= 0], float(w[q]) ** (j + 1))
    s = float(np.sum(w))
    w2, w3 = float(np.sum(w**2)), float(np.sum(w**3))
    m2, m3 = estimates._moments(
        *(jnp.asarray(a, jnp.float32) for a in p),
        n=n,
        pairs=s * s - w2,
        triples=s**3 - 3 * s * w2 + 2 * w3,
        s=s,
        k=k,
    )
    return estimates._estimates(m2, m3, n, k)


@pytest.mark.parametrize("weights", ["sample", "resample"])
def test_jackknife_equals_the_estimates_without_each_draw(weights):
    """Leaving one draw of query q out (its weight minus one) equals recomputing everything
    without it, for the sample (weights 1) and for a bootstrap resample (weights 0-3), a list
    with a missing neighbour (-1) included."""
    x = random_points(60, 5, seed=5)
    lists = np.asarray(hubjax.knn(x, k=4)[1])[[3, 7, 11, 19, 23, 40, 59]]
    lists[2, 3] = -1
    w = np.ones(7) if weights == "sample" else np.array([2.0, 0, 1, 3, 0, 1, 0])
    got, jack = estimates._weighted(jnp.asarray(lists), jnp.asarray(w, jnp.float32), n=60, k=4)
    want = _weighted_direct(lists, w, 60, 4)
    for name in estimates.ESTIMATED:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5)
    for q in np.flatnonzero(w):
        fewer = w.copy()
        fewer[q] -= 1
        want = _weighted_direct(lists, fewer, 60, 4)
        for name in estimates.ESTIMATED:
            np.testing.assert_allclose(jack[name][q], want[name], rtol=2e-5)


def _uniform(n, d, seed):
    return random_points(n, d, seed=seed)


def _lognormal_scaled(n, d, seed):
    r = np.random.default_rng(seed)
    return (r.standard_normal((n, d)) * np.exp(r.standard_normal((n, 1)))).astype(np.float32)


# (data, n, d, k, s): a seeded share per run (helpers.sample)
COVERAGE_CASES = sample(
    [
        ("_uniform", 300, 32, 5, 100),
        ("_uniform", 300, 32, 5, 150),  # half the points: 0.998 without the correction
        ("_uniform", 1000, 64, 5, 100),
        ("_lognormal_scaled", 500, 50, 5, 100),  # 30 queries, percentile intervals: 0.87
        ("_lognormal_scaled", 500, 50, 5, 250),  # half the points: 0.995 without it
        # k = 10 on heavy tails: BCa alone covered 0.870-0.885 with 30-100 queries
        ("_lognormal_scaled", 500, 50, 10, 100),
        ("_lognormal_scaled", 2000, 50, 10, 200),
    ],
    1,  # about 12 s a case, in a subprocess; the run's grid seed picks one
    key="coverage",
)


def coverage_of(data: str, n: int, d: int, k: int, s: int) -> tuple[float, bool]:
    """Seeded simulation, 400 samples of s queries: the share whose 95 % interval covers the
    exact skewness, and whether any point estimate was NaN. The queries' lists are rows of the
    full in-sample lists (bit for bit, see above), so one search serves every trial."""
    x = globals()[data](n, d, 0)
    lists = hubjax.knn(x, k=k)[1]
    exact = float(hubjax.k_skewness(hubjax.k_occurrence(lists, n)))

    @jax.jit
    def trial(key):
        pick, boot = jax.random.split(key)
        q = jnp.sort(jax.random.choice(pick, n, (s,), replace=False))
        _, _, _, point, low, high = estimates._from_lists(
            lists[q], boot, n=n, k=k, num_bootstrap=200, confidence=0.95
        )
        return point["k_skewness"], low["k_skewness"], high["k_skewness"]

    point, low, high = (
        np.asarray(a) for a in jax.lax.map(trial, jax.random.split(jax.random.key(1), 400))
    )
    return float(np.mean((low <= exact) & (exact <= high))), bool(np.isnan(point).any())


@pytest.fixture(scope="module")
def simulated_coverage():
    """Every case of this run in one process compiled as users' programs are: the simulation
    runs 3x faster at XLA's default optimisation level than at the suite's level 0 (its
    largest case 7 s against 24 s here) and gives the same coverage."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.test_estimates", "--coverage", json.dumps(COVERAGE_CASES)],
        cwd=Path(__file__).resolve().parents[1],
        env=default_level_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.splitlines()[-1])
    return {tuple(case): tuple(got) for case, got in zip(COVERAGE_CASES, results, strict=True)}


@pytest.mark.parametrize("case", COVERAGE_CASES, ids=lambda case: "-".join(map(str, case)))
def test_intervals_cover_within_two_points_of_nominal(case, simulated_coverage):
    """Nominal 95 %: the intervals cover the exact skewness in 93-97 % of 400 seeded samples
    of queries (shares of 10-50 %, from ``MIN_SHARE`` on), and no point estimate is NaN."""
    coverage, any_nan = simulated_coverage[tuple(case)]
    assert not any_nan
    assert 0.93 <= coverage <= 0.97, coverage


def test_sampled_report_answers_to_the_exact_reports_attribute_names():
    x = np.random.default_rng(3).normal(size=(2, 200, 8)).astype(np.float32)
    report = hubjax.hubness(x[0], k=5, num_queries=100, key=jax.random.key(0))
    assert report.k_skewness is report.measures["k_skewness"]
    assert report.k_skewness_truncnorm is report.measures["k_skewness_truncnorm"]
    with pytest.raises(AttributeError, match="gini cannot be estimated from sampled queries"):
        _ = report.gini
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        _ = report.nonsense
    batched = jax.vmap(lambda a: hubjax.hubness(a, k=5, num_queries=100, key=jax.random.key(0)))(x)
    text = str(batched)
    assert "set 1:" in text and f"{float(batched.k_skewness[1]): .4f}" in text


def test_a_vmapped_exact_report_prints_its_values():
    x = np.random.default_rng(4).normal(size=(3, 60, 8)).astype(np.float32)
    reports = jax.vmap(lambda a: hubjax.hubness(a, k=5))(x)
    text = str(reports)
    for i in range(3):
        assert f"{float(reports.gini[i]):.4f}" in text
    assert len(text.splitlines()) == 2 + len(hubjax.HubnessReport.MEASURES) + 1


if __name__ == "__main__" and "--coverage" in sys.argv:
    cases = json.loads(sys.argv[sys.argv.index("--coverage") + 1])
    print(json.dumps([coverage_of(*case) for case in cases]))
