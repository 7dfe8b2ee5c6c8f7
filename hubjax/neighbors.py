"""Exact k-nearest neighbours: the public :func:`knn` and its clear dense reference.

The engines live in :mod:`hubjax._engines`; this module validates, picks one and handles the
in-sample self conventions. The ``[n, m]`` distance matrix is never built (except by
:func:`knn_dense`, the test reference).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from hubjax import _checks, _cpu, _engines, _mesh, _select, distances

# Bytes of ranking values one strip may hold. CPU strips stay small; accelerators have the
# memory and the parallelism for much wider ones.
_STRIP_BYTES = {"cpu": 64 << 20}
_STRIP_BYTES_ACCELERATOR = 512 << 20
# In-sample search uses the symmetric engine from this many features on: below it the extra
# selection work of the portable (XLA) selection outweighs the halved matrix products (measured
# on a 2-core CPU; benchmarks/). With the compiled CPU selection the tiled engine (each block
# pair once, as cache-sized tiles; _engines.tiled_search) is the in-sample default at every
# dimension, and the symmetric engine the fallback where its plan does not apply.
_SYMMETRIC_MIN_FEATURES = 512
_SYMMETRIC_MAX_BLOCK = 2048
_TILE_BLOCK = 1536


def _budget() -> int:
    return _STRIP_BYTES.get(jax.default_backend(), _STRIP_BYTES_ACCELERATOR)


def default_block_size(
    num_queries: int, num_candidates: int, itemsize: int = 4, num_features: int = 0
) -> int:
    """Rows per strip for the default backend: a strip's ranking values plus its query
    operands (``rows x (m + d)``) hold at most a fixed budget."""
    width = _engines.round_up(num_candidates, _engines._COLUMN_ALIGN) + num_features
    rows = max(8, min(4096, _budget() // (itemsize * width)) // 8 * 8)
    return min(rows, _engines.round_up(num_queries, 8))


def default_symmetric_block(n: int, itemsize: int = 4) -> int:
    """Block for the symmetric engine: its ``block x n/2`` strip within 4x the strip budget."""
    block = 4 * _budget() // (itemsize * max(n // 2, 1))
    return max(256, min(_SYMMETRIC_MAX_BLOCK, block))


def default_tile_block(n: int) -> int:
    """Block for the tiled engine: ``[block, block]`` ranking tiles of a few MB (measured on a
    2-core CPU, n = 10 000 ... 20 000, d = 128 ... 512: 1024 ... 2048 all within noise)."""
    return min(_TILE_BLOCK, max(256, n // 3))


def knn(
    x: Float[Array, "n d"],
    y: Float[Array, "m d"] | None = None,
    *,
    k: int,
    metric: str = "sqeuclidean",
    include_self: bool = False,
    block_size: int | None = None,
    check_finite: bool = True,
    approximate=False,
) -> tuple[Float[Array, "n k"], Int[Array, "n k"]]:
    """Exact k nearest neighbours of every row of ``x`` among the rows of ``y`` (or of ``x``).

    Rows of the result are sorted nearest first; equal distances are ordered by the smaller
    index, so the result is deterministic. With ``y=None`` (in-sample search):

    * ``include_self=False`` (default; scikit-hubness, blog recipe): point i is never in its own
      list, even where other points coincide with it (those are ordinary neighbours at
      distance 0). Needs ``k <= n - 1``.
    * ``include_self=True`` (the hubness-prior paper's code): point i is the first of its own k
      neighbours whatever the distances, followed by its k - 1 nearest other points. Needs
      ``k <= n``.

    With ``y`` given every query searches all of ``y``; needs ``k <= m``.

    Args:
      x: query points ``[n, d]``. Integer/bool inputs are cast to the default float dtype;
        bf16/fp16 are accumulated in float32.
      y: reference points ``[m, d]`` or ``None`` for in-sample search.
      k: number of neighbours (static).
      metric: ``"sqeuclidean"``, ``"euclidean"``, ``"cosine"`` or ``"dot"`` (static). For
        ``euclidean`` the ranking uses squared distances.
      include_self: in-sample convention, see above (static).
      block_size: rows per block (static); ``None`` picks one per backend (a strip of ranking
        values of about 64 MiB on CPU, 512 MiB on accelerators). Results do not depend on it.
      check_finite: when the inputs are concrete, raise if they hold NaN or inf. Under ``jit``
        this check is skipped: a point with non-finite values is then nobody's neighbour and
        nobody's query (its row is the sentinel below).
      approximate: ``False`` (exact), ``True`` or a :class:`hubjax.approximate.IVF` (static):
        search an inverted-file index instead (:mod:`hubjax.approximate`); the neighbours found
        have exact distances but some true neighbours may be missed. ``block_size`` is then
        unused.

    Returns:
      ``(distances [n, k], indices [n, k])``: float32 distances (float64 for float64 inputs
      under x64) and int32 indices into ``y`` (or ``x``). Rows of non-finite queries, and slots
      that have no finite candidate left, hold the sentinel ``(inf, -1)``.

    The neighbours are exact for any data float32 can represent (uncentred, tiny or huge
    scales): they are the k smallest per-pair distances (:mod:`hubjax.distances`), found by a
    shifted matrix-product ranking whose rounding error is bounded per row, with an exact
    re-check of any row the bound cannot certify. Results are bitwise identical for every
    ``block_size``, engine and device count.

    Raises:
      ValueError: k < 1 or k larger than the candidates, rank other than 2, empty inputs,
        mismatched feature dimensions, unknown metric, non-finite values (when checked).
      TypeError: complex or non-numeric inputs, non-integer ``k`` or ``block_size``.

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> x = jnp.array([[0.0], [1.0], [3.0], [4.0]])
      >>> dist, idx = hubjax.knn(x, k=2)
      >>> idx
      Array([[1, 2],
             [0, 2],
             [3, 1],
             [2, 1]], dtype=int32)
      >>> hubjax.knn(x, k=2, include_self=True)[1]
      Array([[0, 1],
             [1, 0],
             [2, 3],
             [3, 2]], dtype=int32)
    """
    if approximate is not False:
        from hubjax import approximate as _approximate

        settings = _approximate.as_settings(approximate)
        if settings is not None:
            return _approximate.knn(
                x,
                y,
                k=k,
                metric=metric,
                include_self=include_self,
                settings=settings,
                check_finite=check_finite,
            )
    x, y, k = _validate(x, y, k, metric, include_self, check_finite)
    block_size = check_block_size(block_size)
    return _knn(x, y, k=k, metric=metric, include_self=bool(include_self), block_size=block_size)


def check_block_size(block_size) -> int | None:
    """``None`` or a Python int >= 1 (the same check in every function that takes it)."""
    if block_size is None:
        return None
    return _checks.check_static_int(block_size, "block_size")


def _validate(x, y, k, metric, include_self, check_finite):
    """Shared eager checks of ``knn``-style arguments; returns the converted arrays and k."""
    _checks.check_metric(metric)
    x = _checks.as_points(x, "x")
    n = x.shape[0]
    if y is None:
        if include_self:
            k = _checks.check_k(k, n, f"x has {n} points and include_self=True counts the point")
        else:
            k = _checks.check_k(
                k, n - 1, f"in-sample search excludes the point itself, leaving n - 1 = {n - 1}"
            )
    else:
        if include_self:
            raise ValueError(
                "include_self=True applies to in-sample search (y=None); with y given every "
                "query searches all of y."
            )
        y = _checks.as_points(y, "y")
        _checks.check_same_features(x, y)
        k = _checks.check_k(k, y.shape[0], f"y has {y.shape[0]} points")
    if check_finite:
        _checks.check_finite(x, "x")
        if y is not None:
            _checks.check_finite(y, "y")
    return x, y, k


@functools.partial(
    jax.jit, static_argnames=("k", "metric", "include_self", "block_size", "engine", "group")
)
def _knn(x, y, *, k, metric, include_self, block_size, engine="auto", group=None):
    """Jitted core of :func:`knn`; ``engine`` is "auto", "strip", "symmetric" or "tiled" (for
    tests)."""
    (x, y), placement = _mesh.gather(x, y)
    with _mesh.context(placement):
        out = _knn_core(x, y, k, metric, include_self, block_size, engine, group)
    return _mesh.scatter(out, placement)


def _knn_core(x, y, k, metric, include_self, block_size, engine, group):
    in_sample = y is None
    xp, yp, e = distances.prepare_pair(x, y, metric)
    dtype = xp.features.dtype
    with_self = in_sample and include_self
    others = k - 1 if with_self else k
    n, dim = x.shape
    plan = None
    if in_sample and others and engine != "strip":
        fast = _select.fast_cpu_selection()
        if engine == "tiled" or (engine == "auto" and fast):
            block = block_size or default_tile_block(n)
            plan = _engines.tiled_plan(n, others, block, _cpu.threads())
        if plan is None and (engine == "symmetric" or dim >= _SYMMETRIC_MIN_FEATURES or fast):
            block = block_size or default_symmetric_block(n)
            plan = _engines.symmetric_plan(n, others, block, fast_select=fast)
    if not others:
        dist, idx = jnp.zeros((n, 0), dtype), jnp.zeros((n, 0), jnp.int32)
    else:
        rows = block_size or default_block_size(n, yp.features.shape[0], num_features=dim)
        dist, idx = _engines.search(
            xp, yp, others, metric, in_sample=in_sample, block_size=rows, plan=plan, group=group
        )
    if with_self:
        dist = jnp.concatenate([distances.self_distance(xp, metric)[:, None], dist], axis=1)
        idx = jnp.concatenate([jnp.arange(n, dtype=jnp.int32)[:, None], idx], axis=1)
    return sentinels(dist, idx, xp.penalty, metric, e)


def sentinels(dist, idx, penalty, metric, exponent):
    """Reported distances; rows of non-finite queries and unfilled slots become (+inf, -1).

    ``dist`` is on the internal scale: a slot is empty where it is +inf there (a reported
    value may still overflow to inf on huge data without being empty).
    """
    empty = (dist == jnp.inf) | (penalty[:, None] != 0)
    inf = jnp.full((), jnp.inf, dist.dtype)
    dist = distances.finish(dist, metric, exponent)
    return jnp.where(empty, inf, dist), jnp.where(empty, -1, idx)


@functools.partial(jax.jit, static_argnames=("k", "metric", "include_self"))
def knn_dense(x, y=None, *, k, metric="sqeuclidean", include_self=False):
    """The clear version of :func:`knn`: every per-pair distance, then a (distance, index) sort.

    Private reference used by the tests to check the engines; O(n m) memory.
    """
    xp, yp, e = distances.prepare_pair(x, y, metric)
    d = distances.dense(xp, yp, metric)
    n, m = d.shape
    idx = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), (n, m))
    with_self = y is None and include_self
    if y is None:
        d = d.at[jnp.arange(n), jnp.arange(n)].set(jnp.inf)
    others = k - 1 if with_self else k
    d, idx = lax.sort((d, idx), dimension=-1, num_keys=2)
    d, idx = d[:, :others], idx[:, :others]
    if with_self:
        d = jnp.concatenate([distances.self_distance(xp, metric)[:, None], d], axis=1)
        idx = jnp.concatenate([jnp.arange(n, dtype=jnp.int32)[:, None], idx], axis=1)
    return sentinels(d, idx, xp.penalty, metric, e)
