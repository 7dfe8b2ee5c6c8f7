"""Arrays from the user's mesh (Explicit and Auto axes), eagerly and under the user's jit."""

import jax
import numpy as np
import pytest
from helpers import random_points, sample
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import hubjax

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")

X = random_points(200, 16, seed=41) + np.float32(5.0)
Y = random_points(120, 16, seed=42) + np.float32(5.0)


def user_mesh(kind):
    types = (AxisType.Explicit,) if kind == "explicit" else (AxisType.Auto,)
    return jax.make_mesh((8,), ("data",), axis_types=types)


def put(a, mesh):
    return jax.device_put(a, NamedSharding(mesh, P("data")))


MESH_CASES = [(kind, jit) for kind in ("explicit", "auto") for jit in (False, True)]


@pytest.mark.parametrize(("kind", "under_jit"), sample(MESH_CASES, 1, key="single_device_api"))
def test_single_device_api_on_user_mesh(kind, under_jit):
    mesh = user_mesh(kind)
    xs, ys = put(X, mesh), put(Y[:120], mesh)

    def calls(x, y):
        return (
            hubjax.knn(x, k=5),
            hubjax.knn(x, y, k=4, metric="cosine"),
            hubjax.hub_values(x, k=5),
            hubjax.hubness(x, k=5).k_skewness,
            hubjax.pairwise_distances(x, y),
            hubjax.reduction.knn(x, k=3, method="mp_gaussian", candidates=10),
        )

    fn = jax.jit(calls) if under_jit else calls
    got = fn(xs, ys)
    expected = calls(X, Y[:120])
    *exact, (reduced, reduced_idx) = got
    *exact_expected, (reduced_expected, reduced_idx_expected) = expected
    for a, b in zip(jax.tree.leaves(exact), jax.tree.leaves(exact_expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # mutual proximity's all-points statistics come from matrix-product tiles: last bits may
    # differ between compiled programs, the neighbours do not
    np.testing.assert_allclose(np.asarray(reduced), np.asarray(reduced_expected), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(reduced_idx), np.asarray(reduced_idx_expected))
    _, idx = got[0]
    if kind == "explicit":  # results come back sharded along the points axis
        assert jax.typeof(idx).sharding.spec[0] == "data"
        assert jax.typeof(got[2]).sharding.spec[0] == "data"


def test_metrics_on_explicit_mesh():
    mesh = user_mesh("explicit")
    xs, ys = put(X, mesh), put(Y[:120], mesh)
    got = hubjax.metrics.precision_recall(xs, ys, k=3)
    expected = hubjax.metrics.precision_recall(X, Y[:120], k=3)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


@pytest.mark.parametrize(("kind", "under_jit"), sample(MESH_CASES, 2, key="distributed_api"))
def test_distributed_on_user_mesh(kind, under_jit):
    mesh = user_mesh(kind)
    xs = put(X, mesh)

    def calls(x):
        return (
            hubjax.distributed.knn(x, k=5, mesh=mesh),
            hubjax.distributed.hub_values(x, k=5, mesh=mesh),
        )

    fn = jax.jit(calls) if under_jit else calls
    (dist, idx), counts = fn(xs)
    ref_dist, ref_idx = hubjax.knn(X, k=5)
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(ref_idx))
    np.testing.assert_array_equal(np.asarray(dist), np.asarray(ref_dist))
    np.testing.assert_array_equal(np.asarray(counts), np.asarray(hubjax.hub_values(X, k=5)))


def test_distributed_defaults_to_the_inputs_mesh():
    mesh = user_mesh("auto")
    xs = put(X, mesh)
    counts = hubjax.distributed.hub_values(xs, k=5)
    assert counts.sharding.mesh == mesh
    np.testing.assert_array_equal(np.asarray(counts), np.asarray(hubjax.hub_values(X, k=5)))
    assert (np.asarray(counts + xs[:, 0].astype(counts.dtype) * 0) == np.asarray(counts)).all()
