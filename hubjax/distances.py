"""Distance functions: dense ``pairwise_distances`` and the kernels shared by ``knn``.

Two ways of computing a distance live here, and the engines use both:

* **Per pair** (:func:`pairs`, :func:`pair_tile`): ``sum((x - y)**2)`` for the Euclidean metrics,
  ``0.5 * sum((x/|x| - y/|y|)**2)`` for ``cosine`` (equal to ``1 - cos``, without its
  cancellation), ``-sum(x * y)`` for ``dot``. The sum over features is a fixed pairwise tree of
  elementwise additions (:func:`tree_sum`), so the value of a pair is bitwise the same whatever
  the tile shape, engine, block size or device count. Every reported distance is one of these.
* **Ranking** (:func:`ranking_operands`): one plain matrix product per tile,
  ``|x'|^2 + |y'|^2 - 2 x'.y'`` on points shifted by a common centre ``x' = x - c`` (the
  Euclidean metrics are translation invariant, so the shift removes the large common offset of
  uncentred data that would otherwise cancel), ``-x.y`` for ``dot``/``cosine``. It only picks
  candidates; :func:`ranking_error` bounds its rounding error per query row so the engines can
  prove (or re-check) that no neighbour was lost.

Scale: the Euclidean and ``dot`` metrics work on the points multiplied by one power of two
(:func:`scale_exponent`) that brings the largest coordinate into [0.5, 1), so neither tiny
(1e-30) nor huge (1e30) data underflows or overflows inside; the scale is exact and is undone in
:func:`finish`. Reported values that fall outside float32's range there (a squared distance of
1e-40, say) flush to zero or become inf; the neighbours are still exact. ``cosine`` scales each
row by its own power of two before normalising.

Distances are clamped at zero. Inputs in bf16/fp16 are accumulated in float32. Matrix products
use ``Precision.HIGHEST`` so that GPUs/TPUs do not silently drop to TF32/bf16 passes.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from hubjax import _checks, _cpu, _mesh, _select

# Bytes of [rows, cols, features] intermediates one per-pair evaluation may hold.
PAIR_BUDGET = 32 << 20


class Prepared(NamedTuple):
    """Points prepared for a metric, computed once per call.

    Points with a NaN/inf coordinate get zero features and an infinite ``penalty``, so every
    distance to or from them is +inf instead of NaN: they never poison other points' results.
    Padding rows use the same mechanism.
    """

    features: jax.Array  # [n, d] scaled by 2**-exponent; unit-normalised for cosine
    sqnorms: jax.Array  # [n] squared norms of ``features`` (tree sum)
    penalty: jax.Array  # [n] 0, or +inf for non-finite (and padding) points


def tree_sum(a: jax.Array) -> jax.Array:
    """Sum over the last axis in a fixed pairwise order: elementwise adds only.

    An XLA reduction may associate differently for different shapes of the other axes; this
    does not, so a pair's value is bitwise independent of how many pairs are computed at once.
    """
    a = settle(a)
    n = a.shape[-1]
    if n == 0:
        return jnp.zeros(a.shape[:-1], a.dtype)
    while n > 1:
        if n % 2:
            a = jnp.concatenate([a, jnp.zeros((*a.shape[:-1], 1), a.dtype)], axis=-1)
            n += 1
        n //= 2
        a = a[..., :n] + a[..., n:]
    return a[..., 0]


def settle(a: jax.Array) -> jax.Array:
    """``a`` itself, rounded where it stands (NaN becomes 0; callers never have NaN here).

    XLA:CPU lets LLVM contract a product feeding an add or a subtraction into one FMA, and
    whether it does depends on how the ops were fused, which differs between programs (block
    sizes, engines). A select between the two makes the pattern uncontractible, so a value is
    rounded the same way in every compiled program.
    """
    return jnp.where(jnp.isnan(a), jnp.zeros((), a.dtype), a)


def _row_stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(finite [n], largest [n])``: whether each row is free of NaN and infinities, and its
    largest absolute coordinate (meaningful on finite rows), from plain row reductions.

    XLA:CPU materialises ``abs(x)`` or ``isfinite(x)`` before reducing them (10k x 1024: 11-14
    ms each, against about 1 ms per plain reduction), and its maximum does not reliably
    propagate NaN (a row of NaN can reduce to -inf), so: the row's maximum and minimum find
    the infinities and the magnitude, its sum the NaN (an addition always propagates it). A
    finite row whose sum overflows both ways also sums to NaN: rows like that are checked
    entry by entry, in a branch that runs only when there are any.
    """
    zero = jnp.zeros((), x.dtype)
    hi = jnp.max(x, axis=-1, initial=zero)
    lo = jnp.min(x, axis=-1, initial=zero)
    bounded = jnp.isfinite(hi) & jnp.isfinite(lo)
    unsure = bounded & jnp.isnan(jnp.sum(x, axis=-1))
    finite = lax.cond(
        jnp.any(unsure),
        lambda: bounded & (~unsure | jnp.all(jnp.isfinite(x), axis=-1)),
        lambda: bounded & ~unsure,
    )
    return finite, jnp.maximum(hi, -lo)


