"""k-NN distance graphs as scikit-learn passes them: validation and fixed-width rows.

A graph is a scipy sparse matrix ``[n_queries, n_indexed]`` whose stored entries are distances
to neighbours (``KNeighborsTransformer``, ``kneighbors_graph``, radius graphs: rows may hold
different numbers of entries), or a dense array of the same shape in which every entry is a
neighbour (a full distance matrix, scikit-learn's ``metric="precomputed"`` convention).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import check_array


class Rows(NamedTuple):
    """A graph's rows sorted by (distance, index), padded with (+inf, -1) to equal width."""

    dist: np.ndarray  # [n, c] float32/float64
    idx: np.ndarray  # [n, c] int64, -1 in padding
    counts: np.ndarray  # [n] stored entries per row
    shape: tuple[int, int]

    @property
    def dtype(self):
        return self.dist.dtype


def rows(graph, *, name: str = "X", min_rows: int = 1) -> Rows:
    """Validates a distance graph and returns its sorted, padded rows.

    Raises:
      ValueError: not two-dimensional, empty, fewer than ``min_rows`` rows, NaN/inf or negative
        distances, non-numeric data (scikit-learn's ``check_array`` messages where it has one).
    """
    graph = check_array(
        graph,
        accept_sparse=True,
        dtype=[np.float64, np.float32],
        ensure_min_samples=min_rows,
        input_name=name,
    )
    if sp.issparse(graph):
        g = sp.csr_matrix(graph)
        if g.ndim != 2 or 0 in g.shape:
            raise ValueError(f"{name} must be a non-empty 2-D graph, got shape {g.shape}.")
        data = _float(g.data, name)
        g = sp.csr_matrix((data, g.indices, g.indptr), shape=g.shape)
        counts = np.diff(g.indptr)
        n = g.shape[0]
        width = max(int(counts.max()), 1)
        row_of = np.repeat(np.arange(n), counts)
        slot = np.arange(len(g.data)) - g.indptr[row_of]
        dist = np.full((n, width), np.inf, data.dtype)
        idx = np.full((n, width), -1, np.int64)
        dist[row_of, slot] = g.data
        idx[row_of, slot] = g.indices
    else:
        dense = np.asarray(graph)
        if dense.ndim != 2 or 0 in dense.shape:
            raise ValueError(
                f"{name} must be a non-empty 2-D distance matrix [n_queries, n_indexed], got "
                f"shape {dense.shape}."
            )
        dist = _float(dense, name).copy()
        n = dist.shape[0]
        idx = np.broadcast_to(np.arange(dist.shape[1]), dist.shape).copy()
        counts = np.full(n, dist.shape[1])
    dist, idx = sort_rows(dist, idx)
    return Rows(dist, idx, counts, tuple(int(s) for s in np.shape(graph)))


def _float(values, name):
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numeric distances, got dtype {values.dtype}.")
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} holds NaN or infinite distances; pass a finite k-NN graph.")
    if np.any(values < 0):
        raise ValueError(
            f"Negative values in data passed to {name} (smallest {values.min():.4g}): a k-NN "
            "graph holds distances >= 0."
        )
    return values


def drop(r: Rows, mask: np.ndarray) -> Rows:
    """``r`` without the entries where ``mask`` is True (rows stay sorted and padded)."""
    keep = ~mask & (r.idx >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")
    dist = np.where(keep, r.dist, np.inf)
    idx = np.where(keep, r.idx, -1)
    dist = np.take_along_axis(dist, order, 1)
    idx = np.take_along_axis(idx, order, 1)
    width = max(int(keep.sum(1).max()), 1)
    return Rows(dist[:, :width], idx[:, :width], keep.sum(1), r.shape)


def neighbour_lists(
    r: Rows, k: int, *, exclude_own: bool, shuffle_ties: bool, rng=None
) -> np.ndarray:
    """The k nearest stored neighbours ``[n, k]`` of each row.

    Args:
      r: the graph's rows.
      k: list length.
      exclude_own: leave out entry ``(i, i)`` (in-sample: the point itself).
      shuffle_ties: order exactly tied distances randomly (``rng``) instead of by index.

    Raises:
      ValueError: a row holds fewer than k neighbours (names k and the smallest row).
    """
    if exclude_own:
        r = drop(r, r.idx == np.arange(r.shape[0])[:, None])
    have = (r.idx >= 0).sum(1)
    if have.min() < k:
        row = int(have.argmin())
        raise ValueError(
            f"k={k} neighbours were asked for, but row {row} of the graph holds only "
            f"{int(have[row])} neighbours{' besides the point itself' if exclude_own else ''}; "
            f"build the graph with n_neighbors >= {k + int(exclude_own)} or pass a smaller k."
        )
    if shuffle_ties:
        key = rng.random(r.idx.shape)
        order = np.lexsort((key, r.dist), axis=1)
        return np.take_along_axis(r.idx, order, 1)[:, :k]
    return r.idx[:, :k]


def sort_rows(values: np.ndarray, idx: np.ndarray, tie: np.ndarray | None = None):
    """Sorts each row by (value, ``tie``, index), invalid entries (``idx < 0``) last."""
    valid = idx >= 0
    key = np.where(valid, values, np.inf)
    keys = [np.where(valid, idx, np.iinfo(np.int64).max)]
    if tie is not None:
        keys.append(np.where(valid, tie, np.inf))
    order = np.lexsort((*keys, key), axis=1)
    return tuple(np.take_along_axis(a, order, 1) for a in (values, idx))


def to_csr(values: np.ndarray, idx: np.ndarray, shape, dtype) -> sp.csr_matrix:
    """A CSR graph of the valid entries (``idx >= 0``), keeping each row's order."""
    values = np.asarray(values, dtype)
    valid = idx >= 0
    indptr = np.concatenate([[0], np.cumsum(valid.sum(1))])
    return sp.csr_matrix((values[valid], idx[valid], indptr), shape=shape)
