import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import random_points, tie_points

import hubjax
from hubjax._src import numerics

METRICS = ["sqeuclidean", "euclidean", "cosine", "dot"]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("data", ["random", "ties"])
def test_pairwise_matches_numpy(metric, data):
    make = random_points if data == "random" else tie_points
    x, y = make(37, 11, seed=1), make(29, 11, seed=2)
    np.testing.assert_allclose(
        hubjax.pairwise_distances(x, y, metric=metric),
        reference.distances(x, y, metric),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("metric", METRICS)
def test_in_sample_diagonal_is_exact(metric):
    x = tie_points(23, 5)
    x[3] = 0.0  # a zero vector: cosine similarity 0 to everything, itself included
    d = np.asarray(hubjax.pairwise_distances(x, metric=metric))
    np.testing.assert_array_equal(np.diag(d), reference.self_distance(x, metric))
    off = ~np.eye(len(x), dtype=bool)
    np.testing.assert_allclose(d[off], reference.distances(x, x, metric)[off], rtol=1e-5, atol=1e-5)


def test_cosine_zero_vector_and_clamping():
    x = np.array([[0.0, 0.0], [1.0, 1.0], [1e4, 1e4 + 1e-3]], np.float32)
    d = np.asarray(hubjax.pairwise_distances(x, metric="cosine"))
    np.testing.assert_array_equal(d[0], [1.0, 1.0, 1.0])
    assert (d >= 0).all()
    sq = np.asarray(hubjax.pairwise_distances(x[1:] * 1e3))
    assert (sq >= 0).all() and not np.signbit(sq).any()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_accumulates_in_float32(dtype):
    x = jnp.asarray(random_points(40, 300), dtype)
    d = hubjax.pairwise_distances(x)
    assert d.dtype == jnp.float32
    ref = reference.distances(
        np.asarray(x.astype(jnp.float32)), np.asarray(x.astype(jnp.float32)), "sqeuclidean"
    )
    np.testing.assert_allclose(np.asarray(d), ref, rtol=1e-4, atol=1e-2)


def test_integer_input_is_cast():
    x = np.arange(12).reshape(4, 3)
    d = hubjax.pairwise_distances(x)
    assert jnp.issubdtype(d.dtype, jnp.floating)
    np.testing.assert_array_equal(d, reference.distances(x, x, "sqeuclidean"))


def test_jit_and_vmap():
    xb = np.stack([random_points(17, 6, seed=s) for s in range(3)])
    out = jax.jit(jax.vmap(lambda x: hubjax.pairwise_distances(x, metric="euclidean")))(xb)
    for b in range(3):
        np.testing.assert_allclose(
            out[b], reference.distances(xb[b], xb[b], "euclidean"), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("shape", [(6, 5), (101, 600), (303, 64)])
def test_finite_rows_and_largest_coordinate_on_adversarial_rows(shape):
    """Rows of NaN (which XLA:CPU's maximum can reduce to -inf at some shapes), single NaN and
    infinities, and a finite row whose sum overflows both ways (its NaN sum must not make it
    non-finite), under jit, vmap and shard_map."""

    n, d = shape
    x = np.random.default_rng(n).normal(size=shape).astype(np.float32)
    x[-2:] = np.nan
    x[1, d // 2] = np.nan
    x[2, 0] = np.inf
    x[3, -1] = -np.inf
    x[4, :4] = [3e38, 3e38, -3e38, -3e38][: min(4, d)]
    want = np.all(np.isfinite(x), axis=1)
    largest = np.abs(x[want]).max()
    xj = jnp.asarray(x)
    np.testing.assert_array_equal(np.asarray(jax.jit(numerics.finite_rows)(xj)), want)
    assert float(jax.jit(numerics.max_abs)(xj)) == largest
    batched = jax.jit(jax.vmap(numerics.finite_rows))(jnp.stack([xj, xj[::-1]]))
    np.testing.assert_array_equal(np.asarray(batched), np.stack([want, want[::-1]]))
    if n % 3 == 0 and len(jax.devices()) >= 3:
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:3]), ("p",))
        spec = jax.sharding.PartitionSpec("p")
        sharded = jax.jit(
            jax.shard_map(numerics.finite_rows, mesh=mesh, in_specs=spec, out_specs=spec)
        )
        np.testing.assert_array_equal(np.asarray(sharded(xj)), want)
