"""The one exact search entry: :class:`Options` in, certified ``(distances, indices)`` out.

Every front end (``knn``, ``hub_values``, ``hubness``, the reductions, the sampler, the metrics,
``distributed``, ``streaming``, the command line) reaches the exact k-NN through
:func:`search` (jitted: :func:`knn`). A query flows:

1. the metric prepares both sides (:meth:`Metric.prepare_pair
   <hubjax._src.metric.Metric.prepare_pair>`: cast, common power-of-two scale, non-finite
   penalty) and picks the ranking's shift (:meth:`Metric.centre
   <hubjax._src.metric.Metric.centre>`);
2. a candidate source (:mod:`hubjax._src.sources`) finds ``k + SLACK`` candidates per row,
   chosen **per platform the program is lowered for** (:func:`choose_source` under
   ``lax.platform_dependent``), never from the tracing host's backend: the CPU program uses the
   tiled source with the compiled kernels where they are built, GPUs and TPUs the strip (or,
   from 512 features, the symmetric) source with wider strips, on TPU with the ranking
   products over the features only (its matrix unit pads the contraction to 128);
3. the finisher (:mod:`hubjax._src.finisher`) refines, certifies and re-checks them;
4. the in-sample self convention and the sentinels for non-finite rows are applied and the
   metric's scale undone (:func:`sentinels`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from hubjax._src import finisher, ivf, numerics, pairs, sources
from hubjax._src import mesh as _mesh
from hubjax._src.finisher import COLUMN_ALIGN
from hubjax._src.kernels import cpu
from hubjax._src.metric import Metric
from hubjax._src.platforms import PLATFORMS, per_platform, tpu_selection

# Bytes of ranking values one strip may hold: CPU strips stay small; accelerators have the
# memory and the parallelism for much wider ones. GPU: on an H200, in-sample hub values of
# 100k x 128 took 0.121 / 0.107 / 0.102 / 0.102 s (k = 10) and 0.132 / 0.120 / 0.114 / 0.113 s
# (k = 50) with 256 MiB / 512 MiB / 1 GiB / 2 GiB strips (benchmarks/results/
# device-2026-12-04-nvidia-h200.md): 1 GiB, where fewer, longer strips stop paying.
# TPU: unmeasured, kept at 512 MiB (16 GiB cores).
STRIP_BYTES = {"cpu": 64 << 20, "gpu": 1 << 30, "tpu": 512 << 20}
# The symmetric source's strips (block x n/2) may hold this much; its blocks on GPU were
# measured with this budget (the same device record), not with the wider query strips.
SYMMETRIC_BYTES = {"cpu": 256 << 20, "gpu": 2 << 30, "tpu": 2 << 30}
# In-sample search uses the symmetric source from this many features on where the selection is
# XLA's: below it the extra selection work outweighs the halved matrix products (measured on a
# 2-core CPU, benchmarks/; on an H200 at 100k points the symmetric source took 1.25x, 1.10x and
# 0.92x the strip source's time at d = 64, 128, 256, and 1.30x at 1M x 128: the same
# threshold). With the compiled CPU selection the tiled source is the in-sample default at every
# dimension, and the symmetric source the fallback where its plan does not apply.
SYMMETRIC_MIN_FEATURES = 512
_SYMMETRIC_MAX_BLOCK = 2048
_TILE_BLOCK = 1536
# Bytes of one gathered operand of a step of the tiled XLA source (tiles x block x d).
TILE_OPERAND_BYTES = 32 << 20


@dataclasses.dataclass(frozen=True)
class Options:
    """Static settings of one exact search (hashable: a valid static argument of ``jit``).

    Attributes:
      k: neighbours per row, the point itself included where ``include_self``.
      metric: the resolved metric object.
      include_self: in-sample convention (point i first in its own list).
      block_size: rows per block; ``None`` picks one for each platform.
      source: ``"auto"`` or a forced source: ``"strip"``, ``"symmetric"``, ``"tiled"``
        (tests; the result is the same).
      group: group size of the two-stage XLA selection (``None``: chosen per tile).
      approximate: validated IVF settings (:class:`hubjax.approximate.IVF`): search the
        inverted-file index instead (:mod:`hubjax._src.ivf`); ``None``: exact.
      self_query: the queries are the references themselves (``knn(x, x)``; query mode, so
        each point is among its own neighbours). Set by :func:`search` and :func:`knn` when
        ``y is x``: the points are one array, searched in-sample with each point's own entry
        merged in (:func:`merge_own`; the approximate search runs in query mode).
    """

    k: int
    metric: Metric
    include_self: bool = False
    block_size: int | None = None
    source: str = "auto"
    group: int | None = None
    approximate: ivf.IVF | None = None
    self_query: bool = False


def strip_rows(
    num_queries: int,
    num_candidates: int,
    itemsize: int = 4,
    num_features: int = 0,
    platform: str = "cpu",
) -> int:
    """Rows per strip on ``platform`` (one of :data:`PLATFORMS`): a strip's ranking values plus
    its query operands (``rows x (m + d)``) hold at most :data:`STRIP_BYTES`."""
    width = numerics.round_up(num_candidates, COLUMN_ALIGN) + num_features
    rows = max(8, min(4096, STRIP_BYTES[platform] // (itemsize * width)) // 8 * 8)
    return min(rows, numerics.round_up(num_queries, 8))


def symmetric_block(n: int, itemsize: int = 4, platform: str = "cpu") -> int:
    """Block of the symmetric source: its ``block x n/2`` strip within :data:`SYMMETRIC_BYTES`."""
    block = SYMMETRIC_BYTES[platform] // (itemsize * max(n // 2, 1))
    return max(256, min(_SYMMETRIC_MAX_BLOCK, block))


def tile_block(n: int, dim: int = 0, tiles: int = 1, itemsize: int = 4) -> int:
    """Block of the tiled source: ``[block, block]`` ranking tiles of a few MB (measured on a
    2-core CPU, n = 10 000 ... 20 000, d = 128 ... 512: 1024 ... 2048 all within noise).

    On wide data each step's two gathered operands (``tiles x block x d`` each) stay within
    :data:`TILE_OPERAND_BYTES`: at 2 000 x 20 000 the 416-point blocks held 0.83x the input per
    step, now 0.32x, for 0.25 s more candidate search (1.09 -> 1.34 s, this 2-core host).
    """
    block = min(_TILE_BLOCK, max(256, n // 3))
    if dim:
        block = min(block, max(COLUMN_ALIGN, TILE_OPERAND_BYTES // (tiles * dim * itemsize)))
    return block


def choose_source(n: int, m: int, dim: int, others: int, in_sample: bool, options, platform):
    """The candidate source for a program lowered for ``platform`` (one of :data:`PLATFORMS`):
    a function of the shapes, the options and what that platform offers (the compiled CPU
    kernels where they are built; on TPU, ranking products over the features only, since its
    matrix unit pads the contraction to a multiple of 128; there, with
    ``HUBJAX_TPU_SELECT=approx_min_k``, the groups of the selection chosen by
    ``lax.approx_min_k`` and certified), never of the tracing host's backend."""
    certified = platform == "tpu" and tpu_selection() == "approx_min_k"
    kernel = platform == "cpu" and cpu.enabled()
    fused = platform == "cpu" and cpu.fused()
    block_size, forced = options.block_size, options.source
    plan = None
    if in_sample and forced != "strip":
        if forced == "tiled" or (forced == "auto" and kernel):
            tiles = cpu.threads() if platform == "cpu" else 1
            # the fused kernel packs its own operands (no per-step gathers to bound)
            block = block_size or tile_block(n, 0 if fused else dim, tiles)
            plan = sources.tiled_plan(n, others, block, tiles, fused=fused)
        if plan is None and (forced == "symmetric" or dim >= SYMMETRIC_MIN_FEATURES or kernel):
            block = block_size or symmetric_block(n, platform=platform)
            plan = sources.symmetric_plan(n, others, block, fast_select=kernel)
            if plan is not None:
                plan = dataclasses.replace(
                    plan, group=options.group, split=platform == "tpu", certified=certified
                )
    if plan is not None:
        return plan
    rows = block_size or strip_rows(n, m, num_features=dim, platform=platform)
    return sources.Strip(
        rows, fused=fused, group=options.group, split=platform == "tpu", certified=certified
    )


