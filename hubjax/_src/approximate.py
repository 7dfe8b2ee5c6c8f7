"""The approximate search's front ends: :func:`knn` (what ``hubjax.knn(..., approximate=...)``
runs) and :func:`sampled_recall`; the IVF source itself is :mod:`hubjax._src.ivf`."""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from hubjax._src import arguments, checks, ivf, search
from hubjax._src.ivf import IVF, recall

DEFAULT = IVF()  # the settings ``approximate=True`` means

# The largest share of the lists :func:`tune` lets a query probe. The search's cost grows about
# linearly with the share probed: 8 of 112 lists (7 %) took 0.17x the exact time on 200 000 x 64
# clustered points (benchmarks/results/approximate-2026-12-02.md), so a quarter costs about 0.6x
# and a third or more saves little for the recall it gives up: there the exact search is the
# better choice.
MAX_PROBED = 0.25
# The recall@k :func:`tune` aims for by default, and below which the command line warns.
TARGET_RECALL = 0.9


def knn(
    x,
    y=None,
    *,
    k: int,
    metric: str = "sqeuclidean",
    include_self: bool = False,
    settings: IVF = DEFAULT,
    check_finite: bool = True,
):
    """Approximate k nearest neighbours (:mod:`hubjax.approximate`); as :func:`hubjax.knn`.

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
    x, y, k, metric = arguments.validate_knn(x, y, k, metric, include_self, check_finite)
    m = x.shape[0] if y is None else y.shape[0]
    settings = settings.validate(m)
    options = search.Options(k, metric, include_self=bool(include_self), approximate=settings)
    return search.knn(x, y, options)


def sampled_recall(
    x,
    *,
    k: int,
    metric: str = "sqeuclidean",
    settings: IVF = DEFAULT,
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
    x, _, k, metric = arguments.validate_knn(x, None, k, metric, False, True)
    n = x.shape[0]
    queries = _sample_queries(n, num_queries, key)
    exact = search.sampled_lists(x, queries, k, metric, None)
    if lists is None:
        _, lists = knn(x, k=k, metric=metric, settings=settings)
    elif tuple(lists.shape) != (n, k):
        raise ValueError(f"lists must be [n, k] = {(n, k)}, got {tuple(lists.shape)}.")
    return float(recall(lists[queries], exact))


class Tuned(NamedTuple):
    """What :func:`tune` found: ``settings``, the :class:`IVF` settings that reach the target
    on the sampled queries, or None when that needs more than :data:`MAX_PROBED` of the lists
    (search exactly); ``recall``, the sampled recall@k of ``settings`` (of the last ones tried
    when None; NaN when none was tried: the first ``nprobe`` already probes too many lists);
    ``trials``, ``(nprobe, ratio, sampled recall)`` of every setting tried, in order."""

    settings: IVF | None
    recall: float
    trials: tuple[tuple[int, float | None, float], ...]


def tune(
    x,
    y=None,
    *,
    k: int,
    metric: str = "sqeuclidean",
    target_recall: float = TARGET_RECALL,
    settings: IVF = DEFAULT,
    num_queries: int = 1000,
    key=None,
) -> Tuned:
    """Probes enough lists for a recall target, or says that the exact search is better.

    The IVF search's recall depends on the data: on clustered embeddings the default 8 probes
    reach recall@10 0.97 (1M x 128), on unclustered Gaussian 20 000 x 64 only 0.55. ``tune``
    measures it on ``num_queries`` sampled queries (their exact lists are cheap) for the given
    settings, then with every query probing exactly their ``nprobe`` lists (``ratio=None``),
    twice as many, ... up to :data:`MAX_PROBED` of the lists, and returns the first that reaches
    ``target_recall``. Each ``nprobe`` compiles its own program,
    and eager inputs are needed (it chooses static settings).

    Args:
      x: points ``[n, d]`` (in-sample search) or queries.
      y: reference points ``[m, d]``, or None for in-sample search.
      k: neighbours per query.
      metric: as :func:`hubjax.knn`.
      target_recall: the sampled recall@k to reach, in (0, 1].
      settings: the starting settings (their ``nlist``, ``ratio``, ``seed``, ... are kept).
      num_queries: sampled queries (default 1000; all when fewer).
      key: draws the queries (default ``jax.random.key(0)``).

    Returns:
      A :class:`Tuned`: use ``knn(..., approximate=tuned.settings)`` when ``tuned.settings`` is
      not None, else the exact search.

    Example:
      >>> import jax, hubjax
      >>> x = jax.random.normal(jax.random.key(0), (4000, 32))  # no clusters
      >>> tuned = hubjax.approximate.tune(x, k=10)
      >>> tuned.settings is None  # 8 probes of 16 lists: an index cannot pay
      True
    """
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must lie in (0, 1], got {target_recall!r}.")
    x, y, k, metric = arguments.validate_knn(x, y, k, metric, False, True)
    n = x.shape[0]
    m = n if y is None else y.shape[0]
    settings = settings.validate(m)
    nlist = settings.lists(m)
    queries = _sample_queries(n, num_queries, key)
    if y is None:
        exact = search.sampled_lists(x, queries, k, metric, None)
    else:
        exact = search.knn(x[queries], y, search.Options(k, metric))[1]
    first = settings.probes(m)
    cap = max(1, MAX_PROBED * nlist)
    if first > cap:  # too few lists for an index to pay
        return Tuned(None, float("nan"), ())
    # the given settings, then every query probing exactly 1, 2, 4, ... times as many lists
    # (ratio=None: the ratio rule would keep skipping the lists it skipped before)
    plan = [settings]
    if settings.ratio is not None:
        plan.append(dataclasses.replace(settings, nprobe=first, ratio=None))
    probes = first * 2
    while probes <= cap:
        plan.append(dataclasses.replace(settings, nprobe=probes, ratio=None))
        probes *= 2
    trials = []
    for trying in plan:
        trying = dataclasses.replace(trying, nprobe=trying.probes(m))
        found = float(recall(_sampled_lists(x, y, queries, k, metric, trying), exact))
        trials.append((trying.nprobe, trying.ratio, found))
        if found >= target_recall:
            return Tuned(trying, found, tuple(trials))
    return Tuned(None, found, tuple(trials))


@functools.partial(jax.jit, static_argnames=("k", "metric", "settings"))
def _sampled_lists(x, y, queries, k, metric, settings):
    """The approximate lists ``[s, k]`` of the rows ``queries`` (in-sample: of x among x, each
    without itself, as in the whole in-sample search)."""
    if y is None:
        return ivf.search_rows(x[queries], x, k, metric, settings, False, query_ids=queries)[1]
    return ivf.search_rows(x[queries], y, k, metric, settings, False)[1]


def _sample_queries(n: int, num_queries: int, key) -> jax.Array:
    """Indices ``[s]`` of ``min(num_queries, n)`` distinct queries drawn from ``key`` (default
    ``jax.random.key(0)``), ascending: the sample both recall measurements use."""
    s = min(checks.check_static_int(num_queries, "num_queries"), n)
    key = jax.random.key(0) if key is None else key
    return jnp.sort(jax.random.choice(key, n, (s,), replace=False)).astype(jnp.int32)
