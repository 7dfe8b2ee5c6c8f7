"""Per-pair distances: the values every result reports, and the dense matrix.

A pair's distance is :meth:`Metric.pair_values <hubjax._src.metric.Metric.pair_values>` of the
prepared points, summed over features in :func:`~hubjax._src.numerics.tree_sum`'s fixed order,
so it is bitwise the same in :func:`pairs` (each row against its own candidates),
:func:`pair_tile` (rows against a block) and :func:`dense`. On CPU the sums run in the compiled
kernel (:func:`hubjax._src.kernels.cpu.pair_sums`: the same order, in registers, without the
``[b, c, d]`` intermediate); elsewhere, or without the kernel, in XLA.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from hubjax._src import checks, numerics, select
from hubjax._src import mesh as _mesh
from hubjax._src import metric as _metric
from hubjax._src.kernels import cpu
from hubjax._src.metric import Metric
from hubjax._src.numerics import Prepared


def _values_rows(x: jax.Array, y: jax.Array, columns: jax.Array, metric: Metric) -> jax.Array:
    """``metric.pair_values(x[:, None], y[columns])`` ``[b, c]``."""

    def portable(x, y, columns):
        return metric.pair_values(x[:, None, :], y[columns])

    def kernel(x, y, columns):
        return metric.from_sums(cpu.pair_sums(x, y, columns, product=metric.product))

    return select.dispatch(kernel, portable, x, y, columns)


def _values_tile(x: jax.Array, y: jax.Array, metric: Metric) -> jax.Array:
    """``metric.pair_values(x[:, None], y[None])`` ``[b, c]``; the kernel sums in registers
    instead of materialising ``[b, c, d]`` (8x faster at d = 20 000, where the exact re-check of
    wide data spends its time)."""

    def portable(x, y):
        return metric.pair_values(x[:, None, :], y[None, :, :])

    def kernel(x, y):
        columns = jnp.broadcast_to(
            jnp.arange(y.shape[0], dtype=jnp.int32), (x.shape[0], y.shape[0])
        )
        return metric.from_sums(cpu.pair_sums(x, y, columns, product=metric.product))

    return select.dispatch(kernel, portable, x, y)


def pairs(x_rows: Prepared, y: Prepared, columns: jax.Array, metric: Metric) -> jax.Array:
    """Distances ``[b, c]`` from each row to its own candidates ``y[columns]`` (``columns [b, c]``).

    Computed per pair (no cancellation) and bitwise equal to :func:`pair_tile` on the same pair.
    """
    d = _values_rows(x_rows.features, y.features, columns, metric)
    return metric.finish_pairs(
        d,
        x_rows.penalty[:, None],
        y.penalty[columns],
        x_rows.sqnorms[:, None],
        y.sqnorms[columns],
    )


def pair_tile(x_rows: Prepared, y: Prepared, metric: Metric) -> jax.Array:
    """Per-pair distances ``[b, c]`` of every row of ``x_rows`` to every row of ``y``.

    Memory ``b * c * d`` on the portable path; callers keep tiles within
    :data:`~hubjax._src.numerics.PAIR_BUDGET`.
    """
    d = _values_tile(x_rows.features, y.features, metric)
    return metric.finish_pairs(
        d,
        x_rows.penalty[:, None],
        y.penalty[None, :],
        x_rows.sqnorms[:, None],
        y.sqnorms[None, :],
    )


def dense(xp: Prepared, yp: Prepared, metric: Metric) -> jax.Array:
    """All per-pair distances ``[n, m]``, computed in row chunks within the pair budget."""
    n, m = xp.features.shape[0], yp.features.shape[0]
    width = min(m, max(32, numerics.PAIR_BUDGET // (4 * xp.features.shape[1] * 8)))
    cols = -(-m // width)
    ypad = numerics.pad(yp, cols * width)
    rows = numerics.pair_rows(n, xp.features.shape[1], width)
    nb = -(-n // rows)
    xpad = numerics.pad(xp, nb * rows)
    xb = jax.tree.map(lambda a: a.reshape(nb, rows, *a.shape[1:]), xpad)
    yb = jax.tree.map(lambda a: a.reshape(cols, width, *a.shape[1:]), ypad)

    def row_block(xr):
        out = lax.map(lambda yt: pair_tile(xr, yt, metric), yb)  # [cols, rows, width]
        return jnp.moveaxis(out, 0, 1).reshape(rows, cols * width)

    return lax.map(row_block, xb).reshape(nb * rows, cols * width)[:n, :m]


def pairwise_distances(
    x: Float[Array, "n d"],
    y: Float[Array, "m d"] | None = None,
    *,
    metric: str = "sqeuclidean",
) -> Float[Array, "n m"]:
    """Dense distance matrix between two point sets.

    This builds the whole ``[n, m]`` matrix; use it for small inputs and as a reference.
    :func:`hubjax.knn` never builds it. Every entry is computed per pair (``sum((x - y)**2)``,
    no cancellation on uncentred data) and equals bit for bit the distance :func:`hubjax.knn`
    reports for the same pair.

    Args:
      x: points ``[n, d]``. Integer inputs are cast to the default float dtype.
      y: reference points ``[m, d]``; ``None`` means ``y = x``, in which case the diagonal is the
        exact self-distance (0, or for ``cosine`` 1 on zero vectors, ``-|x|^2`` for ``dot``).
      metric: ``"sqeuclidean"``, ``"euclidean"``, ``"cosine"`` or ``"dot"``.

    Returns:
      Distances ``[n, m]`` in float32 (float64 for float64 inputs with x64 enabled). Distances
      to or from a point with a NaN/inf coordinate are +inf, the diagonal included.

    Raises:
      ValueError: unknown metric, rank other than 2, empty input, or mismatched features.
      TypeError: complex or non-numeric inputs.

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> x = jnp.array([[0.0, 0.0], [3.0, 4.0]])
      >>> hubjax.pairwise_distances(x, metric="euclidean")
      Array([[0., 5.],
             [5., 0.]], dtype=float32)
    """
    metric = _metric.resolve(metric)
    x = checks.as_points(x, "x")
    if y is not None:
        y = checks.as_points(y, "y")
        checks.check_same_features(x, y)
    return _pairwise(x, y, metric)


@functools.partial(jax.jit, static_argnames=("metric",))
def _pairwise(x, y, metric):
    (x, y), placement = _mesh.gather(x, y)
    with _mesh.context(placement):
        xp, yp, e = metric.prepare_pair(x, y)
        d = dense(xp, yp, metric)
        if y is None:
            n = x.shape[0]
            d = d.at[jnp.arange(n), jnp.arange(n)].set(metric.self_distance(xp))
        out = metric.finish(d, e)
    return _mesh.scatter(out, placement)
