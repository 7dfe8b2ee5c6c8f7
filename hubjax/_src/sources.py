"""Candidate sources of the exact search: for every query row, the ``k + SLACK`` references
with the smallest matrix-product ranking (:meth:`Metric.ranking_operands
<hubjax._src.metric.Metric.ranking_operands>`), found by the exact two-stage selection
(:mod:`hubjax._src.select`). None of them knows about certificates: each returns
:class:`~hubjax._src.finisher.Candidates` and :mod:`hubjax._src.finisher` makes them
exact, so the result is bitwise the same whichever source ran.

* :class:`Strip` -- queries ``rows`` at a time against all references. Memory
  ``O(rows * m + n * k)``. Query-vs-reference search and small inputs.
* :class:`Symmetric` -- in-sample only. Distances are symmetric, so each pair of row blocks
  is computed once and updates the running lists of both blocks: about half the matrix products.
  With an odd number of blocks nb = 2h + 1, block I is paired with blocks I, I+1, ..., I+h
  (cyclically): every unordered pair of blocks appears exactly once and every step has the same
  shape, so the loop compiles once. Rows of block I select from the whole strip at once; the
  rows of the h other blocks select from block I (the transposed strip).
* :class:`Tiled` -- in-sample, the CPU default where the compiled selection kernel is built
  (:mod:`hubjax._src.kernels`). Also each block pair once, but as ``[block, block]`` tiles, a
  few disjoint pairs per step (:func:`pair_schedule`), each tile read once by the kernel for the
  lists of its rows and of its columns while it is still in cache.

Where the CPU has AVX-512 (``fused``), :class:`Tiled` and :class:`Strip` lower the ranking and
the selection on CPU as one call of a fused kernel that computes the products itself and
selects from registers (:func:`hubjax._src.kernels.cpu.tiled_lists`,
:func:`hubjax._src.kernels.cpu.query_lists`).

Sources are frozen dataclasses (static under ``jit``); :mod:`hubjax._src.search` picks one per
platform the program is lowered for.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
from jax import lax

from hubjax._src import numerics, select
from hubjax._src.finisher import COLUMN_ALIGN, SLACK, Candidates
from hubjax._src.kernels import cpu
from hubjax._src.numerics import Ranking

# The longest running list of the symmetric and tiled sources with the CPU kernel's selection.
FAST_KEEP_MAX = 128


@dataclasses.dataclass(frozen=True)
class Strip:
    """Query strips of ``rows`` rows against all references; ``fused``: the CPU program uses
    the fused AVX-512 kernel for the strips' candidates."""

    rows: int
    fused: bool = False
    group: int | None = None
    split: bool = False  # ranking products over the features only (numerics.ranking_tile)
    certified: bool = False  # groups chosen by select.smallest_k_certified (TPU opt-in)

    def candidates(self, xp, yp, metric, shift, *, keep) -> Candidates:
        """Where ``yp is xp`` (in-sample strips), the queries' operands are the references'
        turned into queries (:meth:`Metric.query_from_reference
        <hubjax._src.metric.Metric.query_from_reference>`, exact), so the search holds the
        reference operands and not also the prepared points (the finisher prepares the points
        again afterwards)."""
        n = xp.features.shape[0]
        dim = xp.features.shape[1]
        ref_ops, ref_norms, largest = _reference(yp, metric, shift)
        rows = min(self.rows, n)
        keep = min(keep, ref_ops.shape[0])
        same = yp is xp

        def query_ranking(start, count):
            if same:
                ops = lax.dynamic_slice_in_dim(ref_ops, start, count)
                norms = lax.dynamic_slice_in_dim(ref_norms, start, count)
                return Ranking(metric.query_from_reference(ops), norms)
            return metric.ranking_operands(numerics.rows(xp, start, count), "query", shift)

        if self.fused and ref_ops.dtype == jnp.float32:
            query = query_ranking(0, n)
            bound = metric.ranking_error(query.norms, largest, dim)

            def fused(q, r):
                return cpu.query_lists(q, r, keep=keep)

            def portable(q, r):
                def one(start):
                    q_rows = lax.dynamic_slice_in_dim(q, start, rows)
                    return _strip_candidates(
                        q_rows, r, keep, self.group, self.split, self.certified
                    )

                return numerics.over_row_blocks(one, n, rows)

            values, cols = lax.platform_dependent(
                query.operands, ref_ops, cpu=fused, default=portable
            )
            return Candidates(values, cols, bound, rows)

        def one_strip(start):
            query = query_ranking(start, rows)
            values, cols = _strip_candidates(
                query.operands, ref_ops, keep, self.group, self.split, self.certified
            )
            return values, cols, metric.ranking_error(query.norms, largest, dim)

        values, cols, bound = numerics.over_row_blocks(one_strip, n, rows)
        return Candidates(values, cols, bound, rows)

    def pair_candidates(self, xp, xp_off, yp, metric, shift, *, keep):
        """Candidates ``(of xp, of xp_off)`` of two query sets that differ in their last
        feature only (``xp_off``'s is 0), against the same references, from one ranking
        product per strip.

        ``xp``'s ranking is ``xp_off``'s plus the outer product of the last feature's
        operands: another summation order of the same products, within the same error bound
        (as the split ranking of :func:`hubjax._src.numerics.ranking_tile`), so each list is
        then made exact by the finisher like any source's. No fused kernel.
        """
        n, dim = xp.features.shape
        ref_ops, _, largest = _reference(yp, metric, shift)
        last = ref_ops[:, dim - 1]
        rows = min(self.rows, n)
        keep = min(keep, ref_ops.shape[0])

        def one_strip(start):
            on = metric.ranking_operands(numerics.rows(xp, start, rows), "query", shift)
            off = metric.ranking_operands(numerics.rows(xp_off, start, rows), "query", shift)
            tile_off = numerics.ranking_tile(off.operands, ref_ops, split=self.split)
            tile_on = tile_off + on.operands[:, dim - 1 : dim] * last[None, :]
            return [
                (
                    *_tile_candidates(tile, keep, self.group, self.certified),
                    metric.ranking_error(q.norms, largest, dim),
                )
                for tile, q in ((tile_on, on), (tile_off, off))
            ]

        (v_on, c_on, b_on), (v_off, c_off, b_off) = numerics.over_row_blocks(one_strip, n, rows)
        return Candidates(v_on, c_on, b_on, rows), Candidates(v_off, c_off, b_off, rows)