def _finite_rows(x: jax.Array) -> jax.Array:
    return _row_stats(x)[0]


def max_abs(x: jax.Array) -> jax.Array:
    """Largest absolute coordinate over the finite rows of ``x`` (0 if none)."""
    finite, largest = _row_stats(x)
    a = jnp.where(finite, largest, jnp.zeros((), x.dtype))
    return jnp.max(a, initial=jnp.zeros((), x.dtype))


def scale_exponent(largest: jax.Array) -> jax.Array:
    """int32 e with ``largest * 2**-e`` in [0.5, 1) (0 when ``largest`` is 0 or non-finite)."""
    _, e = jnp.frexp(largest)
    ok = (largest > 0) & jnp.isfinite(largest)
    return jnp.where(ok, e, 0).astype(jnp.int32)


def _pow2(e: jax.Array, dtype) -> jax.Array:
    """``2.0**e`` built from its exponent bits (exact; ``jnp.ldexp`` lowers to ``pow``, which
    XLA may evaluate approximately). ``e`` must lie in the normal range of ``dtype``."""
    info = jnp.finfo(dtype)
    bits = jnp.int64 if info.bits == 64 else jnp.int32
    e = e.astype(bits) + (info.maxexp - 1)  # exponent bias
    return lax.bitcast_convert_type(e << info.nmant, dtype)


def times_pow2(x: jax.Array, e: jax.Array) -> jax.Array:
    """``x * 2**e`` exactly (two steps, so no intermediate power of two is out of range)."""
    half = e // 2
    return x * _pow2(half, x.dtype) * _pow2(e - half, x.dtype)


def prepare(x: jax.Array, metric: str, dtype, exponent=None) -> Prepared:
    """Casts ``x`` to the accumulation dtype, scales it and precomputes per-point values.

    ``exponent`` (int32 scalar, from :func:`scale_exponent`) is the common power of two of the
    Euclidean and ``dot`` metrics; ``None`` means no scaling. ``cosine`` ignores it.
    """
    x = x.astype(dtype)
    finite = _finite_rows(x)
    x = jnp.where(finite[:, None], x, jnp.zeros((), dtype))
    if metric == "cosine":
        row_exp = scale_exponent(jnp.max(jnp.abs(x), axis=-1, initial=jnp.zeros((), dtype)))
        x = times_pow2(x, -row_exp[:, None])
        norm = jnp.sqrt(tree_sum(x * x))
        # x * (1 / norm), not x / norm: XLA rewrites a division by a broadcast into that form
        # in some fusions and not in others, and the two round differently.
        inverse = 1.0 / jnp.where(norm > 0, norm, jnp.ones_like(norm))
        x = jnp.where(norm[:, None] > 0, x * inverse[:, None], jnp.zeros_like(x))
    elif exponent is not None:
        x = times_pow2(x, -exponent)
    x = settle(x)
    sq = tree_sum(x * x)
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


def centre(p: Prepared, metric: str, axis_name=None) -> jax.Array:
    """The shift ``[d]`` of the ranking: mean of the finite points (zeros but for Euclidean).

    With ``axis_name`` (inside ``shard_map``/``pmap``) the mean is over all shards' points.
    Non-finite and padding points have zero features (:class:`Prepared`), so the sum needs no
    mask (one pass over the points, not a masked copy of them and a pass over that).
    """
    if metric not in ("sqeuclidean", "euclidean"):
        return jnp.zeros(p.features.shape[1], p.features.dtype)
    total = jnp.sum(p.features, axis=0)
    count = jnp.sum(p.penalty == 0)
    if axis_name is not None:
        total, count = lax.psum(total, axis_name), lax.psum(count, axis_name)
    return total / jnp.maximum(count, 1).astype(p.features.dtype)


