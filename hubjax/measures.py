"""Hubness measures of a k-occurrence vector, the :class:`HubnessReport` and :func:`hubness`
(the search and the measures in one call).

Definitions follow scikit-hubness (its ``skhubness.analysis`` measures); each is a pure
function of the counts ``O [m]`` that works under ``jit`` and ``vmap``. Measures are returned
in the default float dtype. A constant k-occurrence (zero variance) gives NaN skewness, as
``scipy.stats.skew`` does.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jaxtyping import Array, Float

from hubjax import estimates, neighbors
from hubjax import reduction as _reduction
from hubjax._src import arguments, ivf, search
from hubjax._src import mesh as _mesh
from hubjax._src.counting import counts_of
from hubjax._src.measures import (
    antihub_occurrence,
    atkinson,
    gini,
    groupie_ratio,
    hub_occurrence,
    k_skewness,
    k_skewness_truncnorm,
    robinhood,
)
from hubjax._src.numerics import truncnorm_moment
from hubjax._src.report import HubnessReport, report_from_counts, report_of_counts, report_of_lists

__all__ = [
    "HubnessReport",
    "antihub_occurrence",
    "atkinson",
    "gini",
    "groupie_ratio",
    "hub_occurrence",
    "hubness",
    "k_skewness",
    "k_skewness_truncnorm",
    "neighbour_lists",
    "report_from_counts",
    "report_of_counts",
    "report_of_lists",
    "robinhood",
    "truncnorm_moment",
]


def hubness(
    x: Float[Array, "n d"],
    y: Float[Array, "m d"] | None = None,
    *,
    k: int = 10,
    metric: str = "sqeuclidean",
    hub_size: float = 2.0,
    include_self: bool = False,
    block_size: int | None = None,
    check_finite: bool = True,
    reduction: str | None = None,
    candidates: int = 50,
    reduction_params: dict | None = None,
    num_queries: int | None = None,
    key: jax.Array | None = None,
    approximate=False,
    min_share: float = estimates.MIN_SHARE,
):
    """Hubness report of a point set: k-NN lists, k-occurrence, histogram and every measure.

    In-sample (``y=None``) the k-occurrence counts how often each point of ``x`` is in the other
    points' lists. With ``y`` given, each row of ``x`` queries ``y`` and the k-occurrence is over
    the m points of ``y``.

    Args:
      x: query points ``[n, d]``.
      y: indexed points ``[m, d]`` or ``None``.
      k: neighbours per list (static).
      metric, include_self, block_size, check_finite: as in :func:`hubjax.knn`.
      hub_size: a hub occurs at least ``hub_size * k`` times (static).
      reduction: ``None``, or a method of :func:`hubjax.reduction.knn`; the report is then
        computed on the re-ranked lists (which never contain the point itself; ``include_self``
        must be False).
      candidates: primary neighbours per point for the reduction (static).
      reduction_params: extra keyword arguments of the reduction, e.g. ``{"local_k": 7}``.
      num_queries: estimate from this many random queries instead (in-sample only, with
        ``key``): returns :func:`hubjax.sampled_hubness`'s report, whose ``k_skewness`` comes
        from unbiased moments, with bootstrap intervals.
      key: PRNG key drawing the queries for ``num_queries``.
      min_share: with ``num_queries``, the smallest share of the points it may be (10 % by
        default; see :func:`hubjax.sampled_hubness`).
      approximate: as in :func:`hubjax.knn`: the report of approximate lists (also the
        reduction's candidates).

    Returns:
      :class:`HubnessReport` with scalar measures, ``k_occurrence [m]`` and
      ``histogram [n + 1]``; with ``num_queries``, a :class:`hubjax.SampledHubnessReport`.

    Example:
      >>> import jax, hubjax
      >>> x = jax.random.normal(jax.random.key(0), (500, 64))
      >>> report = hubjax.hubness(x, k=10)
      >>> int(report.k_occurrence.sum())
      5000
      >>> bool(report.k_skewness > 0.5)
      True
    """
    if num_queries is not None or key is not None:
        if num_queries is None or key is None:
            raise ValueError("sampled estimates need both num_queries and a PRNG key.")
        if y is not None or include_self or reduction is not None:
            raise ValueError(
                "num_queries estimates in-sample hubness (y=None, include_self=False, no "
                "reduction)."
            )
        return estimates.sampled_hubness(
            x,
            k=k,
            num_queries=num_queries,
            key=key,
            metric=metric,
            hub_size=hub_size,
            block_size=block_size,
            check_finite=check_finite,
            min_share=min_share,
        )
    if reduction is None and ivf.as_settings(approximate) is None:
        # the exact search and the report as one compiled program
        x, y, k, resolved = arguments.validate_knn(x, y, k, metric, include_self, check_finite)
        options = search.Options(
            k,
            resolved,
            include_self=bool(include_self),
            block_size=arguments.check_block_size(block_size),
        )
        return _exact_report(x, y, options=options, hub_size=float(hub_size), metric=metric)
    idx, num_points = neighbour_lists(
        x,
        y,
        k=k,
        metric=metric,
        include_self=include_self,
        block_size=block_size,
        check_finite=check_finite,
        reduction=reduction,
        candidates=candidates,
        reduction_params=reduction_params,
        approximate=approximate,
    )
    return report_of_lists(
        idx, num_points=num_points, k=int(k), hub_size=float(hub_size), metric=metric
    )


@functools.partial(jax.jit, static_argnames=("options", "hub_size", "metric"))
def _exact_report(x, y, options, hub_size, metric):
    """:func:`hubness`'s exact path: the search, the k-occurrence and the report in one program
    (as two, a first call compiled both), on the user's mesh as :func:`hubjax.knn`."""
    (x, y), placement = _mesh.gather(x, y)
    with _mesh.context(placement):
        _, idx = search.search(x, y, options)
        num_points = x.shape[0] if y is None else y.shape[0]
        report = report_from_counts(
            counts_of(idx, num_points),
            k=options.k,
            num_queries=idx.shape[0],
            hub_size=hub_size,
            metric=metric,
        )
    return _mesh.scatter(report, placement)


def neighbour_lists(
    x,
    y,
    *,
    k,
    metric,
    include_self,
    block_size,
    check_finite,
    reduction,
    candidates,
    reduction_params,
    approximate=False,
):
    """The lists a report counts (plain or reduced) and the number of indexed points."""
    if reduction is None:
        _, idx = neighbors.knn(
            x,
            y,
            k=k,
            metric=metric,
            include_self=include_self,
            block_size=block_size,
            check_finite=check_finite,
            approximate=approximate,
        )
    else:
        if include_self:
            raise ValueError("include_self=True cannot be combined with a hubness reduction.")
        _, idx = _reduction.knn(
            x,
            y,
            k=k,
            method=reduction,
            candidates=candidates,
            metric=metric,
            block_size=block_size,
            check_finite=check_finite,
            approximate=approximate,
            **(reduction_params or {}),
        )
    return idx, (idx.shape[0] if y is None else np.shape(y)[0])
