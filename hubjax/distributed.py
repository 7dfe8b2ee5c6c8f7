"""k-NN and hub values of one point set spread over devices (and hosts).

Building blocks for code already inside ``jax.shard_map`` or ``jax.pmap``:

* :func:`ring_knn` -- the local shard's k-NN lists (global indices).
* :func:`ring_hub_values` -- the local shard's hub values.

Whole-array front ends with the signatures of the single-device functions:

* :func:`knn` and :func:`hub_values` shard the points over a ``Mesh`` (default: every device on
  one axis ``"points"``), run the ring and return global arrays. n need not divide the number of
  devices: the points are padded with non-finite rows, which are nobody's neighbour.

Algorithm (per device, P devices, shards of n/P points): queries stay local; the reference
shards travel around a ring with ``lax.ppermute``. At each of the P steps a device sends the
shard it holds on to the next device and, with nothing waiting for that transfer, searches the
shard with the single-device search, keeps its best candidates (exact distances, ties to the
smaller global index) and merges them into its running lists. Hub
values are then a local scatter-add of global indices followed by one reduce-scatter.

Bytes sent per device and call (float32, d features): the ring passes (P - 1) shards of
n/P x (d + 2) values, i.e. about ``4 n (d + 2) (P - 1) / P`` bytes, plus ``4 n (P - 1) / P`` for
the counts' reduce-scatter. An all-gather of the points moves the same ``4 n d (P - 1) / P``
bytes into every device but then holds all n x d points (and an n/P x n distance strip) on each
one; the ring holds two shards at a time and overlaps each transfer with a shard's search.
Results are identical to :func:`hubjax.knn` / :func:`hubjax.hub_values` on one device.

Several hosts: call ``jax.distributed.initialize(...)`` in every process first, build the mesh
over ``jax.devices()`` (all processes' devices) and pass the same host data in every process (or
a global ``jax.Array``); see ``tests/test_distributed.py`` for a two-process run on CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, Int

from hubjax._src import arguments, counting, finisher, ivf, numerics, search
from hubjax._src import checks as _checks
from hubjax._src import mesh as _mesh
from hubjax._src import metric as _metric
from hubjax._src import select as _select

__all__ = ["knn", "hub_values", "ring_knn", "ring_hub_values"]

AXIS = "points"


def ring_knn(
    x_local: Float[Array, "nl d"],
    y_local: Float[Array, "ml d"] | None = None,
    *,
    k: int,
    axis_name,
    metric: str = "sqeuclidean",
    include_self: bool = False,
    block_size: int | None = None,
) -> tuple[Float[Array, "nl k"], Int[Array, "nl k"]]:
    """k-NN of the local query shard against the reference shards of all devices on the axis.

    Call inside ``jax.shard_map`` (or ``jax.pmap``) over ``axis_name``. Device p holds queries
    with global indices ``p * nl + r`` and references ``p * ml + r``. With ``y_local=None`` the
    query shards are the reference shards (in-sample; self conventions as in
    :func:`hubjax.knn`). Shards with non-finite rows (e.g. padding) are nobody's neighbour.

    Args:
      x_local: this device's queries ``[nl, d]``.
      y_local: this device's reference points ``[ml, d]`` or ``None``.
      k, metric, include_self, block_size: as in :func:`hubjax.knn` (static).
      axis_name: the mapped axis (static).

    Returns:
      ``(distances [nl, k], indices [nl, k])`` with global reference indices.

    Example:
      >>> import functools, jax, hubjax
      >>> x = jax.random.normal(jax.random.key(0), (jax.local_device_count(), 50, 8))
      >>> f = jax.pmap(functools.partial(hubjax.distributed.ring_knn, k=3, axis_name="i"),
      ...              axis_name="i")
      >>> f(x)[1].shape[-1]
      3
    """
    x_local, y_local, k, metric = _validate_ring(
        x_local, y_local, k, axis_name, metric, include_self
    )
    return _ring_knn(
        x_local,
        y_local,
        k=k,
        axis_name=axis_name,
        metric=metric,
        include_self=bool(include_self),
        block_size=arguments.check_block_size(block_size),
    )


def _validate_ring(x_local, y_local, k, axis_name, metric, include_self):
    """Eager checks of the per-shard functions (shapes and axis size are static under tracing)."""
    metric = _metric.resolve(metric)
    in_sample = y_local is None
    if include_self and not in_sample:
        raise ValueError("include_self=True applies to in-sample search (y_local=None).")
    x_local = _checks.as_points(x_local, "x_local")
    reference = x_local if in_sample else _checks.as_points(y_local, "y_local")
    _checks.check_same_features(x_local, reference)
    num_devices = lax.axis_size(axis_name)
    total = num_devices * reference.shape[0]
    limit = total - 1 if in_sample and not include_self else total
    k = _checks.check_k(k, limit, f"{num_devices} shards of {reference.shape[0]} points")
    return x_local, (None if in_sample else reference), k, metric


def _ring_knn(x_local, y_local=None, *, k, axis_name, metric, include_self, block_size):
    in_sample = y_local is None
    dtype = _checks.compute_dtype(x_local) if in_sample else _checks.compute_dtype(x_local, y_local)
    x_local = x_local.astype(dtype)
    y_local = None if in_sample else y_local.astype(dtype)
    # One scale and one shift for all shards (a max is exact in any order, so the scale and
    # with it every per-pair distance is the same as on one device).
    exponent = None
    if metric.scaled:
        largest = numerics.max_abs(x_local)
        if not in_sample:
            largest = jnp.maximum(largest, numerics.max_abs(y_local))
        exponent = metric.exponent_of(lax.pmax(largest, axis_name))
    xp = metric.prepare(x_local, dtype, exponent)
    yp = xp if in_sample else metric.prepare(y_local, dtype, exponent)
    shift = metric.centre(yp, axis_name)
    nl, ml = xp.features.shape[0], yp.features.shape[0]
    num_devices = lax.axis_size(axis_name)
    me = lax.axis_index(axis_name)
    with_self = in_sample and include_self
    others = k - 1 if with_self else k
    row_ids = me * nl + jnp.arange(nl, dtype=jnp.int32)
    if others:

        def candidates(block, source, own):
            """The shard's exact best ``others`` (distance, global index), padded with +inf."""
            count = min(others, ml - 1 if own else ml)
            if count:
                options = search.Options(count, metric, block_size=block_size, source="strip")
                d, cols = search.exact(xp, block, count, options, in_sample=own, shift=shift)
                cols = cols + source * ml
            else:  # a one-point shard searched against itself
                d, cols = jnp.zeros((nl, 0), dtype), jnp.zeros((nl, 0), jnp.int32)
            width = others - count
            if width:  # placeholders: +inf, indices past every real one, distinct per source
                filler = num_devices * ml + source * others + jnp.arange(width, dtype=jnp.int32)
                d = jnp.concatenate([d, jnp.full((nl, width), jnp.inf, dtype)], axis=1)
                cols = jnp.concatenate([cols, jnp.broadcast_to(filler, (nl, width))], axis=1)
            return d, cols

        perm = [(j, (j + 1) % num_devices) for j in range(num_devices)]

        def send(block):
            return jax.tree.map(lambda a: lax.ppermute(a, axis_name, perm), block)

        def merged(lists, block, s):
            d, cols = candidates(block, (me - s) % num_devices, False)
            return _select.merge_smallest_k(*lists, d, cols, others)

        def step(s, carry):
            # the next shard is sent before this one is searched and nothing here waits for
            # it, so the transfer can run under the search (XLA's asynchronous collectives)
            lists, block = carry
            return merged(lists, block, s), send(block)

        incoming = send(yp)
        lists = candidates(yp, me, in_sample)
        if num_devices > 1:
            lists, last = lax.fori_loop(1, num_devices - 1, step, (lists, incoming))
            lists = merged(lists, last, num_devices - 1)  # nothing left to send
        dist, idx = lists
    else:
        dist = jnp.zeros((nl, 0), dtype)
        idx = jnp.zeros((nl, 0), jnp.int32)
    if with_self:
        dist = jnp.concatenate([metric.self_distance(xp)[:, None], dist], axis=1)
        idx = jnp.concatenate([row_ids[:, None], idx], axis=1)
    return finisher.sentinels(dist, idx, xp.penalty, metric, exponent)


