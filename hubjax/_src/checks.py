"""Eager input validation shared by the public functions.

Shapes, dtypes and static arguments are checked in Python before anything is traced, so the
errors are the same inside and outside ``jax.jit``. Values (finiteness, index ranges) can only be
checked when the arrays are concrete; under ``jit`` those checks are skipped, as documented in
each public function.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer inside ``jit``/``vmap``)."""
    return not isinstance(x, jax.core.Tracer)


def as_points(x, name: str) -> jax.Array:
    """Returns ``x`` as a rank-2 floating array ``[num_points, num_features]``.

    Integer and boolean inputs are cast to the default float dtype (float32 unless x64 is on).
    Complex and non-numeric inputs raise ``TypeError``.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    dtype = np.dtype(x.dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real-valued, got dtype {dtype}.")
    if not (jnp.issubdtype(dtype, jnp.number) or dtype == np.bool_):
        raise TypeError(f"{name} must be numeric, got dtype {dtype}.")
    if len(x.shape) != 2:
        raise ValueError(
            f"{name} must have shape [num_points, num_features], got shape {tuple(x.shape)}. "
            "Batch independent point sets with jax.vmap."
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}.")
    if isinstance(x, np.ndarray):
        # converted on the host and transferred: jnp.asarray and astype would each compile a
        # small program per shape on the first call
        return jax.device_put(host_float(x))
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def host_float(x: np.ndarray) -> np.ndarray:
    """A NumPy array in the float dtype JAX computes it in (integers and bools: the default
    float; float64 without x64: float32), cast on the host. Values beyond the target's range
    become inf, which the finiteness checks refuse."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        target = jnp.result_type(float)
    else:
        target = jax.dtypes.canonicalize_dtype(x.dtype)
    with np.errstate(over="ignore"):
        return x.astype(target, copy=False)


def compute_dtype(*arrays) -> jnp.dtype:
    """Float dtype that distances are accumulated in: at least float32."""
    wide = any(np.dtype(a.dtype).itemsize > 4 for a in arrays)
    return jnp.dtype(jnp.float64 if wide else jnp.float32)


def check_same_features(x, y) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same number of features, got x {tuple(x.shape)} "
            f"and y {tuple(y.shape)}."
        )


def check_static_int(value, name: str, *, minimum: int = 1) -> int:
    """``value`` as a Python int >= minimum; tracers and non-integers raise ``TypeError``."""
    if isinstance(value, bool) or isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{name} must be a Python int (it fixes output shapes and is static under jit), "
            f"got {type(value).__name__}."
        )
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a Python int, got {value!r}.") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return value


def check_k(k, num_candidates: int, explanation: str) -> int:
    """Checks ``1 <= k <= num_candidates``; ``explanation`` says where the candidates come from."""
    k = check_static_int(k, "k")
    if k > num_candidates:
        raise ValueError(f"k={k} is larger than the {num_candidates} candidates ({explanation}).")
    return k


# Rows checked per step on the host: ``isfinite`` makes a boolean copy of what it reads, which
# for a whole 2 000 x 20 000 input would be 40 MB on top of the caller's peak.
_HOST_CHECK_BYTES = 4 << 20


def _host_nonfinite_rows(host: np.ndarray) -> np.ndarray:
    """``[n]`` bool: rows of ``host [n, d]`` with a NaN or an infinity, a few MiB at a time."""
    rows = max(1, _HOST_CHECK_BYTES // max(1, host.shape[1] * host.dtype.itemsize))
    bad = np.empty(host.shape[0], bool)
    for start in range(0, host.shape[0], rows):
        part = host[start : start + rows]
        if part.dtype.itemsize < 4:  # bfloat16/float16: widened exactly
            part = part.astype(np.float32)
        bad[start : start + rows] = ~np.isfinite(part).all(axis=1)
    return bad


def check_finite(x, name: str, *, skippable: bool = True) -> None:
    """Raises ``ValueError`` naming the rows with NaN/inf when ``x`` is concrete.

    ``skippable``: whether the caller has a ``check_finite`` flag to mention in the message.
    """
    if not is_concrete(x):
        return
    if _on_host(x):  # NumPy, or a CPU array read in place: no compiled program
        bad = _host_nonfinite_rows(np.asarray(x))
    else:
        bad = np.asarray(_nonfinite_rows(x))
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(map(str, rows[:5])) + (", ..." if rows.size > 5 else "")
        skip = (
            ", or pass check_finite=False to skip this check (such rows are then nobody's "
            "neighbour and nobody's query)"
            if skippable
            else ""
        )
        raise ValueError(
            f"{name} has non-finite values (NaN or inf) in {rows.size} row(s): {shown}. "
            f"Drop or impute them{skip}."
        )


@jax.jit
def _nonfinite_rows(x):
    """Rows of ``x [n, d]`` holding NaN or inf ``[n]``: one compiled program per shape (the
    eager ``isfinite``, ``all`` and ``~`` would compile three)."""
    return ~jnp.all(jnp.isfinite(x), axis=1)


def _on_host(x) -> bool:
    """Whether ``x`` can be read as a NumPy array without a device transfer."""
    if isinstance(x, np.ndarray):
        return True
    if not isinstance(x, jax.Array):
        return False
    devices = x.devices()
    return len(devices) == 1 and next(iter(devices)).platform == "cpu"
