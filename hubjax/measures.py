"""Hubness measures of a k-occurrence vector and the :class:`HubnessReport`.

Definitions follow scikit-hubness (its ``skhubness.analysis`` measures); each is a pure
function of the counts ``O [m]`` that works under ``jit`` and ``vmap``. Measures are returned
in the default float dtype. A constant k-occurrence (zero variance) gives NaN skewness, as
``scipy.stats.skew`` does.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from hubjax import estimates, neighbors, occurrence
from hubjax import reduction as _reduction
from hubjax._src import checks as _checks
from hubjax._src import mesh as _mesh
from hubjax._src import numerics
from hubjax._src.numerics import truncnorm_moment


def _float(counts) -> jax.Array:
    """Counts as the default float dtype, validated (non-negative when concrete)."""
    counts = _as_counts(counts)
    return counts.astype(jnp.result_type(float))


def _as_counts(counts) -> jax.Array:
    if not hasattr(counts, "dtype"):
        counts = np.asarray(counts)
    if not jnp.issubdtype(counts.dtype, jnp.integer) and not jnp.issubdtype(
        counts.dtype, jnp.floating
    ):
        raise TypeError(f"counts must be numeric, got dtype {counts.dtype}.")
    if np.ndim(counts) != 1 or np.shape(counts)[0] == 0:
        raise ValueError(f"counts must be a non-empty vector, got shape {np.shape(counts)}.")
    if _checks.is_concrete(counts):
        low = np.min(np.asarray(counts))
        if low < 0:
            raise ValueError(f"counts must be non-negative, found {low}.")
    return jnp.asarray(counts)


def _sum(a: jax.Array) -> jax.Array:
    """Pairwise sum: error O(log m) ulps instead of a float32 accumulator's O(m)."""
    return numerics.tree_sum(a)


def _centred(counts) -> tuple[jax.Array, jax.Array]:
    """``(O - mean O, mean O)`` in float; exact for constant integer counts.

    For integers the mean is split as ``q + r / m`` (integer quotient and remainder), so
    ``O - q`` is exact and only ``r / m`` is rounded: equal counts give exactly zero.
    """
    counts = _as_counts(counts)
    dtype = jnp.result_type(float)
    m = counts.shape[0]
    if jnp.issubdtype(counts.dtype, jnp.integer):
        total = jnp.sum(counts)
        q = total // m
        frac = (total - q * m).astype(dtype) / m
        return (counts - q).astype(dtype) - frac, q.astype(dtype) + frac
    o = counts.astype(dtype)
    mean = _sum(o) / m
    return o - mean, mean


def k_skewness(counts: Int[Array, " m"]) -> Float[Array, ""]:
    """Biased sample skewness ``m3 / m2**1.5`` of the k-occurrence (``scipy.stats.skew``).

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> float(hubjax.k_skewness(jnp.array([0, 0, 0, 4])))
      1.1547...
    """
    c, _ = _centred(counts)
    m = c.shape[0]
    m2 = _sum(c * c) / m
    m3 = _sum(c * c * c) / m
    return jnp.where(m2 > 0, m3 / jnp.where(m2 > 0, m2, 1.0) ** 1.5, jnp.nan)


def k_skewness_truncnorm(counts: Int[Array, " m"]) -> Float[Array, ""]:
    """Third raw moment of the standard normal truncated to ``[a, b]`` (scikit-hubness).

    ``a = (0 - mean O) / std(O, ddof=1)`` and ``b = (int64 max - mean O) / std(O, ddof=1)``; b is
    effectively +inf, so the moment is ``(2 phi(a) + a**2 phi(a)) / (1 - Phi(a))``.

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> round(float(hubjax.k_skewness_truncnorm(jnp.array([0, 1, 2, 5]))), 4)
      0.9025
    """
    c, mean = _centred(counts)
    m = c.shape[0]
    std = jnp.sqrt(_sum(c * c) / max(m - 1, 1))
    return truncnorm_moment(mean, std)


def robinhood(counts: Int[Array, " m"]) -> Float[Array, ""]:
    """Robin Hood index ``0.5 * sum|O_i - mean O| / sum O``.

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> float(hubjax.robinhood(jnp.array([0, 0, 2, 2])))
      0.5
    """
    c, mean = _centred(counts)
    return 0.5 * _sum(jnp.abs(c)) / (mean * c.shape[0])


def gini(counts: Int[Array, " m"]) -> Float[Array, ""]:
    """Gini index ``sum_ij |O_i - O_j| / (2 m sum O)``, computed sorted in O(m log m).

    On the sorted counts ``sum_{i<j} (O_(j) - O_(i)) = sum_t (O_(t+1) - O_(t)) t (m - t)``: a
    sum of non-negative terms (no cancellation; equal counts give exactly 0).

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> float(hubjax.gini(jnp.array([0, 0, 0, 4])))
      0.75
    """
    o = jnp.sort(_float(counts))
    m = o.shape[0]
    t = jnp.arange(1, m, dtype=o.dtype)
    pairs = _sum(jnp.diff(o) * (t * (m - t)))
    return pairs / (m * _sum(o))


