"""The float32 points hubjax computes on, prepared from wide data (float64, large integers) in
the data's own precision: centred (translation-invariant metrics) and scaled by a power of two,
neither of which changes a neighbour. Used by the command line and :mod:`hubjax.streaming`.
"""

from __future__ import annotations

import numpy as np

from hubjax._src import metric as _metric


def to_float32(data: np.ndarray, metric: str) -> np.ndarray:
    """The float32 points hubjax computes on, prepared in the file's own precision.

    Every metric ranks neighbours the same after a positive rescaling, and the Euclidean ones
    after a translation. So wide data (float64, large integers) is first centred on its column
    means (Euclidean metrics) in float64 -- a common offset such as ``1e6 + noise`` would
    otherwise swallow the noise in the cast -- and then divided by a power of two if its values
    lie beyond float32's range. Neither changes any neighbour list or measure. Data whose rows
    span more than float32 can hold (:func:`check_rescale`) is refused with a ValueError.
    """
    if not is_wide(data.dtype):
        return data.astype(np.float32)
    wide = data.astype(np.float64)
    if _metric.resolve(metric).shifted:
        wide = wide - wide.mean(axis=0)
    exponent = float32_exponent(float(np.abs(wide).max()))
    if exponent:
        scales = np.abs(data).max(axis=1).astype(np.float64)
        beyond = np.flatnonzero(scales > float(np.finfo(np.float32).max))
        check_rescale(scales.max(), scales[scales > 0].min(initial=np.inf), beyond)
    return cast_float32(wide, None, exponent)


# Rows whose largest values differ by more than this cannot share one float32 scale: once the
# largest is brought into range, the squared coordinates of the smallest underflow.
_ROW_SPAN = 2.0**126


def check_rescale(largest: float, smallest: float, beyond: np.ndarray) -> None:
    """Refuses data beyond float32's range whose rows span more than float32 can hold at once.

    A rescaling by a power of two changes no neighbour when every row keeps its resolution, so
    data that is simply large (all rows near 1e40) is rescaled silently. One row at 1e300 among
    rows near 1 is different: brought into range together, the small rows would collapse onto
    each other (exactly equal after the cast). ``largest`` and ``smallest`` are the largest and
    smallest nonzero per-row maxima of ``|x|``; ``beyond`` the rows beyond float32's range.
    """
    if not largest / smallest > _ROW_SPAN:  # smallest > 0 (nonzero maxima only), may be inf
        return
    named = ", ".join(str(int(r)) for r in beyond[:5]) + (", ..." if len(beyond) > 5 else "")
    raise ValueError(
        f"{len(beyond)} row(s) lie beyond float32's range (3.4e38; rows {named}, values up to "
        f"{largest:.3g}) while other rows hold values as small as {smallest:.3g}: float32 cannot "
        "hold both, and scaling would collapse the small rows. Rescale, clip or drop those rows"
    )


def is_wide(dtype) -> bool:
    """Whether a dtype needs :func:`to_float32`'s centring and scaling (float64, wide ints)."""
    return not (dtype == np.float32 or dtype.itemsize <= 2)


def float32_exponent(largest: float) -> int:
    """The power of two that brings values up to ``largest`` within float32's range (0: none)."""
    limit = float(np.finfo(np.float32).max) / 4
    return int(np.frexp(largest / limit)[1]) if largest > limit else 0


def cast_float32(block: np.ndarray, shift, exponent: int) -> np.ndarray:
    """float32 rows: wide data shifted by ``shift`` (None: not) and divided by ``2**exponent``
    in float64 first; narrow data cast directly (the steps of :func:`to_float32`, for a block)."""
    if not is_wide(block.dtype):
        return block.astype(np.float32)
    wide = block.astype(np.float64)
    if shift is not None:
        wide = wide - shift
    if exponent:
        wide = np.ldexp(wide, -exponent)
    return wide.astype(np.float32)