def exact(
    xp, yp, others: int, options: Options, *, in_sample: bool, shift=None, again=None, late=()
):
    """Exact top-k ``(distances, indices) [n, others]`` (internal scale) of every ``xp`` row
    among ``yp`` (in-sample: ``yp is xp``, self excluded): a source per platform, then the
    finisher. ``shift`` defaults to the centre of ``yp``. ``again(after, *late)``, where given,
    returns ``(xp, yp)`` prepared anew from the arrays ``late`` once ``after`` (the candidates)
    exists, for the finisher (see :func:`search`); it reads no traced value but its arguments
    (the branches may be traced after this trace, :func:`~hubjax._src.platforms.per_platform`).
    """
    metric = options.metric
    if shift is None:
        shift = metric.centre(yp)
    n, dim = xp.features.shape
    m = yp.features.shape[0]
    keep = others + finisher.SLACK + int(in_sample)

    def run(source, xp, yp, shift, late):
        yp = xp if yp is None else yp  # in-sample: one object (the sources test ``yp is xp``)
        candidates = source.candidates(xp, yp, metric, shift, keep=keep)
        late_x, late_y = (xp, yp) if again is None else again(candidates.values, *late)
        lists = finisher.refine_lists(late_x, late_y, candidates, others, metric, own=in_sample)
        return *lists, late_x, None if in_sample else late_y

    chosen = {p: choose_source(n, m, dim, others, in_sample, options, p) for p in PLATFORMS}
    dist, idx, ok, xp, yp = per_platform(
        run, chosen, xp, None if in_sample else yp, shift, tuple(late)
    )
    yp = xp if in_sample else yp
    return finisher.recheck_uncertified(
        xp, yp, dist, idx, ok, others, metric, in_sample=in_sample, shift=shift
    )


