"""Hubness measures of a k-occurrence vector.

Definitions follow scikit-hubness (its ``skhubness.analysis`` measures); each is a pure
function of the counts ``O [m]`` that works under ``jit`` and ``vmap``. Measures are returned
in the default float dtype. A constant k-occurrence (zero variance) gives NaN skewness, as
``scipy.stats.skew`` does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from hubjax._src import checks as _checks
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