def ring_hub_values(
    x_local: Float[Array, "nl d"],
    *,
    k: int,
    axis_name,
    metric: str = "sqeuclidean",
    include_self: bool = False,
    block_size: int | None = None,
) -> Int[Array, " nl"]:
    """In-sample hub values of the local shard's points (call inside shard_map / pmap).

    The counts of all devices' lists are combined with one ``lax.psum_scatter``. Lists of rows
    with non-finite values (such as padding) are not counted.

    Example:
      >>> import functools, jax, hubjax
      >>> x = jax.random.normal(jax.random.key(0), (jax.local_device_count(), 50, 8))
      >>> f = jax.pmap(functools.partial(hubjax.distributed.ring_hub_values, k=3,
      ...                                axis_name="i"), axis_name="i")
      >>> int(f(x).sum()) == x.shape[0] * 50 * 3
      True
    """
    x_local, _, k, metric = _validate_ring(x_local, None, k, axis_name, metric, include_self)
    return _ring_hub_values(
        x_local,
        k=k,
        axis_name=axis_name,
        metric=metric,
        include_self=bool(include_self),
        block_size=arguments.check_block_size(block_size),
    )


def _shard_counts(x_local, idx, axis_name):
    """Global k-occurrence of all shards' lists, reduce-scattered to each shard's points.

    Lists of rows with non-finite values (the padding) are not counted.
    """
    valid = jnp.all(jnp.isfinite(x_local), axis=1)
    idx = jnp.where(valid[:, None], idx, -1)  # dropped by the count
    counts = counting.counts_of(idx, lax.axis_size(axis_name) * x_local.shape[0])
    return lax.psum_scatter(counts, axis_name, scatter_dimension=0, tiled=True)


