"""The exact k-NN engines behind :func:`hubjax.knn`.

Every engine answers the same question: for each query row, the k references with the smallest
per-pair distance (:func:`hubjax.distances.pairs`), ties to the smaller index. Because that
distance is computed pair by pair in a fixed order, the answer is bitwise the same for every
engine, block size and device count.

The engines find it in two steps:

1. **Ranking.** One plain matrix product per tile on shifted operands
   (:func:`hubjax.distances.ranking_operands`), reduced by the exact two-stage selection to the
   ``k + _SLACK`` best candidates per row; :func:`refine` recomputes the candidates' distances
   pair by pair and keeps the k best.
2. **Certificate.** The ranking's rounding error is bounded per row
   (:func:`hubjax.distances.ranking_error`). A row is certified when every reference outside its
   candidates provably lies beyond its k-th distance; :func:`recheck` recomputes the other rows
   against all references pair by pair (few rows, a handful at a time, inside a
   ``lax.while_loop``). On well-conditioned data hardly any row needs it; on data whose spread
   is tiny next to its offset the shift keeps it rare.

* :func:`strip_search` -- queries ``block_size`` rows at a time against all references.
  Memory ``O(block_size * m + n * k)``. Used for query-vs-reference search and small inputs.
* :func:`symmetric_search` -- in-sample only. Distances are symmetric, so each pair of row blocks
  is computed once and updates the running top-k of both blocks: about half the matrix products.
  With an odd number of blocks nb = 2h + 1, block I is paired with blocks I, I+1, ..., I+h
  (cyclically): every unordered pair of blocks appears exactly once and every step has the same
  shape, so the loop compiles once. Rows of block I select from the whole strip at once; the rows
  of the h other blocks select from block I (the transposed strip) and merge into their running
  lists.
* :func:`tiled_search` -- in-sample, the default where the compiled CPU kernel selects
  (:mod:`hubjax._cpu`). Also each block pair once, but as ``[block, block]`` tiles, a few
  disjoint pairs per step (:func:`pair_schedule`), each tile read once by the kernel for the
  lists of its rows and of its columns while it is still in cache. Same result as the others.

Where the CPU has AVX-512 (:func:`hubjax._cpu.fused`), the tiled and strip engines lower the
ranking and the selection on CPU as one call of a fused kernel that computes the products
itself and selects from registers (:func:`hubjax._cpu.tiled_lists`,
:func:`hubjax._cpu.query_lists`); its candidates go through the same refinement and
certificate, so the result is again the same, bit for bit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hubjax import _cpu, _select, distances

_COLUMN_ALIGN = 32  # block widths are multiples of this so the group selection always applies
# Candidates kept beyond k by the matrix-product ranking (rows whose gap is smaller are
# re-checked, so this trades selection work against re-checks, never exactness).
_SLACK = 8
_RECHECK_ROWS = 8  # rows re-checked together by :func:`recheck`
_FAST_KEEP_MAX = 128  # longest running list of the symmetric engine with the CPU kernel


def round_up(a: int, b: int) -> int:
    return -(-a // b) * b


def strip_search(xp, yp, k, metric, *, exclude_diagonal, block_size, shift, group=None):
    """Top-k of ``xp`` rows against all ``yp`` rows, one row strip at a time.

    Returns ``(distances [n, k], indices [n, k], certified [n])``; rows not certified must go
    through :func:`recheck`. Each strip ``[rows, m]`` is a plain matrix product of the ranking
    operands, reduced by the two-stage selection to ``k + _SLACK`` candidates (one more when the
    diagonal is excluded: the point itself is dropped in :func:`refine`).
    """
    n = xp.features.shape[0]
    m = yp.features.shape[0]
    dim = xp.features.shape[1]
    width = round_up(m, _COLUMN_ALIGN)
    reference = distances.ranking_operands(yp, metric, "reference", shift)
    largest = distances.largest_norm(reference.norms, yp.penalty)
    ref_ops = distances.pad_reference(reference.operands, width)
    rows = min(block_size, n)
    keep = min(k + _SLACK + int(exclude_diagonal), width)
    if _cpu.fused() and ref_ops.dtype == jnp.float32:
        return _fused_strips(
            xp,
            yp,
            ref_ops,
            largest,
            k,
            metric,
            keep,
            rows,
            shift,
            exclude_diagonal=exclude_diagonal,
            group=group,
        )

    def one_strip(start):
        block = _rows(xp, start, rows)
        query = distances.ranking_operands(block, metric, "query", shift)
        bound = distances.ranking_error(query.norms, largest, metric, dim)
        values, cols = _strip_candidates(query.operands, ref_ops, keep, group)
        row_ids = start + jnp.arange(rows, dtype=jnp.int32)[:, None] if exclude_diagonal else None
        return refine(block, yp, values, cols, k, metric, row_ids=row_ids, bound=bound)

    return _over_row_blocks(one_strip, n, rows)


def _fused_strips(
    xp, yp, ref_ops, largest, k, metric, keep, rows, shift, *, exclude_diagonal, group
):
    """:func:`strip_search` with the candidates of every query from one call of the fused CPU
    kernel (:func:`hubjax._cpu.query_lists`: products in registers, never a strip in memory),
    then refined strip by strip; other platforms lower the strips as they are."""
    n = xp.features.shape[0]
    dim = xp.features.shape[1]
    query = distances.ranking_operands(xp, metric, "query", shift)
    bound = distances.ranking_error(query.norms, largest, metric, dim)

    def fused(q, r):
        return _cpu.query_lists(q, r, keep=keep)

    def portable(q, r):
        def one(start):
            return _strip_candidates(lax.dynamic_slice_in_dim(q, start, rows), r, keep, group)

        return _over_row_blocks(one, n, rows)

    values, cols = lax.platform_dependent(query.operands, ref_ops, cpu=fused, default=portable)
    return _refine_lists(xp, yp, values, cols, bound, k, metric, rows, own=exclude_diagonal)


def _strip_candidates(query_ops, ref_ops, keep, group):
    """The ``keep`` best ranking candidates ``(values, columns) [rows, keep]`` of one strip of
    query operands against the padded reference operands ``[width, d + 2]``."""
    width = ref_ops.shape[0]
    return _select.update_rows(
        distances.ranking_tile(query_ops, ref_ops),
        jnp.zeros(1, jnp.int32),
        *_select.sentinel_lists(query_ops.shape[0], keep, width),
        seg_width=width,
        group=group,
        merge=False,
    )


def _rows(p, start, rows):
    """``rows`` consecutive points of ``p`` from ``start`` (a slice, not a copy of ``p``)."""
    return jax.tree.map(lambda a: lax.dynamic_slice_in_dim(a, start, rows), p)


def _over_row_blocks(fn, n, rows):
    """Runs ``fn(start) -> (dist [rows, k], idx, ok [rows])`` over row blocks covering n rows.

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


