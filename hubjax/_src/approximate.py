"""The approximate search's front ends: :func:`knn` (what ``hubjax.knn(..., approximate=...)``
runs) and :func:`sampled_recall`; the IVF source itself is :mod:`hubjax._src.ivf`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hubjax._src import arguments, checks, search
from hubjax._src.ivf import IVF, recall

DEFAULT = IVF()  # the settings ``approximate=True`` means


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
    s = min(checks.check_static_int(num_queries, "num_queries"), n)
    key = jax.random.key(0) if key is None else key
    queries = jnp.sort(jax.random.choice(key, n, (s,), replace=False)).astype(jnp.int32)
    exact = search.sampled_lists(x, queries, k, metric, None)
    if lists is None:
        _, lists = knn(x, k=k, metric=metric, settings=settings)
    elif tuple(lists.shape) != (n, k):
        raise ValueError(f"lists must be [n, k] = {(n, k)}, got {tuple(lists.shape)}.")
    return float(recall(lists[queries], exact))
