"""Exact selection of the k smallest entries per row, ties to the smaller column.

Implementations with identical results:

* :func:`smallest_k_simple` -- ``lax.top_k`` on the negated row. Clear, but on CPU ``top_k`` is a
  single-threaded partial sort and on GPU a full sort for k > 16.
* :func:`smallest_k` -- two stages: the minimum of each group of ``group`` consecutive columns,
  the k groups with the smallest minima, then ``top_k`` over those ``k * group`` candidates.
  Exact: if an entry e is among the k smallest (by value, then column), each of the k chosen
  groups holds a minimum strictly before e in that order, so e's group is chosen too. The chosen
  groups are sorted by position before gathering so that ``top_k``'s "lower position first"
  tie rule still means "smaller column first".
* :func:`smallest_k_certified` -- the same with the groups chosen by ``lax.approx_min_k``
  (the TPU's opt-in), each row certified from the group minima and selected again exactly
  where the choice may have missed.

All values must be free of NaN (the distance kernel maps NaN to +inf) and use +0.0 for zero.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from hubjax._src.kernels import cpu as _cpu
from hubjax._src.platforms import per_platform


def smallest_k_simple(d: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``(values [b, k], columns [b, k])`` of the k smallest entries of each row of ``d``."""
    neg, idx = lax.top_k(-d, k)
    return -neg, idx.astype(jnp.int32)


def pick_group(width: int, k: int) -> int:
    """Group size for :func:`smallest_k`, or 1 when the plain ``top_k`` is the better choice.

    Groups of 32 columns were fastest on CPU for k <= 16 (measured with ``benchmarks/``); the
    group count must stay well above k or the second stage is as large as the first.
    """
    for group in (32, 16, 8):
        if width % group == 0 and width // group >= 4 * k:
            return group
    return 1