def symmetric_plan(
    n: int, k: int, block_size: int, *, fast_select: bool = False
) -> tuple[int, int] | None:
    """``(num_blocks, block)`` for :func:`symmetric_search`, or None where it does not apply.

    The number of blocks is odd (so the cyclic pairing covers each pair once) and at least 3;
    each block must hold comfortably more than the kept candidates. The portable merge costs
    ``keep**2`` per row and step, so it is limited to short lists; with the compiled CPU
    selection (``fast_select``, :func:`hubjax._select.fast_cpu_selection`) lists up to
    :data:`_FAST_KEEP_MAX` are fine.
    """
    keep = k + _SLACK + 1
    if keep > (_FAST_KEEP_MAX if fast_select else _select._SORT_SMALL_MAX // 2):
        return None
    num_blocks = max(3, -(-n // block_size))
    num_blocks += 1 - num_blocks % 2
    block = round_up(-(-n // num_blocks), _COLUMN_ALIGN)
    if block < 4 * keep or block > n:
        return None
    return num_blocks, block


def _block_lists(xp, k, metric, num_blocks, block, shift):
    """What both symmetric engines start from: the padded reference operands in blocks
    ``[num_blocks, block, d + 2]``, each point's ranking error bound ``[n]`` and empty running
    lists of ``k + _SLACK + 1`` (the point itself is among its candidates)."""
    size = num_blocks * block
    r, bound = _reference_and_bound(xp, metric, shift)
    reference = distances.pad_reference(r.operands, size).reshape(num_blocks, block, -1)
    return reference, bound, _empty_lists(num_blocks, block, k + _SLACK + 1, reference.dtype)


def _reference_and_bound(xp, metric, shift):
    """The points' reference ranking operands and each point's ranking error bound ``[n]``."""
    r = distances.ranking_operands(xp, metric, "reference", shift)
    return r, _in_sample_bound(xp, r.norms, metric)


def _in_sample_bound(xp, norms, metric):
    """Each point's ranking error bound ``[n]`` against all of ``xp``, from its norms ``[n]``."""
    largest = distances.largest_norm(norms, xp.penalty)
    return distances.ranking_error(norms, largest, metric, xp.features.shape[1])


def _empty_lists(num_blocks, block, keep, dtype):
    """Running lists ``[num_blocks, block, keep]``: +inf with indices past every point."""
    size = num_blocks * block
    return (
        jnp.full((num_blocks, block, keep), jnp.inf, dtype),
        jnp.broadcast_to(size + jnp.arange(keep, dtype=jnp.int32), (num_blocks, block, keep)),
    )


def symmetric_search(xp, k, metric, *, num_blocks, block, shift, group=None):
    """In-sample top-k (diagonal excluded) computing each block pair once.

    Returns ``(distances, indices, certified)`` like :func:`strip_search`.
    """
    h = (num_blocks - 1) // 2
    reference, bound, state = _block_lists(xp, k, metric, num_blocks, block, shift)
    keep = state[0].shape[-1]

    def step(state, i):
        ring = (i + jnp.arange(h + 1, dtype=jnp.int32)) % num_blocks  # block i first
        ascending = jnp.sort(ring)
        cols = reference[ascending].reshape((h + 1) * block, -1)
        query = distances.query_from_reference(reference[i], metric)  # no second copy
        strip = distances.ranking_tile(query, cols)  # [block, (h + 1) * block]
        old_values, old_cols = state[0][ring], state[1][ring]  # [h + 1, block, keep]
        # rows of block i: candidates from all h + 1 blocks, in ascending column order
        row_values, row_cols = _select.update_rows(
            strip, ascending * block, old_values[0], old_cols[0], seg_width=block, group=group
        )
        # rows of blocks ring[1:]: candidates from block i (columns of the strip)
        where = jnp.searchsorted(ascending, ring[1:]).astype(jnp.int32)  # their strip segments
        col_values, col_cols = _select.update_cols(
            strip,
            where,
            (i * block)[None],
            old_values[1:].reshape(h * block, keep),
            old_cols[1:].reshape(h * block, keep),
            seg_width=block,
            group=group,
        )
        merged = (
            jnp.concatenate([row_values, col_values]).reshape(h + 1, block, keep),
            jnp.concatenate([row_cols, col_cols]).reshape(h + 1, block, keep),
        )
        return (state[0].at[ring].set(merged[0]), state[1].at[ring].set(merged[1])), None

    (values, cols), _ = lax.scan(step, state, jnp.arange(num_blocks, dtype=jnp.int32))
    return _finish_lists(xp, values, cols, bound, k, metric, block)


def pair_schedule(num_blocks: int, tiles: int) -> np.ndarray:
    """Steps of the tiled engine: ``[steps, tiles, 3]`` rows of (row block, column block, mode).

    ``num_blocks`` is odd. The diagonal tiles come first (mode 1: rows only), ``tiles`` per step,
    so that every running list holds the best candidates of its own block before it meets any
    other block: each later tile then offers a list only the few values that beat that, instead
    of the many insertions a list makes while it fills from empty. Then the circle method: round
    r pairs blocks ``r + i`` and ``r - i`` (``i = 1 ... (nb - 1) / 2``, mode 2: rows and
    columns), so each round uses every block but r once and every unordered pair of blocks
    appears exactly once overall. Diagonals and rounds are cut into steps of ``tiles`` tiles (no
    block twice in a step); a short step is filled with tiles of mode 0 (no update) whose blocks
    are out of range.
    """
    filler = (num_blocks, num_blocks, 0)
    groups = [[(b, b, 1) for b in range(num_blocks)]] + [
        [((r + i) % num_blocks, (r - i) % num_blocks, 2) for i in range(1, (num_blocks + 1) // 2)]
        for r in range(num_blocks)
    ]
    steps = []
    for group in groups:
        for start in range(0, len(group), tiles):
            step = group[start : start + tiles]
            steps.append(step + [filler] * (tiles - len(step)))
    return np.asarray(steps, np.int32)


def tiled_plan(n: int, k: int, block_size: int, tiles: int) -> tuple[int, int, int] | None:
    """``(num_blocks, block, tiles)`` for :func:`tiled_search`, or None where it does not apply.

    The number of blocks is odd and at least 3; two more are taken where that gives more tiles
    per step (up to ``tiles``) or makes each round of :func:`pair_schedule` fill whole steps,
    and the blocks stay large enough. Each block must hold comfortably more than the kept
    candidates (else None).
    """
    keep = k + _SLACK + 1
    if keep > _FAST_KEEP_MAX:
        return None
    num_blocks = max(3, -(-n // block_size))
    num_blocks += 1 - num_blocks % 2
    best = None
    for blocks in (num_blocks, num_blocks + 2):
        block = round_up(-(-n // blocks), _COLUMN_ALIGN)
        if not 4 * keep <= block <= n:
            continue
        per_step = max(1, min(tiles, (blocks - 1) // 2))
        score = (per_step, ((blocks - 1) // 2) % per_step == 0)
        if best is None or score > best[0]:
            best = (score, (blocks, block, per_step))
    return None if best is None else best[1]


def tiled_search(xp, k, metric, *, num_blocks, block, tiles, shift):
    """In-sample top-k (diagonal excluded) computing each block pair once, tile by tile.

    Same result as :func:`symmetric_search`. Each step takes ``tiles`` disjoint block pairs
    (:func:`pair_schedule`), computes their ``[block, block]`` ranking tiles in one batched
    matrix product and merges each tile into the running lists of its rows and of its columns
    in a single read (:func:`hubjax._select.update_pairs`). Tiles stay small enough to be read
    back from cache right after the product wrote them, and each step's matrix product has a
    shape XLA:CPU runs near its best throughput.
    """
    if not _cpu.fused() or xp.features.dtype != jnp.float32:
        reference, bound, state = _block_lists(xp, k, metric, num_blocks, block, shift)
        values, cols = _scanned_lists(reference, state, metric=metric, tiles=tiles)
        return _finish_lists(xp, values, cols, bound, k, metric, block)
    keep = k + _SLACK + 1

    def scanned(features, shift, penalty):
        del features, penalty  # xp's (not materialised on the fused path)
        r = distances.ranking_operands(xp, metric, "reference", shift)
        reference = distances.pad_reference(r.operands, num_blocks * block)
        reference = reference.reshape(num_blocks, block, -1)
        state = _empty_lists(num_blocks, block, keep, reference.dtype)
        return (*_scanned_lists(reference, state, metric=metric, tiles=tiles), r.norms)

    fused = functools.partial(
        _fused_lists,
        num_blocks=num_blocks,
        block=block,
        keep=keep,
        euclidean=metric in ("sqeuclidean", "euclidean"),
    )
    values, cols, norms = lax.platform_dependent(
        xp.features, shift, xp.penalty, cpu=fused, default=scanned
    )
    return _finish_lists(xp, values, cols, _in_sample_bound(xp, norms, metric), k, metric, block)


def _fused_lists(features, shift, penalty, *, num_blocks, block, keep, euclidean):
    """:func:`_scanned_lists` in one call of the fused CPU kernel (AVX-512) on the prepared
    points (the kernel builds the ranking operands and the queries itself: XLA holds no copy
    of them): it computes the ranking products, a few registers at a time, and never writes
    them to memory. Its products round differently from XLA's (another summation order,
    within the same error bound), so its lists may differ from the scan's where values tie up
    to rounding; the refined, certified result does not. Lists of the padding rows are +inf
    (nobody reads them). Also returns the points' norms as the kernel's operands hold them
    (summed in feature order; the error bound covers any order), for the ranking error bound,
    so XLA makes no pass over the points for them."""
    n = features.shape[0]
    shift = jnp.broadcast_to(shift, features.shape[-1:]).astype(features.dtype)
    values, cols, sq = _cpu.tiled_lists(
        features, shift, penalty.astype(features.dtype), keep=keep, euclidean=euclidean, norms=True
    )
    extra = num_blocks * block - n
    values = jnp.pad(values, ((0, extra), (0, 0)), constant_values=jnp.inf)
    cols = jnp.pad(cols, ((0, extra), (0, 0)), constant_values=n)
    return (
        values.reshape(num_blocks, block, keep),
        cols.reshape(num_blocks, block, keep),
        jnp.sqrt(sq),
    )


def _scanned_lists(reference, state, *, metric, tiles):
    """Running lists ``[num_blocks, block, keep]`` of every pair of blocks of the padded
    reference operands ``[num_blocks, block, d + 2]``, ``tiles`` block pairs per step of a
    ``lax.scan`` (:func:`pair_schedule`)."""
    query = distances.query_from_reference(reference, metric)  # [num_blocks, block, d + 2]
    num_blocks, block = query.shape[:2]
    schedule = jnp.asarray(pair_schedule(num_blocks, tiles))

    def step(state, plan):
        row_blocks, col_blocks, mode = plan[:, 0], plan[:, 1], plan[:, 2]
        q = jnp.take(query, row_blocks, axis=0, mode="clip")  # [tiles, block, d + 2]
        c = jnp.take(reference, col_blocks, axis=0, mode="clip")
        strips = lax.dot_general(
            q, c, (((2,), (2,)), ((0,), (0,))), precision=lax.Precision.HIGHEST
        )  # [tiles, block, block]
        rv, ri, cv, ci = (
            jnp.take(a, blocks, axis=0, mode="clip")
            for a, blocks in (
                (state[0], row_blocks),
                (state[1], row_blocks),
                (state[0], col_blocks),
                (state[1], col_blocks),
            )
        )
        rv, ri, cv, ci = _select.update_pairs(
            strips, row_blocks * block, col_blocks * block, mode, rv, ri, cv, ci
        )
        # diagonal tiles write their rows only; filler tiles nothing (out-of-range: dropped)
        rows_to = jnp.where(mode >= 1, row_blocks, num_blocks)
        cols_to = jnp.where(mode == 2, col_blocks, num_blocks)
        values = state[0].at[rows_to].set(rv, mode="drop").at[cols_to].set(cv, mode="drop")
        index = state[1].at[rows_to].set(ri, mode="drop").at[cols_to].set(ci, mode="drop")
        return (values, index), None

    (values, cols), _ = lax.scan(step, state, schedule)
    return values, cols


def _finish_lists(xp, values, cols, bound, k, metric, block):
    """Refines the symmetric engines' running lists ``[num_blocks, block, keep]`` into the
    top-k."""
    values = values.reshape(-1, values.shape[-1])
    cols = cols.reshape(-1, cols.shape[-1])
    return _refine_lists(xp, xp, values, cols, bound, k, metric, block, own=True)


def _refine_lists(xp, yp, values, cols, bound, k, metric, rows, *, own):
    """:func:`refine` of the candidate lists ``[>= n, keep]`` of every ``xp`` row, ``rows`` at a
    time; ``own``: row i's own column (in-sample) is excluded."""

    def one(start):
        row_ids = start + jnp.arange(rows, dtype=jnp.int32)[:, None] if own else None
        return refine(
            _rows(xp, start, rows),
            yp,
            lax.dynamic_slice_in_dim(values, start, rows),
            lax.dynamic_slice_in_dim(cols, start, rows),
            k,
            metric,
            row_ids=row_ids,
            bound=lax.dynamic_slice_in_dim(bound, start, rows),
        )

    return _over_row_blocks(one, xp.features.shape[0], rows)


def refine(rows, yp, values, columns, k, metric, *, row_ids=None, bound=None):
    """Recomputes candidate distances per pair; keeps the k smallest by (distance, index).

    ``values``/``columns`` ``[b, c]`` are the ranking's candidates; +inf ranking values (padding,
    non-finite points, unfilled slots) stay excluded, and so does column ``row_ids`` (the point
    itself) if given. Returns ``(distances [b, k], indices [b, k], certified [b])``; with
    ``bound=None`` (exact candidate values) every row is certified. The per-pair work is done in
    row chunks so that ``[chunk, c, d]`` stays within :data:`distances.PAIR_BUDGET` for any d.
    """
    b, c = columns.shape
    dim = yp.features.shape[1]
    chunk = distances.pair_rows(b, dim, c)
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
    d = distances.pairs(rows, yp, safe, metric)
    if row_ids is not None:
        excluded = excluded | (columns == row_ids)
    d = jnp.where(excluded, jnp.full((), jnp.inf, d.dtype), d)
    d, columns = _select.smallest_k_pairs(d, columns, k)
    if bound is None:
        ok = jnp.ones(d.shape[0], bool)
    else:
        largest_kept = jnp.max(values, axis=1)
        ok = distances.certified(d[:, k - 1], largest_kept, bound, metric, yp.features.shape[1])
    return d, columns, ok


def recheck(xp, yp, dist, idx, ok, k, metric, *, own=None, query_rows=None, ref_pos=None):
    """Replaces the rows that are not ``ok`` by their exact top-k against all of ``yp``.

    Exact: every distance of such a row is computed per pair, ``_RECHECK_ROWS`` rows at a time,
    in column tiles within :data:`distances.PAIR_BUDGET`, inside a ``lax.while_loop`` that runs
    once per group of flagged rows (zero times when all rows are certified). ``own [n]``
    (in-sample search) is each row's own column, excluded from its list. Non-finite query rows
    are left as they are (callers mask them).

    The points may be stored in another order than the one the lists index (the IVF engine keeps
    them sorted by list): query i is row ``query_rows[i]`` of ``xp``, and reference point j is
    row ``ref_pos[j]`` of ``yp`` (both default to the identity). Columns are compared in the
    lists' order, so ties still go to the smaller index.
    """
    n = dist.shape[0]
    dim = xp.features.shape[1]
    m = yp.features.shape[0]
    finite = xp.penalty == 0 if query_rows is None else xp.penalty[query_rows] == 0
    flagged = ~ok & finite
    chunk = _RECHECK_ROWS
    width = round_up(min(m, max(_COLUMN_ALIGN, distances.PAIR_BUDGET // (4 * chunk * dim))), 8)
    if m == 0:
        return dist, idx
    # whole tiles of `width` columns, then a narrower last one: slices of yp, never a padded
    # copy of it (that copy was made on every call, outside the loop, flagged rows or not)
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
            parts.append(distances.pair_tile(xr, _rows(yp, 0, width), metric))
        elif full > 1:
            starts = jnp.arange(full, dtype=jnp.int32) * width
            d = lax.map(lambda s: distances.pair_tile(xr, _rows(yp, s, width), metric), starts)
            parts.append(jnp.moveaxis(d, 0, 1).reshape(chunk, full * width))  # [full, chunk, w]
        if tail:
            parts.append(distances.pair_tile(xr, _rows(yp, full * width, tail), metric))
        d = jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]  # [chunk, m]
        if ref_pos is not None:
            d = jnp.take(d, ref_pos, axis=1)
        if own is not None:
            mine = own[safe][:, None] == columns[None, :]
            d = jnp.where(mine, jnp.full((), jnp.inf, d.dtype), d)
        values, cols = _select.smallest_k_simple(d, k)
        dist = dist.at[rows].set(values, mode="drop")
        idx = idx.at[rows].set(cols, mode="drop")
        return start + chunk, dist, idx

    _, dist, idx = lax.while_loop(lambda s: s[0] < count, body, (jnp.int32(0), dist, idx))
    return dist, idx


def search(xp, yp, k, metric, *, in_sample, block_size, plan=None, group=None, shift=None):
    """Exact top-k of every ``xp`` row among ``yp`` (in-sample: ``yp is xp``, self excluded).

    Runs the symmetric engine when ``plan`` is given, the strip engine otherwise, then
    :func:`recheck`. Non-finite query rows come back as they are; callers turn them into
    sentinels. ``shift`` defaults to the centre of ``yp``.
    """
    if shift is None:
        shift = distances.centre(yp, metric)
    if plan is not None and len(plan) == 3:
        dist, idx, ok = tiled_search(
            xp, k, metric, num_blocks=plan[0], block=plan[1], tiles=plan[2], shift=shift
        )
    elif plan is not None:
        dist, idx, ok = symmetric_search(
            xp, k, metric, num_blocks=plan[0], block=plan[1], shift=shift, group=group
        )
    else:
        dist, idx, ok = strip_search(
            xp,
            yp,
            k,
            metric,
            exclude_diagonal=in_sample,
            block_size=block_size,
            shift=shift,
            group=group,
        )
    if k + _SLACK + int(in_sample) >= yp.features.shape[0]:
        return dist, idx  # every reference was a candidate: nothing to re-check
    own = jnp.arange(xp.features.shape[0], dtype=jnp.int32) if in_sample else None
    return recheck(xp, yp, dist, idx, ok, k, metric, own=own)
