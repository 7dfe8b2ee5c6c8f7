"""Exact building blocks of every distance: fixed-order sums, exact power-of-two scaling, the
prepared points and their ranking operands' shape conventions.

Nothing here depends on a metric (:mod:`hubjax._src.metric` owns that). Two facts the whole
search relies on live here:

* :func:`tree_sum` sums over features in one fixed pairwise order with elementwise additions
  only, so a pair's value is bitwise the same whatever the tile shape, engine, block size or
  device count.
* :func:`settle` makes a value uncontractible: XLA:CPU lets LLVM fuse a product feeding an add
  into one FMA depending on how the ops were fused, which differs between programs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import erfc

# Bytes of [rows, cols, features] intermediates one per-pair evaluation may hold.
PAIR_BUDGET = 32 << 20


class Prepared(NamedTuple):
    """Points prepared for a metric (:meth:`hubjax._src.metric.Metric.prepare`), once per call.

    Points with a NaN/inf coordinate get zero features and an infinite ``penalty``, so every
    distance to or from them is +inf instead of NaN: they never poison other points' results.
    Padding rows use the same mechanism.
    """

    features: jax.Array  # [n, d] scaled by 2**-exponent; unit-normalised for cosine
    sqnorms: jax.Array  # [n] squared norms of ``features`` (tree sum)
    penalty: jax.Array  # [n] 0, or +inf for non-finite (and padding) points


class Ranking(NamedTuple):
    """Matrix-product operands of one side and the norms its error bound needs."""

    operands: jax.Array  # [n, d + 2]
    norms: jax.Array  # [n] norms of the (shifted) features


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


# Chunk width of :func:`point_sum`: a power of two, so each chunk's tree sum pads nothing.
_POINT_CHUNK = 128


def point_sum(a: jax.Array) -> jax.Array:
    """Sum over the last axis (an axis of points) whose bits do not change when zeros are
    appended to it, as long as its length stays within the same power of two.

    Row-count buckets (:mod:`hubjax._src.buckets`) pad point sets with rows that contribute
    zeros and stay within that power; statistics over all points use this sum so the padded
    call gives the unpadded bits. The axis is cut into chunks of 128 (zero-filled), each
    summed by :func:`tree_sum`; the chunk totals, zero-filled to a power of two, likewise.
    """
    n = a.shape[-1]
    chunks = max(-(-n // _POINT_CHUNK), 1)
    width = 1 << (chunks - 1).bit_length()  # chunks rounded up to a power of two
    lead = a.shape[:-1]
    a = jnp.concatenate([a, jnp.zeros((*lead, width * _POINT_CHUNK - n), a.dtype)], axis=-1)
    return tree_sum(tree_sum(a.reshape(*lead, width, _POINT_CHUNK)))


def settle(a: jax.Array) -> jax.Array:
    """``a`` itself, rounded where it stands (NaN becomes 0; callers never have NaN here).

    XLA:CPU lets LLVM contract a product feeding an add or a subtraction into one FMA, and
    whether it does depends on how the ops were fused, which differs between programs (block
    sizes, engines). A select between the two makes the pattern uncontractible, so a value is
    rounded the same way in every compiled program.
    """
    return jnp.where(jnp.isnan(a), jnp.zeros((), a.dtype), a)


def row_stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
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


def finite_rows(x: jax.Array) -> jax.Array:
    """Whether each row of ``x [n, d]`` is free of NaN and infinities ``[n]``."""
    return row_stats(x)[0]


def max_abs(x: jax.Array) -> jax.Array:
    """Largest absolute coordinate over the finite rows of ``x`` (0 if none)."""
    finite, largest = row_stats(x)
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


def eps(dtype) -> float:
    """Machine epsilon of ``dtype`` as a Python float."""
    return float(jnp.finfo(dtype).eps)


def pad(p: Prepared, size: int) -> Prepared:
    """Pads to ``size`` points; padding points are at distance +inf from everything."""
    extra = size - p.features.shape[0]
    inf = jnp.full((extra,), jnp.inf, p.penalty.dtype)
    return Prepared(
        jnp.pad(p.features, [(0, extra), (0, 0)]),
        jnp.pad(p.sqnorms, [(0, extra)]),
        jnp.concatenate([p.penalty, inf]),
    )


def rows(p, start, count):
    """``count`` consecutive points of ``p`` (any pytree of ``[n, ...]`` arrays) from ``start``
    (a slice, not a copy of ``p``)."""
    return jax.tree.map(lambda a: lax.dynamic_slice_in_dim(a, start, count), p)


def largest_norm(norms: jax.Array, penalty: jax.Array) -> jax.Array:
    """Largest (shifted) norm ``norms [n]`` (:attr:`Ranking.norms`, or the fused kernel's) over
    the finite points: the reference side of the error bound."""
    return jnp.max(jnp.where(penalty == 0, norms, 0), initial=jnp.zeros((), norms.dtype))


def pad_reference(operands: jax.Array, size: int) -> jax.Array:
    """Reference operands padded to ``size`` rows that rank after every real point (+inf)."""
    extra = size - operands.shape[0]
    if not extra:
        return operands
    row = jnp.zeros((extra, operands.shape[1]), operands.dtype)
    row = row.at[:, -2].set(1).at[:, -1].set(jnp.inf)  # layout [features, 1, offset]
    return jnp.concatenate([operands, row])


def ranking_tile(query: jax.Array, reference: jax.Array, *, split: bool = False) -> jax.Array:
    """``query @ reference.T`` at full float32 precision (no TF32/bf16 passes on accelerators).

    With ``split``, the product runs over the features only and the two offset columns (query
    ``[..., -2]`` times the reference's ones, the query's ones times reference ``[..., -1]``)
    are added afterwards: the TPU's matrix unit pads a contraction of d + 2 to the next
    multiple of 128 (256 at d = 128), and d itself often is one. Another summation order of the
    same d + 2 products, within the same error bound.
    """
    if not split:
        return lax.dot_general(
            query, reference, (((1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST
        )
    products = lax.dot_general(
        query[:, :-2], reference[:, :-2], (((1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST
    )
    return products + query[:, -2][:, None] + reference[:, -1][None, :]


def pair_rows(b: int, d: int, width: int, itemsize: int = 4) -> int:
    """Rows of a ``[rows, width, d]`` per-pair intermediate that fit :data:`PAIR_BUDGET`."""
    return max(1, min(b, PAIR_BUDGET // max(1, itemsize * width * d)))


def round_up(a: int, b: int) -> int:
    """The smallest multiple of ``b`` that is at least ``a``."""
    return -(-a // b) * b


def over_row_blocks(fn, n, rows):
    """Runs ``fn(start) -> pytree of [rows, ...]`` over row blocks covering n rows.

    The last block is moved back to end at row n (it overlaps the one before; the overlapping
    rows are computed twice, identically), so no padded copy of the points is ever made. A
    ``lax.map`` (no loop carry) keeps this valid inside ``shard_map`` with varying values.
    """
    num_blocks = -(-n // rows)
    if num_blocks == 1:  # one block: no loop to compile
        return fn(jnp.int32(0))
    starts = jnp.minimum(jnp.arange(num_blocks, dtype=jnp.int32) * rows, n - rows)
    stacked = lax.map(fn, starts)
    fresh = n - (num_blocks - 1) * rows  # rows the last block adds

    def assemble(a):
        head = a[:-1].reshape(-1, *a.shape[2:])
        return jnp.concatenate([head, a[-1, rows - fresh :]])

    return jax.tree.map(assemble, stacked)


# Bytes of the elementwise input (``x * x`` and the like) of a row reduction computed at once:
# XLA:CPU writes that input to memory in full before reducing it (its reductions of long rows
# become reduce-windows, as tree_sum's halvings do), so at 2 000 x 20 000 each squared norm
# pass held one more copy of the points. Longer inputs are reduced in row blocks.
REDUCE_BLOCK_BYTES = 16 << 20


def by_row_blocks(fn, x: jax.Array) -> jax.Array:
    """``fn(x)`` for an ``fn`` that maps each row of ``x [n, d]`` to one value ``[n]`` on its
    own, computed in row blocks whose ``[rows, d]`` intermediates stay within
    :data:`REDUCE_BLOCK_BYTES` (:func:`over_row_blocks`). With :func:`tree_sum` inside, the
    bits do not depend on the blocks."""
    n, d = x.shape
    rows = max(8, REDUCE_BLOCK_BYTES // max(1, d * x.dtype.itemsize))
    if rows >= n:
        return fn(x)
    return over_row_blocks(lambda start: fn(lax.dynamic_slice_in_dim(x, start, rows)), n, rows)


def truncnorm_moment(mean: jax.Array, std: jax.Array) -> jax.Array:
    """Third raw moment of N(0, 1) truncated to ``[-mean / std, inf)``; NaN when ``std == 0``.

    The formula behind :func:`k_skewness_truncnorm`, from a mean and a (ddof=1) deviation.
    """
    safe = jnp.where(std > 0, std, 1.0)
    a = (0.0 - mean) / safe
    phi = jnp.exp(-0.5 * a * a) / jnp.sqrt(2.0 * jnp.pi)
    tail = 0.5 * erfc(a / jnp.sqrt(2.0))  # 1 - Phi(a), accurate for a << 0
    moment = (2.0 * phi + a * a * phi) / tail
    return jnp.where(std > 0, moment, jnp.nan)
