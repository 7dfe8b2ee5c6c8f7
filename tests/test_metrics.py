import numpy as np
import pytest
import reference
from helpers import random_points
from scipy import linalg

import hubjax
from hubjax import metrics
from hubjax.distances import pairwise_distances


def np_radii(a, k):
    return reference.knn(a, k=k, metric="euclidean")[0][:, -1]


def np_prdc(real, fake, k):
    d_rf = reference.distances(real, fake, "euclidean")  # [n, m]
    r_real, r_fake = np_radii(real, k), np_radii(fake, k)
    precision = np.mean((d_rf <= r_real[:, None]).any(0))
    recall = np.mean((d_rf <= r_fake[None, :]).any(1))
    density = (d_rf <= r_real[:, None]).sum() / (k * len(fake))
    coverage = np.mean(d_rf.min(1) <= r_real)
    return precision, recall, density, coverage


@pytest.mark.parametrize("shift", [0.0, 0.7])
def test_prdc_match_numpy(shift):
    real = random_points(300, 6, seed=1)
    fake = 0.8 * random_points(250, 6, seed=2) + shift
    p, r = metrics.precision_recall(real, fake, k=3, block_size=64)
    d, c = metrics.density_coverage(real, fake, k=5, block_size=100)
    ref_p, ref_r, _, _ = np_prdc(real, fake, 3)
    _, _, ref_d, ref_c = np_prdc(real, fake, 5)
    np.testing.assert_allclose([p, r, d, c], [ref_p, ref_r, ref_d, ref_c], atol=2 / 300)


def test_ball_counts_do_not_depend_on_the_block_size():
    """The default blocks (about 2 MiB of distances) and any explicit size give the same exact
    counts, so the default can be chosen for speed and memory alone."""
    real = random_points(301, 6, seed=5)
    fake = 0.8 * random_points(257, 6, seed=6) + 0.3
    want = [metrics.precision_recall(real, fake, k=3), metrics.density_coverage(real, fake, k=5)]
    for block_size in (8, 57, 1024):
        got = [
            metrics.precision_recall(real, fake, k=3, block_size=block_size),
            metrics.density_coverage(real, fake, k=5, block_size=block_size),
        ]
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("kind", ["gaussian", "ties", "apart"])
def test_ball_counts_equal_the_per_pair_comparison(kind):
    """Each query's count of balls holding it equals comparing the per-pair distances (those
    ``knn`` reports, as the radii are) with the radii, bit for bit, whichever way a pair near
    its radius is decided: none near (apart), a few per row measured one by one (Gaussian:
    about 0.5 % of the rows), or more than ``_DOUBT_SLOTS`` in a row, where the block is
    measured per pair as a whole (integer coordinates: many pairs exactly at the radius)."""
    rng = np.random.default_rng(7)
    if kind == "ties":
        centres = rng.integers(0, 3, (400, 5)).astype(np.float32)
        queries = rng.integers(0, 3, (333, 5)).astype(np.float32)
    else:
        centres = rng.standard_normal((1500, 16)).astype(np.float32)
        queries = rng.standard_normal((700, 16)).astype(np.float32)
        if kind == "apart":
            queries += 100
    queries[3] = np.nan  # in no ball
    radii = hubjax.knn(centres, k=4)[0][:, -1]
    d = np.asarray(pairwise_distances(queries, centres))
    with np.errstate(invalid="ignore"):
        want = (d <= np.asarray(radii)[None, :]).sum(1)
    if kind == "apart":
        assert want.sum() == 0
    for rows in (8, 96):
        got = metrics._ball_counts(queries, centres, radii, block_size=rows)
        np.testing.assert_array_equal(np.asarray(got), want)


def test_frechet_matches_scipy():
    real = random_points(500, 10, seed=3)
    fake = random_points(400, 10, seed=4) @ np.diag(np.linspace(0.5, 2, 10)).astype(np.float32)
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root)
    np.testing.assert_allclose(float(metrics.frechet_distance(real, fake)), expected, rtol=1e-3)
    assert abs(float(metrics.frechet_distance(real, real))) < 1e-3


def test_metrics_bad_input():
    for real, fake in (
        (random_points(1, 3), random_points(5, 3)),
        (random_points(5, 3), [[1, 2, 3]]),
    ):
        with pytest.raises(ValueError, match=r"at least 2 .* samples"):
            metrics.frechet_distance(real, fake)  # used to return NaN
    with pytest.raises(ValueError, match="same number of features"):
        hubjax.metrics.precision_recall(random_points(10, 2), random_points(10, 3))
    with pytest.raises(ValueError, match="larger than"):
        hubjax.metrics.density_coverage(random_points(4, 2), random_points(10, 2), k=5)
