"""hubjax: exact k-nearest neighbours, k-occurrence and hubness measures in JAX.

Names are imported on first use (PEP 562): ``import hubjax`` costs nothing until a function or
module is touched, so the command line answers ``--help`` and input errors without importing
JAX. ``from hubjax import knn`` and ``hubjax.knn`` work as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.2.0"

# public name -> the module that defines it
_FUNCTIONS = {
    "pairwise_distances": "hubjax.distances",
    "SampledHubnessReport": "hubjax.estimates",
    "sampled_hubness": "hubjax.estimates",
    "HubnessReport": "hubjax.measures",
    "antihub_occurrence": "hubjax.measures",
    "atkinson": "hubjax.measures",
    "gini": "hubjax.measures",
    "groupie_ratio": "hubjax.measures",
    "hub_occurrence": "hubjax.measures",
    "hubness": "hubjax.measures",
    "k_skewness": "hubjax.measures",
    "k_skewness_truncnorm": "hubjax.measures",
    "robinhood": "hubjax.measures",
    "knn": "hubjax.neighbors",
    "hub_histogram": "hubjax.occurrence",
    "hub_values": "hubjax.occurrence",
    "k_occurrence": "hubjax.occurrence",
}
_MODULES = (
    "approximate",
    "distributed",
    "metrics",
    "reduction",
    "retrieval",
    "sampling",
    "streaming",
)
_OPTIONAL = ("gan", "sklearn")  # need optional dependencies; not in __all__

if TYPE_CHECKING:  # what static tools see
    from hubjax import (
        approximate,
        distributed,
        metrics,
        reduction,
        retrieval,
        sampling,
        streaming,
    )
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


def __getattr__(name):
    if name in _FUNCTIONS:
        value = getattr(importlib.import_module(_FUNCTIONS[name]), name)
    elif name in _MODULES or name in _OPTIONAL:
        value = importlib.import_module(f"hubjax.{name}")
    else:
        raise AttributeError(f"module 'hubjax' has no attribute {name!r}")
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__():
    return sorted([*globals(), *_FUNCTIONS, *_MODULES, *_OPTIONAL])


__all__ = [
    "HubnessReport",
    "SampledHubnessReport",
    "antihub_occurrence",
    "approximate",
    "atkinson",
    "distributed",
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
    "retrieval",
    "robinhood",
    "sampled_hubness",
    "sampling",
    "streaming",
]