def largest_norm(norms: jax.Array, penalty: jax.Array) -> jax.Array:
    """Largest (shifted) norm ``norms [n]`` (:attr:`Ranking.norms`, or the fused kernel's) over
    the finite points: the reference side of the error bound."""
    return jnp.max(jnp.where(penalty == 0, norms, 0), initial=jnp.zeros((), norms.dtype))


class Ranking(NamedTuple):
    """Matrix-product operands of one side and the norms its error bound needs."""

    operands: jax.Array  # [n, d + 2]
    norms: jax.Array  # [n] norms of the (shifted) features


def ranking_operands(p: Prepared, metric: str, side: str, shift: jax.Array) -> Ranking:
    """Operands whose plain matrix product ranks pairs like the metric: ``[n, d + 2]``.

    ``query @ reference.T`` equals ``|x'|^2 + |y'|^2 - 2 x'.y'`` (``x' = x - shift``) for the
    Euclidean metrics and ``-x.y`` for ``dot``/``cosine``, plus both points' penalties, so a
    ranking tile needs no elementwise pass and is symmetric in the two points. Values only pick
    candidates; reported distances come from :func:`pairs`.
    """
    euclidean = metric in ("sqeuclidean", "euclidean")
    f = p.features - shift[None, :] if euclidean else p.features
    sq = jnp.sum(f * f, axis=-1)
    offset = ((sq if euclidean else jnp.zeros_like(sq)) + p.penalty)[:, None]
    ones = jnp.ones_like(offset)
    if side == "query":
        scale = 2.0 if euclidean else 1.0
        ops = jnp.concatenate([-scale * f, offset, ones], axis=1)
    else:
        ops = jnp.concatenate([f, ones, offset], axis=1)
    return Ranking(ops, jnp.sqrt(sq))


def query_from_reference(operands: jax.Array, metric: str) -> jax.Array:
    """The query operands of the points whose reference operands ``[..., d + 2]`` are given
    (same layout conventions as :func:`ranking_operands`; the scaling by -2 or -1 is exact)."""
    dim = operands.shape[-1] - 2
    scale = 2.0 if metric in ("sqeuclidean", "euclidean") else 1.0
    features, ones, offset = operands[..., :dim], operands[..., dim:-1], operands[..., -1:]
    return jnp.concatenate([-scale * features, offset, ones], axis=-1)


def pad_reference(operands: jax.Array, size: int) -> jax.Array:
    """Reference operands padded to ``size`` rows that rank after every real point (+inf)."""
    extra = size - operands.shape[0]
    if not extra:
        return operands
    row = jnp.zeros((extra, operands.shape[1]), operands.dtype)
    row = row.at[:, -2].set(1).at[:, -1].set(jnp.inf)  # layout [features, 1, offset]
    return jnp.concatenate([operands, row])