def smallest_k(d: jax.Array, k: int, group: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Same result as :func:`smallest_k_simple`, through the two-stage group selection."""
    b, width = d.shape
    if group is None:
        group = pick_group(width, k)
    if group <= 1 or width % group or width // group < k:
        return smallest_k_simple(d, k)
    grouped = d.reshape(b, width // group, group)
    _, chosen = lax.top_k(-grouped.min(axis=-1), k)
    return _from_groups(grouped, jnp.sort(chosen, axis=-1), k)


def _from_groups(grouped, chosen, k):
    """The k smallest ``(values, columns)`` among the members of the ``chosen [b, c]`` groups
    (sorted by position, so that ``top_k``'s lower-position-first rule is smaller-column-first)
    of ``grouped [b, num_groups, group]``."""
    b, _, group = grouped.shape
    c = chosen.shape[1]
    candidates = jnp.take_along_axis(grouped, chosen[:, :, None], axis=1).reshape(b, c * group)
    columns = (chosen[:, :, None] * group + jnp.arange(group, dtype=chosen.dtype)).reshape(
        b, c * group
    )
    values, pos = smallest_k_simple(candidates, k)
    return values, jnp.take_along_axis(columns, pos, axis=-1).astype(jnp.int32)


# The TPU's opt-in certified selection (smallest_k_certified): the recall asked of
# lax.approx_min_k, and the share of a tile's rows (1 / DOUBT_SHARE) whose selection may be
# redone exactly one by one before the whole tile is.
APPROX_RECALL = 0.95
DOUBT_SHARE = 8


def approx_groups(minima: jax.Array, k: int) -> jax.Array:
    """``[b, k]`` group positions with (approximately) the smallest minima: ``lax.approx_min_k``,
    TPU-KNN's partial reduction on TPU and an exact sort elsewhere."""
    _, chosen = lax.approx_min_k(minima, k, recall_target=APPROX_RECALL)
    return chosen


def smallest_k_certified(
    d: jax.Array, k: int, group: int | None = None, choose=approx_groups
) -> tuple[jax.Array, jax.Array]:
    """Same result as :func:`smallest_k`, with the k groups chosen by ``choose(minima, k)``
    (by default :func:`approx_groups`) instead of an exact ``top_k`` of the group minima.

    The result is certified row by row from the minima already at hand, with no second pass
    over ``d``: with ``(v, c)`` the k-th selected entry, a group that was not chosen can hold an
    entry before it in (value, column) order only if its minimum is below ``v``, or equal to it
    with the group starting before column ``c``. Rows where some unchosen group could (or
    where ``choose`` returned a position twice or out of range) are selected again exactly: up
    to ``b / DOUBT_SHARE`` of them one by one, more by redoing the whole tile
    (:func:`smallest_k`). So the bits are :func:`smallest_k`'s whatever ``choose`` returns;
    only the time depends on how often it misses.
    """
    b, width = d.shape
    if group is None:
        group = pick_group(width, k)
    if group <= 1 or width % group or width // group <= k:
        return smallest_k(d, k, group)
    num_groups = width // group
    grouped = d.reshape(b, num_groups, group)
    minima = grouped.min(axis=-1)
    chosen = jnp.sort(choose(minima, k).astype(jnp.int32), axis=-1)
    bad = (chosen[:, 0] < 0) | (chosen[:, -1] >= num_groups)
    bad = bad | jnp.any(chosen[:, 1:] == chosen[:, :-1], axis=-1)
    values, cols = _from_groups(grouped, jnp.clip(chosen, 0, num_groups - 1), k)
    rows = jnp.arange(b, dtype=jnp.int32)[:, None]
    taken = jnp.zeros((b, num_groups), bool).at[rows, chosen].set(True, mode="drop")
    last_v, last_c = values[:, -1:], cols[:, -1:]
    starts = jnp.arange(num_groups, dtype=jnp.int32) * group
    before = (minima < last_v) | ((minima == last_v) & (starts < last_c))
    doubt = bad | jnp.any(before & ~taken, axis=-1)
    budget = max(1, b // DOUBT_SHARE)

    def none(_):
        return values, cols

    def few(_):
        (where,) = jnp.nonzero(doubt, size=budget, fill_value=b)  # b: dropped below
        again_v, again_c = smallest_k(jnp.take(d, jnp.minimum(where, b - 1), axis=0), k, group)
        return (
            values.at[where].set(again_v, mode="drop"),
            cols.at[where].set(again_c, mode="drop"),
        )

    def every(_):
        return smallest_k(d, k, group)

    count = jnp.sum(doubt, dtype=jnp.int32)
    branch = (count > 0).astype(jnp.int32) + (count > budget).astype(jnp.int32)
    return lax.switch(branch, (none, few, every), None)


def smallest_k_columns(
    d: jax.Array, k: int, group: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """``smallest_k(d.T, k, group)`` without materialising the transpose of ``d [r, c]``.

    Group minima are taken over groups of rows (a reduction along the contiguous axis); only the
    ``[r / group, c]`` minima are transposed, and the chosen groups are gathered column-wise.
    """
    rows, cols = d.shape
    if group is None:
        group = pick_group(rows, k)
    if group <= 1 or rows % group or rows // group < k:
        return smallest_k_simple(d.T, k)
    num_groups = rows // group
    grouped = d.reshape(num_groups, group, cols)
    _, chosen = lax.top_k(-grouped.min(axis=1).T, k)  # [cols, k]
    chosen = jnp.sort(chosen, axis=-1)
    row_ids = (chosen[:, :, None] * group + jnp.arange(group, dtype=chosen.dtype)).reshape(
        cols, k * group
    )
    candidates = d[row_ids, jnp.arange(cols)[:, None]]  # [cols, k * group]
    values, pos = smallest_k_simple(candidates, k)
    return values, jnp.take_along_axis(row_ids, pos, axis=-1).astype(jnp.int32)


def sort_small(values: jax.Array, index: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The k smallest of short candidate lists ``[b, c]`` by (value, index), in that order.

    Ranks by counting instead of sorting: entry a's rank is the number of entries before it in
    (value, index) order, computed with ``c * c`` vectorised comparisons per row. On CPU this is
    an order of magnitude faster than ``lax.sort`` for ``c`` up to ~64. Indices within a row must
    be distinct (then ranks are a permutation).
    """
    va, vb = values[:, :, None], values[:, None, :]
    ia, ib = index[:, :, None], index[:, None, :]
    before = (vb < va) | ((vb == va) & (ib < ia))
    rank = jnp.sum(before, axis=-1, dtype=jnp.int32)  # [b, c]
    return _scatter_ranks(rank, values, index, k)


SORT_SMALL_MAX = 96  # longer candidate lists are sorted (sort_small costs c * c per row)


def smallest_k_pairs_portable(values, index, k):
    """The k smallest of candidate lists ``[b, c]`` by (value, index), in that order (distinct
    indices per row): :func:`sort_small` for short lists, ``lax.sort`` otherwise."""
    if values.shape[1] <= SORT_SMALL_MAX:
        return sort_small(values, index, k)
    values, index = lax.sort((values, index), dimension=-1, num_keys=2)
    return values[:, :k], index[:, :k]


def smallest_k_pairs(values, index, k):
    """:func:`smallest_k_pairs_portable`, through the CPU kernel where the lowering is for CPU."""
    return dispatch(
        functools.partial(_cpu.sort_rows, k=k),
        functools.partial(smallest_k_pairs_portable, k=k),
        values,
        index,
    )


def merge_smallest_k(
    values_a: jax.Array, index_a: jax.Array, values_b: jax.Array, index_b: jax.Array, k: int
) -> tuple[jax.Array, jax.Array]:
    """The k smallest of two lists ``[b, ka]``, ``[b, kb]``, each sorted by (value, index).

    An entry's merged rank is its position in its own list plus the number of entries of the
    other list before it, so only ``ka * kb`` cross comparisons are needed. Indices must be
    distinct across the two lists.
    """
    va, vb = values_a[:, :, None], values_b[:, None, :]
    ia, ib = index_a[:, :, None], index_b[:, None, :]
    b_first = (vb < va) | ((vb == va) & (ib < ia))  # [b, ka, kb]
    ka, kb = values_a.shape[1], values_b.shape[1]
    rank_a = jnp.arange(ka, dtype=jnp.int32) + jnp.sum(b_first, axis=2, dtype=jnp.int32)
    rank_b = jnp.arange(kb, dtype=jnp.int32) + jnp.sum(~b_first, axis=1, dtype=jnp.int32)
    return _scatter_ranks(
        jnp.concatenate([rank_a, rank_b], axis=1),
        jnp.concatenate([values_a, values_b], axis=1),
        jnp.concatenate([index_a, index_b], axis=1),
        k,
    )


def _scatter_ranks(rank, values, index, k):
    """Places entry a at output position ``rank[a]`` (ranks form a permutation); keeps k."""
    rows = jnp.arange(rank.shape[0], dtype=jnp.int32)[:, None]
    out_v = jnp.zeros((rank.shape[0], k), values.dtype).at[rows, rank].set(values, mode="drop")
    out_i = jnp.zeros((rank.shape[0], k), index.dtype).at[rows, rank].set(index, mode="drop")
    return out_v, out_i


def sentinel_lists(b: int, k: int, first: int, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """Empty running lists ``[b, k]``: +inf values with distinct indices ``first, first+1, ...``
    (larger than every real index, so any real entry, even +inf, ranks before them)."""
    return (
        jnp.full((b, k), jnp.inf, dtype),
        jnp.broadcast_to(first + jnp.arange(k, dtype=jnp.int32), (b, k)),
    )


# Running-list updates. Each returns the k smallest by (value, index) of a sorted list
# ``init [lists, k]`` and new values read from a ranking tile, with global indices. Two
# implementations with identical results: the portable one (two-stage selection + merge, any
# backend) and the compiled CPU kernel (hubjax._cpu), chosen per platform at lowering time.


def update_rows_portable(
    d, seg_base, init_v, init_i, *, seg_width, group=None, merge=True, certified=False
):
    """Rows of ``d [b, w]``; column j has global index ``seg_base[j // seg_width] + j % seg_width``.

    With ``merge=False`` the lists must be :func:`sentinel_lists` and only ``d`` is selected from.
    ``certified``: the groups are chosen by :func:`smallest_k_certified` (the same bits).
    """
    k = init_v.shape[-1]
    values, pos = (smallest_k_certified if certified else smallest_k)(d, k, group)
    cols = seg_base[pos // seg_width] + pos % seg_width
    if not merge:
        return values, cols.astype(jnp.int32)
    return merge_smallest_k(init_v, init_i, values, cols.astype(jnp.int32), k)


def update_cols_portable(d, col_segs, row_base, init_v, init_i, *, seg_width, group=None):
    """Columns of ``d [r, w]``: list o reads column ``col_segs[o // s] * s + o % s``
    (``s = seg_width``); row r has global index ``row_base[0] + r``."""
    rows = d.shape[0]
    k = init_v.shape[-1]
    segments = d.reshape(rows, -1, seg_width)
    tiles = jnp.take(segments, col_segs, axis=1).reshape(rows, -1)
    values, pos = smallest_k_columns(tiles, k, group)
    return merge_smallest_k(init_v, init_i, values, row_base[0] + pos, k)


def dispatch(kernel, portable, d, *args):
    """``portable(d, *args)``, or the kernel where the lowering is for CPU and it applies
    (:func:`~hubjax._src.platforms.per_platform`: the portable branch is traced only for a
    program lowered for another platform). Neither reads a traced value from its closure."""
    if d.dtype != jnp.float32 or not _cpu.enabled():
        return portable(d, *args)
    return per_platform(_call, {"cpu": kernel, "tpu": portable, "gpu": portable}, d, *args)


def _call(f, *args):
    return f(*args)


def update_rows(d, seg_base, init_v, init_i, *, seg_width, group=None, merge=True, certified=False):
    """:func:`update_rows_portable`, through the CPU kernel where the lowering is for CPU."""
    portable = functools.partial(
        update_rows_portable, seg_width=seg_width, group=group, merge=merge, certified=certified
    )
    return dispatch(
        functools.partial(_cpu.select_rows, seg_width=seg_width),
        portable,
        d,
        seg_base,
        init_v,
        init_i,
    )


def update_cols(d, col_segs, row_base, init_v, init_i, *, seg_width, group=None):
    """:func:`update_cols_portable`, through the CPU kernel where the lowering is for CPU."""
    return dispatch(
        functools.partial(_cpu.select_cols, seg_width=seg_width),
        functools.partial(update_cols_portable, seg_width=seg_width, group=group),
        d,
        col_segs,
        row_base,
        init_v,
        init_i,
    )


def update_pairs_portable(d, row_base, col_base, mode, rows_v, rows_i, cols_v, cols_i):
    """Tiles ``d [p, b, c]``: row r of tile t has global index ``row_base[t] + r`` and column j
    ``col_base[t] + j``. Rows' lists ``[p, b, K]`` take the tile's rows where ``mode`` is 1 or
    2; columns' lists ``[p, c, K]`` take its columns where it is 2 (0: no update)."""
    width = d.shape[-1]

    def one(tile, rb, cb, m, rv, ri, cv, ci):
        nrv, nri = update_rows_portable(tile, cb[None], rv, ri, seg_width=width)
        ncv, nci = update_cols_portable(
            tile, jnp.zeros(1, jnp.int32), rb[None], cv, ci, seg_width=width
        )
        rows_on, cols_on = m >= 1, m == 2
        return (
            jnp.where(rows_on, nrv, rv),
            jnp.where(rows_on, nri, ri),
            jnp.where(cols_on, ncv, cv),
            jnp.where(cols_on, nci, ci),
        )

    return jax.vmap(one)(d, row_base, col_base, mode, rows_v, rows_i, cols_v, cols_i)


def update_pairs(d, row_base, col_base, mode, rows_v, rows_i, cols_v, cols_i):
    """:func:`update_pairs_portable`, through the CPU kernel where the lowering is for CPU."""
    return dispatch(
        _cpu.select_pairs,
        update_pairs_portable,
        d,
        row_base,
        col_base,
        mode,
        rows_v,
        rows_i,
        cols_v,
        cols_i,
    )
