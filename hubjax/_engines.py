"""The exact k-NN engines behind :func:`hubjax.knn`.

Both engines rank pairs with one plain matrix product per tile (see
:func:`hubjax.distances.ranking_operands`), keep ``k + _SLACK`` candidates per row with the exact
two-stage selection, and finish in :func:`refine`, which recomputes the candidates' distances
pair by pair and orders them by (distance, index). The slack makes the result independent of
tile shapes: they change the matrix product's rounding, never which candidates survive.

* :func:`strip_search` -- queries ``block_size`` rows at a time against all references.
  Memory ``O(block_size * m + n * k)``. Used for query-vs-reference search and small inputs.
* :func:`symmetric_search` -- in-sample only. Distances are symmetric, so each pair of row blocks
  is computed once and updates the running top-k of both blocks: about half the matrix products.
  With an odd number of blocks nb = 2h + 1, block I is paired with blocks I, I+1, ..., I+h
  (cyclically): every unordered pair of blocks appears exactly once and every step has the same
  shape, so the loop compiles once. Rows of block I select from the whole strip at once; the rows
  of the h other blocks select from block I (the transposed strip) and merge into their running
  lists.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from hubjax import _select, distances

_COLUMN_ALIGN = 32  # block widths are multiples of this so the group selection always applies
# Candidates kept beyond k by the matrix-product ranking; see the module docstring.
_SLACK = 8
_SORT_SMALL_MAX = 96  # candidate lists up to this length are ranked by counting, not sorted


def round_up(a: int, b: int) -> int:
    return -(-a // b) * b


def strip_search(xp, yp, k, metric, *, exclude_diagonal, block_size, group=None):
    """Exact top-k of ``xp`` rows against all ``yp`` rows, one row strip at a time.

    Each strip ``[rows, m]`` is a plain matrix product of the ranking operands (no elementwise
    pass over it), reduced by the two-stage selection to ``k + _SLACK`` candidates (one more when
    the diagonal is excluded: the point itself is dropped in :func:`refine`).
    """
    n = xp.features.shape[0]
    m = yp.features.shape[0]
    width = round_up(m, _COLUMN_ALIGN)
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


def symmetric_plan(n: int, k: int, block_size: int) -> tuple[int, int] | None:
    """``(num_blocks, block)`` for :func:`symmetric_search`, or None where it does not apply.

    The number of blocks is odd (so the cyclic pairing covers each pair once) and at least 3;
    each block must hold comfortably more than the kept candidates.
    """
    keep = k + _SLACK + 1
    if keep > _SORT_SMALL_MAX // 2:
        return None
    num_blocks = max(3, -(-n // block_size))
    num_blocks += 1 - num_blocks % 2
    block = round_up(-(-n // num_blocks), _COLUMN_ALIGN)
    if block < 4 * keep:
        return None
    return num_blocks, block


def symmetric_search(xp, k, metric, *, num_blocks, block, group=None):
    """In-sample exact top-k (diagonal excluded) computing each block pair once."""
    n = xp.features.shape[0]
    h = (num_blocks - 1) // 2
    size = num_blocks * block
    xpad = distances.pad(xp, size)
    query = distances.ranking_operands(xpad, metric, "query").reshape(num_blocks, block, -1)
    reference = distances.ranking_operands(xpad, metric, "reference").reshape(num_blocks, block, -1)
    keep = k + _SLACK + 1
    state = (
        jnp.full((num_blocks, block, keep), jnp.inf, query.dtype),
        jnp.broadcast_to(size + jnp.arange(keep, dtype=jnp.int32), (num_blocks, block, keep)),
    )

    def step(state, i):
        ring = (i + jnp.arange(h + 1, dtype=jnp.int32)) % num_blocks  # block i first
        ascending = jnp.sort(ring)
        cols = reference[ascending].reshape((h + 1) * block, -1)
        strip = distances.ranking_tile(query[i], cols)  # [block, (h + 1) * block]
        # rows of block i: candidates from all h + 1 blocks, in ascending column order
        values, pos = _select.smallest_k(strip, keep, group)
        row_cols = ascending[pos // block] * block + pos % block
        # rows of blocks ring[1:]: candidates from block i (the transposed strip)
        where = jnp.searchsorted(ascending, ring[1:])  # position of each ring block in the strip
        tiles = jnp.take(strip.reshape(block, h + 1, block), where, axis=1)  # [block, h, block]
        t_values, t_pos = _select.smallest_k_columns(tiles.reshape(block, h * block), keep, group)
        t_cols = i * block + t_pos
        new_values = jnp.concatenate([values, t_values]).reshape(h + 1, block, keep)
        new_cols = jnp.concatenate([row_cols, t_cols]).reshape(h + 1, block, keep)
        old_values, old_cols = state[0][ring], state[1][ring]
        merged = _select.merge_smallest_k(
            old_values.reshape(-1, keep),
            old_cols.reshape(-1, keep),
            new_values.reshape(-1, keep),
            new_cols.reshape(-1, keep),
            keep,
        )
        merged = jax.tree.map(lambda a: a.reshape(h + 1, block, keep), merged)
        return (state[0].at[ring].set(merged[0]), state[1].at[ring].set(merged[1])), None

    (values, cols), _ = lax.scan(step, state, jnp.arange(num_blocks, dtype=jnp.int32))

    def finish(args):
        start, block_prepared, block_values, block_cols = args
        row_ids = start + jnp.arange(block, dtype=jnp.int32)[:, None]
        return refine(block_prepared, xpad, block_values, block_cols, k, metric, row_ids=row_ids)

    blocks = jax.tree.map(lambda a: a.reshape(num_blocks, block, *a.shape[1:]), xpad)
    starts = jnp.arange(num_blocks, dtype=jnp.int32) * block
    dist, idx = lax.map(finish, (starts, blocks, values, cols))
    return dist.reshape(-1, k)[:n], idx.reshape(-1, k)[:n]


def refine(rows, yp, values, columns, k, metric, *, row_ids=None):
    """Recomputes candidate distances per pair; keeps the k smallest by (distance, index).

    ``values``/``columns`` ``[b, c]`` are the ranking's candidates; +inf ranking values (padding,
    non-finite points, unfilled slots) stay excluded, and so does column ``row_ids`` (the point
    itself) if given.
    """
    excluded = values == jnp.inf
    safe = jnp.where(excluded, 0, columns)  # unfilled slots hold out-of-range placeholders
    d = distances.pairs(rows, yp, safe, metric)
    if row_ids is not None:
        excluded = excluded | (columns == row_ids)
    d = jnp.where(excluded, jnp.full((), jnp.inf, d.dtype), d)
    if columns.shape[1] <= _SORT_SMALL_MAX:
        return _select.sort_small(d, columns, k)
    d, columns = lax.sort((d, columns), dimension=-1, num_keys=2)
    return d[:, :k], columns[:, :k]
