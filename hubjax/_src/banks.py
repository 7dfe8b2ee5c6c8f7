"""Query-bank statistics and normalised retrieval, on the exact search.

Every normalisation of :mod:`hubjax.retrieval` scores a query q against a gallery item g as

    score(q, g) = s(q, g) - t(q) * bias(g)

with s the metric's similarity (``x.y`` for ``dot``, ``cos`` for ``cosine``), ``bias [m]`` a
statistic of each gallery item over a bank of queries, and ``t(q)`` 1 (0 for the queries
QB-Norm leaves alone). That is an inner product of augmented rows,
``[s_q, t(q)] . [s_g, -bias(g)]`` (``s_*``: :meth:`Metric.similarity_rows
<hubjax._src.metric.Metric.similarity_rows>`), so the normalised search *is* the exact ``dot``
search (:func:`hubjax._src.search.search`) on those rows: the same candidate sources, the same
certificate and re-check, ties to the smaller index, every reported score a per-pair sum in one
fixed order, bitwise the same for every block size and engine.

The bank statistics are reductions over the bank for each gallery column:

* :func:`log_sum_exp`: ``logsumexp_b beta * s(b, g)``, streamed over bank blocks with a running
  maximum (never ``exp(beta * s)`` unshifted, which overflows float32 once ``beta * s`` passes
  88), from bank-by-gallery similarity tiles of a few MiB at full float32 precision. A float
  sum over the bank: its last bits depend on the tiles (fixed per shape here, so repeat calls
  agree bitwise).
* :func:`top_mean`: the mean of each item's k largest bank similarities, from the exact search
  of the gallery among the bank.
* :func:`bank_top1`: the items that are some bank query's top-1, from the exact search of the
  bank among the gallery.

Non-finite rows follow the library's convention: a NaN/inf query gets the empty row
``(-inf, -1)``, a NaN/inf gallery item (or one whose statistic is not finite) is never
retrieved, a NaN/inf bank row is left out of every statistic.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from hubjax._src import counting, finisher, numerics, report, select
from hubjax._src import metric as _metric
from hubjax._src import search as _search

# The log-sum-exp pass's similarity tiles: bank rows by gallery columns of about 4 MiB, in the
# cache for the passes after the product (the engine's tiled source uses tiles of this size).
TILE_ROWS = 1024
TILE_BYTES = 4 << 20
# The scale of the median absolute deviation (and of the mean absolute deviation, its
# fallback when more than half the counts are equal) that makes a robust z-score of normal
# data have unit variance (Iglewicz and Hoaglin, 1993).
MAD_SCALE = 0.6745
MEAN_AD_SCALE = 0.7979


def bank_rows(num_bank: int) -> int:
    """Bank rows per tile of the log-sum-exp pass (:data:`TILE_ROWS`, or all of a smaller bank)."""
    return max(1, min(TILE_ROWS, num_bank))


def tile_columns(rows: int, num_gallery: int, itemsize: int = 4) -> int:
    """Gallery columns per ``[rows, cols]`` tile: within :data:`TILE_BYTES`."""
    return max(1, min(num_gallery, TILE_BYTES // (itemsize * rows)))


def _tile(a, b):
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("metric", "rows", "top1"))
def log_sum_exp(bank, gallery, beta, *, metric, rows, top1=False):
    """``[m]``: ``logsumexp over finite bank rows b of beta * s(b, g)`` for each gallery row
    (``-inf`` where no bank row is finite, ``+inf`` for a non-finite gallery row). With
    ``top1``, ``(lse, is_top1 [m])``: also :func:`bank_top1`, exact, from the same tiles.

    Tiles are ``[rows, cols]`` blocks of bank rows by gallery columns, a few MiB, so the passes
    over a tile after its product (maximum, exponentials, candidates) read the cache, not memory.
    """
    b_rows = metric.similarity_rows(bank)
    g_rows = metric.similarity_rows(gallery)
    # Prepared for the dot engine: one exact power-of-two scale, non-finite rows zeroed with an
    # infinite penalty. The tiles are products of the scaled rows; the scale is undone exactly.
    bp, gp, e = _metric.DOT.prepare_pair(b_rows, g_rows)
    b, g = bp.features, gp.features
    dtype = g.dtype
    ok_b, ok_g = bp.penalty == 0, gp.penalty == 0
    unscale = 2 * e
    beta = jnp.asarray(beta, dtype)
    nb, m = b.shape[0], g.shape[0]
    neg = jnp.full((), -jnp.inf, dtype)
    keep = min(1 + finisher.SLACK, m)
    cols = tile_columns(rows, m)

    def chunk(state, blk, ok, start, size):
        """One tile: bank block ``blk`` against gallery columns ``start ... start + size``."""
        top, total, best = state
        g_c = lax.dynamic_slice_in_dim(g, start, size)
        ok_c = lax.dynamic_slice_in_dim(ok_g, start, size)
        v = jnp.where(ok_c[None, :], _tile(blk, g_c), neg)  # scaled similarities
        z = jnp.where(ok[:, None], beta * numerics.times_pow2(v, unscale), neg)
        old_top = lax.dynamic_slice_in_dim(top, start, size)
        old_total = lax.dynamic_slice_in_dim(total, start, size)
        new = jnp.maximum(old_top, jnp.max(z, axis=0))
        shift = jnp.where(new == -jnp.inf, 0, new)
        summed = old_total * jnp.exp(old_top - shift)
        summed = summed + jnp.sum(jnp.exp(z - shift[None, :]), axis=0)
        top = lax.dynamic_update_slice_in_dim(top, new, start, 0)
        total = lax.dynamic_update_slice_in_dim(total, summed, start, 0)
        if best is not None:
            # each bank row's top-1 candidates (the dot ranking, -similarity, smallest first;
            # 0.0 - v turns -0.0 into +0.0), with the finisher's slack for its certificate
            ranking = 0.0 - v
            if size >= keep:  # the engine's running-list update (the CPU kernel where built)
                base = jnp.reshape(start, (1,)).astype(jnp.int32)
                best = select.update_rows(ranking, base, *best, seg_width=size)
            else:
                values, found = select.smallest_k(ranking, size)
                found = found.astype(jnp.int32) + start
                best = select.merge_smallest_k(*best, values, found, keep)
        return top, total, best

    def block(state, start, size):
        """Bank rows ``start ... start + size`` against every gallery column."""
        top, total, best = state
        blk = lax.dynamic_slice_in_dim(b, start, size)
        ok = lax.dynamic_slice_in_dim(ok_b, start, size)
        lists = None if best is None else select.sentinel_lists(size, keep, m, dtype)
        inner = (top, total, lists)
        full, tail = divmod(m, cols)
        if full:
            body = lambda j, c: chunk(c, blk, ok, j * cols, cols)  # noqa: E731
            inner = lax.fori_loop(0, full, body, inner)
        if tail:
            inner = chunk(inner, blk, ok, full * cols, tail)
        top, total, lists = inner
        if best is not None:
            best = tuple(
                lax.dynamic_update_slice_in_dim(a, u, start, 0)
                for a, u in zip(best, lists, strict=True)
            )
        return top, total, best

    best = None
    if top1:
        best = (jnp.full((nb, keep), jnp.inf, dtype), jnp.zeros((nb, keep), jnp.int32))
    state = (jnp.full((m,), -jnp.inf, dtype), jnp.zeros((m,), dtype), best)
    full, tail = divmod(nb, rows)
    if full:
        state = lax.fori_loop(0, full, lambda i, c: block(c, i * rows, rows), state)
    if tail:
        state = block(state, full * rows, tail)
    top, total, best = state
    lse = jnp.where(top == -jnp.inf, top, top + jnp.log(total))
    lse = jnp.where(ok_g, lse, jnp.inf)
    if not top1:
        return lse
    return lse, _certified_top1(bp, gp, best, rows)


def _certified_top1(bp, gp, best, rows):
    """The exact top-1 of every bank row from its candidates (the finisher refines them per
    pair, certifies the rows whose last candidate trails by more than the product's rounding
    bound and re-checks the others against every item), as a mask over the items."""
    values, cols = best
    nb, dim = bp.features.shape
    norms = jnp.sqrt(bp.sqnorms)
    bound = _metric.DOT.ranking_error(
        norms, numerics.largest_norm(jnp.sqrt(gp.sqnorms), gp.penalty), dim
    )
    candidates = finisher.Candidates(values, cols, bound, min(rows, nb))
    dist, idx, ok = finisher.refine_lists(bp, gp, candidates, 1, _metric.DOT, own=False)
    dist, idx = finisher.recheck_uncertified(bp, gp, dist, idx, ok, 1, _metric.DOT, in_sample=False)
    idx = jnp.where((dist == jnp.inf) | (bp.penalty[:, None] != 0), -1, idx)
    return counting.counts_of(idx, gp.features.shape[0]) > 0


def _options(k, block_size):
    return _search.Options(k, _metric.DOT, block_size=block_size)


@functools.partial(jax.jit, static_argnames=("k", "metric", "block_size"))
def top_mean(bank, gallery, *, k, metric, block_size):
    """``[m]``: the mean of each gallery row's k largest similarities to the finite bank rows
    (over fewer where fewer are finite; NaN for a non-finite gallery row)."""
    g = metric.similarity_rows(gallery)
    dist, idx = _search.search(g, metric.similarity_rows(bank), _options(k, block_size))
    filled = idx >= 0
    total = jnp.sum(jnp.where(filled, -dist, 0), axis=1)
    count = jnp.sum(filled, axis=1)
    return jnp.where(count > 0, total / jnp.maximum(count, 1).astype(total.dtype), jnp.nan)


@functools.partial(jax.jit, static_argnames=("metric", "block_size"))
def bank_top1(bank, gallery, *, metric, block_size):
    """``[m]`` bool: the gallery rows that are the most similar row of some finite bank row."""
    _, idx = _search.search(
        metric.similarity_rows(bank), metric.similarity_rows(gallery), _options(1, block_size)
    )
    return counting.counts_of(idx, gallery.shape[0]) > 0


@functools.partial(jax.jit, static_argnames=("k", "metric", "block_size", "dynamic"))
def normalised_search(queries, gallery, bias, active, *, k, metric, block_size, dynamic):
    """``(scores [n, k], indices [n, k])``: the k largest ``s(q, g) - t(q) bias(g)``, largest
    first, ties to the smaller index; ``t(q) = 1``, or with ``dynamic`` (QB-Norm) whether the
    plain top-1 of q is ``active``. Empty slots and non-finite queries: ``(-inf, -1)``."""
    q, g = metric.similarity_rows(queries), metric.similarity_rows(gallery)
    # NaN rows stay NaN, so the engine keeps them out as it does any non-finite row
    augmented_q = jnp.concatenate([q, jnp.ones((q.shape[0], 1), q.dtype)], axis=1)
    augmented_g = jnp.concatenate([g, -bias.astype(g.dtype)[:, None]], axis=1)
    if not dynamic:
        dist, idx = _search.search(augmented_q, augmented_g, _options(k, block_size))
        return -dist, idx
    # QB-Norm: the normalised lists and the plain ones (t = 0, whose first entry is the plain
    # top-1 that decides) from one pass over the similarity tiles
    (dist, idx), (plain, plain_idx) = _search.search_both(
        augmented_q, augmented_g, _options(k, block_size)
    )
    top = plain_idx[:, 0]
    t = jnp.where(top >= 0, active[jnp.maximum(top, 0)], False)[:, None]
    return -jnp.where(t, dist, plain), jnp.where(t, idx, plain_idx)


@functools.partial(jax.jit, static_argnames=("k", "metric", "block_size"))
def plain_search(queries, gallery, *, k, metric, block_size):
    """``(scores, indices)`` of the similarity itself, on the same rows and engine as
    :func:`normalised_search` (a cosine score is the inner product of the unit rows)."""
    q, g = metric.similarity_rows(queries), metric.similarity_rows(gallery)
    dist, idx = _search.search(q, g, _options(k, block_size))
    return -dist, idx


def robust_z(counts):
    """Robust z-scores ``[m]`` of counts: ``(c - median) / (MAD / 0.6745)``; where the MAD is 0
    (more than half the counts equal), ``(c - median) / (mean |c - median| / 0.7979)``; 0 where
    both are 0 (all counts equal)."""
    c = counts.astype(jnp.result_type(float))
    centre = jnp.median(c)
    deviation = jnp.abs(c - centre)
    mad = jnp.median(deviation) / MAD_SCALE
    mean_ad = jnp.mean(deviation) / MEAN_AD_SCALE
    spread = jnp.where(mad > 0, mad, mean_ad)
    return jnp.where(spread > 0, (c - centre) / jnp.where(spread > 0, spread, 1), 0)


@functools.partial(jax.jit, static_argnames=("num_points", "k", "hub_size", "metric"))
def audit_of_lists(idx, threshold, *, num_points, k, hub_size, metric):
    """``(hubness report, robust z [m], flagged [m], top-1 share)`` of the lists ``idx [n, k]``
    of queries into ``num_points`` gallery items; the share is over queries with a list."""
    counts = counting.counts_of(idx, num_points)
    rep = report.report_from_counts(
        counts, k=k, num_queries=idx.shape[0], hub_size=hub_size, metric=metric
    )
    z = robust_z(counts)
    flagged = z > threshold
    top = idx[:, 0]
    listed = top >= 0
    hits = jnp.where(listed, flagged[jnp.maximum(top, 0)], False)
    share = jnp.sum(hits).astype(z.dtype) / jnp.maximum(jnp.sum(listed), 1).astype(z.dtype)
    return rep, z, flagged, share
