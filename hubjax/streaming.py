"""Exact k-occurrence of a ``.npy`` file larger than memory, streamed in blocks of rows.

The file is read block by block (``numpy`` reads at an offset; never the whole array). For each
block of queries, every block of the file is searched in turn and the running k + 1 nearest are
merged by (distance, index); the query's own index is then dropped, as in
:func:`hubjax.knn`'s in-sample search. Distances are hubjax's exact per-pair ones, so the counts
equal :func:`hubjax.hub_values` on the whole array (tested bit for bit).

**Memory bound.** Besides the JAX runtime: the read buffer, a host copy of the block being
handed to JAX (never the reused buffer: JAX may read host memory after the call returns) and
two device blocks of ``block_rows x d`` float32 (``block_bytes`` each at most), the engine's
workspace for one block pair (prepared copies of both blocks and their ranking tile: a few
blocks more), the running
lists ``block_rows x (k + 1) x 8`` bytes and the counts ``4 n`` bytes -- nothing that grows with
the part of the file read (tested: the resident set stays flat block after block; measured on
top of a warm runtime, about 80-130 MiB with 2-8 MiB blocks).

**Cost.** ``(n / block_rows)^2`` block pairs, each read from the file: the matrix-product work
of the in-memory search, plus re-reading the file ``n / block_rows`` times (served by the page
cache when it fits).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hubjax._src import checks as _checks
from hubjax._src import counting, float32, search
from hubjax._src import metric as _metric

__all__ = ["NpyFile", "stream_hub_values"]

DEFAULT_BLOCK_BYTES = 64 << 20
_to_device = jax.device_put  # one name for the host-to-device copy (a test watches it)


class NpyFile:
    """A 2-D ``.npy`` file read in row blocks (C order, numeric dtype)."""

    def __init__(self, path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            self.offset = f.tell()
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered arrays cannot be streamed by rows.")
        if dtype.kind not in "biuf":
            raise ValueError(f"{path} is not numeric (dtype {dtype}).")
        if len(shape) == 1:
            shape = (shape[0], 1)
        if len(shape) != 2 or 0 in shape:
            raise ValueError(f"{path} must hold a non-empty 2-D array, got shape {shape}.")
        expected = self.offset + int(np.prod(shape)) * dtype.itemsize
        if self.path.stat().st_size < expected:
            size = self.path.stat().st_size
            raise ValueError(f"{path} is truncated: {size} of {expected} bytes.")
        self.shape, self.dtype = tuple(int(s) for s in shape), dtype

    def rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` read from disk (not mapped), into ``out[: stop - start]``
        when given (a reused buffer: no allocation per block)."""
        n, d = self.shape
        stop = min(stop, n)
        if out is None:
            out = np.empty((stop - start, d), self.dtype)
        view = out[: stop - start]
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * d * self.dtype.itemsize)
            got = f.readinto(memoryview(view).cast("B"))
        if got != view.nbytes:
            raise ValueError(f"{self.path}: short read at row {start}.")
        return view


def _statistics(f: NpyFile, rows: int, metric):
    """First pass: finiteness, and for wide data the column means and the float32 rescaling
    (:func:`hubjax._src.float32.to_float32`'s, computed block by block)."""
    n, d = f.shape
    total = np.zeros(d)
    buffer = np.empty((rows, d), f.dtype)
    for start in range(0, n, rows):
        block = f.rows(start, start + rows, buffer)
        if block.dtype.kind == "f":
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                raise ValueError(
                    f"{f.path} has non-finite values (NaN or inf), first in row "
                    f"{start + bad.argmax()}"
                )
        total += block.sum(axis=0, dtype=np.float64)
    if not float32.is_wide(f.dtype):
        return None, 0
    shift = total / n if metric.shifted else None
    largest, big, small, beyond = 0.0, 0.0, np.inf, []
    limit = float(np.finfo(np.float32).max)
    for start in range(0, n, rows):
        block = f.rows(start, start + rows, buffer).astype(np.float64)
        largest = max(largest, float(np.abs(block - (0 if shift is None else shift)).max()))
        scales = np.abs(block).max(axis=1)
        big = max(big, float(scales.max()))
        small = min(small, float(scales[scales > 0].min(initial=np.inf)))
        beyond += (start + np.flatnonzero(scales > limit)).tolist()
    exponent = float32.float32_exponent(largest)
    if exponent:
        float32.check_rescale(big, small, np.asarray(beyond))
    return shift, exponent


