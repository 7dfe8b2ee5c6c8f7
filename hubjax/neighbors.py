"""Exact k-nearest neighbours: :func:`knn`.

The search itself (metric objects, candidate sources, the finisher that makes candidate lists
exact) lives in :mod:`hubjax._src`; ``docs/architecture.rst`` follows a query through it. The
``[n, m]`` distance matrix is never built.
"""

from __future__ import annotations

from jaxtyping import Array, Float, Int

from hubjax._src import approximate as _approximate
from hubjax._src import arguments, ivf, search

__all__ = ["knn"]


def knn(
    x: Float[Array, "n d"],
    y: Float[Array, "m d"] | None = None,
    *,
    k: int,
    metric: str = "sqeuclidean",
    include_self: bool = False,
    block_size: int | None = None,
    check_finite: bool = True,
    approximate=False,
) -> tuple[Float[Array, "n k"], Int[Array, "n k"]]:
    """Exact k nearest neighbours of every row of ``x`` among the rows of ``y`` (or of ``x``).

    Rows of the result are sorted nearest first; equal distances are ordered by the smaller
    index, so the result is deterministic. With ``y=None`` (in-sample search):

    * ``include_self=False`` (default; scikit-hubness, blog recipe): point i is never in its own
      list, even where other points coincide with it (those are ordinary neighbours at
      distance 0). Needs ``k <= n - 1``.
    * ``include_self=True`` (the hubness-prior paper's code): point i is the first of its own k
      neighbours whatever the distances, followed by its k - 1 nearest other points. Needs
      ``k <= n``.

    With ``y`` given every query searches all of ``y``; needs ``k <= m``. ``knn(x, x)`` with
    the same array (object, or tracer under ``jit``) gives those lists too (each point among
    its own neighbours, after any duplicate with a smaller index), computed as one array: one
    device copy and the in-sample search's memory and speed.

    Args:
      x: query points ``[n, d]``. Integer/bool inputs are cast to the default float dtype;
        bf16/fp16 are accumulated in float32.
      y: reference points ``[m, d]`` or ``None`` for in-sample search.
      k: number of neighbours (static).
      metric: ``"sqeuclidean"``, ``"euclidean"``, ``"cosine"`` or ``"dot"`` (static). For
        ``euclidean`` the ranking uses squared distances.
      include_self: in-sample convention, see above (static).
      block_size: rows per block (static); ``None`` picks one per backend (a strip of ranking
        values of about 64 MiB on CPU, 1 GiB on GPUs, 512 MiB on TPUs). Results do not depend
        on it.
      check_finite: when the inputs are concrete, raise if they hold NaN or inf. Under ``jit``
        this check is skipped: a point with non-finite values is then nobody's neighbour and
        nobody's query (its row is the sentinel below).
      approximate: ``False`` (exact), ``True`` or a :class:`hubjax.approximate.IVF` (static):
        search an inverted-file index instead (:mod:`hubjax.approximate`); the neighbours found
        have exact distances but some true neighbours may be missed. ``block_size`` is then
        unused.

    Returns:
      ``(distances [n, k], indices [n, k])``: float32 distances (float64 for float64 inputs
      under x64) and int32 indices into ``y`` (or ``x``). Rows of non-finite queries, and slots
      that have no finite candidate left, hold the sentinel ``(inf, -1)``.

    The neighbours are exact for any data float32 can represent (uncentred, tiny or huge
    scales): they are the k smallest per-pair distances (:mod:`hubjax.distances`), found by a
    shifted matrix-product ranking whose rounding error is bounded per row, with an exact
    re-check of any row the bound cannot certify. Results are bitwise identical for every
    ``block_size``, engine and device count.

    Raises:
      ValueError: k < 1 or k larger than the candidates, rank other than 2, empty inputs,
        mismatched feature dimensions, unknown metric, non-finite values (when checked).
      TypeError: complex or non-numeric inputs, non-integer ``k`` or ``block_size``.

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> x = jnp.array([[0.0], [1.0], [3.0], [4.0]])
      >>> dist, idx = hubjax.knn(x, k=2)
      >>> idx
      Array([[1, 2],
             [0, 2],
             [3, 1],
             [2, 1]], dtype=int32)
      >>> hubjax.knn(x, k=2, include_self=True)[1]
      Array([[0, 1],
             [1, 0],
             [2, 3],
             [3, 2]], dtype=int32)
    """
    if approximate is not False:
        settings = ivf.as_settings(approximate)
        if settings is not None:
            return _approximate.knn(
                x,
                y,
                k=k,
                metric=metric,
                include_self=include_self,
                settings=settings,
                check_finite=check_finite,
            )
    x, y, k, metric = arguments.validate_knn(x, y, k, metric, include_self, check_finite)
    options = search.Options(
        k,
        metric,
        include_self=bool(include_self),
        block_size=arguments.check_block_size(block_size),
    )
    return search.knn(x, y, options)
