"""Callables as pytrees: weights traced, code static.

A model passed to a jitted function as a *static* argument is hashed by identity: an
``nnx.Module`` updated in place keeps its old weights inside the compiled function, and a new
``functools.partial(model.apply, params)`` recompiles on every call. :func:`split` takes the
callable apart instead: its array leaves (weights) become traced arguments and only the code --
the pytree structure and the non-array leaves -- is static. ``nnx.Module`` and
``jax.tree_util.Partial`` are pytrees, so their weights are traced; a plain function is a single
non-array leaf and stays static (it must not close over weights that change).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np


class Static(NamedTuple):
    """The hashable part of a callable: structure, non-array leaves, where the arrays go."""

    treedef: object
    leaves: tuple
    is_array: tuple


def split(fn) -> tuple[Static | None, tuple]:
    """``(static, arrays)`` of a callable (``(None, ())`` for None)."""
    if fn is None:
        return None, ()
    leaves, treedef = jax.tree.flatten(fn)
    is_array = tuple(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves)
    arrays = tuple(leaf for leaf, a in zip(leaves, is_array, strict=True) if a)
    others = tuple(None if a else leaf for leaf, a in zip(leaves, is_array, strict=True))
    return Static(treedef, others, is_array), arrays


def merge(static: Static | None, arrays: tuple):
    """The callable rebuilt from :func:`split`'s parts (arrays may be tracers)."""
    if static is None:
        return None
    it = iter(arrays)
    leaves = [
        next(it) if a else leaf for leaf, a in zip(static.leaves, static.is_array, strict=True)
    ]
    return jax.tree.unflatten(static.treedef, leaves)