def _mesh_axis(mesh, axis_name, x=None):
    """The mesh and axis to shard over: given ones, else the mesh and points axis of ``x``'s
    own sharding (a user's mesh), else all devices on one axis."""
    if mesh is None and x is not None:
        sharding = getattr(x, "sharding", None)
        spec = getattr(sharding, "spec", None)
        user_mesh = getattr(sharding, "mesh", None)
        if isinstance(user_mesh, Mesh) and spec and isinstance(spec[0], str):
            mesh, axis_name = user_mesh, axis_name or spec[0]
    if mesh is None:
        mesh = Mesh(np.asarray(jax.devices()), (AXIS,))
    if axis_name is None:
        if len(mesh.axis_names) != 1:
            raise ValueError(f"mesh has axes {mesh.axis_names}; pass axis_name to pick one.")
        axis_name = mesh.axis_names[0]
    return mesh, axis_name


def _explicit(mesh) -> bool:
    types = getattr(mesh, "axis_types", ())
    return bool(types) and all(t == jax.sharding.AxisType.Explicit for t in types)


def _shard_points(a, mesh, axis_name, size):
    """Pads ``a`` to ``size`` rows of NaN and places it sharded over ``axis_name``.

    Device arrays stay on device (no host round-trip); inside the user's ``jit`` the placement
    is a ``reshard`` on Explicit meshes and a sharding constraint on Auto ones.
    """
    sharding = NamedSharding(mesh, P(axis_name))
    if isinstance(a, jax.core.Tracer):
        (a,), _ = _mesh.gather(a)
        a = jnp.pad(a, [(0, size - a.shape[0]), (0, 0)], constant_values=jnp.nan)
        if _explicit(mesh):
            return jax.sharding.reshard(a, sharding)
        return lax.with_sharding_constraint(a, sharding)
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        if a.shape[0] != size:
            raise ValueError(
                f"a global array spanning several processes must already have a multiple of the "
                f"{mesh.shape[axis_name]} devices as rows (got {a.shape[0]}); pad it with NaN."
            )
        return jax.device_put(a, sharding)
    if isinstance(a, jax.Array) and jax.process_count() == 1:
        (a,), _ = _mesh.gather(a)
        if size != a.shape[0]:
            a = jnp.pad(a, [(0, size - a.shape[0]), (0, 0)], constant_values=jnp.nan)
        return jax.device_put(a, sharding)
    host = np.asarray(a)
    host = np.concatenate(
        [host, np.full((size - host.shape[0], host.shape[1]), np.nan, host.dtype)]
    )
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _unpad(a, n, mesh):
    """The first n rows; uneven results of an Explicit mesh are replicated first."""
    if a.shape[0] == n:
        return a
    if _explicit(mesh):
        a = jax.sharding.reshard(a, NamedSharding(mesh, P()))
    return a[:n]


