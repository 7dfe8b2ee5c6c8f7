"""Metric objects: everything that differs between ``sqeuclidean``, ``euclidean``, ``cosine``
and ``dot`` lives in one class each, resolved once from its name (:func:`resolve`) where a
public function takes its arguments. Below that boundary no code tests a metric's name: it
calls these methods or reads these flags.

Two ways of computing a distance, and the search uses both:

* **Per pair** (:meth:`Metric.pair_values`, evaluated by :mod:`hubjax._src.pairs`):
  ``sum((x - y)**2)`` for the Euclidean metrics, ``0.5 * sum((x/|x| - y/|y|)**2)`` for
  ``cosine`` (equal to ``1 - cos``, without its cancellation), ``-sum(x * y)`` for ``dot``. The
  sum over features is :func:`~hubjax._src.numerics.tree_sum`, so every reported distance is
  bitwise the same however it was found.
* **Ranking** (:meth:`Metric.ranking_operands`): one plain matrix product per tile,
  ``|x'|^2 + |y'|^2 - 2 x'.y'`` on points shifted by a common centre ``x' = x - c`` (the
  Euclidean metrics are translation invariant, so the shift removes the large common offset of
  uncentred data that would otherwise cancel), ``-x.y`` for ``dot``/``cosine``. It only picks
  candidates; :meth:`Metric.ranking_error` bounds its rounding error per query row so the
  finisher can prove (or re-check) that no neighbour was lost.

Scale: the Euclidean and ``dot`` metrics work on the points multiplied by one power of two
(:meth:`Metric.exponent`) that brings the largest coordinate into [0.5, 1), so neither tiny
(1e-30) nor huge (1e30) data underflows or overflows inside; the scale is exact and is undone in
:meth:`Metric.finish`. Reported values that fall outside float32's range there (a squared
distance of 1e-40, say) flush to zero or become inf; the neighbours are still exact.
``cosine`` scales each row by its own power of two before normalising.

Distances are clamped at zero (but ``dot``'s). Adding a metric is one subclass here and its
tests; a metric without a matrix-product ranking could rank by its per-pair values.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from hubjax._src import checks, names, numerics
from hubjax._src.numerics import Prepared, Ranking

NAMES = names.METRICS


class Metric:
    """Base of the metric objects. Instances are immutable, hashable and compare equal by
    class, so they are valid static arguments of ``jax.jit``.

    Flags (class attributes):

    * ``name``: the public name.
    * ``shifted``: translation invariant: the ranking works on points shifted by their centre,
      and data may be centred before a float32 cast.
    * ``scaled``: the points share one power-of-two scale (:meth:`exponent`); else per row.
    * ``product``: per-pair sums are of products (``x * y``), else of squared differences.
    * ``nonnegative``: every distance is >= 0.
    * ``ranked_by``: the metric with the same neighbour order whose distances the k-NN lists
      report more cheaply (``euclidean`` ranks by ``sqeuclidean``).
    * ``similarity``: the distance is a similarity turned around (``-x.y``, ``1 - cos``), so
      the rows of :meth:`similarity_rows` score each other by a plain inner product (the query-bank
      normalisations of :mod:`hubjax._src.banks` need one).
    """

    name: str = ""
    shifted = False
    scaled = True
    product = False
    nonnegative = True
    similarity = False

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))

    def __repr__(self):
        return f"Metric({self.name!r})"

    @property
    def ranked_by(self) -> Metric:
        return self

    # -- preparation ---------------------------------------------------------------------

    def exponent(self, *arrays) -> jax.Array | None:
        """The shared scale exponent of ``arrays`` (None where points scale per row)."""
        largest = functools.reduce(jnp.maximum, [numerics.max_abs(a) for a in arrays])
        return self.exponent_of(largest)

    def exponent_of(self, largest: jax.Array) -> jax.Array | None:
        """The scale exponent for data whose largest finite coordinate is ``largest``."""
        return numerics.scale_exponent(largest)

    def _scale(self, x, dtype, exponent):
        return x if exponent is None else numerics.times_pow2(x, -exponent)

    def prepare(self, x: jax.Array, dtype, exponent=None) -> Prepared:
        """Casts ``x [n, d]`` to the accumulation dtype, scales it and precomputes per-point
        values. ``exponent`` (from :meth:`exponent`) is the common power of two; ``None``
        means no scaling (per-row metrics ignore it)."""
        x = x.astype(dtype)
        finite = numerics.finite_rows(x)
        x = jnp.where(finite[:, None], x, jnp.zeros((), dtype))
        x = numerics.settle(self._scale(x, dtype, exponent))
        sq = numerics.by_row_blocks(lambda r: numerics.tree_sum(r * r), x)
        penalty = jnp.where(finite, jnp.zeros((), dtype), jnp.full((), jnp.inf, dtype))
        return Prepared(x, sq, penalty)

    def prepare_pair(self, x, y):
        """``(xp, yp, exponent)``: both sides cast to the accumulation dtype, scaled by their
        common power of two and prepared; ``yp is xp`` for in-sample work (``y is None``) and
        where ``y is x`` (one array, prepared once: the approximate search of ``knn(x, x)``)."""
        if y is x:
            xp, _, e = self.prepare_pair(x, None)
            return xp, xp, e
        dtype = checks.compute_dtype(x) if y is None else checks.compute_dtype(x, y)
        x = x.astype(dtype)
        y = None if y is None else y.astype(dtype)
        e = self.exponent(x) if y is None else self.exponent(x, y)
        return (*self.prepare_with(x, y, e), e)

    def prepare_with(self, x, y, exponent):
        """``(xp, yp)`` of :meth:`prepare_pair` for a known ``exponent`` (the same bits)."""
        dtype = checks.compute_dtype(x) if y is None else checks.compute_dtype(x, y)
        xp = self.prepare(x.astype(dtype), dtype, exponent)
        return xp, (xp if y is None else self.prepare(y.astype(dtype), dtype, exponent))

    # -- ranking ---------------------------------------------------------------------------

    def centre(self, p: Prepared, axis_name=None) -> jax.Array:
        """The shift ``[d]`` of the ranking (zeros unless :attr:`shifted`)."""
        return jnp.zeros(p.features.shape[1], p.features.dtype)

    @property
    def ranking_scale(self) -> float:
        """The query operands' factor on the features (-2 x' . y' or -x . y)."""
        return 2.0 if self.shifted else 1.0

    def ranking_operands(
        self, p: Prepared, side: str, shift: jax.Array, rows: int | None = None
    ) -> Ranking:
        """Operands whose plain matrix product ranks pairs like the metric: ``[rows, d + 2]``.

        ``query @ reference.T`` equals ``|x'|^2 + |y'|^2 - 2 x'.y'`` (``x' = x - shift``) for
        the shifted metrics and ``-x.y`` for the others, plus both points' penalties, so a
        ranking tile needs no elementwise pass and is symmetric in the two points. Values only
        pick candidates; reported distances are per pair.

        ``rows`` (default n) pads the operands with rows that rank after every real point
        (zero features, offset +inf, as :func:`hubjax._src.numerics.pad_reference`). The
        operands are written in one elementwise pass over the padded shape: built by
        concatenation, XLA kept the unpadded operands as one more ``[n, d]`` array beside the
        padded ones.
        ``norms [n]`` are the real points' (shifted) norms.
        """
        features = p.features
        n, dim = features.shape
        rows = n if rows is None else rows
        offset, norms = self.ranking_offsets(p, shift, rows)
        offset = offset[:, None]
        centred = jnp.pad(features, ((0, rows - n), (0, 2)))
        if self.shifted:
            centred = centred - jnp.pad(shift, (0, 2))[None, :]
        if side == "query":
            centred = -self.ranking_scale * centred
        column = lax.broadcasted_iota(jnp.int32, (1, dim + 2), 1)
        real = lax.broadcasted_iota(jnp.int32, (rows, 1), 0) < n
        # layout: query [-s x', offset, 1], reference [x', 1, offset]
        last = (column == dim) == (side == "query")
        extra = jnp.where(last, offset, jnp.ones((), features.dtype))
        zero = jnp.zeros((), features.dtype)
        ops = jnp.where(column < dim, jnp.where(real, centred, zero), extra)
        return Ranking(ops, norms)

    def ranking_offsets(
        self, p: Prepared, shift: jax.Array, rows: int | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """``(offsets [rows], norms [n])``: the reference operands' last column of
        :meth:`ranking_operands` (``|x'|^2`` plus the penalty for the shifted metrics, the
        penalty otherwise; +inf for the padding rows) and the points' norms ``|x'|``, the same
        bits, without the ``[rows, d + 2]`` operands."""
        n = p.features.shape[0]
        rows = n if rows is None else rows

        def squared(block):
            f = self.ranking_rows(block, shift)
            return jnp.sum(f * f, axis=-1)

        sq = numerics.by_row_blocks(squared, p.features)
        offset = (sq if self.shifted else jnp.zeros_like(sq)) + p.penalty
        return jnp.pad(offset, (0, rows - n), constant_values=jnp.inf), jnp.sqrt(sq)

    def ranking_rows(self, features: jax.Array, shift: jax.Array) -> jax.Array:
        """The feature part ``x'`` of the reference operands of prepared points ``[..., d]``
        (``x - shift`` for the shifted metrics, ``x`` otherwise), the same bits as
        :meth:`ranking_operands`' for the real rows."""
        return features - shift if self.shifted else features

    def query_from_reference(self, operands: jax.Array) -> jax.Array:
        """The query operands of the points whose reference operands ``[..., d + 2]`` are
        given (same layout as :meth:`ranking_operands`; the scaling by -2 or -1 is exact)."""
        dim = operands.shape[-1] - 2
        column = lax.broadcasted_iota(
            jnp.int32, (1,) * (operands.ndim - 1) + (dim + 2,), operands.ndim - 1
        )
        # elementwise, not a concatenation: XLA writes the result as one array (a
        # concatenation also kept the scaled features as another)
        swapped = jnp.where(column == dim, operands[..., -1:], operands[..., dim : dim + 1])
        return jnp.where(column < dim, -self.ranking_scale * operands, swapped)

    def ranking_error(self, query_norms: jax.Array, largest_reference: jax.Array, d: int):
        """Bound ``[b]`` on ``|ranking - distance|`` of each query row against any reference.

        Worst-case rounding of a length ``d + 2`` dot product (any summation order, FMA or
        not): ``gamma = (d + 2 log2 d + 16) eps`` times the sum of the absolute products, at
        most ``(|x'| + max |y'|)**2`` for the shifted ranking and ``|x| max |y|`` otherwise.
        The constant also covers the shift, the norms and the per-pair sums the result is
        checked against. Distances are on the internal (scaled) scale.
        """
        gamma = _gamma(d, query_norms.dtype)
        return 2 * gamma * (query_norms * largest_reference + 1)

    def lowest_distance(self, largest_kept):
        """The smallest distance a point ranked at ``largest_kept`` or beyond can have, before
        rounding."""
        return largest_kept

    def certified(self, kth, largest_kept, bound, d: int):
        """True where no point outside the kept candidates can beat the k-th exact distance.

        ``kth`` is the k-th smallest per-pair distance among the candidates, ``largest_kept``
        the largest ranking value kept (every other point ranks at least there) and ``bound``
        the ranking's error (:meth:`ranking_error`). Rows that fail are re-checked exactly.
        """
        lowest = self.lowest_distance(largest_kept)
        lowest = (lowest - bound) * (1 - pair_error(d, kth.dtype))
        return (lowest > kth) | (largest_kept == jnp.inf)

    def ranking_distance(self, ranking: jax.Array) -> jax.Array:
        """Internal-scale distances from ranking values (no per-pair recomputation; for
        statistics over all pairs, whose rounding the caller accepts)."""
        return jnp.maximum(ranking, 0)

    # -- per pair ----------------------------------------------------------------------------

    def pair_values(self, xr: jax.Array, yc: jax.Array) -> jax.Array:
        """Distances of broadcast pairs ``xr [..., d]`` vs ``yc [..., d]``, no penalties."""
        diff = xr - yc
        return self.from_sums(numerics.tree_sum(diff * diff))

    def from_sums(self, sums: jax.Array) -> jax.Array:
        """Distances from per-pair sums of squared differences (or products: :attr:`product`)."""
        return sums

    def finish_pairs(self, d, x_penalty, y_penalty, x_sq, y_sq):
        """Per-pair distances with both points' penalties, normalised (:meth:`normalise`)."""
        return self.normalise(d + x_penalty + y_penalty)

    def normalise(self, d: jax.Array) -> jax.Array:
        """Clamps at 0 and turns -0.0 into +0.0 so equal distances compare equal bit for bit
        (``lax.top_k`` ranks -0.0 before +0.0). NaN becomes +inf."""
        zero = jnp.zeros((), d.dtype)
        d = jnp.where(jnp.isnan(d), jnp.full((), jnp.inf, d.dtype), d)
        return jnp.where(d > 0, d, zero)

    def self_distance(self, xp: Prepared) -> jax.Array:
        """The exact distance of each point to itself ``[n]`` (internal scale); +inf for
        non-finite points."""
        d = jnp.zeros(xp.features.shape[0], xp.features.dtype)
        return self.normalise(d + xp.penalty)

    def finish(self, d: jax.Array, exponent=None) -> jax.Array:
        """Maps internal distances to reported ones (undoes the scale)."""
        return d if exponent is None else numerics.times_pow2(d, 2 * exponent)

    def similarity_rows(self, x: jax.Array) -> jax.Array:
        """The rows whose inner products are this metric's similarities (``x`` for ``dot``,
        each row over its norm for ``cosine``; a zero row stays zero) ``[n, d]``, in the
        accumulation dtype; rows with NaN/inf become NaN rows. Only for :attr:`similarity`
        metrics."""
        if not self.similarity:
            raise ValueError(f"metric {self.name!r} has no similarity; use 'cosine' or 'dot'.")
        p = self.prepare(x, checks.compute_dtype(x))
        return jnp.where(p.penalty[:, None] == 0, p.features, jnp.nan)


class SqEuclidean(Metric):
    name = "sqeuclidean"
    shifted = True

    def centre(self, p: Prepared, axis_name=None) -> jax.Array:
        """Mean of the finite points ``[d]``; with ``axis_name`` (inside ``shard_map``/``pmap``)
        over all shards' points. Non-finite and padding points have zero features, so the sum
        needs no mask."""
        total = jnp.sum(p.features, axis=0)
        count = jnp.sum(p.penalty == 0)
        if axis_name is not None:
            total, count = jax.lax.psum(total, axis_name), jax.lax.psum(count, axis_name)
        return total / jnp.maximum(count, 1).astype(p.features.dtype)

    def ranking_error(self, query_norms, largest_reference, d):
        return _gamma(d, query_norms.dtype) * (query_norms + largest_reference) ** 2


class Euclidean(SqEuclidean):
    name = "euclidean"

    @property
    def ranked_by(self) -> Metric:
        return SQEUCLIDEAN

    def finish(self, d, exponent=None):
        d = jnp.sqrt(d)
        return d if exponent is None else numerics.times_pow2(d, exponent)


class Cosine(Metric):
    """``1 - cos``; a zero vector has similarity 0 (distance 1) to everything."""

    name = "cosine"
    scaled = False
    similarity = True

    def exponent_of(self, largest):
        return None

    def exponent(self, *arrays):
        return None

    def _scale(self, x, dtype, exponent):
        row_exp = numerics.scale_exponent(
            jnp.max(jnp.abs(x), axis=-1, initial=jnp.zeros((), dtype))
        )
        x = numerics.times_pow2(x, -row_exp[:, None])
        norm = jnp.sqrt(numerics.by_row_blocks(lambda r: numerics.tree_sum(r * r), x))
        # x * (1 / norm), not x / norm: XLA rewrites a division by a broadcast into that form
        # in some fusions and not in others, and the two round differently.
        inverse = 1.0 / jnp.where(norm > 0, norm, jnp.ones_like(norm))
        return jnp.where(norm[:, None] > 0, x * inverse[:, None], jnp.zeros_like(x))

    def lowest_distance(self, largest_kept):
        return largest_kept + 1  # distance = 1 - similarity

    def ranking_distance(self, ranking):
        return jnp.maximum(ranking + 1, 0)

    def from_sums(self, sums):
        return 0.5 * sums

    def finish_pairs(self, d, x_penalty, y_penalty, x_sq, y_sq):
        one = jnp.ones((), d.dtype)
        d = jnp.where((x_sq == 0) | (y_sq == 0), one, d)
        return self.normalise(d + x_penalty + y_penalty)

    def self_distance(self, xp):
        d = jnp.where(xp.sqnorms > 0, 0.0, 1.0).astype(xp.features.dtype)
        return self.normalise(d + xp.penalty)

    def finish(self, d, exponent=None):
        return d


class Dot(Metric):
    """The negative inner product: the largest inner product is nearest."""

    name = "dot"
    product = True
    nonnegative = False
    similarity = True

    def certified(self, kth, largest_kept, bound, d):
        return (largest_kept - bound > kth) | (largest_kept == jnp.inf)

    def ranking_distance(self, ranking):
        return ranking

    def pair_values(self, xr, yc):
        return self.from_sums(numerics.tree_sum(xr * yc))

    def from_sums(self, sums):
        return -sums

    def normalise(self, d):
        zero = jnp.zeros((), d.dtype)
        d = jnp.where(jnp.isnan(d), jnp.full((), jnp.inf, d.dtype), d)
        return jnp.where(d == 0, zero, d)

    def self_distance(self, xp):
        return self.normalise(-xp.sqnorms + xp.penalty)


SQEUCLIDEAN, EUCLIDEAN, COSINE, DOT = SqEuclidean(), Euclidean(), Cosine(), Dot()
_BY_NAME = {m.name: m for m in (SQEUCLIDEAN, EUCLIDEAN, COSINE, DOT)}


def resolve(metric) -> Metric:
    """The metric object of ``metric`` (a name from :data:`NAMES`, or a :class:`Metric`).

    Raises:
      ValueError: an unknown name.
    """
    if isinstance(metric, Metric):
        return metric
    found = _BY_NAME.get(metric) if isinstance(metric, str) else None
    if found is None:
        raise ValueError(f"Unknown metric {metric!r}; expected one of {NAMES}.")
    return found


def _gamma(d: int, dtype) -> float:
    return (d + 2 * math.ceil(math.log2(max(d, 2))) + 16) * numerics.eps(dtype)


def pair_error(d: int, dtype) -> float:
    """Relative error bound of a per-pair sum of squares."""
    return (math.ceil(math.log2(max(d, 2))) + 4) * numerics.eps(dtype)


PRECOMPUTED = "precomputed"


def is_precomputed(metric) -> bool:
    """Whether a scikit-learn ``metric`` parameter says the input is a distance graph."""
    return isinstance(metric, str) and metric == PRECOMPUTED


def from_sklearn(metric, p=2) -> str:
    """A scikit-learn ``metric`` parameter as hubjax's metric name (or ``"precomputed"``):
    ``"minkowski"`` with ``p=2`` is ``"euclidean"``.

    Raises:
      ValueError: other Minkowski powers, unknown names.
    """
    if isinstance(metric, str) and metric == "minkowski":
        if p != 2:
            raise ValueError(
                f"metric='minkowski' is supported with p=2 (Euclidean) only, got p={p}."
            )
        return EUCLIDEAN.name
    if is_precomputed(metric) or (isinstance(metric, str) and metric in _BY_NAME):
        return metric
    raise ValueError(
        f"Unknown metric {metric!r}; expected one of {NAMES}, 'minkowski' (p=2) or 'precomputed'."
    )
