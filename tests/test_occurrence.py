import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import random_points, tie_points

import hubjax


def test_k_occurrence_matches_bincount():
    idx = np.random.default_rng(0).integers(0, 50, size=(70, 5))
    np.testing.assert_array_equal(hubjax.k_occurrence(idx, 53), reference.k_occurrence(idx, 53))


def test_k_occurrence_under_jit_drops_out_of_range():
    idx = jnp.array([[0, 1], [1, 7], [-1, 2]])
    counts = jax.jit(lambda i: hubjax.k_occurrence(i, 3))(idx)
    np.testing.assert_array_equal(counts, [1, 2, 1])


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine", "dot"])
@pytest.mark.parametrize("include_self", [False, True])
def test_hub_values_random(metric, include_self):
    x = random_points(157, 20, seed=1)
    counts = hubjax.hub_values(x, k=5, metric=metric, include_self=include_self, block_size=50)
    ref = reference.knn(x, k=5, metric=metric, include_self=include_self)[1]
    np.testing.assert_array_equal(counts, reference.k_occurrence(ref, 157))
    assert int(counts.sum()) == 157 * 5


@pytest.mark.parametrize("include_self", [False, True])
def test_hub_values_ties(include_self):
    x = tie_points(130, 3, seed=2)
    counts = hubjax.hub_values(x, k=7, include_self=include_self, block_size=40)
    ref = reference.knn(x, k=7, include_self=include_self)[1]
    np.testing.assert_array_equal(counts, reference.k_occurrence(ref, 130))


def test_include_self_adds_exactly_one_per_point_with_k_plus_one():
    x = random_points(90, 8, seed=3)
    without = hubjax.hub_values(x, k=4)
    with_self = hubjax.hub_values(x, k=5, include_self=True)
    np.testing.assert_array_equal(with_self, without + 1)


def test_hub_values_vmap_and_jit():
    xb = np.stack([tie_points(40, 3, seed=s) for s in range(4)])
    counts = jax.jit(jax.vmap(lambda x: hubjax.hub_values(x, k=3, block_size=16)))(xb)
    for b in range(4):
        ref = reference.knn(xb[b], k=3)[1]
        np.testing.assert_array_equal(counts[b], reference.k_occurrence(ref, 40))


def test_hub_histogram():
    counts = np.random.default_rng(1).integers(0, 12, size=300)
    hist = hubjax.hub_histogram(counts)
    np.testing.assert_array_equal(hist, np.bincount(counts))
    capped = hubjax.hub_histogram(counts, max_count=5)
    expected = np.bincount(np.minimum(counts, 5), minlength=6)
    np.testing.assert_array_equal(capped, expected)
    assert int(capped.sum()) == 300


def test_hub_histogram_jit_and_vmap():
    counts = jnp.asarray(np.random.default_rng(2).integers(0, 9, size=(3, 50)))
    hist = jax.jit(jax.vmap(lambda c: hubjax.hub_histogram(c, max_count=10)))(counts)
    for b in range(3):
        np.testing.assert_array_equal(hist[b], np.bincount(counts[b], minlength=11))
    with pytest.raises(ValueError, match="static max_count"):
        jax.jit(hubjax.hub_histogram)(counts[0])
