"""Eager checks of the arguments every search front end takes (``x``, ``y``, ``k``, ``metric``,
``include_self``, ``block_size``, ``check_finite``), written once.

Shapes and static arguments are checked before anything is traced, so the errors are the same
inside and outside ``jax.jit``; values (finiteness) only when the arrays are concrete.
"""

from __future__ import annotations

from hubjax._src import checks
from hubjax._src import metric as _metric


def validate_knn(x, y, k, metric, include_self, check_finite):
    """``(x, y, k, metric)``: the points as arrays, ``k`` as a checked Python int and the
    resolved metric object. Where ``y is x`` the returned ``y`` is the returned ``x`` (one
    conversion, one check; the search then treats them as one array).

    Raises:
      ValueError: unknown metric, bad shapes, ``k`` out of range, ``include_self`` with ``y``,
        non-finite values (concrete inputs with ``check_finite``).
      TypeError: non-numeric inputs, non-integer ``k``.
    """
    metric = _metric.resolve(metric)
    same = y is not None and y is x
    x = checks.as_points(x, "x")
    n = x.shape[0]
    if y is None:
        if include_self:
            k = checks.check_k(k, n, f"x has {n} points and include_self=True counts the point")
        else:
            k = checks.check_k(
                k, n - 1, f"in-sample search excludes the point itself, leaving n - 1 = {n - 1}"
            )
    else:
        if include_self:
            raise ValueError(
                "include_self=True applies to in-sample search (y=None); with y given every "
                "query searches all of y."
            )
        y = x if same else checks.as_points(y, "y")
        checks.check_same_features(x, y)
        k = checks.check_k(k, y.shape[0], f"y has {y.shape[0]} points")
    if check_finite:
        checks.check_finite(x, "x")
        if y is not None and not same:
            checks.check_finite(y, "y")
    return x, y, k, metric


def check_block_size(block_size) -> int | None:
    """``None`` or a Python int >= 1 (the same check in every function that takes it)."""
    if block_size is None:
        return None
    return checks.check_static_int(block_size, "block_size")
