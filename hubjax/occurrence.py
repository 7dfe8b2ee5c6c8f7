"""k-occurrence ("hub value") counts and their histogram."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from hubjax import neighbors
from hubjax._src import checks as _checks
from hubjax._src.counting import counts_of, histogram_of


def k_occurrence(indices: Int[Array, "q k"], num_points: int) -> Int[Array, " num_points"]:
    """How often each of ``num_points`` points appears in the neighbour lists ``indices``.

    Args:
      indices: integer neighbour lists ``[q, k]`` (any shape works; every entry is counted).
      num_points: number of indexed points m (static); it fixes the output shape.

    Returns:
      int32 counts ``[num_points]``; they sum to the number of entries in range.

    Raises:
      TypeError: non-integer ``indices`` or ``num_points``.
      ValueError: when ``indices`` is concrete and has entries outside ``[0, num_points)``
        other than -1 (the empty slot :func:`hubjax.knn` returns for non-finite rows), checked
        in the input's own dtype so that int64 indices never wrap. Under ``jit`` such entries
        cannot be checked and are dropped (not counted).

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> hubjax.k_occurrence(jnp.array([[1, 2], [0, 2], [1, 2]]), 4)
      Array([1, 2, 3, 0], dtype=int32)
    """
    num_points = _checks.check_static_int(num_points, "num_points")
    if not hasattr(indices, "dtype"):
        indices = np.asarray(indices)
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"indices must be integers, got dtype {indices.dtype}.")
    if _checks.is_concrete(indices) and np.size(indices):
        # checked in the input's own dtype, before any cast to int32 could wrap it
        host = np.asarray(indices)
        bad = (host < -1) | (host >= num_points)
        if bad.any():
            lo, hi = int(host.min()), int(host.max())
            raise ValueError(
                f"indices must lie in [0, {num_points}) (or be -1 for an empty slot), found "
                f"values in [{lo}, {hi}]."
            )
    elif np.dtype(indices.dtype).itemsize > 4:
        indices = jnp.clip(indices, -1, num_points)  # traced int64: out of range stays out
    return counts_of(jnp.asarray(indices), num_points)


def hub_values(
    x: Float[Array, "n d"],
    *,
    k: int,
    metric: str = "sqeuclidean",
    include_self: bool = False,
    block_size: int | None = None,
    check_finite: bool = True,
    approximate=False,
) -> Int[Array, " n"]:
    """In-sample k-occurrence of every point: in how many of the n k-NN lists it appears.

    Equal to ``k_occurrence(knn(x, k=k, ...)[1], n)``; the counts sum to ``n * k``. With
    ``include_self=True`` every point counts itself once (the paper code's convention, so a
    point nobody else lists has hub value 1); with ``False`` it does not.

    Args:
      x: points ``[n, d]``.
      k: neighbours per list (static); ``k <= n - 1``, or ``k <= n`` with ``include_self``.
      metric, include_self, block_size, check_finite, approximate: as in :func:`hubjax.knn`.

    Returns:
      int32 hub values ``[n]``.

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> x = jnp.array([[0.0], [1.0], [3.0], [4.0]])
      >>> hubjax.hub_values(x, k=1)
      Array([1, 1, 1, 1], dtype=int32)
      >>> hubjax.hub_values(x, k=2)
      Array([1, 3, 3, 1], dtype=int32)
    """
    _, idx = neighbors.knn(
        x,
        k=k,
        metric=metric,
        include_self=include_self,
        block_size=block_size,
        check_finite=check_finite,
        approximate=approximate,
    )
    return counts_of(idx, idx.shape[0])


def hub_histogram(
    counts: Int[Array, " m"], *, max_count: int | None = None
) -> Int[Array, " max_count_plus_1"]:
    """How many points have each k-occurrence value.

    Args:
      counts: non-negative integer counts ``[m]``, e.g. from :func:`hub_values`.
      max_count: last bin (static). ``None`` uses ``max(counts)``, which needs concrete counts
        (under ``jit`` pass it; ``n_queries`` is always a safe bound since a point occurs at most
        once per list). Counts above ``max_count`` are added to the last bin, so the histogram
        always sums to m; it then reads "max_count or more".

    Returns:
      int32 histogram ``[max_count + 1]``; entry c is the number of points with count c.

    Raises:
      ValueError: ``max_count=None`` under ``jit``, negative concrete counts, or counts or
        ``max_count`` beyond the int32 range.
      TypeError: non-integer counts.

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> hubjax.hub_histogram(jnp.array([0, 2, 2, 5]))
      Array([1, 0, 2, 0, 0, 1], dtype=int32)
      >>> hubjax.hub_histogram(jnp.array([0, 2, 2, 5]), max_count=3)
      Array([1, 0, 2, 1], dtype=int32)
    """
    if not hasattr(counts, "dtype"):
        counts = np.asarray(counts)
    if not jnp.issubdtype(counts.dtype, jnp.integer):
        raise TypeError(f"counts must be integers, got dtype {counts.dtype}.")
    if np.ndim(counts) != 1 or np.size(counts) == 0:
        raise ValueError(f"counts must be a non-empty vector, got shape {np.shape(counts)}.")
    if _checks.is_concrete(counts):
        host = np.asarray(counts)  # checked in its own dtype: int64 counts never wrap
        if int(host.min()) < 0:
            raise ValueError(f"counts must be non-negative, found {int(host.min())}.")
        if int(host.max()) > np.iinfo(np.int32).max:
            raise ValueError(
                f"counts up to {int(host.max())} exceed the int32 range of hubjax's counts; "
                "a k-occurrence is at most the number of query lists."
            )
        if max_count is None:
            max_count = int(host.max())
    elif max_count is None:
        raise ValueError("hub_histogram under jit needs a static max_count.")
    max_count = _checks.check_static_int(max_count, "max_count", minimum=0)
    if max_count >= np.iinfo(np.int32).max:
        raise ValueError(f"max_count={max_count} is beyond the int32 range of the histogram.")
    return histogram_of(jnp.asarray(counts), max_count)
