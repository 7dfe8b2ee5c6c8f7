"""Exact k-nearest neighbours, computed strip by strip with a bounded working set.

The query points are processed ``block_size`` rows at a time. Each strip of distances
``[block_size, m]`` is reduced to its k smallest entries (ties to the smaller index) and thrown
away, so memory is ``O(block_size * m + n * k)``: the ``[n, m]`` matrix is never built.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from hubjax import _checks, _select, distances

# Bytes of distances one strip may hold. CPU strips stay near the last-level cache size class;
# accelerators have the memory and the parallelism for much wider strips.
_STRIP_BYTES = {"cpu": 64 << 20}
_STRIP_BYTES_ACCELERATOR = 512 << 20
_COLUMN_ALIGN = 32  # columns are padded to this so the group selection always applies
# Candidates kept beyond k by the matrix-product ranking. Their distances are then recomputed
# per pair and re-sorted, so that rounding differences between tile shapes (which change the
# matrix product's summation) cannot change the reported distances or the order of near-ties.
_SLACK = 8
_SORT_SMALL_MAX = 96  # candidate lists up to this length are ranked by counting, not sorted


def _round_up(a: int, b: int) -> int:
    return -(-a // b) * b


def default_block_size(num_queries: int, num_candidates: int, itemsize: int = 4) -> int:
    """Rows per strip chosen for the default backend: a strip holds at most a fixed budget."""
    budget = _STRIP_BYTES.get(jax.default_backend(), _STRIP_BYTES_ACCELERATOR)
    width = _round_up(num_candidates, _COLUMN_ALIGN)
    rows = max(8, min(4096, budget // (itemsize * width)) // 8 * 8)
    return min(rows, _round_up(num_queries, 8))


def knn(
    x: Float[Array, "n d"],
    y: Float[Array, "m d"] | None = None,
    *,
    k: int,
    metric: str = "sqeuclidean",
    include_self: bool = False,
    block_size: int | None = None,
    check_finite: bool = True,
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
      block_size: query rows per strip (static); ``None`` picks a size whose strip of distances
        holds about 64 MiB on CPU and 512 MiB on accelerators. Results do not depend on it.
      check_finite: when the inputs are concrete, raise if they hold NaN or inf. Under ``jit``
        this check is skipped; a NaN distance then counts as +inf, so a point with non-finite
        values is nobody's neighbour (before the padding) and its own row is unspecified.

    Returns:
      ``(distances [n, k], indices [n, k])``: float32 distances (float64 for float64 inputs
      under x64) and int32 indices into ``y`` (or ``x``).

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
    x, y, k = _validate(x, y, k, metric, include_self, check_finite)
    num_candidates = x.shape[0] if y is None else y.shape[0]
    if block_size is None:
        block_size = default_block_size(x.shape[0], num_candidates)
    block_size = _checks.check_static_int(block_size, "block_size")
    return _knn(x, y, k=k, metric=metric, include_self=bool(include_self), block_size=block_size)


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
        y = _checks.as_points(y, "y")
        _checks.check_same_features(x, y)
        k = _checks.check_k(k, y.shape[0], f"y has {y.shape[0]} points")
    if check_finite:
        _checks.check_finite(x, "x")
        if y is not None:
            _checks.check_finite(y, "y")
    return x, y, k


@functools.partial(jax.jit, static_argnames=("k", "metric", "include_self", "block_size", "group"))
def _knn(x, y, *, k, metric, include_self, block_size, group=None):
    dtype = _checks.compute_dtype(x) if y is None else _checks.compute_dtype(x, y)
    xp = distances.prepare(x, metric, dtype)
    in_sample = y is None
    yp = xp if in_sample else distances.prepare(y, metric, dtype)
    with_self = in_sample and include_self
    others = k - 1 if with_self else k
    n = x.shape[0]
    if others:
        dist, idx = _strip_search(
            xp, yp, others, metric, exclude_diagonal=in_sample, block_size=block_size, group=group
        )
    else:
        dist = jnp.zeros((n, 0), dtype)
        idx = jnp.zeros((n, 0), jnp.int32)
    if with_self:
        dist = jnp.concatenate([distances.self_distance(xp, metric)[:, None], dist], axis=1)
        idx = jnp.concatenate([jnp.arange(n, dtype=jnp.int32)[:, None], idx], axis=1)
    return distances.finish(dist, metric), idx


def _strip_search(xp, yp, k, metric, *, exclude_diagonal, block_size, group):
    """Exact top-k of ``xp`` rows against all ``yp`` rows, one row strip at a time.

    Each strip ``[rows, m]`` is a plain matrix product of the ranking operands (no elementwise
    pass over it), reduced by the two-stage selection to ``k + _SLACK`` candidates (one more when
    the diagonal is excluded: the point itself is dropped in :func:`refine`).
    """
    n = xp.features.shape[0]
    m = yp.features.shape[0]
    width = _round_up(m, _COLUMN_ALIGN)
    ypad = distances.pad(yp, width)
    reference = distances.ranking_operands(ypad, metric, "reference")
    rows = min(block_size, n)
    num_blocks = -(-n // rows)
    xpad = distances.pad(xp, num_blocks * rows)
    query = distances.ranking_operands(xpad, metric, "query")
    blocks = jax.tree.map(lambda a: a.reshape(num_blocks, rows, *a.shape[1:]), (xpad, query))
    starts = jnp.arange(num_blocks, dtype=jnp.int32) * rows
    keep = min(k + _SLACK + int(exclude_diagonal), width)

    def one_strip(args):
        start, (block, block_query) = args
        ranking = distances.ranking_tile(block_query, reference)
        values, cols = _select.smallest_k(ranking, keep, group)
        row_ids = start + jnp.arange(rows, dtype=jnp.int32)[:, None] if exclude_diagonal else None
        return refine(block, ypad, values, cols, k, metric, row_ids=row_ids)

    dist, idx = lax.map(one_strip, (starts, blocks))
    return dist.reshape(-1, k)[:n], idx.reshape(-1, k)[:n]


def refine(rows, yp, values, columns, k, metric, *, row_ids=None):
    """Recomputes candidate distances per pair; keeps the k smallest by (distance, index).

    ``values``/``columns`` ``[b, c]`` are the ranking's candidates; +inf ranking values (padding,
    non-finite points) stay excluded, and so does column ``row_ids`` (the point itself) if given.
    """
    d = distances.pairs(rows, yp, columns, metric)
    excluded = values == jnp.inf
    if row_ids is not None:
        excluded = excluded | (columns == row_ids)
    d = jnp.where(excluded, jnp.full((), jnp.inf, d.dtype), d)
    if columns.shape[1] <= _SORT_SMALL_MAX:
        return _select.sort_small(d, columns, k)
    d, columns = lax.sort((d, columns), dimension=-1, num_keys=2)
    return d[:, :k], columns[:, :k]


@functools.partial(jax.jit, static_argnames=("k", "metric", "include_self"))
def knn_dense(x, y=None, *, k, metric="sqeuclidean", include_self=False):
    """The clear version of :func:`knn`: the whole matrix, then a (distance, index) sort.

    Private reference used by the tests to check the strip engine; O(n m) memory.
    """
    dtype = _checks.compute_dtype(x) if y is None else _checks.compute_dtype(x, y)
    xp = distances.prepare(x, metric, dtype)
    yp = xp if y is None else distances.prepare(y, metric, dtype)
    d = distances.tile(xp, yp, metric)
    n, m = d.shape
    idx = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), (n, m))
    with_self = y is None and include_self
    if y is None:
        d = d.at[jnp.arange(n), jnp.arange(n)].set(jnp.inf)
    others = k - 1 if with_self else k
    d, idx = lax.sort((d, idx), dimension=-1, num_keys=2)
    keep = min(others + _SLACK, m)
    d, idx = refine(xp, yp, d[:, :keep], idx[:, :keep], others, metric)
    if with_self:
        d = jnp.concatenate([distances.self_distance(xp, metric)[:, None], d], axis=1)
        idx = jnp.concatenate([jnp.arange(n, dtype=jnp.int32)[:, None], idx], axis=1)
    return distances.finish(d, metric), idx
