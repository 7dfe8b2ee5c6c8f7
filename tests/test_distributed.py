"""Sharded k-NN / hub values against the single-device functions (8 fake CPU devices)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_points, sample, tie_points
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import hubjax
from hubjax import distributed

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")


def assert_same(a, b):
    np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))


@pytest.mark.parametrize(
    ("data", "include_self", "metric"),
    sample(
        [
            (data, include_self, metric)
            for data in ("random", "ties")
            for include_self in (False, True)
            for metric in ("sqeuclidean", "cosine")
        ],
        3,
        key="distributed_in_sample",
    ),
)
def test_in_sample_equals_single_device(data, include_self, metric):
    x = random_points(203, 12, seed=1) if data == "random" else tie_points(203, 3, seed=1)
    got = distributed.knn(x, k=6, metric=metric, include_self=include_self)
    assert_same(got, hubjax.knn(x, k=6, metric=metric, include_self=include_self))
    counts = distributed.hub_values(x, k=6, metric=metric, include_self=include_self)
    np.testing.assert_array_equal(
        counts, hubjax.hub_values(x, k=6, metric=metric, include_self=include_self)
    )


@pytest.mark.parametrize("data", ["random", "ties"])
def test_query_vs_reference_equals_single_device(data):
    make = random_points if data == "random" else tie_points
    x, y = make(45, 5, seed=2), make(131, 5, seed=3)
    assert_same(distributed.knn(x, y, k=7), hubjax.knn(x, y, k=7))


def test_tiny_shards_and_k_larger_than_a_shard():
    x = tie_points(19, 2, seed=4)  # 3 points per device, some devices hold padding only
    assert_same(distributed.knn(x, k=15), hubjax.knn(x, k=15))
    assert_same(distributed.knn(x, k=18), hubjax.knn(x, k=18))
    np.testing.assert_array_equal(distributed.hub_values(x, k=18), hubjax.hub_values(x, k=18))


def test_sub_mesh_and_named_axis():
    devices = np.asarray(jax.devices()[:4]).reshape(2, 2)
    mesh = Mesh(devices, ("a", "b"))
    x = random_points(50, 6, seed=5)
    with pytest.raises(ValueError, match="pass axis_name"):
        distributed.knn(x, k=3, mesh=mesh)
    small = Mesh(np.asarray(jax.devices()[:3]), ("rows",))
    assert_same(distributed.knn(x, k=3, mesh=small), hubjax.knn(x, k=3))


@pytest.mark.parametrize("include_self", sample([False, True], 1, key="approximate_devices"))
def test_approximate_equals_single_device_approximate(include_self):
    from hubjax.approximate import IVF

    rng = np.random.default_rng(11)
    x = (rng.normal(size=(403, 8)) + 40 * rng.integers(0, 5, (403, 1))).astype(np.float32)
    x[7] = x[300]  # a duplicate
    settings = IVF(nlist=12, nprobe=3, chunk=32, columns=64)
    want = hubjax.knn(x, k=6, include_self=include_self, approximate=settings)
    assert_same(distributed.knn(x, k=6, include_self=include_self, approximate=settings), want)
    np.testing.assert_array_equal(
        distributed.hub_values(x, k=6, include_self=include_self, approximate=settings),
        hubjax.hub_values(x, k=6, include_self=include_self, approximate=settings),
    )
    if include_self:
        return  # the rest does not depend on it
    q = x[::7] + 0.5
    assert_same(
        distributed.knn(q, x, k=4, approximate=settings),
        hubjax.knn(q, x, k=4, approximate=settings),
    )
    # probing every list: the exact neighbours, over the devices as on one
    every = IVF(nlist=12, nprobe=12, chunk=32, columns=64, ratio=None)
    assert_same(distributed.knn(x, k=6, approximate=every), hubjax.knn(x, k=6))
    with pytest.raises(ValueError, match="nprobe=13"):
        distributed.knn(x, k=6, approximate=IVF(nlist=12, nprobe=13))


def test_second_call_does_not_recompile():
    x1, x2 = random_points(64, 4, seed=6), random_points(64, 4, seed=7)
    distributed.hub_values(x1, k=4)
    fn = distributed._compiled(
        "hub", distributed._mesh_axis(None, None)[0], "points", 1, 4, "sqeuclidean", False, None
    )
    before = fn._cache_size()
    distributed.hub_values(x2, k=4)
    assert fn._cache_size() == before


def test_shard_map_building_blocks():
    mesh = jax.make_mesh((8,), ("i",))
    x = random_points(8 * 20, 10, seed=8)
    xs = jax.device_put(x, NamedSharding(mesh, P("i")))
    f = jax.jit(
        jax.shard_map(
            functools.partial(distributed.ring_knn, k=5, axis_name="i"),
            mesh=mesh,
            in_specs=P("i"),
            out_specs=(P("i"), P("i")),
        )
    )
    assert_same(f(xs), hubjax.knn(x, k=5))
    g = jax.jit(
        jax.shard_map(
            functools.partial(distributed.ring_hub_values, k=5, axis_name="i"),
            mesh=mesh,
            in_specs=P("i"),
            out_specs=P("i"),
        )
    )
    np.testing.assert_array_equal(g(xs), hubjax.hub_values(x, k=5))


def test_pmap_building_blocks():
    x = tie_points(8 * 13, 3, seed=9)
    shards = x.reshape(8, 13, 3)
    knn = jax.pmap(functools.partial(distributed.ring_knn, k=4, axis_name="d"), axis_name="d")
    dist, idx = knn(shards)
    assert_same((dist.reshape(-1, 4), idx.reshape(-1, 4)), hubjax.knn(x, k=4))
    hub = jax.pmap(
        functools.partial(distributed.ring_hub_values, k=4, include_self=True, axis_name="d"),
        axis_name="d",
    )
    np.testing.assert_array_equal(
        hub(shards).reshape(-1), hubjax.hub_values(x, k=4, include_self=True)
    )
    y = tie_points(8 * 5, 3, seed=10)
    qr = jax.pmap(functools.partial(distributed.ring_knn, k=6, axis_name="d"), axis_name="d")
    dist, idx = qr(shards, y.reshape(8, 5, 3))
    assert_same((dist.reshape(-1, 6), idx.reshape(-1, 6)), hubjax.knn(x, y, k=6))


def test_bad_input():
    x = random_points(20, 3)
    with pytest.raises(ValueError, match="larger than the 19"):
        distributed.knn(x, k=20)
    with pytest.raises(ValueError, match="non-finite"):
        distributed.hub_values(np.full((10, 2), np.nan), k=2)
    with pytest.raises(ValueError, match="larger than the 15 candidates"):
        jax.pmap(functools.partial(distributed.ring_knn, k=16, axis_name="d"), axis_name="d")(
            jnp.ones((8, 2, 3))
        )
