"""Counting of list entries: the k-occurrence of index lists and the histogram of counts,
compiled once per shape and placed back on the user's mesh."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from hubjax._src import mesh as _mesh


@functools.partial(jax.jit, static_argnames=("num_points",))
def counts_of(indices, num_points):
    """How often each of ``num_points`` indices occurs in ``indices [..., k]`` (int32
    ``[num_points]``; entries outside ``[0, num_points)`` are not counted)."""
    (indices,), placement = _mesh.gather(indices)
    with _mesh.context(placement):
        flat = indices.reshape(-1)
        valid = (flat >= 0) & (flat < num_points)
        zeros = jnp.zeros(num_points, jnp.int32)
        counts = zeros.at[jnp.where(valid, flat, 0)].add(valid.astype(jnp.int32))
    return _mesh.scatter(counts, placement)


@functools.partial(jax.jit, static_argnames=("max_count",))
def histogram_of(counts, max_count):
    """How many entries of ``counts [m]`` have each value ``0 ... max_count`` (int32
    ``[max_count + 1]``; larger values count in the last bin)."""
    (counts,), placement = _mesh.gather(counts)
    with _mesh.context(placement):
        return counts_of(jnp.clip(counts, 0, max_count), max_count + 1)
