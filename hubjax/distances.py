"""Distances: the dense :func:`pairwise_distances`.

Every distance hubjax reports is computed per pair in a fixed summation order, so it is bitwise
the same in :func:`pairwise_distances`, :func:`hubjax.knn` and every other function (how, and
how the neighbour search stays exact while ranking by matrix products:
``docs/architecture.rst``).
"""

from hubjax._src.pairs import pairwise_distances

__all__ = ["pairwise_distances"]