def ranking_tile(query: jax.Array, reference: jax.Array) -> jax.Array:
    """``query @ reference.T`` at full float32 precision (no TF32/bf16 passes on accelerators)."""
    return lax.dot_general(
        query, reference, (((1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST
    )


def _eps(dtype) -> float:
    return float(jnp.finfo(dtype).eps)


def ranking_error(query_norms: jax.Array, largest_reference: jax.Array, metric: str, d: int):
    """Bound ``[b]`` on ``|ranking - distance|`` of each query row against any reference.

    Worst-case rounding of a length ``d + 2`` dot product (any summation order, FMA or not):
    ``gamma = (d + 2 log2 d + 16) eps`` times the sum of the absolute products, which is at most
    ``(|x'| + max |y'|)**2`` for the Euclidean ranking and ``|x| max |y|`` for ``dot``/``cosine``.
    The constant also covers the shift, the norms and the per-pair sums the result is checked
    against. Distances are on the internal (scaled) scale.
    """
    dtype = query_norms.dtype
    gamma = (d + 2 * math.ceil(math.log2(max(d, 2))) + 16) * _eps(dtype)
    if metric in ("sqeuclidean", "euclidean"):
        return gamma * (query_norms + largest_reference) ** 2
    return 2 * gamma * (query_norms * largest_reference + 1)


def pair_error(d: int, dtype) -> float:
    """Relative error bound of a per-pair sum of squares (:func:`pairs`)."""
    return (math.ceil(math.log2(max(d, 2))) + 4) * _eps(dtype)


def certified(kth, largest_kept, bound, metric: str, d: int):
    """True where no point outside the kept candidates can beat the k-th exact distance.

    ``kth`` is the k-th smallest per-pair distance among the candidates, ``largest_kept`` the
    largest ranking value kept (every other point ranks at least there) and ``bound`` the
    ranking's error (:func:`ranking_error`). Rows that fail are re-checked exactly.
    """
    dtype = kth.dtype
    if metric == "dot":
        return (largest_kept - bound > kth) | (largest_kept == jnp.inf)
    lowest = largest_kept + 1 if metric == "cosine" else largest_kept  # distance = 1 - s
    lowest = (lowest - bound) * (1 - pair_error(d, dtype))
    return (lowest > kth) | (largest_kept == jnp.inf)


def _pair_values(xr: jax.Array, yc: jax.Array, metric: str) -> jax.Array:
    """Distances of broadcast pairs ``xr [..., d]`` vs ``yc [..., d]``, no penalties."""
    if metric == "dot":
        return _from_sums(tree_sum(xr * yc), metric)
    diff = xr - yc
    return _from_sums(tree_sum(diff * diff), metric)


def _from_sums(sums: jax.Array, metric: str) -> jax.Array:
    """Distances from per-pair sums of products (``dot``) or squared differences."""
    if metric == "dot":
        return -sums
    return 0.5 * sums if metric == "cosine" else sums


def _pair_values_rows(x: jax.Array, y: jax.Array, columns: jax.Array, metric: str) -> jax.Array:
    """``_pair_values(x[:, None], y[columns])`` ``[b, c]``; on CPU through the compiled kernel
    (bitwise the same sums, without the ``[b, c, d]`` gather; :mod:`hubjax._cpu`)."""

    def portable(x, y, columns):
        return _pair_values(x[:, None, :], y[columns], metric)

    def kernel(x, y, columns):
        return _from_sums(_cpu.pair_sums(x, y, columns, product=metric == "dot"), metric)

    return _select.dispatch(kernel, portable, x, y, columns)


def _finish_pairs(d, x_penalty, y_penalty, x_sq, y_sq, metric):
    if metric == "cosine":  # a zero vector has similarity 0 (distance 1) to everything
        one = jnp.ones((), d.dtype)
        d = jnp.where((x_sq == 0) | (y_sq == 0), one, d)
    return _normalise(d + x_penalty + y_penalty, metric)


def pairs(x_rows: Prepared, y: Prepared, columns: jax.Array, metric: str) -> jax.Array:
    """Distances ``[b, c]`` from each row to its own candidates ``y[columns]`` (``columns [b, c]``).

    Computed per pair (no cancellation) and bitwise equal to :func:`pair_tile` on the same pair.
    """
    d = _pair_values_rows(x_rows.features, y.features, columns, metric)
    return _finish_pairs(
        d,
        x_rows.penalty[:, None],
        y.penalty[columns],
        x_rows.sqnorms[:, None],
        y.sqnorms[columns],
        metric,
    )


def _pair_values_tile(x: jax.Array, y: jax.Array, metric: str) -> jax.Array:
    """``_pair_values(x[:, None], y[None])`` ``[b, c]``; on CPU through the compiled kernel,
    which sums in registers instead of materialising ``[b, c, d]`` (bitwise the same sums; 8x
    faster at d = 20 000, where the exact re-check of wide data spends its time)."""

    def portable(x, y):
        return _pair_values(x[:, None, :], y[None, :, :], metric)

    def kernel(x, y):
        columns = jnp.broadcast_to(
            jnp.arange(y.shape[0], dtype=jnp.int32), (x.shape[0], y.shape[0])
        )
        return _from_sums(_cpu.pair_sums(x, y, columns, product=metric == "dot"), metric)

    return _select.dispatch(kernel, portable, x, y)


def pair_tile(x_rows: Prepared, y: Prepared, metric: str) -> jax.Array:
    """Per-pair distances ``[b, c]`` of every row of ``x_rows`` to every row of ``y``.

    Memory ``b * c * d`` on the portable path; callers keep tiles within :data:`PAIR_BUDGET`.
    """
    d = _pair_values_tile(x_rows.features, y.features, metric)
    return _finish_pairs(
        d,
        x_rows.penalty[:, None],
        y.penalty[None, :],
        x_rows.sqnorms[:, None],
        y.sqnorms[None, :],
        metric,
    )


def pair_rows(b: int, d: int, width: int, itemsize: int = 4) -> int:
    """Rows of a ``[rows, width, d]`` per-pair intermediate that fit :data:`PAIR_BUDGET`."""
    return max(1, min(b, PAIR_BUDGET // max(1, itemsize * width * d)))


def dense(xp: Prepared, yp: Prepared, metric: str) -> jax.Array:
    """All per-pair distances ``[n, m]``, computed in row chunks within the pair budget."""
    n, m = xp.features.shape[0], yp.features.shape[0]
    width = min(m, max(32, PAIR_BUDGET // (4 * xp.features.shape[1] * 8)))
    cols = -(-m // width)
    ypad = pad(yp, cols * width)
    rows = pair_rows(n, xp.features.shape[1], width)
    nb = -(-n // rows)
    xpad = pad(xp, nb * rows)
    xb = jax.tree.map(lambda a: a.reshape(nb, rows, *a.shape[1:]), xpad)
    yb = jax.tree.map(lambda a: a.reshape(cols, width, *a.shape[1:]), ypad)

    def row_block(xr):
        out = lax.map(lambda yt: pair_tile(xr, yt, metric), yb)  # [cols, rows, width]
        return jnp.moveaxis(out, 0, 1).reshape(rows, cols * width)

    return lax.map(row_block, xb).reshape(nb * rows, cols * width)[:n, :m]


def _normalise(d: jax.Array, metric: str) -> jax.Array:
    """Clamps at 0 (all but ``dot``) and turns -0.0 into +0.0 so equal distances compare equal
    bit for bit (``lax.top_k`` ranks -0.0 before +0.0). NaN becomes +inf."""
    zero = jnp.zeros((), d.dtype)
    d = jnp.where(jnp.isnan(d), jnp.full((), jnp.inf, d.dtype), d)
    if metric == "dot":
        return jnp.where(d == 0, zero, d)
    return jnp.where(d > 0, d, zero)


def self_distance(xp: Prepared, metric: str) -> jax.Array:
    """The exact distance of each point to itself ``[n]`` (internal scale, see :func:`finish`).

    +inf for non-finite points.
    """
    if metric == "dot":
        d = -xp.sqnorms
    elif metric == "cosine":
        d = jnp.where(xp.sqnorms > 0, 0.0, 1.0).astype(xp.features.dtype)
    else:
        d = jnp.zeros(xp.features.shape[0], xp.features.dtype)
    return _normalise(d + xp.penalty, metric)


def finish(d: jax.Array, metric: str, exponent=None) -> jax.Array:
    """Maps internal distances to reported ones: undoes the scale, square root for euclidean."""
    if metric == "euclidean":
        d = jnp.sqrt(d)
        return d if exponent is None else times_pow2(d, exponent)
    if metric == "cosine" or exponent is None:
        return d
    return times_pow2(d, 2 * exponent)


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
    _checks.check_metric(metric)
    x = _checks.as_points(x, "x")
    if y is not None:
        y = _checks.as_points(y, "y")
        _checks.check_same_features(x, y)
    return _pairwise(x, y, metric)


def common_exponent(metric: str, *arrays) -> jax.Array | None:
    """The shared scale exponent of ``arrays`` (None for cosine, which scales per row)."""
    if metric == "cosine":
        return None
    largest = functools.reduce(jnp.maximum, [max_abs(a) for a in arrays])
    return scale_exponent(largest)


def prepare_pair(x, y, metric: str):
    """``(xp, yp, exponent)``: both sides cast, scaled by their common power of two and
    prepared; ``yp is xp`` for in-sample work (``y is None``)."""
    dtype = _checks.compute_dtype(x) if y is None else _checks.compute_dtype(x, y)
    x = x.astype(dtype)
    y = None if y is None else y.astype(dtype)
    e = common_exponent(metric, x) if y is None else common_exponent(metric, x, y)
    xp = prepare(x, metric, dtype, e)
    return xp, (xp if y is None else prepare(y, metric, dtype, e)), e


@functools.partial(jax.jit, static_argnames=("metric",))
def _pairwise(x, y, metric):
    (x, y), placement = _mesh.gather(x, y)
    with _mesh.context(placement):
        out = _pairwise_core(x, y, metric)
    return _mesh.scatter(out, placement)


def _pairwise_core(x, y, metric):
    xp, yp, e = prepare_pair(x, y, metric)
    d = dense(xp, yp, metric)
    if y is None:
        n = x.shape[0]
        d = d.at[jnp.arange(n), jnp.arange(n)].set(self_distance(xp, metric))
    return finish(d, metric, e)