def _reference(yp, metric, shift):
    """The reference ranking operands, padded to whole column groups, the references' norms
    and the largest norm among the finite references (the ranking's error bound)."""
    width = numerics.round_up(yp.features.shape[0], COLUMN_ALIGN)
    reference = metric.ranking_operands(yp, "reference", shift, rows=width)
    largest = numerics.largest_norm(reference.norms, yp.penalty)
    return reference.operands, reference.norms, largest


def _strip_candidates(query_ops, ref_ops, keep, group, split=False, certified=False):
    """The ``keep`` best ranking candidates ``(values, columns) [rows, keep]`` of one strip of
    query operands against the padded reference operands ``[width, d + 2]``."""
    tile = numerics.ranking_tile(query_ops, ref_ops, split=split)
    return _tile_candidates(tile, keep, group, certified)


def _tile_candidates(tile, keep, group, certified=False):
    """The ``keep`` best ``(values, columns) [rows, keep]`` of a whole-strip ranking tile."""
    rows, width = tile.shape
    return select.update_rows(
        tile,
        jnp.zeros(1, jnp.int32),
        *select.sentinel_lists(rows, keep, width),
        seg_width=width,
        group=group,
        merge=False,
        certified=certified,
    )


def _in_sample_bound(xp, norms, metric):
    """Each point's ranking error bound ``[n]`` against all of ``xp``, from its norms ``[n]``."""
    largest = numerics.largest_norm(norms, xp.penalty)
    return metric.ranking_error(norms, largest, xp.features.shape[1])


