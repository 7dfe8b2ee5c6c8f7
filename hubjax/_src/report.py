"""The :class:`HubnessReport` of a k-occurrence vector: every measure, the counts and their
histogram, as a pytree."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from hubjax._src import checks as _checks
from hubjax._src import exportable
from hubjax._src import measures as _measures
from hubjax._src import mesh as _mesh
from hubjax._src.counting import counts_of, histogram_of

# The scalar measures a report holds, in the order it prints them.
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


@exportable.register
@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[*MEASURES, "k_occurrence", "histogram"],
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

    MEASURES = MEASURES

    def measures(self) -> dict[str, float]:
        """The scalar measures as Python floats (needs concrete, unbatched values)."""
        return {name: float(getattr(self, name)) for name in self.MEASURES}

    def __str__(self) -> str:
        rows = [f"HubnessReport(k={self.k}, metric={self.metric!r}, hub_size={self.hub_size})"]
        if not _checks.is_concrete(self.k_skewness):
            return rows[0]
        if np.ndim(self.k_skewness) == 0:
            rows += [f"  {name:<22} {value: .4f}" for name, value in self.measures().items()]
            rows.append(f"  {'max k-occurrence':<22} {int(jnp.max(self.k_occurrence)):d}")
            return "\n".join(rows)
        # a vmapped report: one column per set (leading axes flattened)
        sets = list(np.ndindex(*np.shape(self.k_skewness)))
        rows.append(f"  {'set':<22}" + "".join(f" {', '.join(map(str, i)):>9}" for i in sets))
        for name in self.MEASURES:
            values = np.asarray(getattr(self, name))
            rows.append(f"  {name:<22}" + "".join(f" {float(values[i]):>9.4f}" for i in sets))
        top = np.asarray(self.k_occurrence).max(axis=-1)
        rows.append(f"  {'max k-occurrence':<22}" + "".join(f" {int(top[i]):>9d}" for i in sets))
        return "\n".join(rows)


def measure_values(counts: Int[Array, " m"], *, k, hub_size) -> dict[str, jax.Array]:
    """Every scalar measure of a k-occurrence vector, by name (the report's fields, in
    :data:`MEASURES` order). ``k`` and ``hub_size`` may be traced."""
    return {
        "k_skewness": _measures.k_skewness(counts),
        "k_skewness_truncnorm": _measures.k_skewness_truncnorm(counts),
        "robinhood": _measures.robinhood(counts),
        "gini": _measures.gini(counts),
        "atkinson": _measures.atkinson(counts),
        "antihub_occurrence": _measures.antihub_occurrence(counts),
        "hub_occurrence": _measures.hub_occurrence(counts, k=k, hub_size=hub_size),
        "groupie_ratio": _measures.groupie_ratio(counts),
    }


@jax.jit
def measures_of_counts(counts, k, hub_size):
    """:func:`measure_values` compiled with ``k`` and ``hub_size`` traced (both floats): one
    program per shape and dtype of ``counts``. Host callers pass int64 counts under x64 for float64
    measures (the scikit-learn estimators, which match scikit-hubness to 10 decimals)."""
    return measure_values(counts, k=k, hub_size=hub_size)


def report_from_counts(
    counts: Int[Array, " m"], *, k: int, num_queries: int, hub_size: float = 2.0, metric=""
) -> HubnessReport:
    """All measures of a k-occurrence vector from ``num_queries`` lists of length k."""
    return HubnessReport(
        **measure_values(counts, k=k, hub_size=hub_size),
        k_occurrence=counts,
        histogram=histogram_of(counts, num_queries),
        k=k,
        hub_size=hub_size,
        metric=metric,
    )


@functools.partial(jax.jit, static_argnames=("k", "num_queries", "hub_size", "metric"))
def report_of_counts(counts, *, k, num_queries, hub_size=2.0, metric=""):
    """:func:`report_from_counts`, compiled: the same bits as :func:`hubness` gives for the same
    counts (the streamed CLI path uses it)."""
    return report_from_counts(
        counts, k=k, num_queries=num_queries, hub_size=hub_size, metric=metric
    )


@functools.partial(jax.jit, static_argnames=("num_points", "k", "hub_size", "metric"))
def report_of_lists(idx, *, num_points, k, hub_size, metric):
    """The report of the lists ``idx [q, k]`` over ``num_points`` indexed points, compiled."""
    (idx,), placement = _mesh.gather(idx)
    with _mesh.context(placement):
        counts = counts_of(idx, num_points)
        report = report_from_counts(
            counts, k=k, num_queries=idx.shape[0], hub_size=hub_size, metric=metric
        )
    return _mesh.scatter(report, placement)
