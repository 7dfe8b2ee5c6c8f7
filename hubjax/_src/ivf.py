"""The IVF candidate source behind :mod:`hubjax.approximate` (whose docstring describes it):
k-means lists, static-shape probing, candidates made exact by the finisher's per-pair
re-ranking and re-check."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hubjax._src import checks as _checks
from hubjax._src import finisher, numerics, pairs
from hubjax._src import select as _select
from hubjax._src.platforms import PLATFORMS, per_platform

_NPROBE = 8


@dataclasses.dataclass(frozen=True)
class IVF:
    """Settings of the approximate search (hashable: a static argument).

    Attributes:
      nlist: number of lists; None: ``sqrt(m) / 4`` rounded (250 lists for a million points;
        chosen from ``benchmarks/approximate.py``).
      nprobe: the most lists a query searches (its nearest ones); None: 8, or every list when
        there are fewer. An explicit value above ``nlist`` is an error.
      ratio: a query skips a list whose centroid's squared distance exceeds ``1 + ratio``
        times that of its nearest centroid (its own list is always searched); None: every
        query searches exactly ``nprobe`` lists (faiss's ``nprobe``). In high dimensions the
        lists of a query's own cluster lie at nearly the same distance and the others far
        away, so the rule spends the probes where neighbours are: on the benchmark's 1M x 128
        mixture ``ratio=0.15, nprobe=8`` reaches the recall of a fixed ``nprobe=8`` (0.97) at
        60 % of its work. ``nprobe = nlist`` with ``ratio=None`` probes every list (exact).
      chunk: queries per ranking tile.
      columns: reference points per ranking tile (a list is searched in slices of this many).
      iterations: k-means rounds.
      train_size: reference points the k-means trains on (a fixed random sample: one point
        from each of ``train_size`` equal runs of the input order); None: all up to 64 per
        list.
      seed: seeds the k-means sample and initial centroids.
    """

    nlist: int | None = None
    nprobe: int | None = None
    chunk: int = 512
    columns: int = 1024
    ratio: float | None = 0.15
    iterations: int = 10
    train_size: int | None = None
    seed: int = 0

    def lists(self, m: int) -> int:
        """The number of inverted lists the index of ``m`` reference points uses: ``nlist``,
        or ``round(sqrt(m) / 4)`` (at least 1) when it is None.

        Example:
          >>> from hubjax.approximate import IVF
          >>> IVF().lists(20_000), IVF(nlist=50).lists(20_000)
          (35, 50)
        """
        nlist = self.nlist if self.nlist is not None else max(1, round(math.sqrt(m) / 4))
        return int(nlist)

    def probes(self, m: int) -> int:
        """The most lists a query probes among the :meth:`lists` of ``m`` reference points:
        ``nprobe``, or the default (at most every list) when it is None.

        Example:
          >>> from hubjax.approximate import IVF
          >>> IVF(nlist=4).probes(1000), IVF(nprobe=3).probes(1000)
          (4, 3)
        """
        return min(_NPROBE, self.lists(m)) if self.nprobe is None else int(self.nprobe)

    def validate(self, m: int) -> IVF:
        """Checks the settings against m reference points; raises ValueError naming them."""
        for name in ("chunk", "columns", "iterations"):
            _checks.check_static_int(getattr(self, name), name)
        if self.nprobe is not None:
            _checks.check_static_int(self.nprobe, "nprobe")
        nlist = self.lists(m)
        _checks.check_static_int(nlist, "nlist")
        if nlist > m:
            raise ValueError(f"nlist={nlist} lists is more than the m = {m} reference points.")
        if self.probes(m) > nlist:
            raise ValueError(f"nprobe={self.nprobe} probes more lists than nlist={nlist}.")
        if self.ratio is not None and not (isinstance(self.ratio, int | float) and self.ratio >= 0):
            raise ValueError(f"ratio={self.ratio!r} must be None or a number >= 0.")
        if self.train_size is not None:
            _checks.check_static_int(self.train_size, "train_size")
            if self.train_size < nlist:
                raise ValueError(f"train_size={self.train_size} is fewer than nlist={nlist}.")
        return self


def as_settings(approximate) -> IVF | None:
    """``None`` for ``False``/``None``, the defaults for ``True``, or the given :class:`IVF`."""
    if approximate is None or approximate is False:
        return None
    if approximate is True:
        return IVF()
    if isinstance(approximate, IVF):
        return approximate
    raise TypeError(
        f"approximate must be a bool or hubjax.approximate.IVF(...), got {approximate!r}."
    )


# Probing units per step of the loop whose length is data, on accelerators (above).
PROBE_BLOCK = 64


def probe_plan(n: int, m: int, nlist: int, chunk: int, cols: int, own: bool, platform: str):
    """How the program lowered for ``platform`` runs the probing units (one chunk of queries
    against one column tile of a list): ``(static, block)``, the first ``static`` units in a
    loop of static length, then the rest in steps of ``block`` units (static inner loops),
    units past the actual number changing nothing.

    The number of units is data (how the points fall into lists), and on a GPU every step of a
    loop whose length is data is a host round trip. So accelerators run, without one, the
    units every input needs: the first probe pass holds each query once, in at least
    ``n / chunk`` chunks, and where the queries are the reference points (``own``) its
    ``m^2 / nlist`` pairs at the least (equal lists). The rest run :data:`PROBE_BLOCK` units
    per round trip, so at most ``PROBE_BLOCK - 1`` units are idle. 1 000 000 x 128 in-sample,
    250 equal lists, all 8 probes used: about 61 000 units, 7 600 of them static, then 830
    round trips, where one per chunk and one per tile had made 61 000 + 15 600. The
    CPU runs exactly the units there are (``(0, 1)``).
    """
    if platform == "cpu":
        return 0, 1
    static = -(-n // chunk)
    if own:
        static = max(static, m * m // (nlist * chunk * cols))
    return static, PROBE_BLOCK


def _nearest(points, centroids, count: int = 1, shift=None, valid=None):
    """Each point's ``count`` nearest centroids, nearest first (ties to the smaller index):
    indices ``[m, count]`` and squared distances ``[m, count]`` (via the matrix product,
    clamped at zero), in row blocks: never the whole ``[m, nlist]`` score matrix. With
    ``shift`` and ``valid [m]``, the points are ``points - shift`` where valid and 0 elsewhere,
    centred block by block (no centred copy of all points)."""
    nlist = centroids.shape[0]
    m = points.shape[0]
    c2 = jnp.sum(centroids * centroids, axis=1)
    block = max(1, min(m, (16 << 20) // max(1, nlist), 4096))
    ok = jnp.ones(m, bool) if valid is None else valid

    def rows(start):
        p = lax.dynamic_slice_in_dim(points, start, block)
        if shift is not None:
            p = jnp.where(lax.dynamic_slice_in_dim(ok, start, block)[:, None], p - shift, 0)
        score = c2[None, :] - 2.0 * numerics.ranking_tile(p, centroids)
        # the running-list selection (the CPU kernel where it applies): (value, index) order
        s, i = _select.update_rows(
            score,
            jnp.zeros(1, jnp.int32),
            *_select.sentinel_lists(block, count, nlist),
            seg_width=nlist,
            merge=False,
        )
        return i, jnp.maximum(s + jnp.sum(p * p, axis=1)[:, None], 0)

    out = (jnp.zeros((m, count), jnp.int32), jnp.zeros((m, count), points.dtype))
    return _fill_rows(out, m, block, rows)


def _after(tree, a):
    """``tree`` (arrays) made to start only once ``a`` exists: each array plus a zero computed
    from ``a``'s first element, which XLA cannot fold.

    XLA:CPU's default scheduler starts every constant-initialised buffer at the top of the
    program, where the large ones filled later (sorted operands, running lists, outputs) add to
    the peak of the steps before. (An optimisation barrier does not help: XLA:CPU removes it
    before scheduling.) ``a`` is an int32 array of non-negative values or a float array.
    """
    v = a.reshape(-1)[0]
    if jnp.issubdtype(v.dtype, jnp.floating):  # |v|'s bits read as an integer: >= 0, even NaN
        v = lax.bitcast_convert_type(jnp.abs(v), jnp.int32 if v.dtype.itemsize == 4 else jnp.int64)
    zero = jnp.minimum(v, 0)
    return jax.tree.map(lambda t: t + zero.astype(t.dtype), tree)


def _fill_rows(out, m: int, block: int, rows_at):
    """``out`` (a tuple of arrays with at least m rows) with rows ``[start, start + block)``
    set to ``rows_at(start)``, for blocks covering the first m rows; the last block overlaps
    the one before it (``block <= m``), so nothing is padded to a multiple of the block."""

    def body(b, out):
        start = jnp.minimum(b * block, m - block)
        new = rows_at(start)
        pairs = zip(out, new, strict=True)
        return tuple(lax.dynamic_update_slice_in_dim(o, v, start, 0) for o, v in pairs)

    return lax.fori_loop(0, -(-m // block), body, out)


def _strata_sample(key, m: int, size: int):
    """``size`` distinct indices of ``m`` points: one uniform draw from each of ``size`` equal
    runs of consecutive indices (O(size); ``jax.random.choice(..., replace=False)`` shuffles
    all m, which takes longer than the k-means it feeds)."""
    starts = np.arange(size + 1, dtype=np.int64) * m // size  # static: m and size are
    width = jnp.asarray(np.diff(starts), jnp.float32)
    draw = jnp.floor(jax.random.uniform(key, (size,)) * width).astype(jnp.int32)
    return jnp.asarray(starts[:-1], jnp.int32) + jnp.minimum(draw, width.astype(jnp.int32) - 1)


def kmeans(points, nlist: int, iterations: int, key):
    """Lloyd's k-means: centroids ``[nlist, d]`` of ``points [m, d]`` (an emptied centroid keeps
    its position); the initial centroids are ``nlist`` points drawn from ``key``."""
    m = points.shape[0]
    init = jax.random.choice(key, m, (nlist,), replace=False)
    centroids = points[init]

    def step(c, _):
        label = _nearest(points, c)[0][:, 0]
        total = jax.ops.segment_sum(points, label, num_segments=nlist)
        count = jax.ops.segment_sum(jnp.ones(m, points.dtype), label, num_segments=nlist)
        return jnp.where(count[:, None] > 0, total / jnp.maximum(count, 1)[:, None], c), None

    centroids, _ = lax.scan(step, centroids, None, length=iterations)
    return centroids


def _lists(label, nlist: int):
    """Points sorted by list: ``order`` (sorted position -> point), each list's ``start`` and
    ``size`` in that order."""
    n = label.shape[0]
    if (nlist + 1) * n < 2**31:  # labels <= nlist: one distinct int32 key (label, position) per
        # point, and a plain sort of it -- 4x faster on XLA:CPU than a stable argsort, same order
        order = jnp.sort(label.astype(jnp.int32) * n + jnp.arange(n, dtype=jnp.int32)) % n
    else:
        order = jnp.argsort(label, stable=True).astype(jnp.int32)
    size = jnp.bincount(label, length=nlist).astype(jnp.int32)
    return order, (jnp.cumsum(size) - size).astype(jnp.int32), size


def _query_chunks(label, nlist: int, chunk: int):
    """Queries grouped by the list they probe, each list's group cut into chunks of ``chunk``:
    ``(order, owner, begin, length, count)`` -- the sorted order, each chunk's list, first
    sorted position and number of queries (``[nlist + n / chunk]``, valid chunks first), and
    the number of valid chunks."""
    n = label.shape[0]
    order, start, size = _lists(label, nlist)
    chunks = -(-size // chunk)
    total = jnp.cumsum(chunks)
    c = jnp.arange(nlist + -(-n // chunk), dtype=jnp.int32)
    owner = jnp.minimum(jnp.searchsorted(total, c, side="right"), nlist - 1).astype(jnp.int32)
    j = c - (total - chunks)[owner]
    count = total[-1].astype(jnp.int32)
    length = jnp.where(c < count, jnp.clip(size[owner] - j * chunk, 0, chunk), 0)
    return order, owner, start[owner] + j * chunk, length.astype(jnp.int32), count


def search_rows(x, y, k, metric, settings, with_self, query_ids=None):
    """The search of the module docstring: ``k`` neighbours besides the point itself.

    ``y=None``: in-sample (the point itself is never its own neighbour; ``with_self`` puts it
    first). ``query_ids [n]`` (with ``y``): the queries are points ``query_ids`` of ``y`` --
    in-sample search of a shard of queries (the distributed front ends), with the results of
    the whole in-sample search for those rows.
    """
    in_sample = y is None or query_ids is not None
    ref = x if y is None else y
    n = x.shape[0]
    m = ref.shape[0]
    if y is None:
        query_ids = jnp.arange(n, dtype=jnp.int32)
    if k == 0:  # include_self with k = 1: the point itself only
        xp, _, e = metric.prepare_pair(x, y)
        d = metric.self_distance(xp)[:, None]
        return finisher.sentinels(d, query_ids[:, None], xp.penalty, metric, e)
    nlist, chunk, nprobe = settings.lists(m), settings.chunk, settings.probes(m)
    xp, yp, e = metric.prepare_pair(x, y)
    shift = metric.centre(yp)
    # the partition: k-means on the prepared (scaled, unit-norm for cosine), centred features
    key = jax.random.key(settings.seed)
    train = min(m, settings.train_size or 64 * nlist)
    sample = _strata_sample(key, m, train) if train < m else None
    feats = yp.features if sample is None else yp.features[sample]
    ok = yp.penalty == 0
    feats = jnp.where((ok if sample is None else ok[sample])[:, None], feats - shift, 0)
    centroids = kmeans(feats, nlist, settings.iterations, jax.random.fold_in(key, 1))
    if in_sample:  # [m, nprobe], own list first
        probes, sq = _nearest(yp.features, centroids, nprobe, shift, ok)
        ref_label = probes[:, 0]
        if y is not None:
            rows = jnp.clip(query_ids, 0, m - 1)
            probes, sq = probes[rows], sq[rows]
    else:
        probes, sq = _nearest(xp.features, centroids, nprobe, shift, xp.penalty == 0)
        ref_label = _nearest(yp.features, centroids, 1, shift, ok)[0][:, 0]
    if settings.ratio is not None:  # lists much farther than the nearest one are skipped
        probes = jnp.where(sq <= sq[:, :1] * (1 + settings.ratio), probes, nlist)
    ref_order, ref_start, ref_size = _lists(ref_label, nlist)
    # the prepared reference points sorted by list: the ranking operands are built from it and
    # the re-rank reads it (neighbours sit in nearby rows); in-sample, nothing reads the
    # prepared points ``yp`` (= ``xp``) after this gather, so their buffer is freed here
    y_sorted = _rows_of(yp, ref_order)
    # one pass per probe rank: the queries probing each list, in chunks
    q_order, owner, begin, length, count = jax.vmap(lambda lab: _query_chunks(lab, nlist, chunk))(
        probes.T
    )

    cols = min(settings.columns, -(-m // 8) * 8)
    spare = cols  # rows past the end, so slices never run out
    ref_sorted = _sorted_operands(y_sorted, metric, shift, m + spare)
    from_ref = y is None  # in-sample: a chunk's query operands come from its rows of ref_sorted
    if not from_ref:
        q_ops = metric.ranking_operands(xp, "query", shift).operands
    keep = min(k + finisher.SLACK + int(in_sample), m)  # in-sample lists hold the point itself too
    # row of y_sorted holding each reference point (in-sample: each query's own row too)
    ref_pos = jnp.zeros(m, jnp.int32).at[ref_order].set(jnp.arange(m, dtype=jnp.int32))

    # The work, flattened: one unit per (probe pass, chunk of queries, column tile of the
    # chunk's list), in that order; slot g = p * slots + c is chunk c of pass p.
    slots = owner.shape[1]
    live = jnp.arange(slots, dtype=jnp.int32)[None, :] < count[:, None]
    tiles = jnp.where(live, -(-ref_size[owner] // cols), 0).reshape(-1)
    ends = jnp.cumsum(tiles, dtype=jnp.int32)
    total = ends[-1]

    # the branches take every array they read as an argument: each is traced only for the
    # platform it is lowered for (platforms.per_platform)
    arrays = (ends, tiles, total, owner, length, q_order, begin, ref_sorted, ref_pos, ref_start)
    arrays += (ref_size, None if from_ref else q_ops)

    def probe(plan, lists, ends, tiles, total, owner, length, q_order, begin, *rest):
        static, block = plan
        ref_sorted, ref_pos, ref_start, ref_size, q_ops = rest
        lane = jnp.arange(chunk, dtype=jnp.int32)
        col_lane = jnp.arange(cols, dtype=jnp.int32)

        def unit(u, lists):
            run_v, run_i = lists
            g = jnp.minimum(jnp.sum(ends <= u, dtype=jnp.int32), ends.shape[0] - 1)
            p, c = g // slots, g % slots
            s = u - (ends[g] - tiles[g])  # the tile of the chunk's list
            lst = owner[p, c]
            ok = (lane < length[p, c]) & (u < total)  # units past the total change nothing
            qid = q_order[p, jnp.minimum(begin[p, c] + lane, n - 1)]
            if from_ref:
                q = metric.query_from_reference(ref_sorted[ref_pos[qid]])
            else:
                q = q_ops[qid]
            b = ref_start[lst] + s * cols
            r = lax.dynamic_slice_in_dim(ref_sorted, b, cols)
            # points past the list's end rank last: +inf in their offset column (no tile pass)
            r = r.at[:, -1].set(jnp.where(s * cols + col_lane < ref_size[lst], r[:, -1], jnp.inf))
            v, i = _select.update_rows(
                numerics.ranking_tile(q, r), b[None], run_v[qid], run_i[qid], seg_width=cols
            )
            write = jnp.where(ok, qid, n)
            return run_v.at[write].set(v, mode="drop"), run_i.at[write].set(i, mode="drop")

        lists = lax.fori_loop(0, static, unit, lists)

        def steps(j, lists):
            first = static + j * block  # an inner loop of static length: no round trip
            return lax.fori_loop(0, block, lambda t, lists: unit(first + t, lists), lists)

        return lax.fori_loop(0, -(-jnp.maximum(total - static, 0) // block), steps, lists)

    # running lists of ranking values and sorted reference positions (sentinels past m + spare)
    empty = _after(_select.sentinel_lists(n, keep, m + spare), ref_sorted)  # see _after
    plans = {p: probe_plan(n, m, nlist, chunk, cols, y is None, p) for p in PLATFORMS}
    lists = per_platform(probe, plans, empty, *arrays)
    run_v, run_i = lists
    pos = jnp.minimum(run_i, m - 1)  # sorted reference positions
    ids = ref_order[pos]
    found = jnp.isfinite(run_v) & (run_i < m)
    if in_sample:
        found &= ids != query_ids[:, None]
    ids = jnp.where(found, ids, m + jnp.arange(keep, dtype=jnp.int32))

    # exact re-ranking in blocks of queries (a vmap would broadcast y into every row), the
    # queries in the order of their own lists (pass 0 holds every query) and the candidates
    # read from ``y_sorted``: neighbours sit in nearby rows, not all over memory
    block = min(n, 1024)
    num = -(-n // block)
    order = jnp.concatenate([q_order[0], jnp.full(num * block - n, n, jnp.int32)])

    def rerank(b, out):
        rows = lax.dynamic_slice_in_dim(order, b * block, block)
        safe = jnp.minimum(rows, n - 1)
        # in-sample, the query rows come from y_sorted too (same bits as xp's rows)
        q_rows = _rows_of(y_sorted, ref_pos[safe]) if from_ref else _rows_of(xp, safe)
        exact = pairs.pairs(q_rows, y_sorted, pos[safe], metric)
        d, i = _select.sort_small(jnp.where(found[safe], exact, jnp.inf), ids[safe], k)
        i = jnp.where(i >= m, -1, i)
        return out[0].at[rows].set(d, mode="drop"), out[1].at[rows].set(i, mode="drop")

    out = (jnp.zeros((n, k), xp.features.dtype), jnp.zeros((n, k), jnp.int32))
    dist, idx = lax.fori_loop(0, num, rerank, _after(out, run_i))  # after the search
    # The probed lists can hold fewer than k candidates (k large against the lists' sizes, or
    # the ratio rule stopping early): such rows are searched again against every point, exactly
    # (a loop that runs zero times when every list is full), instead of keeping empty slots.
    # It reads the points sorted by list (``y_sorted``, alive for the re-rank anyway): keeping the
    # input-order copy ``yp`` for it would hold m x d more memory for the whole search.
    filled = ~jnp.any(dist == jnp.inf, axis=1)
    dist, idx = finisher.recheck(
        y_sorted if from_ref else xp,
        y_sorted,
        dist,
        idx,
        filled,
        k,
        metric,
        own=query_ids if in_sample else None,
        query_rows=ref_pos if from_ref else None,
        ref_pos=ref_pos,
    )
    if with_self:
        dist = jnp.concatenate([metric.self_distance(xp)[:, None], dist], axis=1)
        idx = jnp.concatenate([query_ids[:, None], idx], axis=1)
    return finisher.sentinels(dist, idx, xp.penalty, metric, e)


def _sorted_operands(p: numerics.Prepared, metric, shift, rows: int):
    """Reference ranking operands ``[rows, d + 2]`` of the points ``p`` (then padding rows
    that rank last), filled block by block: no whole-size intermediate copies. The buffer
    starts once ``p`` exists (:func:`_after`)."""
    m, dim = p.features.shape
    block = min(m, 4096)
    out = _after(
        numerics.pad_reference(jnp.zeros((0, dim + 2), p.features.dtype), rows), p.features
    )

    def operands(start):
        part = numerics.rows(p, start, block)
        return (metric.ranking_operands(part, "reference", shift).operands,)

    return _fill_rows((out,), m, block, operands)[0]


def _rows_of(p: numerics.Prepared, ids):
    return numerics.Prepared(p.features[ids], p.sqnorms[ids], p.penalty[ids])


def recall(approx_idx, exact_idx) -> jax.Array:
    """Mean fraction of each row's exact neighbours that the approximate list holds."""
    hit = jnp.any(approx_idx[:, :, None] == exact_idx[:, None, :], axis=1)
    return jnp.mean(hit & (exact_idx >= 0))
