"""Distance functions: dense ``pairwise_distances`` and the tile kernel shared by ``knn``.

Every metric is computed as "prepare each point once, then one matrix product per tile":

* ``sqeuclidean``: ``|x|^2 + |y|^2 - 2 x.y``, clamped at 0.
* ``euclidean``: square root of ``sqeuclidean`` (neighbour search ranks by the squared value,
  which orders identically, and takes the root of the k survivors only).
* ``cosine``: ``1 - x.y / (|x| |y|)``, clamped at 0; a zero vector has similarity 0 to
  everything (distance 1), itself included.
* ``dot``: ``-x.y``, so the largest inner product is nearest.

Inputs in bf16/fp16 are upcast and accumulated in float32. Matrix products use
``Precision.HIGHEST`` so that GPUs/TPUs do not silently drop to TF32/bf16 passes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from hubjax import _checks


class Prepared(NamedTuple):
    """Points prepared for a metric, computed once per call.

    Points with a NaN/inf coordinate get zero features and an infinite ``penalty``, so every
    distance to or from them is +inf instead of NaN: they never poison other points' results.
    Padding rows use the same mechanism.
    """

    features: jax.Array  # [n, d], unit-normalised for cosine
    sqnorms: jax.Array  # [n] squared norms (sqeuclidean/euclidean), zeros otherwise
    penalty: jax.Array  # [n] 0, or +inf for non-finite (and padding) points


def prepare(x: jax.Array, metric: str, dtype) -> Prepared:
    """Casts ``x`` to the accumulation dtype and precomputes what each tile needs."""
    x = x.astype(dtype)
    finite = jnp.all(jnp.isfinite(x), axis=-1)
    x = jnp.where(finite[:, None], x, jnp.zeros((), dtype))
    sq = jnp.sum(x * x, axis=-1)
    if metric == "cosine":
        norm = jnp.sqrt(sq)
        safe = jnp.where(norm > 0, norm, jnp.ones_like(norm))
        x = jnp.where(norm[:, None] > 0, x / safe[:, None], jnp.zeros_like(x))
    if metric not in ("sqeuclidean", "euclidean"):
        sq = jnp.zeros_like(sq)
    penalty = jnp.where(finite, jnp.zeros((), dtype), jnp.full((), jnp.inf, dtype))
    return Prepared(x, sq, penalty)


def pad(p: Prepared, size: int) -> Prepared:
    """Pads to ``size`` points; padding points are at distance +inf from everything."""
    extra = size - p.features.shape[0]
    inf = jnp.full((extra,), jnp.inf, p.penalty.dtype)
    return Prepared(
        jnp.pad(p.features, [(0, extra), (0, 0)]),
        jnp.pad(p.sqnorms, [(0, extra)]),
        jnp.concatenate([p.penalty, inf]),
    )


def ranking_operands(p: Prepared, metric: str, side: str) -> jax.Array:
    """Operands whose plain matrix product ranks pairs like the metric: ``[n, d + 2]``.

    ``query @ reference.T`` equals ``|x|^2 + |y|^2 - 2 x.y`` for the Euclidean metrics and
    ``-x.y`` for ``dot``/``cosine`` (``1 - s`` ranks like ``-s``), plus both points' penalties,
    so a ranking tile needs no elementwise pass at all and is symmetric in the two points.
    Values are only used to pick candidates; reported distances come from :func:`pairs`.
    """
    ones = jnp.ones_like(p.sqnorms)[:, None]
    offset = (p.sqnorms + p.penalty)[:, None]
    if side == "query":
        scale = 2.0 if metric in ("sqeuclidean", "euclidean") else 1.0
        return jnp.concatenate([-scale * p.features, offset, ones], axis=1)
    return jnp.concatenate([p.features, ones, offset], axis=1)


def ranking_tile(query: jax.Array, reference: jax.Array) -> jax.Array:
    """``query @ reference.T`` at full float32 precision (no TF32/bf16 passes on accelerators)."""
    return lax.dot_general(
        query, reference, (((1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST
    )


def tile(xp: Prepared, yp: Prepared, metric: str) -> jax.Array:
    """Exact-form distances ``[b, c]`` between two prepared sets (dense path and references).

    For ``euclidean`` this returns squared distances (same order); :func:`finish` maps them.
    """
    prod = ranking_tile(xp.features, yp.features)
    if metric == "dot":
        d = -prod
    elif metric == "cosine":
        d = 1.0 - prod
    else:
        d = xp.sqnorms[:, None] + yp.sqnorms[None, :] - 2.0 * prod
    d = d + xp.penalty[:, None] + yp.penalty[None, :]
    return _normalise(d, metric)


def _normalise(d: jax.Array, metric: str) -> jax.Array:
    """Clamps at 0 (all but ``dot``) and turns -0.0 into +0.0 so equal distances compare equal
    bit for bit (``lax.top_k`` ranks -0.0 before +0.0)."""
    zero = jnp.zeros((), d.dtype)
    if metric == "dot":
        return jnp.where(d == 0, zero, d)
    return jnp.where(d > 0, d, zero)


def pairs(x_rows: Prepared, y: Prepared, columns: jax.Array, metric: str) -> jax.Array:
    """Distances ``[b, c]`` from each row to its own candidates ``y[columns]`` (``columns [b, c]``).

    Computed per pair (``sum((x - y)**2)``, not the matrix-product expansion), so the value of a
    pair does not depend on tile shapes and has no cancellation error.
    """
    yc = y.features[columns]  # [b, c, d]
    xr = x_rows.features[:, None, :]
    if metric in ("sqeuclidean", "euclidean"):
        diff = xr - yc
        d = jnp.sum(diff * diff, axis=-1)
    else:
        prod = jnp.sum(xr * yc, axis=-1)
        d = -prod if metric == "dot" else 1.0 - prod
    d = d + x_rows.penalty[:, None] + y.penalty[columns]
    return _normalise(d, metric)


def self_distance(xp: Prepared, metric: str) -> jax.Array:
    """The exact distance of each point to itself ``[n]`` (ranking scale, see :func:`tile`)."""
    if metric == "dot":
        return -jnp.sum(xp.features * xp.features, axis=-1)
    if metric == "cosine":
        nonzero = jnp.any(xp.features != 0, axis=-1)
        return jnp.where(nonzero, 0.0, 1.0).astype(xp.features.dtype)
    return jnp.zeros(xp.features.shape[0], xp.features.dtype)


def finish(d: jax.Array, metric: str) -> jax.Array:
    """Maps ranking distances to reported distances (square root for ``euclidean``)."""
    return jnp.sqrt(d) if metric == "euclidean" else d


def pairwise_distances(
    x: Float[Array, "n d"],
    y: Float[Array, "m d"] | None = None,
    *,
    metric: str = "sqeuclidean",
) -> Float[Array, "n m"]:
    """Dense distance matrix between two point sets.

    This builds the whole ``[n, m]`` matrix; use it for small inputs and as a reference.
    :func:`hubjax.knn` never builds it.

    Args:
      x: points ``[n, d]``. Integer inputs are cast to the default float dtype.
      y: reference points ``[m, d]``; ``None`` means ``y = x``, in which case the diagonal is the
        exact self-distance (0, or for ``cosine`` 1 on zero vectors, ``-|x|^2`` for ``dot``).
      metric: ``"sqeuclidean"``, ``"euclidean"``, ``"cosine"`` or ``"dot"``.

    Returns:
      Distances ``[n, m]`` in float32 (float64 for float64 inputs with x64 enabled). Distances
      to or from a point with a NaN/inf coordinate are +inf.

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
    _checks.check_metric(metric)
    x = _checks.as_points(x, "x")
    if y is not None:
        y = _checks.as_points(y, "y")
        _checks.check_same_features(x, y)
    return _pairwise(x, y, metric)


@functools.partial(jax.jit, static_argnames=("metric",))
def _pairwise(x, y, metric):
    dtype = _checks.compute_dtype(x) if y is None else _checks.compute_dtype(x, y)
    xp = prepare(x, metric, dtype)
    if y is None:
        d = tile(xp, xp, metric)
        n = x.shape[0]
        d = d.at[jnp.arange(n), jnp.arange(n)].set(self_distance(xp, metric))
    else:
        d = tile(xp, prepare(y, metric, dtype), metric)
    return finish(d, metric)
