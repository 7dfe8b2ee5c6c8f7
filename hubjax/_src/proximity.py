"""Mutual proximity statistics: over all points (tiled passes) or over candidate lists.

Mutual proximity (Schnitzer et al., JMLR 2012) turns a distance ``d = d(x, y)`` into
``1 - P(D_x > d and D_y > d)``, where ``D_x`` is the distance from x to a random other point.

* Gaussian: ``1 - SF(d; mu_x, sd_x) * SF(d; mu_y, sd_y)``, each point's mean and (population)
  deviation of its distances to *all* other points -- :func:`row_moments`, one tiled pass, memory
  ``O(block * m)``.
* Empiric: ``1 - #{j : d(x, j) > d and d(y, j) > d} / #{j}``, j over the other points
  (``j != x, y``) -- :func:`empiric_tables` + :func:`mp_empiric_tables` over all reference points or
  a fixed sample of them, or :func:`mp_empiric_lists` over what two k-NN lists reveal.

Statistics tiles use the centred matrix-product ranking of :mod:`hubjax.distances` (accurate on
uncentred data); the candidate pairs' own distances stay the exact per-pair ones. Unlike the
neighbour lists, statistics from matrix-product tiles can differ in their last bits between
compiled programs (e.g. on a device mesh); the tests hold them to float32 rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from hubjax._src import numerics

# elements of one statistics intermediate ([rows, width] or [rows, c, width])
_BUDGET = 4 << 20


def _rows_per_block(n: int, width: int) -> int:
    return max(1, min(n, _BUDGET // max(1, width)))


def _blocked(f, n: int, rows: int, *arrays):
    """``f`` on row blocks of ``arrays`` (each ``[n, ...]``), padded; results cut to n rows."""
    nb = -(-n // rows)

    def split(a):
        a = jnp.pad(a, [(0, nb * rows - n)] + [(0, 0)] * (a.ndim - 1))
        return a.reshape(nb, rows, *a.shape[1:])

    starts = jnp.arange(nb, dtype=jnp.int32) * rows
    out = lax.map(lambda args: f(args[0], *args[1:]), (starts, *map(split, arrays)))
    return jax.tree.map(lambda o: o.reshape(nb * rows, *o.shape[2:])[:n], out)


class Operands:
    """Both sides' ranking operands of one call, on a common scale."""

    def __init__(self, x, y, metric):
        xp, yp, self.exponent = metric.prepare_pair(x, y)
        shift = metric.centre(yp)
        self.query = metric.ranking_operands(xp, "query", shift).operands
        ref = yp if y is not None else xp
        self.reference = metric.ranking_operands(ref, "reference", shift).operands
        self.ref_as_query = metric.query_from_reference(self.reference)
        self.query_finite = xp.penalty == 0
        self.ref_finite = ref.penalty == 0
        self.metric = metric

    def tile(self, query_ops, ref_ops):
        """Reported distances ``[b, w]`` of a block of queries to a block of references."""
        t = self.metric.ranking_distance(numerics.ranking_tile(query_ops, ref_ops))
        return self.metric.finish(t, self.exponent)


def row_moments(ops: Operands, *, reference_side: bool, in_sample: bool):
    """Mean and population deviation ``[n]`` of each point's distances to all reference points.

    Args:
      ops: the call's operands.
      reference_side: statistics of the reference points themselves (each excluding itself)
        instead of the queries'.
      in_sample: the queries are the reference points (each excludes itself).
    """
    q = ops.ref_as_query if reference_side else ops.query
    exclude_self = reference_side or in_sample
    n, m = q.shape[0], ops.reference.shape[0]
    cols = jnp.arange(m, dtype=jnp.int32)

    def block(start, qb):
        d = ops.tile(qb, ops.reference)
        ok = ops.ref_finite[None, :] & jnp.isfinite(d)
        if exclude_self:
            ok &= cols[None, :] != (start + jnp.arange(qb.shape[0], dtype=jnp.int32))[:, None]
        # fixed-order sums that padding points (zeros here) leave bitwise unchanged
        count = jnp.maximum(jnp.sum(ok, axis=1, dtype=jnp.int32), 1).astype(d.dtype)
        mean = numerics.point_sum(jnp.where(ok, d, 0)) / count
        dev = jnp.where(ok, d - mean[:, None], 0)
        return mean, jnp.sqrt(numerics.point_sum(dev * dev) / count)

    return _blocked(block, n, _rows_per_block(n, m), q)


def sample_points(m: int, size: int | None) -> jax.Array:
    """Indices ``[s]`` of the reference points the empiric statistics use, ascending.

    All points when ``size`` is None or at least m; otherwise a fixed uniform sample without
    replacement (drawn from ``jax.random.key(0)``, so results are reproducible).
    """
    if size is None or size >= m:
        return jnp.arange(m, dtype=jnp.int32)
    pick = jax.random.choice(jax.random.key(0), m, (size,), replace=False)
    return jnp.sort(pick).astype(jnp.int32)


