"""Row-count buckets: host-side callers pad their points to a few sizes so that new row counts
reuse compiled programs.

The scikit-learn estimators see a new row count in every cross-validation fold and the command
line one in every file; each count would compile the search again (1-3 s on a 2-core CPU). Padded
to :func:`size` rows, counts that share a bucket share one program.

Padding rows are NaN: the search makes a non-finite row nobody's neighbour and nobody's query
(its own list is the sentinel), and leaves it out of the ranking's shift and scale, so the real
rows' neighbours and distances are bitwise those of the unpadded search (``tests/test_buckets.py``
checks every metric and reduction). Callers slice the real rows back out. That is why the real
rows' finiteness is checked here, on the host, in the dtype the search will compute in: a padded
search cannot tell a user's NaN from a padding row.
"""

from __future__ import annotations

import numpy as np

from hubjax._src import checks

# Sizes are m * 2**j for these mantissas: at most 1/4 of a bucket is padding.
_MANTISSAS = (4, 5, 6, 7)
# Below this every count is its own size: padding tiny inputs saves nothing.
_SMALLEST = 16


def size(n: int) -> int:
    """The bucket of ``n`` rows: the smallest ``m * 2**j >= n`` with ``m`` in 4 ... 7 (``n``
    itself below 16). For example 1437 and 1438 rows both take 1536."""
    if n <= _SMALLEST:
        return n
    power = 1 << (n.bit_length() - 3)  # n < 8 * power
    return next(m * power for m in (*_MANTISSAS, 8) if m * power >= n)


def pad(x: np.ndarray, name: str, rows: int | None = None) -> np.ndarray:
    """``x [n, d]`` cast on the host to the float dtype the search computes in, checked finite
    and padded with NaN rows to ``rows`` (default :func:`size` of n): ``[rows, d]``.

    Raises:
      ValueError: ``x`` holds NaN or inf, or values beyond the compute dtype's range (float64
        data beyond float32's range while x64 is off), naming the rows.
    """
    x = checks.host_float(np.asarray(x))
    checks.check_finite(x, name, skippable=False)
    n = x.shape[0]
    rows = size(n) if rows is None else rows
    if rows == n:
        return x
    return np.concatenate([x, np.full((rows - n, x.shape[1]), np.nan, x.dtype)])