def knn(
    x: Float[Array, "n d"],
    y: Float[Array, "m d"] | None = None,
    *,
    k: int,
    mesh: Mesh | None = None,
    axis_name: str | None = None,
    metric: str = "sqeuclidean",
    include_self: bool = False,
    block_size: int | None = None,
    check_finite: bool = True,
    approximate=False,
) -> tuple[Float[Array, "n k"], Int[Array, "n k"]]:
    """:func:`hubjax.knn` with the points sharded over the devices of ``mesh``.

    Same arguments and results as :func:`hubjax.knn` (identical indices), plus ``mesh``
    (default: all devices on one axis) and ``axis_name`` (default: the mesh's only axis). Inputs
    may be host arrays (in multi-process runs, the same data in every process) or jax.Arrays.
    The results are global arrays sharded over the mesh.

    ``approximate`` (``True`` or a :class:`hubjax.approximate.IVF`): the inverted-file search
    of :mod:`hubjax.approximate`, with the queries split over the devices. Unlike the exact
    ring, every device gathers all reference points (``m x d`` per device) and builds the same
    index (the k-means runs on every device, in parallel); the results equal the single-device
    ``hubjax.knn(..., approximate=...)``.

    Example:
      >>> import jax, hubjax
      >>> x = jax.random.normal(jax.random.key(0), (101, 16))
      >>> dist, idx = hubjax.distributed.knn(x, k=5)
      >>> bool((idx == hubjax.knn(x, k=5)[1]).all())
      True
    """
    x, y, k, metric = arguments.validate_knn(x, y, k, metric, include_self, check_finite)
    block_size = arguments.check_block_size(block_size)
    settings = _approximate_settings(approximate, x if y is None else y)
    mesh, axis_name = _mesh_axis(mesh, axis_name, x)
    devices = mesh.shape[axis_name]
    n = x.shape[0]
    args = [_shard_points(x, mesh, axis_name, numerics.round_up(n, devices))]
    if y is not None:
        args.append(_shard_points(y, mesh, axis_name, numerics.round_up(y.shape[0], devices)))
    sizes = (n, x.shape[0] if y is None else y.shape[0]) if settings else None
    fn = _compiled(
        "knn",
        mesh,
        axis_name,
        len(args),
        k,
        metric,
        bool(include_self),
        block_size,
        settings,
        sizes,
    )
    dist, idx = fn(*args)
    return _unpad(dist, n, mesh), _unpad(idx, n, mesh)


def _approximate_settings(approximate, reference):
    settings = ivf.as_settings(approximate)
    return None if settings is None else settings.validate(reference.shape[0])


