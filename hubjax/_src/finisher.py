"""The finisher: the only code that makes a candidate list exact.

Every candidate source (:mod:`hubjax._src.sources`, the IVF lists of
:mod:`hubjax._src.ivf`, the distributed ring) hands over, for each query row, a list of
candidate columns with their ranking values and a bound on the ranking's rounding error
(:meth:`Metric.ranking_error <hubjax._src.metric.Metric.ranking_error>`). Three steps follow:

1. **Refine** (:func:`refine`): the candidates' distances are recomputed per pair
   (:func:`hubjax._src.pairs.pairs`) and the k smallest by (distance, index) kept.
2. **Certify** (:meth:`Metric.certified <hubjax._src.metric.Metric.certified>`): a row is
   certified when every reference outside its candidates provably lies beyond its k-th distance
   (every other point ranks at least at the largest value kept, and the ranking is within the
   bound of the distance).
3. **Re-check** (:func:`recheck`): rows that are not certified are searched again against all
   references, per pair, a few at a time inside a ``lax.while_loop`` that runs zero times when
   every row is certified. On well-conditioned data hardly any row needs it; on data whose
   spread is tiny next to its offset the ranking's shift keeps it rare.

Because every reported distance is a per-pair value in a fixed summation order, the result is
bitwise the same whichever source found the candidates.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from hubjax._src import numerics, pairs, select

# Block widths are multiples of this, so the group selection always applies.
COLUMN_ALIGN = 32
# Candidates kept beyond k by the matrix-product ranking: rows whose gap is smaller are
# re-checked, so this trades selection work against re-checks, never exactness.
SLACK = 8
_RECHECK_ROWS = 8  # rows re-checked together by :func:`recheck`
# Features from which rows that fail to certify are ranked again with a longer list
# (:func:`widen`) before the per-pair re-check. Below, hardly a row fails (Gaussian points,
# k = 10: none of 5 000 at d = 1 024, 1 of 2 000 at d = 4 096, 5 % at d = 8 000 and all at
# d = 20 000), and the extra stage would only lengthen every program's compilation (the first
# call of a small search took 60-90 % longer with it).
WIDE_MIN_FEATURES = 2048
# Ranked candidates per row of :func:`widen` (at least), and the bytes of one group's
# ranking tile, gathered rows and query operands.
_WIDE_KEEP = 64
_WIDE_GROUP_BYTES = 16 << 20


class Candidates(NamedTuple):
    """What a candidate source hands to the finisher.

    ``values [>= n, keep]``: ranking values (+inf: an empty slot, a padding or non-finite
    point); ``columns [>= n, keep]``: their reference indices; ``bound [n]``: each row's ranking
    error bound; ``rows`` (static): rows refined together (the source's block, so the per-pair
    work has the source's memory shape).
    """

    values: jax.Array
    columns: jax.Array
    bound: jax.Array
    rows: int


def refine(rows, yp, values, columns, k, metric, *, row_ids=None, bound=None):
    """Recomputes candidate distances per pair; keeps the k smallest by (distance, index).

    ``values``/``columns`` ``[b, c]`` are the ranking's candidates; +inf ranking values (padding,
    non-finite points, unfilled slots) stay excluded, and so does column ``row_ids`` (the point
    itself) if given. Returns ``(distances [b, k], indices [b, k], certified [b])``; with
    ``bound=None`` (exact candidate values) every row is certified. The per-pair work is done in
    row chunks so that ``[chunk, c, d]`` stays within the pair budget for any d.
    """
    b, c = columns.shape
    dim = yp.features.shape[1]
    chunk = numerics.pair_rows(b, dim, c)
    if chunk < b:
        parts = -(-b // chunk)
        extra = parts * chunk - b

        def padded(a, fill):
            if a is None:
                return None
            widths = [(0, extra)] + [(0, 0)] * (a.ndim - 1)
            return jnp.pad(a, widths, constant_values=fill).reshape(parts, chunk, *a.shape[1:])

        args = (
            jax.tree.map(lambda a: padded(a, 0), rows),
            padded(values, jnp.inf),
            padded(columns, 0),
            padded(row_ids, -1),
            padded(bound, 0),
        )

        def one(a):
            r, v, cc, ids, bd = a
            return _refine(r, yp, v, cc, k, metric, ids, bd)

        out = lax.map(one, args)
        return jax.tree.map(lambda a: a.reshape(parts * chunk, *a.shape[2:])[:b], out)
    return _refine(rows, yp, values, columns, k, metric, row_ids, bound)


def _refine(rows, yp, values, columns, k, metric, row_ids, bound):
    excluded = values == jnp.inf
    safe = jnp.where(excluded, 0, columns)  # unfilled slots hold out-of-range placeholders
    d = pairs.pairs(rows, yp, safe, metric)
    if row_ids is not None:
        excluded = excluded | (columns == row_ids)
    d = jnp.where(excluded, jnp.full((), jnp.inf, d.dtype), d)
    d, columns = select.smallest_k_pairs(d, columns, k)
    if bound is None:
        ok = jnp.ones(d.shape[0], bool)
    else:
        largest_kept = jnp.max(values, axis=1)
        ok = metric.certified(d[:, k - 1], largest_kept, bound, yp.features.shape[1])
    return d, columns, ok


def refine_lists(xp, yp, candidates: Candidates, k, metric, *, own):
    """:func:`refine` of the candidate lists of every ``xp`` row, ``candidates.rows`` at a
    time; ``own``: row i's own column (in-sample) is excluded. Returns ``(distances [n, k],
    indices [n, k], certified [n])``."""
    values, cols, bound, rows = candidates

    def one(start):
        row_ids = start + jnp.arange(rows, dtype=jnp.int32)[:, None] if own else None
        return refine(
            numerics.rows(xp, start, rows),
            yp,
            lax.dynamic_slice_in_dim(values, start, rows),
            lax.dynamic_slice_in_dim(cols, start, rows),
            k,
            metric,
            row_ids=row_ids,
            bound=lax.dynamic_slice_in_dim(bound, start, rows),
        )

    return numerics.over_row_blocks(one, xp.features.shape[0], rows)


def recheck(xp, yp, dist, idx, ok, k, metric, *, own=None, query_rows=None, ref_pos=None):
    """Replaces the rows that are not ``ok`` by their exact top-k against all of ``yp``.

    Exact: every distance of such a row is computed per pair, ``_RECHECK_ROWS`` rows at a time,
    in column tiles within the pair budget, inside a ``lax.while_loop`` that runs once per group
    of flagged rows (zero times when all rows are certified). ``own [n]`` (in-sample search) is
    each row's own column, excluded from its list. Non-finite query rows are left as they are
    (callers mask them).

    The points may be stored in another order than the one the lists index (the IVF source
    keeps them sorted by list): query i is row ``query_rows[i]`` of ``xp``, and reference point
    j is row ``ref_pos[j]`` of ``yp`` (both default to the identity). Columns are compared in
    the lists' order, so ties still go to the smaller index.
    """
    n = dist.shape[0]
    dim = xp.features.shape[1]
    m = yp.features.shape[0]
    finite = xp.penalty == 0 if query_rows is None else xp.penalty[query_rows] == 0
    flagged = ~ok & finite
    chunk = _RECHECK_ROWS
    width = numerics.round_up(
        min(m, max(COLUMN_ALIGN, numerics.PAIR_BUDGET // (4 * chunk * dim))), 8
    )
    if m == 0:
        return dist, idx
    # whole tiles of `width` columns, then a narrower last one: slices of yp, never a padded
    # copy of it (which would be made on every call, outside the loop, flagged rows or not)
    width = min(width, m)
    full, tail = divmod(m, width)
    order = jnp.nonzero(flagged, size=n, fill_value=n)[0].astype(jnp.int32)
    order = jnp.concatenate([order, jnp.full((chunk,), n, jnp.int32)])
    count = jnp.sum(flagged, dtype=jnp.int32)
    columns = jnp.arange(m, dtype=jnp.int32)

    def body(state):
        start, dist, idx = state
        rows = lax.dynamic_slice(order, (start,), (chunk,))
        safe = jnp.minimum(rows, n - 1)
        xr = jax.tree.map(lambda a: a[safe if query_rows is None else query_rows[safe]], xp)
        parts = []
        if full == 1:
            parts.append(pairs.pair_tile(xr, numerics.rows(yp, 0, width), metric))
        elif full > 1:
            starts = jnp.arange(full, dtype=jnp.int32) * width
            d = lax.map(lambda s: pairs.pair_tile(xr, numerics.rows(yp, s, width), metric), starts)
            parts.append(jnp.moveaxis(d, 0, 1).reshape(chunk, full * width))  # [full, chunk, w]
        if tail:
            parts.append(pairs.pair_tile(xr, numerics.rows(yp, full * width, tail), metric))
        d = jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]  # [chunk, m]
        if ref_pos is not None:
            d = jnp.take(d, ref_pos, axis=1)
        if own is not None:
            mine = own[safe][:, None] == columns[None, :]
            d = jnp.where(mine, jnp.full((), jnp.inf, d.dtype), d)
        values, cols = select.smallest_k_simple(d, k)
        dist = dist.at[rows].set(values, mode="drop")
        idx = idx.at[rows].set(cols, mode="drop")
        return start + chunk, dist, idx

    _, dist, idx = lax.while_loop(lambda s: s[0] < count, body, (jnp.int32(0), dist, idx))
    return dist, idx


def _wide_keep(m: int, k: int) -> int:
    """Candidates per row of :func:`widen` among m references."""
    return min(m, max(_WIDE_KEEP, 4 * (k + SLACK)))


def widen(xp, yp, dist, idx, ok, k, metric, shift, *, own=None):
    """The rows that are not ``ok``, ranked again against every reference with a longer list:
    ``(distances, indices, certified)``, where the rows that now certify hold their exact
    top-k and the others are left for :func:`recheck`.

    Flagged rows go in groups whose ``[rows, m]`` ranking tile, features and query operands
    stay within ``_WIDE_GROUP_BYTES``: one matrix product per group keeps each row's
    ``max(_WIDE_KEEP, 4 (k + SLACK))`` best ranked candidates; then, the reference operands no
    longer held, :func:`refine` measures them per pair and certifies them like a source's.
    Both loops run zero times when every row is certified.

    Why: the ranking's error bound grows with d (worst-case rounding of a d-term sum) while
    the gaps between near neighbours of high-dimensional data shrink, so from a few thousand
    features on ``k + SLACK`` candidates often fail to certify. At 2 000 x 20 000 Gaussian
    points every row failed, and the per-pair re-check of every row against all points took
    most of the time of ``hub_values``.
    """
    n, dim = xp.features.shape
    m = yp.features.shape[0]
    wide = _wide_keep(m, k)
    # per group row: its ranking row [m], its gathered features and query operands [2 d]
    group = max(8, min(1024, _WIDE_GROUP_BYTES // (4 * (m + 2 * dim + 4))) // 8 * 8)
    group = min(group, numerics.round_up(n, 8))
    flagged = ~ok & (xp.penalty == 0)
    order = jnp.nonzero(flagged, size=n, fill_value=n)[0].astype(jnp.int32)
    order = jnp.concatenate([order, jnp.full((group,), n, jnp.int32)])
    count = jnp.sum(flagged, dtype=jnp.int32)
    columns = jnp.arange(m, dtype=jnp.int32)

    # reference rows per product: the matmul library packs its operand, outside XLA's
    # accounting (one product against all 2 000 x 20 000 points grew the peak by 1x the input)
    part = max(COLUMN_ALIGN, min(m, _WIDE_GROUP_BYTES // (4 * (dim + 2))) // 8 * 8)
    parts = -(-m // part)

    def loop(dist, idx, ok):
        # the reference side as offsets only; each part's features are read (and shifted) by
        # its product: the whole [m, d + 2] reference operands were one more copy of the points
        offsets, norms = metric.ranking_offsets(yp, shift, parts * part)
        offsets = offsets.reshape(parts, part)
        largest = numerics.largest_norm(norms, yp.penalty)
        inf = jnp.full((), jnp.inf, dist.dtype)

        def part_tile(query, p):
            """``[group, part]`` ranking of the query operands against part ``p``: the product
            over the features, then both offsets (:func:`numerics.ranking_tile`'s split form;
            the padding columns read the last point and rank +inf by their offsets)."""
            index = p * part + jnp.arange(part, dtype=jnp.int32)
            ref = metric.ranking_rows(jnp.take(yp.features, index, axis=0, mode="clip"), shift)
            products = lax.dot_general(
                query[:, :dim], ref, (((1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST
            )
            return products + query[:, dim][:, None] + offsets[p][None, :]

        def gathered(start):
            rows = lax.dynamic_slice(order, (start,), (group,))
            safe = jnp.minimum(rows, n - 1)
            return rows, safe, jax.tree.map(lambda a: a[safe], xp)

        def ranked(state):  # the candidates of every flagged row first, while r lives
            start, values, cols, bound = state
            rows, safe, xr = gathered(start)
            query = metric.ranking_operands(xr, "query", shift)
            part_ids = jnp.arange(parts, dtype=jnp.int32)
            ranking = lax.map(functools.partial(part_tile, query.operands), part_ids)
            ranking = jnp.moveaxis(ranking, 0, 1).reshape(group, parts * part)[:, :m]
            if own is not None:
                ranking = jnp.where(own[safe][:, None] == columns[None, :], inf, ranking)
            kept, kept_cols = select.smallest_k_simple(ranking, wide)
            values = values.at[rows].set(kept, mode="drop")
            cols = cols.at[rows].set(kept_cols, mode="drop")
            bound = bound.at[rows].set(metric.ranking_error(query.norms, largest, dim), mode="drop")
            return start + group, values, cols, bound

        zero = jnp.zeros_like(ok, dist.dtype)  # shaped and sharded like the rows' state
        empty = jnp.broadcast_to(zero[:, None], (n, wide))
        lists = (empty + inf, empty.astype(jnp.int32), zero)
        lists = lax.while_loop(lambda s: s[0] < count, ranked, (jnp.int32(0), *lists))[1:]

        def refined(state):  # then measured per pair (the reference operands are dead)
            start, dist, idx, ok = state
            rows, safe, xr = gathered(start)
            values, cols, bound = (a[safe] for a in lists)
            d, c, certain = refine(xr, yp, values, cols, k, metric, bound=bound)
            put = jnp.where(certain, rows, n)  # uncertified and padding rows: dropped
            dist = dist.at[put].set(d, mode="drop")
            idx = idx.at[put].set(c, mode="drop")
            ok = ok.at[put].set(True, mode="drop")
            return start + group, dist, idx, ok

        state = (jnp.int32(0), dist, idx, ok)
        return lax.while_loop(lambda s: s[0] < count, refined, state)[1:]

    # the reference operands are built only when some row is flagged
    return lax.cond(count > 0, loop, lambda *a: a, dist, idx, ok)


def recheck_uncertified(xp, yp, dist, idx, ok, k, metric, *, in_sample: bool, shift=None):
    """The last step after :func:`refine_lists`: :func:`widen` (given the ranking's
    ``shift``, from :data:`WIDE_MIN_FEATURES` features on), then :func:`recheck` of the rows
    still not ``ok``, unless every reference was a candidate of every row. ``in_sample``:
    ``yp is xp`` and each row's own point is excluded. Returns ``(distances [n, k],
    indices [n, k])`` (internal scale)."""
    m = yp.features.shape[0]
    if k + SLACK + int(in_sample) >= m:
        return dist, idx  # every reference was a candidate: nothing to re-check
    own = jnp.arange(xp.features.shape[0], dtype=jnp.int32) if in_sample else None
    longer = _wide_keep(m, k) > k + SLACK
    if shift is not None and longer and xp.features.shape[1] >= WIDE_MIN_FEATURES:
        dist, idx, ok = widen(xp, yp, dist, idx, ok, k, metric, shift, own=own)
    return recheck(xp, yp, dist, idx, ok, k, metric, own=own)


def sentinels(dist, idx, penalty, metric, exponent):
    """Reported distances; rows of non-finite queries and unfilled slots become (+inf, -1).

    ``dist`` is on the internal scale: a slot is empty where it is +inf there (a reported
    value may still overflow to inf on huge data without being empty).
    """
    empty = (dist == jnp.inf) | (penalty[:, None] != 0)
    inf = jnp.full((), jnp.inf, dist.dtype)
    dist = metric.finish(dist, exponent)
    return jnp.where(empty, inf, dist), jnp.where(empty, -1, idx)