def search_both(x, y, options: Options):
    """The exact search of the rows of ``x [n, d]`` among ``y [m, d]`` twice, as given and with
    the last feature of every row of ``x`` set to 0: ``((distances, indices) as given,
    (distances, indices) with it 0)``, each ``[n, k]``, from one pass over the ranking tiles
    (:meth:`hubjax._src.sources.Strip.pair_candidates`). Each is bitwise :func:`search` of its rows.

    For a product metric (``dot``), where that feature scales a per-reference offset held in
    ``y``'s last feature: QB-Norm's plain and normalised searches (:mod:`hubjax._src.banks`).
    ``x``'s last feature must be finite.
    """
    metric = options.metric
    if metric.shifted or options.approximate is not None:
        raise ValueError("search_both serves the exact search of a product metric")
    xp, yp, e = metric.prepare_pair(x, y)
    xp_off = metric.prepare(x.at[:, -1].set(0).astype(xp.features.dtype), xp.features.dtype, e)
    shift = metric.centre(yp)
    n, dim = x.shape
    m = y.shape[0]
    k = options.k

    def run(strip, xp, xp_off, yp, shift, e):
        pair = strip.pair_candidates(xp, xp_off, yp, metric, shift, keep=k + finisher.SLACK)
        out = []
        for p, candidates in zip((xp, xp_off), pair, strict=True):
            d, i, ok = finisher.refine_lists(p, yp, candidates, k, metric, own=False)
            d, i = finisher.recheck_uncertified(
                p, yp, d, i, ok, k, metric, in_sample=False, shift=shift
            )
            out.append(finisher.sentinels(d, i, p.penalty, metric, e))
        return tuple(out)

    # the query-vs-reference strips of each platform (the fused kernel does not apply)
    plans = {
        p: dataclasses.replace(choose_source(n, m, dim, k, False, options, p), fused=False)
        for p in PLATFORMS
    }
    return per_platform(run, plans, xp, xp_off, yp, shift, e)


def search(x, y, options: Options):
    """k nearest neighbours ``(distances [n, k], indices [n, k])`` of the rows of ``x`` among
    ``y`` (``None``: in-sample), exact or, with ``options.approximate``, from the IVF index, on
    arrays already validated; traceable (call it inside
    ``jit``, ``vmap`` or ``shard_map``; :func:`knn` is the jitted form).

    Under ``vmap`` the batch is searched in groups whose ranking strips fit one strip budget
    together (:func:`batch_group`): a batch of large sets one set at a time, so the temporaries
    stay those of one set instead of growing with the batch, and small sets many at a time.
    The result is the same either way.

    ``y is x`` (the same array object, or tracer) is searched as one array
    (:attr:`Options.self_query`): the same result, with one prepared copy of the points.
    """
    y, options = _one_array(x, y, options)
    if y is None:
        return _bounded_batches(options, True)(x)
    return _bounded_batches(options, False)(x, y)


def _one_array(x, y, options: Options):
    """``(y, options)``: ``(None, options with self_query)`` where ``y is x``."""
    if y is not None and y is x:
        return None, dataclasses.replace(options, self_query=True)
    return y, options