def _gathered_knn(x_local, y_local=None, *, k, axis_name, metric, include_self, settings, sizes):
    """Approximate search of the local queries against every point (all-gathered)."""
    n, m = sizes
    if y_local is not None:
        ref = lax.all_gather(y_local, axis_name, tiled=True)[:m]
        return ivf.search_rows(x_local, ref, k, metric, settings, False)
    ref = lax.all_gather(x_local, axis_name, tiled=True)[:n]
    nl = x_local.shape[0]
    ids = lax.axis_index(axis_name) * nl + jnp.arange(nl, dtype=jnp.int32)
    others = k - int(include_self)
    return ivf.search_rows(x_local, ref, others, metric, settings, include_self, ids)


def _gathered_hub_values(x_local, *, k, axis_name, metric, include_self, settings, sizes):
    _, idx = _gathered_knn(
        x_local,
        k=k,
        axis_name=axis_name,
        metric=metric,
        include_self=include_self,
        settings=settings,
        sizes=sizes,
    )
    return _shard_counts(x_local, idx, axis_name)


@functools.lru_cache(maxsize=64)
def _compiled(
    kind,
    mesh,
    axis_name,
    num_inputs,
    k,
    metric,
    include_self,
    block_size,
    settings=None,
    sizes=None,
):
    """The jitted shard_map of one configuration, built once (repeat calls do not retrace)."""
    if settings is None:
        body = _ring_knn if kind == "knn" else _ring_hub_values
        options = {"block_size": block_size}
    else:
        body = _gathered_knn if kind == "knn" else _gathered_hub_values
        options = {"settings": settings, "sizes": sizes}
    fn = functools.partial(
        body, k=k, axis_name=axis_name, metric=metric, include_self=include_self, **options
    )
    if num_inputs == 1 and kind == "knn":
        fn = functools.partial(fn, y_local=None)
    spec = P(axis_name)
    out_specs = (spec, spec) if kind == "knn" else spec
    mapped = jax.shard_map(
        fn, mesh=mesh, in_specs=(spec,) * num_inputs, out_specs=out_specs, check_vma=False
    )
    return jax.jit(mapped)


def hub_values(
    x: Float[Array, "n d"],
    *,
    k: int,
    mesh: Mesh | None = None,
    axis_name: str | None = None,
    metric: str = "sqeuclidean",
    include_self: bool = False,
    block_size: int | None = None,
    check_finite: bool = True,
    approximate=False,
) -> Int[Array, " n"]:
    """:func:`hubjax.hub_values` with the points sharded over the devices of ``mesh``.

    ``approximate``: as in :func:`knn` (every device gathers all points).

    Example:
      >>> import jax, hubjax
      >>> x = jax.random.normal(jax.random.key(0), (101, 16))
      >>> bool((hubjax.distributed.hub_values(x, k=5) == hubjax.hub_values(x, k=5)).all())
      True
    """
    x, _, k, metric = arguments.validate_knn(x, None, k, metric, include_self, check_finite)
    block_size = arguments.check_block_size(block_size)
    settings = _approximate_settings(approximate, x)
    mesh, axis_name = _mesh_axis(mesh, axis_name, x)
    n = x.shape[0]
    xs = _shard_points(x, mesh, axis_name, numerics.round_up(n, mesh.shape[axis_name]))
    sizes = (n, n) if settings else None
    fn = _compiled(
        "hub", mesh, axis_name, 1, k, metric, bool(include_self), block_size, settings, sizes
    )
    return _unpad(fn(xs), n, mesh)


def _ring_hub_values(x_local, *, k, axis_name, metric, include_self, block_size):
    _, idx = _ring_knn(
        x_local,
        None,
        k=k,
        axis_name=axis_name,
        metric=metric,
        include_self=include_self,
        block_size=block_size,
    )
    return _shard_counts(x_local, idx, axis_name)
