"""Approximate k-NN: an inverted-file index (IVF) with static shapes, exact re-ranking.

Layout (every shape static, so it runs under ``jit`` and ``vmap`` and compiles once per shape):

1. **Coarse partition.** k-means (Lloyd, ``iterations`` rounds, initial centroids a random
   sample drawn from ``seed``) on at most ``train_size`` reference points gives ``nlist``
   centroids; every reference point joins its nearest centroid's list.
2. **Chunks.** Points are sorted by list; each list is cut into chunks of ``chunk`` consecutive
   points (the last one partly empty). There are at most ``nlist + m / chunk`` chunks.
3. **Probing.** The queries are grouped the same way (by their nearest centroid). A chunk of
   queries from list A searches the ``probe_chunks`` reference chunks of the lists nearest to
   A's centroid, A's own first: one matrix product of ``chunk x (probe_chunks * chunk)``.
   ``nprobe`` sets ``probe_chunks`` to ``nprobe`` average lists' worth of chunks plus one
   partial chunk per list, so ``nprobe = nlist`` probes every chunk.
4. **Re-rank.** The ``k + 8`` best by the (centred) matrix-product ranking are re-ranked by
   hubjax's exact per-pair distance; ties to the smaller index.

Probing by the query's list rather than the query itself keeps whole chunks of queries on one
matrix product; queries near a list boundary rely on the neighbouring lists being probed, which
``nprobe`` controls. Results are deterministic for a fixed ``seed``. With ``nprobe >= nlist``
every chunk is probed and the result equals the exact search (tested).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from hubjax import _checks, _select, distances, neighbors

__all__ = ["IVF", "knn", "recall", "sampled_recall", "as_settings", "kmeans"]

_SLACK = 8


@dataclasses.dataclass(frozen=True)
class IVF:
    """Settings of the approximate search (hashable: a static argument).

    Attributes:
      nlist: number of lists; None: about ``m / (2 * chunk)`` (two chunks per list).
      nprobe: lists' worth of reference chunks each query chunk searches; None: 16, or every
        list when there are fewer. An explicit value above ``nlist`` is an error.
      chunk: points per chunk (rows and columns of one matrix-product tile).
      iterations: k-means rounds.
      train_size: reference points the k-means trains on (a fixed random sample); None: all
        up to 64 per list.
      seed: seeds the k-means sample and initial centroids.
    """

    nlist: int | None = None
    nprobe: int | None = None
    chunk: int = 256
    iterations: int = 10
    train_size: int | None = None
    seed: int = 0

    def lists(self, m: int) -> int:
        nlist = self.nlist if self.nlist is not None else max(1, round(m / (2 * self.chunk)))
        return int(nlist)

    def probes(self, m: int) -> int:
        return min(16, self.lists(m)) if self.nprobe is None else int(self.nprobe)

    def validate(self, m: int) -> IVF:
        """Checks the settings against m reference points; raises ValueError naming them."""
        for name in ("chunk", "iterations"):
            _checks.check_static_int(getattr(self, name), name)
        if self.nprobe is not None:
            _checks.check_static_int(self.nprobe, "nprobe")
        nlist = self.lists(m)
        _checks.check_static_int(nlist, "nlist")
        if nlist > m:
            raise ValueError(f"nlist={nlist} lists is more than the m = {m} reference points.")
        if self.probes(m) > nlist:
            raise ValueError(f"nprobe={self.nprobe} probes more lists than nlist={nlist}.")
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


def _nearest(points, centroids):
    """Index of each point's nearest centroid (squared Euclidean via the matrix product),
    in row blocks: never the whole ``[m, nlist]`` score matrix."""
    c2 = jnp.sum(centroids * centroids, axis=1)

    def rows(p):
        score = c2[None, :] - 2.0 * distances.ranking_tile(p, centroids)
        return jnp.argmin(score, axis=1).astype(jnp.int32)

    block = max(1, min(points.shape[0], (16 << 20) // max(1, centroids.shape[0])))
    return lax.map(lambda p: rows(p[None, :])[0], points, batch_size=block)


def kmeans(points, nlist: int, iterations: int, key):
    """Lloyd's k-means: centroids ``[nlist, d]`` of ``points [m, d]`` (an emptied centroid keeps
    its position); the initial centroids are ``nlist`` points drawn from ``key``."""
    m = points.shape[0]
    init = jax.random.choice(key, m, (nlist,), replace=False)
    centroids = points[init]

    def step(c, _):
        label = _nearest(points, c)
        total = jax.ops.segment_sum(points, label, num_segments=nlist)
        count = jax.ops.segment_sum(jnp.ones(m, points.dtype), label, num_segments=nlist)
        return jnp.where(count[:, None] > 0, total / jnp.maximum(count, 1)[:, None], c), None

    centroids, _ = lax.scan(step, centroids, None, length=iterations)
    return centroids


class _Layout:
    """Points sorted by list and cut into chunks (traced arrays, static counts)."""

    def __init__(self, label, nlist: int, chunk: int):
        n = label.shape[0]
        self.order = jnp.argsort(label, stable=True).astype(jnp.int32)  # sorted pos -> point
        self.size = jnp.bincount(label, length=nlist).astype(jnp.int32)
        self.start = (jnp.cumsum(self.size) - self.size).astype(jnp.int32)
        self.chunks = -(-self.size // chunk)  # per list
        self.chunk_start = (jnp.cumsum(self.chunks) - self.chunks).astype(jnp.int32)
        self.max_chunks = nlist + -(-n // chunk)
        c = jnp.arange(self.max_chunks, dtype=jnp.int32)
        owner = jnp.searchsorted(jnp.cumsum(self.chunks), c, side="right").astype(jnp.int32)
        self.valid = owner < nlist
        owner = jnp.minimum(owner, nlist - 1)
        j = c - self.chunk_start[owner]
        self.owner = owner  # list of each chunk
        self.begin = self.start[owner] + j * chunk  # sorted position of its first point
        self.length = jnp.where(self.valid, jnp.clip(self.size[owner] - j * chunk, 0, chunk), 0)


def _probe_table(centroids, ref: _Layout, nlist: int, probe_chunks: int, chunk: int):
    """For each list A: ``(begin [P], length [P])`` of the reference chunks it probes."""
    c2 = jnp.sum(centroids * centroids, axis=1)
    d = c2[:, None] + c2[None, :] - 2.0 * distances.ranking_tile(centroids, centroids)
    d = jnp.where(jnp.eye(nlist, dtype=bool), -jnp.inf, d)  # own list first
    lists = jnp.argsort(d, axis=1, stable=True).astype(jnp.int32)  # [nlist, nlist]
    counts = ref.chunks[lists]  # chunks of each list, in probe order
    cum = jnp.cumsum(counts, axis=1)
    p = jnp.arange(probe_chunks, dtype=jnp.int32)
    t = jax.vmap(lambda row: jnp.searchsorted(row, p, side="right"))(cum).astype(jnp.int32)
    ok = t < nlist
    t = jnp.minimum(t, nlist - 1)
    lst = jnp.take_along_axis(lists, t, axis=1)
    before = jnp.take_along_axis(cum - counts, t, axis=1)
    j = p[None, :] - before
    begin = ref.start[lst] + j * chunk
    length = jnp.where(ok, jnp.clip(ref.size[lst] - j * chunk, 0, chunk), 0)
    return begin, length


def knn(
    x,
    y=None,
    *,
    k: int,
    metric: str = "sqeuclidean",
    include_self: bool = False,
    settings: IVF = IVF(),
    check_finite: bool = True,
):
    """Approximate k nearest neighbours (see the module docstring); as :func:`hubjax.knn`.

    ``hubjax.knn(..., approximate=settings)`` calls this. In-sample (``y=None``) lists never
    contain the point itself unless ``include_self``. Distances are the exact per-pair
    distances of the neighbours found; a row may miss true neighbours (see :func:`recall`,
    :func:`sampled_recall`).

    Raises:
      ValueError: as :func:`hubjax.knn`, plus settings that cannot work (more lists than
        reference points, more probes than lists), naming the values.

    Example:
      >>> import jax, hubjax
      >>> x = jax.random.normal(jax.random.key(0), (4000, 16))
      >>> d, i = hubjax.approximate.knn(x, k=5, settings=hubjax.approximate.IVF(nprobe=8))
      >>> i.shape
      (4000, 5)
    """
    x, y, k = neighbors._validate(x, y, k, metric, include_self, check_finite)
    m = x.shape[0] if y is None else y.shape[0]
    settings = settings.validate(m)
    return _knn(x, y, k=k, metric=metric, settings=settings, include_self=bool(include_self))


@functools.partial(jax.jit, static_argnames=("k", "metric", "settings", "include_self"))
def _knn(x, y, *, k, metric, settings, include_self=False):
    with_self = y is None and include_self
    if with_self and k == 1:
        n = x.shape[0]
        xp, _, e = distances.prepare_pair(x, None, metric)
        d = distances.self_distance(xp, metric)[:, None]
        return neighbors.sentinels(
            d, jnp.arange(n, dtype=jnp.int32)[:, None], xp.penalty, metric, e
        )
    return _search(x, y, k - int(with_self), metric, settings, with_self)


def _search(x, y, k, metric, settings, with_self):
    in_sample = y is None
    ref = x if in_sample else y
    n, dim = x.shape
    m = ref.shape[0]
    nlist, chunk = settings.lists(m), settings.chunk
    xp, yp, e = distances.prepare_pair(x, y, metric)
    shift = distances.centre(yp, metric)
    # the partition: k-means on the prepared (scaled, unit-norm for cosine), centred features
    ref_feats = jnp.where(yp.penalty[:, None] == 0, yp.features - shift, 0)
    key = jax.random.key(settings.seed)
    train = min(m, settings.train_size or 64 * nlist)
    sample = jax.random.choice(key, m, (train,), replace=False) if train < m else None
    feats = ref_feats if sample is None else ref_feats[sample]
    centroids = kmeans(feats, nlist, settings.iterations, jax.random.fold_in(key, 1))
    ref_layout = _Layout(_nearest(ref_feats, centroids), nlist, chunk)
    if in_sample:
        q_layout = ref_layout
    else:
        q_feats = jnp.where(xp.penalty[:, None] == 0, xp.features - shift, 0)
        q_layout = _Layout(_nearest(q_feats, centroids), nlist, chunk)
    # nprobe average lists, plus one partial chunk per list: every chunk when nprobe = nlist
    nprobe = settings.probes(m)
    average = math.ceil(nprobe * m / (nlist * chunk))
    probe_chunks = min(ref_layout.max_chunks, average + nprobe)
    begin, length = _probe_table(centroids, ref_layout, nlist, probe_chunks, chunk)

    ref_ops = distances.ranking_operands(yp, metric, "reference", shift).operands
    ref_sorted = jnp.concatenate([ref_ops[ref_layout.order], jnp.zeros((chunk, dim + 2))])
    ref_sorted = ref_sorted.at[m:, -1].set(jnp.inf)  # padding ranks last
    q_ops = distances.ranking_operands(xp, metric, "query", shift).operands
    q_sorted = jnp.concatenate([q_ops[q_layout.order], jnp.zeros((chunk, dim + 2), q_ops.dtype)])
    keep = min(k + _SLACK + int(in_sample), probe_chunks * chunk)
    width = probe_chunks * chunk
    lane = jnp.arange(chunk, dtype=jnp.int32)

    def one_chunk(c):
        a = q_layout.owner[c]
        rows = q_layout.begin[c] + lane  # sorted query positions
        row_ok = lane < q_layout.length[c]
        qid = q_layout.order[jnp.minimum(rows, n - 1)]
        # whole chunks are contiguous in the sorted arrays: block slices, not row gathers
        q = lax.dynamic_slice_in_dim(q_sorted, q_layout.begin[c], chunk)
        cols = (begin[a][:, None] + lane[None, :]).reshape(-1)  # sorted reference positions
        col_ok = (lane[None, :] < length[a][:, None]).reshape(-1)
        r = jax.vmap(lambda b: lax.dynamic_slice_in_dim(ref_sorted, b, chunk))(begin[a])
        r = r.reshape(width, dim + 2)
        tile = distances.ranking_tile(q, r)
        bad = ~col_ok[None, :]
        if in_sample:
            bad |= cols[None, :] == rows[:, None]
        tile = jnp.where(bad, jnp.inf, tile)
        values, pos = _select.update_rows(
            tile,
            jnp.zeros(1, jnp.int32),
            *_select.sentinel_lists(chunk, keep, width),
            seg_width=width,
            merge=False,
        )
        found = (pos < width) & jnp.isfinite(values)
        sorted_pos = cols[jnp.minimum(pos, width - 1)]
        ids = ref_layout.order[jnp.minimum(sorted_pos, m - 1)]
        exact = distances.pairs(_rows_of(xp, qid), yp, ids, metric)
        exact = jnp.where(found, exact, jnp.inf)
        ids = jnp.where(found, ids, m + jnp.arange(keep, dtype=jnp.int32))
        d, i = _select.sort_small(exact, ids, k)
        i = jnp.where(i >= m, -1, i)
        return jnp.where(row_ok, qid, n), d, i

    def maybe(c):
        empty = (
            jnp.full(chunk, n, jnp.int32),
            jnp.full((chunk, k), jnp.inf, jnp.float32),
            jnp.full((chunk, k), -1, jnp.int32),
        )
        return lax.cond(q_layout.valid[c], one_chunk, lambda _: empty, c)

    qid, d, i = lax.map(maybe, jnp.arange(q_layout.max_chunks, dtype=jnp.int32))
    qid = qid.reshape(-1)
    dist = jnp.full((n, k), jnp.inf, d.dtype).at[qid].set(d.reshape(-1, k), mode="drop")
    idx = jnp.full((n, k), -1, jnp.int32).at[qid].set(i.reshape(-1, k), mode="drop")
    if with_self:
        dist = jnp.concatenate([distances.self_distance(xp, metric)[:, None], dist], axis=1)
        idx = jnp.concatenate([jnp.arange(n, dtype=jnp.int32)[:, None], idx], axis=1)
    return neighbors.sentinels(dist, idx, xp.penalty, metric, e)


def _rows_of(p: distances.Prepared, ids):
    return distances.Prepared(p.features[ids], p.sqnorms[ids], p.penalty[ids])


def recall(approx_idx, exact_idx) -> jax.Array:
    """Mean fraction of each row's exact neighbours that the approximate list holds."""
    hit = jnp.any(approx_idx[:, :, None] == exact_idx[:, None, :], axis=1)
    return jnp.mean(hit & (exact_idx >= 0))