@functools.partial(jax.jit, static_argnames=("k", "metric"))
def _search(q, r, base, best_d, best_i, *, k, metric):
    """Merges the k nearest of ``q`` among ``r`` (global indices from ``base``) into the lists."""
    d, i = search.search(q, r, search.Options(k, metric))
    i = jnp.where(i >= 0, i + base, -1)
    dist = jnp.concatenate([best_d, d], axis=1)
    idx = jnp.concatenate([best_i, i], axis=1)
    key = jnp.where(idx >= 0, idx, jnp.iinfo(jnp.int32).max)
    dist, key = jax.lax.sort((dist, key), dimension=1, num_keys=2)
    return dist[:, :k], jnp.where(key[:, :k] == jnp.iinfo(jnp.int32).max, -1, key[:, :k])


@functools.partial(jax.jit, static_argnames=("k", "num_points"))
def _count_block(best_i, own, counts, *, k, num_points):
    """Drops each query's own index (or the last entry) and adds its k to the counts."""
    lists = search.drop_own(best_i, own, k)
    lists = jnp.where(own[:, None] >= 0, lists, -1)  # padding queries count nothing
    return counts + counting.counts_of(lists, num_points)


def stream_hub_values(
    path,
    *,
    k: int = 10,
    metric: str = "sqeuclidean",
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress=None,
) -> np.ndarray:
    """In-sample k-occurrence ``[n]`` of the points in a ``.npy`` file, read in blocks.

    Args:
      path: a 2-D ``.npy`` file (C order, numeric).
      k: neighbours per point, ``1 <= k <= n - 1``.
      metric: as in :func:`hubjax.knn`.
      block_bytes: largest float32 block of rows held at once (see the module docstring for
        the whole memory bound).
      progress: optional callable ``progress(done_blocks, total_blocks)``.

    Returns:
      int32 numpy array ``[n]``, equal to :func:`hubjax.hub_values` of the whole array.

    Raises:
      ValueError: unreadable, truncated, non-numeric or non-finite data, bad k.

    Example:
      >>> import numpy as np, tempfile, os, hubjax
      >>> x = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
      >>> path = os.path.join(tempfile.mkdtemp(), "x.npy"); np.save(path, x)
      >>> counts = hubjax.streaming.stream_hub_values(path, k=5, block_bytes=16 * 200 * 4)
      >>> bool((counts == np.asarray(hubjax.hub_values(x, k=5))).all())
      True
    """
    metric = _metric.resolve(metric)
    f = NpyFile(path)
    n, d = f.shape
    k = _checks.check_k(k, n - 1, f"in-sample search leaves n - 1 = {n - 1} neighbours")
    rows = max(1, min(n, int(block_bytes) // (4 * d)))
    rows = max(rows, min(n, k + 1))  # every block pair must offer k + 1 candidates
    shift, exponent = _statistics(f, rows, metric)
    starts = list(range(0, n, rows))
    pad_value = np.float32(np.nan)  # padding rows: non-finite, at distance +inf from everything

    buffer = np.empty((rows, d), f.dtype)  # reused: one read buffer for the whole run

    def block(start):
        b = f.rows(start, start + rows, buffer)
        if b.dtype != np.float32:
            b = float32.cast_float32(b, shift, exponent)  # a new array
        elif b.shape[0] == rows:
            # JAX may read a host array after the call returns (and on CPU may alias it):
            # it must get memory that is never written again, not the reused read buffer.
            # (jnp.array does not copy numpy input first.) Measured: without this copy the
            # counts were wrong under CPU load, intermittently.
            b = b.copy()
        if b.shape[0] < rows:
            b = np.concatenate([b, np.full((rows - b.shape[0], d), pad_value, np.float32)])
        return _to_device(b)

    width = k + 1
    counts = jnp.zeros(n, jnp.int32)
    for qi, qs in enumerate(starts):
        q = block(qs)
        best_d = jnp.full((rows, width), jnp.inf, jnp.float32)
        best_i = jnp.full((rows, width), -1, jnp.int32)
        for rs in starts:
            r = q if rs == qs else block(rs)
            best_d, best_i = _search(q, r, jnp.int32(rs), best_d, best_i, k=width, metric=metric)
            # wait: asynchronous dispatch would otherwise keep every block read so far alive
            best_i.block_until_ready()
        own = np.arange(qs, qs + rows)
        own = jnp.asarray(np.where(own < n, own, -1), jnp.int32)
        counts = _count_block(best_i, own, counts, k=k, num_points=n)
        if progress is not None:
            progress(qi + 1, len(starts))
    return np.asarray(counts)