def atkinson(counts: Int[Array, " m"], *, eps: float = 0.5) -> Float[Array, ""]:
    """Atkinson index ``1 - (mean O**(1-eps))**(1/(1-eps)) / mean O`` (geometric mean at eps=1).

    ``eps`` may be a traced scalar (``jit``/``vmap`` over it).

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> round(float(hubjax.atkinson(jnp.array([1, 1, 4, 4]))), 6)
      0.1
    """
    o = _float(counts)
    m = o.shape[0]
    p = 1.0 - eps  # a Python float, or traced: eps may come from jit/vmap, so no Python branch
    geometric = p == 0
    safe = jnp.where(geometric, 1.0, p)
    general = jnp.where(
        geometric,
        jnp.exp(_sum(jnp.log(o)) / m),
        (_sum(o**safe) / m) ** (1.0 / safe),
    )
    return 1.0 - general / (_sum(o) / m)


def antihub_occurrence(counts: Int[Array, " m"]) -> Float[Array, ""]:
    """Fraction of points that occur in no list (``O_i == 0``).

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> float(hubjax.antihub_occurrence(jnp.array([0, 0, 1, 3])))
      0.5
    """
    return jnp.mean((_float(counts) == 0).astype(jnp.result_type(float)))


def hub_occurrence(counts: Int[Array, " m"], *, k: int, hub_size: float = 2.0) -> Float[Array, ""]:
    """Share of all list entries that point to hubs (``O_i >= hub_size * k``).

    The denominator ``k * n_queries`` equals ``sum O`` (every list has k entries).

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> float(hubjax.hub_occurrence(jnp.array([0, 1, 1, 4]), k=1))
      0.6666...
    """
    o = _float(counts)
    return _sum(jnp.where(o >= hub_size * k, o, 0.0)) / _sum(o)


def groupie_ratio(counts: Int[Array, " m"]) -> Float[Array, ""]:
    """Largest k-occurrence over all list entries: ``max O / (k * n_queries)``.

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> float(hubjax.groupie_ratio(jnp.array([0, 1, 1, 4])))
      0.6666...
    """
    o = _float(counts)
    return jnp.max(o) / _sum(o)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "k_skewness",
        "k_skewness_truncnorm",
        "robinhood",
        "gini",
        "atkinson",
        "antihub_occurrence",
        "hub_occurrence",
        "groupie_ratio",
        "k_occurrence",
        "histogram",
    ],
    meta_fields=["k", "hub_size", "metric"],
)
@dataclasses.dataclass(frozen=True)
class HubnessReport:
    """Hubness of one point set: every measure, the k-occurrence and its histogram.

    A pytree: it passes through ``jit`` and ``vmap`` (batched fields gain a leading axis).
    ``histogram`` has ``n_queries + 1`` bins, the largest possible count plus one, so its shape
    is static.
    """

    k_skewness: jax.Array
    k_skewness_truncnorm: jax.Array
    robinhood: jax.Array
    gini: jax.Array
    atkinson: jax.Array
    antihub_occurrence: jax.Array
    hub_occurrence: jax.Array
    groupie_ratio: jax.Array
    k_occurrence: jax.Array
    histogram: jax.Array
    k: int
    hub_size: float
    metric: str

    MEASURES = (
        "k_skewness",
        "k_skewness_truncnorm",
        "robinhood",
        "gini",
        "atkinson",
        "antihub_occurrence",
        "hub_occurrence",
        "groupie_ratio",
    )

    def measures(self) -> dict[str, float]:
        """The scalar measures as Python floats (needs concrete, unbatched values)."""
        return {name: float(getattr(self, name)) for name in self.MEASURES}

    def __str__(self) -> str:
        rows = [f"HubnessReport(k={self.k}, metric={self.metric!r}, hub_size={self.hub_size})"]
        if np.ndim(self.k_skewness) == 0 and _checks.is_concrete(self.k_skewness):
            rows += [f"  {name:<22} {value: .4f}" for name, value in self.measures().items()]
            rows.append(f"  {'max k-occurrence':<22} {int(jnp.max(self.k_occurrence)):d}")
        return "\n".join(rows)


def report_from_counts(
    counts: Int[Array, " m"], *, k: int, num_queries: int, hub_size: float = 2.0, metric=""
) -> HubnessReport:
    """All measures of a k-occurrence vector from ``num_queries`` lists of length k."""
    return HubnessReport(
        k_skewness=k_skewness(counts),
        k_skewness_truncnorm=k_skewness_truncnorm(counts),
        robinhood=robinhood(counts),
        gini=gini(counts),
        atkinson=atkinson(counts),
        antihub_occurrence=antihub_occurrence(counts),
        hub_occurrence=hub_occurrence(counts, k=k, hub_size=hub_size),
        groupie_ratio=groupie_ratio(counts),
        k_occurrence=counts,
        histogram=occurrence.histogram_of(counts, num_queries),
        k=k,
        hub_size=hub_size,
        metric=metric,
    )


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
        )
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


@functools.partial(jax.jit, static_argnames=("k", "num_queries", "hub_size", "metric"))
def report_of_counts(counts, *, k, num_queries, hub_size=2.0, metric=""):
    """:func:`report_from_counts`, compiled: the same bits as :func:`hubness` gives for the same
    counts (the streamed CLI path uses it)."""
    return report_from_counts(
        counts, k=k, num_queries=num_queries, hub_size=hub_size, metric=metric
    )


@functools.partial(jax.jit, static_argnames=("num_points", "k", "hub_size", "metric"))
def report_of_lists(idx, *, num_points, k, hub_size, metric):
    (idx,), placement = _mesh.gather(idx)
    with _mesh.context(placement):
        counts = occurrence.counts_of(idx, num_points)
        report = report_from_counts(
            counts, k=k, num_queries=idx.shape[0], hub_size=hub_size, metric=metric
        )
    return _mesh.scatter(report, placement)