def sampled_recall(
    x,
    *,
    k: int,
    metric: str = "sqeuclidean",
    settings: IVF = IVF(),
    num_queries: int = 1000,
    key=None,
    lists=None,
) -> float:
    """Recall@k of the in-sample approximate search, measured on sampled queries.

    ``num_queries`` points (drawn from ``key``, default ``jax.random.key(0)``) are searched
    exactly; the result is the mean fraction of their exact neighbours that the approximate
    in-sample lists hold. ``lists`` are those lists ``[n, k]`` when the caller already has
    them (``knn(x, k=k, metric=metric, settings=settings)[1]``); None searches them here.
    """
    from hubjax import estimates

    x, _, k = neighbors._validate(x, None, k, metric, False, True)
    n = x.shape[0]
    s = min(_checks.check_static_int(num_queries, "num_queries"), n)
    key = jax.random.key(0) if key is None else key
    queries = jnp.sort(jax.random.choice(key, n, (s,), replace=False)).astype(jnp.int32)
    exact = estimates.sampled_lists(x, queries, k, metric, None)
    if lists is None:
        _, lists = knn(x, k=k, metric=metric, settings=settings)
    elif tuple(lists.shape) != (n, k):
        raise ValueError(f"lists must be [n, k] = {(n, k)}, got {tuple(lists.shape)}.")
    return float(recall(lists[queries], exact))