def _blocked_reference(xp, metric, shift, num_blocks, block):
    """The padded reference operands in blocks ``[num_blocks, block, d + 2]`` and the points'
    (shifted) norms ``[n]``."""
    r = metric.ranking_operands(xp, "reference", shift, rows=num_blocks * block)
    return r.operands.reshape(num_blocks, block, -1), r.norms


def _empty_lists(num_blocks, block, keep, dtype):
    """Running lists ``[num_blocks, block, keep]``: +inf with indices past every point."""
    size = num_blocks * block
    return (
        jnp.full((num_blocks, block, keep), jnp.inf, dtype),
        jnp.broadcast_to(size + jnp.arange(keep, dtype=jnp.int32), (num_blocks, block, keep)),
    )


def _flat(values, cols, bound, block):
    return Candidates(
        values.reshape(-1, values.shape[-1]), cols.reshape(-1, cols.shape[-1]), bound, block
    )


@dataclasses.dataclass(frozen=True)
class Symmetric:
    """In-sample: each block pair once, as ``[block, (h + 1) block]`` strips (module doc)."""

    num_blocks: int
    block: int
    group: int | None = None
    split: bool = False  # ranking products over the features only (numerics.ranking_tile)
    certified: bool = False  # its rows' groups chosen by select.smallest_k_certified

    def candidates(self, xp, yp, metric, shift, *, keep) -> Candidates:
        num_blocks, block, group = self.num_blocks, self.block, self.group
        h = (num_blocks - 1) // 2
        reference, norms = _blocked_reference(xp, metric, shift, num_blocks, block)
        bound = _in_sample_bound(xp, norms, metric)
        state = _empty_lists(num_blocks, block, keep, reference.dtype)

        def step(state, i):
            ring = (i + jnp.arange(h + 1, dtype=jnp.int32)) % num_blocks  # block i first
            ascending = jnp.sort(ring)
            cols = reference[ascending].reshape((h + 1) * block, -1)
            query = metric.query_from_reference(reference[i])  # no second copy
            strip = numerics.ranking_tile(query, cols, split=self.split)  # [block, (h+1) block]
            old_values, old_cols = state[0][ring], state[1][ring]  # [h + 1, block, keep]
            # rows of block i: candidates from all h + 1 blocks, in ascending column order
            row_values, row_cols = select.update_rows(
                strip,
                ascending * block,
                old_values[0],
                old_cols[0],
                seg_width=block,
                group=group,
                certified=self.certified,
            )
            # rows of blocks ring[1:]: candidates from block i (columns of the strip)
            where = jnp.searchsorted(ascending, ring[1:]).astype(jnp.int32)  # strip segments
            col_values, col_cols = select.update_cols(
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
        return _flat(values, cols, bound, block)


def symmetric_plan(n: int, k: int, block_size: int, *, fast_select: bool = False):
    """A :class:`Symmetric` source for n points and k neighbours, or None where it does not
    apply.

    The number of blocks is odd (so the cyclic pairing covers each pair once) and at least 3;
    each block must hold comfortably more than the kept candidates. The portable merge costs
    ``keep**2`` per row and step, so it is limited to short lists; with the compiled CPU
    selection (``fast_select``) lists up to :data:`FAST_KEEP_MAX` are fine.
    """
    keep = k + SLACK + 1
    if keep > (FAST_KEEP_MAX if fast_select else select.SORT_SMALL_MAX // 2):
        return None
    num_blocks = max(3, -(-n // block_size))
    num_blocks += 1 - num_blocks % 2
    block = numerics.round_up(-(-n // num_blocks), COLUMN_ALIGN)
    if block < 4 * keep or block > n:
        return None
    return Symmetric(num_blocks, block)


def pair_schedule(num_blocks: int, tiles: int) -> np.ndarray:
    """Steps of the tiled source: ``[steps, tiles, 3]`` rows of (row block, column block, mode).

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


@dataclasses.dataclass(frozen=True)
class Tiled:
    """In-sample: ``tiles`` disjoint ``[block, block]`` tiles per step (:func:`pair_schedule`),
    each merged into the running lists of its rows and of its columns in a single read
    (:func:`hubjax._src.select.update_pairs`); ``fused``: the CPU program runs the whole search
    in the fused AVX-512 kernel."""

    num_blocks: int
    block: int
    tiles: int
    fused: bool = False

    def candidates(self, xp, yp, metric, shift, *, keep) -> Candidates:
        num_blocks, block, tiles = self.num_blocks, self.block, self.tiles

        def scanned(features, shift, penalty):
            del features, penalty  # xp's (not materialised on the fused path)
            if xp.features.shape[1] >= _SPLIT_MIN_FEATURES:
                offsets, norms = metric.ranking_offsets(xp, shift, num_blocks * block)
                tiles_of = functools.partial(
                    _feature_tiles, xp.features, offsets.reshape(num_blocks, block), shift, metric
                )
            else:
                reference, norms = _blocked_reference(xp, metric, shift, num_blocks, block)
                tiles_of = functools.partial(_reference_tiles, reference, metric=metric)
            state = _empty_lists(num_blocks, block, keep, xp.features.dtype)
            return (*_scanned_lists(tiles_of, state, tiles=tiles), norms)

        if not self.fused or xp.features.dtype != jnp.float32:
            values, cols, norms = scanned(xp.features, shift, xp.penalty)
            return _flat(values, cols, _in_sample_bound(xp, norms, metric), block)

        fused = functools.partial(
            _fused_lists, num_blocks=num_blocks, block=block, keep=keep, shifted=metric.shifted
        )
        values, cols, norms = lax.platform_dependent(
            xp.features, shift, xp.penalty, cpu=fused, default=scanned
        )
        return _flat(values, cols, _in_sample_bound(xp, norms, metric), block)


def tiled_plan(n: int, k: int, block_size: int, tiles: int, *, fused: bool = False):
    """A :class:`Tiled` source for n points and k neighbours, or None where it does not apply.

    The number of blocks is odd and at least 3; two more are taken where that gives more tiles
    per step (up to ``tiles``) or makes each round of :func:`pair_schedule` fill whole steps,
    and the blocks stay large enough. Each block must hold comfortably more than the kept
    candidates (else None).
    """
    keep = k + SLACK + 1
    if keep > FAST_KEEP_MAX:
        return None
    num_blocks = max(3, -(-n // block_size))
    num_blocks += 1 - num_blocks % 2
    best = None
    for blocks in (num_blocks, num_blocks + 2):
        block = numerics.round_up(-(-n // blocks), COLUMN_ALIGN)
        if not 4 * keep <= block <= n:
            continue
        per_step = max(1, min(tiles, (blocks - 1) // 2))
        score = (per_step, ((blocks - 1) // 2) % per_step == 0)
        if best is None or score > best[0]:
            best = (score, (blocks, block, per_step))
    return None if best is None else Tiled(*best[1], fused=fused)


def _fused_lists(features, shift, penalty, *, num_blocks, block, keep, shifted):
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
    values, cols, sq = cpu.tiled_lists(
        features, shift, penalty.astype(features.dtype), keep=keep, euclidean=shifted, norms=True
    )
    extra = num_blocks * block - n
    values = jnp.pad(values, ((0, extra), (0, 0)), constant_values=jnp.inf)
    cols = jnp.pad(cols, ((0, extra), (0, 0)), constant_values=n)
    return (
        values.reshape(num_blocks, block, keep),
        cols.reshape(num_blocks, block, keep),
        jnp.sqrt(sq),
    )


def _scanned_lists(tiles_of, state, *, tiles):
    """Running lists ``state [num_blocks, block, keep]`` updated with every pair of blocks,
    ``tiles`` block pairs per step of a ``lax.scan`` (:func:`pair_schedule`);
    ``tiles_of(row_blocks, col_blocks)`` gives the ranking tiles ``[tiles, block, block]``."""
    num_blocks, block = state[0].shape[:2]
    schedule = jnp.asarray(pair_schedule(num_blocks, tiles))

    def step(state, plan):
        row_blocks, col_blocks, mode = plan[:, 0], plan[:, 1], plan[:, 2]
        strips = tiles_of(row_blocks, col_blocks)
        rv, ri, cv, ci = (
            jnp.take(a, blocks, axis=0, mode="clip")
            for a, blocks in (
                (state[0], row_blocks),
                (state[1], row_blocks),
                (state[0], col_blocks),
                (state[1], col_blocks),
            )
        )
        rv, ri, cv, ci = select.update_pairs(
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


# Features from which the tiled source multiplies the gathered features alone
# (:func:`_feature_tiles`) instead of the augmented operands (:func:`_reference_tiles`).
_SPLIT_MIN_FEATURES = 512


def _feature_tiles(features, offsets, shift, metric, row_blocks, col_blocks):
    """Ranking tiles ``[tiles, block, block]`` of the row blocks against the column blocks
    from :data:`_SPLIT_MIN_FEATURES` features on: the product over the features, times the
    query side's factor (exact), plus both offsets; the query operands' product in another
    summation order, within the same error bound (:func:`hubjax._src.numerics.ranking_tile`
    with ``split``).

    Read from the prepared points ``[n, d]`` and the blocked offsets ``[num_blocks, block]``
    (:meth:`Metric.ranking_offsets <hubjax._src.metric.Metric.ranking_offsets>`), so the
    blocked reference operands are never written: XLA kept them as one more copy of the points
    (2 000 x 20 000: 166 MB beside the 160 MB of prepared points). Each gathered block is
    shifted as it is read (the operands' feature values); the padding rows read the last
    point, and their +inf offsets make their ranking values +inf, as the operands' zero rows
    did: the same tiles, bit for bit. One gather per operand: a gather of whole operand rows
    sliced afterwards was written to memory in full first, and deriving the query operands
    from the gathered rows held three ``[tiles, block, d]`` arrays per step instead of two,
    which at thousands of features outweighed the points.
    """
    block = offsets.shape[1]

    def gathered(blocks):
        index = blocks[:, None] * block + jnp.arange(block, dtype=blocks.dtype)
        return metric.ranking_rows(jnp.take(features, index, axis=0, mode="clip"), shift)

    products = lax.dot_general(
        gathered(row_blocks),
        gathered(col_blocks),
        (((2,), (2,)), ((0,), (0,))),
        precision=lax.Precision.HIGHEST,
    )
    row_offsets = jnp.take(offsets, row_blocks, axis=0, mode="clip")
    col_offsets = jnp.take(offsets, col_blocks, axis=0, mode="clip")
    return -metric.ranking_scale * products + row_offsets[:, :, None] + col_offsets[:, None, :]


def _reference_tiles(reference, row_blocks, col_blocks, metric):
    """Ranking tiles ``[tiles, block, block]`` below :data:`_SPLIT_MIN_FEATURES` features:
    the query operands' product with the offsets in the contraction, read from the blocked
    reference operands ``[num_blocks, block, d + 2]`` (the query operands derived from the
    gathered rows). There the split form's extra pass over each ``[block, block]`` tile cost
    more than the array it saves (in-sample hub values of 10 000 x 128: 0.205 -> 0.233 s,
    2-core AMD EPYC without AVX-512)."""
    q = metric.query_from_reference(jnp.take(reference, row_blocks, axis=0, mode="clip"))
    c = jnp.take(reference, col_blocks, axis=0, mode="clip")
    return lax.dot_general(q, c, (((2,), (2,)), ((0,), (0,))), precision=lax.Precision.HIGHEST)
