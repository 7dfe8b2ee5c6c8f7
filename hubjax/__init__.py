"""hubjax: exact k-nearest neighbours, k-occurrence and hubness measures in JAX."""

from hubjax import approximate, distributed, metrics, reduction, sampling, streaming
from hubjax.distances import pairwise_distances
from hubjax.estimates import SampledHubnessReport, sampled_hubness
from hubjax.measures import (
    HubnessReport,
    antihub_occurrence,
    atkinson,
    gini,
    groupie_ratio,
    hub_occurrence,
    hubness,
    k_skewness,
    k_skewness_truncnorm,
    robinhood,
)
from hubjax.neighbors import knn
from hubjax.occurrence import hub_histogram, hub_values, k_occurrence

__version__ = "0.2.0"

_LAZY = ("gan", "sklearn")  # optional dependencies: imported on first attribute access


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"hubjax.{name}")
    raise AttributeError(f"module 'hubjax' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = [
    "HubnessReport",
    "SampledHubnessReport",
    "antihub_occurrence",
    "approximate",
    "distributed",
    "atkinson",
    "gini",
    "groupie_ratio",
    "hub_histogram",
    "hub_occurrence",
    "hub_values",
    "hubness",
    "k_occurrence",
    "k_skewness",
    "k_skewness_truncnorm",
    "knn",
    "metrics",
    "pairwise_distances",
    "reduction",
    "sampling",
    "sampled_hubness",
    "streaming",
    "robinhood",
]