def batch_group(n: int, m: int, dim: int, platform: str, itemsize: int = 4) -> int:
    """Sets of a vmapped search (``n`` queries, ``m`` references, ``dim`` features each)
    computed together on ``platform``: as many as fit :data:`STRIP_BYTES` with their whole
    ranking matrices, at least one (a set larger than that is searched strip by strip anyway).
    """
    per_set = max(n, 1) * (numerics.round_up(max(m, 1), COLUMN_ALIGN) + dim) * itemsize
    return max(1, STRIP_BYTES[platform] // per_set)


@functools.cache
def _bounded_batches(options: Options, in_sample: bool):
    """:func:`_search` of ``(x,)`` (in-sample) or ``(x, y)`` with the batching rule of
    :func:`search`."""

    def one(*args):
        return _search(args[0], None if in_sample else args[1], options)

    batched_search = jax.custom_batching.custom_vmap(one)

    @batched_search.def_vmap
    def rule(axis_size, in_batched, *args):
        axes = tuple(0 if b else None for b in in_batched)
        x = args[0]
        n, dim = x.shape[-2:]
        m = n if in_sample else args[1].shape[-2]

        def grouped(group, *args):
            if group >= axis_size:
                return jax.vmap(one, in_axes=axes)(*args)
            parts = -(-axis_size // group)

            def split(a, b):  # [axis_size, ...] -> [parts, group, ...], padded with zeros
                if not b:
                    return None
                pad = [(0, parts * group - axis_size)] + [(0, 0)] * (a.ndim - 1)
                return jnp.pad(a, pad).reshape(parts, group, *a.shape[1:])

            stacked = tuple(split(a, b) for a, b in zip(args, in_batched, strict=True))

            def part(sets):
                full = tuple(s if b else a for s, a, b in zip(sets, args, in_batched, strict=True))
                return jax.vmap(one, in_axes=axes)(*full)

            out = lax.map(part, stacked)
            return jax.tree.map(lambda a: a.reshape(parts * group, *a.shape[2:])[:axis_size], out)

        itemsize = max(4, x.dtype.itemsize)  # narrower inputs are ranked in float32
        groups = {p: min(axis_size, batch_group(n, m, dim, p, itemsize)) for p in PLATFORMS}
        out = per_platform(grouped, groups, *args)
        return out, jax.tree.map(lambda _: True, out)

    return batched_search


def _search(x, y, options: Options):
    """:func:`search` of one set.

    ``options.self_query`` (``knn(x, x)``): the exact search runs in-sample (the in-sample
    sources compute each pair of blocks once, and hold no query operands beside the
    references') for ``min(k, n - 1)`` others, and each point is then merged into its own list
    at its place in the (distance, index) order (:func:`merge_own`): the query-mode lists bit
    for bit, since a point's distance to itself is the per-pair value of that pair
    (:meth:`Metric.self_distance <hubjax._src.metric.Metric.self_distance>`). At 2 000 x 20 000
    on a 2-core AMD EPYC without AVX-512: XLA's temporaries 2.5x -> 1.3x the input.
    """
    metric = options.metric
    if options.approximate is not None:
        y = x if options.self_query else y
        with_self = y is None and options.include_self
        k = options.k - int(with_self)
        return ivf.search_rows(x, y, k, metric, options.approximate, with_self)
    in_sample = y is None
    xp, yp, e = metric.prepare_pair(x, y)
    dtype = xp.features.dtype
    with_self = in_sample and options.include_self
    n = x.shape[0]
    if options.self_query:
        others = min(options.k, n - 1)
    else:
        others = options.k - 1 if with_self else options.k
    if not others:
        dist, idx = jnp.zeros((n, 0), dtype), jnp.zeros((n, 0), jnp.int32)
    else:
        # The finisher gets the points prepared a second time, after the candidate search:
        # the same bits, but the first prepared copy is then dead once the ranking operands
        # are built, so the search holds the operands and not also a prepared copy of the
        # points (at 2 000 x 20 000 without AVX-512: XLA's temporaries 2.9x -> 1.9x the input).
        def again(after, x, y, e):
            # a flag that is always false, which XLA cannot fold, makes the second preparation
            # wait for the search (an optimization barrier is expanded before scheduling)
            v = after[:1, :1]
            never = jnp.any((v != v) & (v == v))
            xs, ys = (
                None if a is None else jnp.where(never, jnp.zeros((), a.dtype), a) for a in (x, y)
            )
            return metric.prepare_with(xs, ys, e)

        dist, idx = exact(xp, yp, others, options, in_sample=in_sample, again=again, late=(x, y, e))
    if with_self:
        dist = jnp.concatenate([metric.self_distance(xp)[:, None], dist], axis=1)
        idx = jnp.concatenate([jnp.arange(n, dtype=jnp.int32)[:, None], idx], axis=1)
    elif options.self_query:
        dist, idx = merge_own(dist, idx, metric.self_distance(xp), options.k)
    return finisher.sentinels(dist, idx, xp.penalty, metric, e)


def merge_own(dist, idx, own_dist, k: int):
    """The first k of ``(dist, idx) [n, c]`` (each row's others, sorted by distance, then
    index) with the row's own entry ``(own_dist [n], row)`` inserted at its place in that
    order: ``(distances [n, k], indices [n, k])``."""
    n, others = dist.shape
    own = jnp.arange(n, dtype=jnp.int32)[:, None]
    d = own_dist[:, None]
    if not others:  # one point: its own entry only
        return d, own
    # the others before the own entry: a prefix of the sorted list
    place = jnp.sum((dist < d) | ((dist == d) & (idx < own)), axis=1, keepdims=True)
    cols = jnp.arange(k, dtype=jnp.int32)[None, :]
    take = jnp.minimum(cols - (cols > place).astype(jnp.int32), others - 1)
    return (
        jnp.where(cols == place, d, jnp.take_along_axis(dist, take, axis=1)),
        jnp.where(cols == place, own, jnp.take_along_axis(idx, take, axis=1)),
    )


def knn(x, y, options: Options):
    """:func:`search` compiled, with arrays on the user's mesh gathered first and the results
    put back along its points axis (:mod:`hubjax._src.mesh`). ``y is x`` is one argument of
    the compiled program (one device copy of a NumPy input)."""
    y, options = _one_array(x, y, options)
    return _knn(x, y, options)


def _gathered_search(x, y, options: Options):
    (x, y), placement = _mesh.gather(x, y)
    with _mesh.context(placement):
        out = search(x, y, options)
    return _mesh.scatter(out, placement)


# the program's name in compile logs, profiles and the disk cache's file names: jit(knn)
_gathered_search.__name__ = _gathered_search.__qualname__ = "knn"
_knn = jax.jit(_gathered_search, static_argnames=("options",))


@functools.partial(jax.jit, static_argnames=("k", "metric", "include_self"))
def knn_dense(x, y=None, *, k, metric, include_self=False):
    """The clear version of :func:`knn`: every per-pair distance, then a (distance, index) sort.

    The tests' reference for the sources; O(n m) memory.
    """
    xp, yp, e = metric.prepare_pair(x, y)
    d = pairs.dense(xp, yp, metric)
    n, m = d.shape
    idx = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), (n, m))
    with_self = y is None and include_self
    if y is None:
        d = d.at[jnp.arange(n), jnp.arange(n)].set(jnp.inf)
    others = k - 1 if with_self else k
    d, idx = lax.sort((d, idx), dimension=-1, num_keys=2)
    d, idx = d[:, :others], idx[:, :others]
    if with_self:
        d = jnp.concatenate([metric.self_distance(xp)[:, None], d], axis=1)
        idx = jnp.concatenate([jnp.arange(n, dtype=jnp.int32)[:, None], idx], axis=1)
    return finisher.sentinels(d, idx, xp.penalty, metric, e)


def drop_own(idx, own, k: int):
    """The first k entries ``[b, k]`` of lists ``idx [b, k + 1]`` without the row's own index
    ``own [b]`` (or without the last entry where it is absent): a k + 1 query-mode search turned
    into the in-sample list, bit for bit."""
    is_own = idx == own[:, None]
    drop = jnp.where(jnp.any(is_own, axis=1), jnp.argmax(is_own, axis=1), k).astype(jnp.int32)
    cols = jnp.arange(k, dtype=jnp.int32)[None, :]
    take = cols + (cols >= drop[:, None]).astype(jnp.int32)
    return jnp.take_along_axis(idx, take, axis=1)


@functools.partial(jax.jit, static_argnames=("k", "metric", "block_size"))
def sampled_lists(x, queries, k, metric, block_size):
    """k-NN lists ``[s, k]`` of the points ``queries [s]`` among all of ``x``, each without
    itself.

    Equal, bit for bit, to the same rows of the in-sample :func:`hubjax.knn`: search k + 1
    neighbours and drop the query's own index (or the last entry if it is absent).
    """
    options = Options(k + 1, metric, block_size=block_size)
    _, idx = search(x[queries], x, options)
    return drop_own(idx, queries, k)