def empiric_tables(ops: Operands, points: jax.Array, *, reference_side: bool):
    """Distances ``[n, s]`` of the queries (or the reference points) to the statistic points."""
    q = ops.ref_as_query if reference_side else ops.query
    sub = ops.reference[points]
    rows = _rows_per_block(q.shape[0], sub.shape[0])
    return _blocked(lambda _, qb: ops.tile(qb, sub), q.shape[0], rows, q)


def mp_empiric_tables(dq, iq, tq, tr, points, point_ok, own):
    """Empiric mutual proximity ``[n, c]`` of the candidate pairs from distance tables.

    Args:
      dq: exact distances ``[n, c]`` of each query's candidates (inf in empty slots).
      iq: candidate indices ``[n, c]`` (any valid index in empty slots; they are masked later).
      tq: distances ``[n, s]`` of the queries to the statistic points.
      tr: distances ``[m, s]`` of the reference points to the statistic points.
      points: reference indices ``[s]`` of the statistic points.
      point_ok: ``[s]`` whether each statistic point is finite.
      own: ``[n]`` the query's own reference index (in-sample) or -1.
    """
    n, c = dq.shape
    rows = _rows_per_block(n, c * tq.shape[1])

    def block(_, d, i, t, o):
        other = point_ok[None, None, :] & (points[None, None, :] != i[:, :, None])
        other &= points[None, None, :] != o[:, None, None]
        both = (t[:, None, :] > d[:, :, None]) & (tr[i] > d[:, :, None]) & other
        count = jnp.sum(both, axis=-1).astype(d.dtype)
        total = jnp.sum(other, axis=-1).astype(d.dtype)
        return jnp.where(total > 0, (total - count) / jnp.maximum(total, 1), jnp.ones_like(d))

    return _blocked(block, n, rows, dq, iq, tq, own)


def _finite_max(d):
    finite = jnp.isfinite(d)
    return jnp.max(jnp.where(finite, d, -jnp.inf), axis=-1)


def mp_empiric_lists(dq, iq, dr, ir, own, num_others):
    """Empiric mutual proximity ``[n, c]`` from the two k-NN lists of each candidate pair.

    For the pair (x, y = iq[x, t]) at distance d, a point j counts when both ``d(x, j) > d`` and
    ``d(y, j) > d``. Inside a list the distance is known; a point outside x's list is at least
    as far as x's last listed neighbour (so farther than d when d is below it), likewise for y.
    A point whose comparison cannot be decided this way does not count. Exact (equal to the
    all-points statistic) whenever d lies below both lists' last distances.

    Args:
      dq, iq: sorted query lists ``[n, c]`` (inf / -1 in empty slots).
      dr, ir: sorted lists ``[m, c_r]`` of the reference points (each without itself).
      own: ``[n, e]`` reference indices that are the query itself (in-sample) or -1.
      num_others: ``[n]`` number of reference points other than the query itself (the
        denominator, before excluding y).
    """
    n, c = dq.shape
    rows = _rows_per_block(n, c * c * max(c, ir.shape[1]))
    dmax_r = _finite_max(dr)

    def block(_, d, i, o, total):
        valid_x = i >= 0
        safe = jnp.where(valid_x, i, 0)
        ly, dy = ir[safe], dr[safe]  # [b, t, u]
        valid_y = (ly >= 0) & valid_x[:, :, None]
        dmax_x = _finite_max(d)[:, None]  # [b, 1]
        dmax_y = dmax_r[safe]  # [b, t]
        dt = d[:, :, None]
        # j = x's listed neighbours (s), compared with y's list (u): [b, t, s, u]
        match = (ly[:, :, None, :] == i[:, None, :, None]) & valid_y[:, :, None, :]
        in_y = jnp.any(match, axis=-1)  # [b, t, s]
        dy_at = jnp.min(jnp.where(match, dy[:, :, None, :], jnp.inf), axis=-1)
        cand = valid_x[:, None, :] & (i[:, None, :] != i[:, :, None])  # j != y
        gx = d[:, None, :] > dt
        gy = jnp.where(in_y, dy_at > dt, dt < dmax_y[:, :, None])
        count_a = jnp.sum(cand & gx & gy, axis=-1, dtype=jnp.int32)
        seen_a = jnp.sum(cand, axis=-1, dtype=jnp.int32)
        # j = y's listed neighbours not in x's list and not x itself
        in_x = jnp.any(match, axis=2)  # [b, t, u]
        is_own = jnp.any(ly[:, :, :, None] == o[:, None, None, :], axis=-1)
        only_y = valid_y & ~in_x & ~is_own
        count_b = jnp.sum(only_y & (dy > dt) & (dt < dmax_x[:, :, None]), axis=-1, dtype=jnp.int32)
        seen_b = jnp.sum(only_y, axis=-1, dtype=jnp.int32)
        # points in neither list: farther than d from both when d is below both last distances
        others = total.astype(jnp.int32)[:, None] - 1  # without y
        unseen = jnp.maximum(others - seen_a - seen_b, 0)
        count_c = jnp.where((d < dmax_x) & (d < dmax_y), unseen, 0)
        count = (count_a + count_b + count_c).astype(d.dtype)
        denom = jnp.maximum(others, 1).astype(d.dtype)
        return jnp.where(others > 0, (denom - count) / denom, jnp.ones_like(d))

    return _blocked(block, n, rows, dq, iq, own, num_others)
