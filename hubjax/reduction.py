"""Hubness reduction: re-rank exact k-NN candidates by a secondary distance.

:func:`knn` retrieves the exact ``candidates`` nearest neighbours of every query (never the query
itself in-sample), computes a secondary distance for each candidate pair from neighbourhood
statistics, and keeps the k best by (secondary distance, index). Notation: ``d = d(x, y)`` is the
primary distance of the chosen metric; ``D_x`` is x's sorted candidate list (c distances); a
reference point's statistics come from its own in-sample list in the reference set (itself
excluded).

Methods (``local_k`` defaults to 5, or 10 for ``csls``):

* ``"mp_empiric"`` -- mutual proximity, empiric (Schnitzer et al., JMLR 2012):
  ``1 - #{j : d(x, j) > d and d(y, j) > d} / #{j}`` over the reference points ``j != x, y``.
* ``"mp_gaussian"`` -- mutual proximity with Gaussian marginals (Schnitzer et al. 2012):
  ``1 - SF(d; mu_x, sd_x) * SF(d; mu_y, sd_y)``, mean and population deviation of each point's
  distances to the reference points (itself excluded); SF is the normal survival function.
* ``"local_scaling"`` -- Zelnik-Manor & Perona (NIPS 2004): ``1 - exp(-d^2 / (s_x s_y))``, with
  ``s_x`` the distance to x's ``local_k``-th neighbour.
* ``"nicdm"`` -- non-iterative contextual dissimilarity (Jegou et al., TPAMI 2010):
  ``d / sqrt(m_x m_y)``, ``m_x`` the mean distance to x's ``local_k`` nearest neighbours.
* ``"dis_sim_local"`` -- DisSimLocal (Hara et al., AAAI 2016), Euclidean metrics only:
  ``|x - y|^2 - |x - c_x|^2 - |y - c_y|^2``, ``c_x`` the centroid of x's ``local_k`` nearest
  reference points.
* ``"dis_sim_global"`` -- DisSimGlobal (Hara et al. 2016), Euclidean metrics only:
  ``|x - y|^2 - |x - c|^2 - |y - c|^2``, ``c`` the mean of the reference points.
* ``"csls"`` -- cross-domain similarity local scaling (Conneau et al., ICLR 2018), written as a
  distance: ``2 d - r_x - r_y``, ``r_x`` the mean distance from x to its ``local_k`` nearest
  reference points and ``r_y`` the mean distance from y to its ``local_k`` nearest queries
  (for cosine this is ``r_x + r_y - 2 cos``, the paper's CSLS negated, up to a constant).

Mutual proximity statistics (parameter ``stats``):

* ``"all"`` (default, as published): each point's statistics are over *all* reference points.
  Gaussian: exact, one extra tiled pass over all pairs (memory ``O(block * m)``). Empiric: over
  all reference points when there are at most ``stats_sample`` (default 2048) of them, otherwise
  over a fixed uniform sample of ``stats_sample`` reference points (drawn from
  ``jax.random.key(0)``; memory ``(n + m) * stats_sample`` floats).
* ``"candidates"``: only what the ``candidates`` nearest neighbours reveal. Gaussian: moments of
  the c candidate distances. Empiric: points in either list are compared with their known
  distances, points in neither list count when d lies below both lists' last distances (so the
  value is exact in that case). Cheaper, but with few candidates it can *raise* hubness.

Ties of the secondary distance (frequent for mutual proximity) are broken by the primary
distance, then by index. Zero scales (duplicates) are handled without NaN: a zero distance
stays the smallest secondary distance.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import erfc
from jaxtyping import Array, Float, Int

from hubjax._src import arguments, ivf, search
from hubjax._src import checks as _checks
from hubjax._src import mesh as _mesh
from hubjax._src import metric as _metric
from hubjax._src import names as _names
from hubjax._src import proximity as _proximity

__all__ = [
    "METHODS",
    "Settings",
    "knn",
    "order",
    "secondary",
    "dis_sim_local",
    "dis_sim_global",
    "check_method",
]

METHODS = _names.REDUCTIONS
_DEFAULT_LOCAL_K = {"csls": 10}
USES_LOCAL_K = ("local_scaling", "nicdm", "dis_sim_local", "csls")
MUTUAL_PROXIMITY = ("mp_empiric", "mp_gaussian")
_EUCLIDEAN_ONLY = ("dis_sim_local", "dis_sim_global")
STATS = ("all", "candidates")


class Settings(NamedTuple):
    """A method's validated parameters (what :func:`check_method` returns)."""

    local_k: int
    stats: str
    stats_sample: int | None
    approximate: object = None  # hubjax.approximate.IVF of the primary search, or None


def check_method(method: str, metric: str, params: dict) -> Settings:
    """Validates a reduction method and its parameters.

    ``params`` may hold ``local_k`` (methods with local statistics), ``stats`` and
    ``stats_sample`` (mutual proximity). Raises ValueError/TypeError naming the bad value.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown reduction method {method!r}; expected one of {METHODS}.")
    allowed = set()
    if method in USES_LOCAL_K:
        allowed |= {"local_k"}
    if method in MUTUAL_PROXIMITY:
        allowed |= {"stats", "stats_sample"}
    unknown = set(params) - allowed
    if unknown:
        raise TypeError(
            f"Unknown parameter(s) for {method!r}: {sorted(unknown)}; it takes "
            f"{sorted(allowed) or 'none'}."
        )
    resolved = _metric.resolve(metric)
    if method in _EUCLIDEAN_ONLY and not resolved.shifted:
        raise ValueError(f"{method} needs a Euclidean metric, got {resolved.name!r}.")
    if method in ("local_scaling", "nicdm") and not resolved.nonnegative:
        raise ValueError(
            f"{method} needs non-negative distances; metric {resolved.name!r} has none."
        )
    local_k = params.get("local_k", _DEFAULT_LOCAL_K.get(method, 5))
    local_k = _checks.check_static_int(local_k, "local_k")
    stats = params.get("stats", "all")
    if stats not in STATS:
        raise ValueError(f"stats must be one of {STATS}, got {stats!r}.")
    sample = params.get("stats_sample", 2048)
    if sample is not None:
        sample = _checks.check_static_int(sample, "stats_sample", minimum=3)
    return Settings(local_k, stats, sample)


def knn(
    x: Float[Array, "n d"],
    y: Float[Array, "m d"] | None = None,
    *,
    k: int,
    method: str,
    candidates: int = 50,
    metric: str = "sqeuclidean",
    block_size: int | None = None,
    check_finite: bool = True,
    approximate=False,
    **params,
) -> tuple[Float[Array, "n k"], Int[Array, "n k"]]:
    """k nearest neighbours under a hubness-reducing secondary distance.

    Args:
      x: queries ``[n, d]``.
      y: reference points ``[m, d]``; ``None`` for in-sample search (lists never contain the
        query itself).
      k: neighbours to return (static); ``k <= candidates``.
      method: one of :data:`METHODS` (see the module docstring for formulas and references).
      candidates: exact primary neighbours retrieved per point (static); the k results are
        re-ranked from them. Clipped to the available candidates (``n - 1`` in-sample,
        ``m - 1`` with ``y``, since reference statistics come from in-sample lists of ``y``).
      metric: primary metric (static), as in :func:`hubjax.knn`.
      block_size, check_finite: as in :func:`hubjax.knn`.
      approximate: as in :func:`hubjax.knn`: the primary candidates (and the reference lists)
        come from the approximate search; the statistics over all points stay exact.
      **params: ``local_k`` -- neighbourhood size of the local statistics (static,
        <= candidates); for mutual proximity ``stats`` -- ``"all"`` (default) or
        ``"candidates"`` and ``stats_sample`` -- reference points of the empiric statistics
        (default 2048, ``None`` for all); see the module docstring.

    Returns:
      ``(secondary_distances [n, k], indices [n, k])``, sorted by (secondary distance, primary
      distance, index).

    Raises:
      ValueError / TypeError: as :func:`hubjax.knn`, plus unknown methods or parameters,
        ``k > candidates``, ``local_k > candidates``, a method that does not fit the metric.
        Checked eagerly (shapes and static values); finiteness as :func:`hubjax.knn`.

    Example:
      >>> import jax, hubjax
      >>> x = jax.random.normal(jax.random.key(0), (300, 50))
      >>> dist, idx = hubjax.reduction.knn(x, k=5, method="mp_gaussian", candidates=30)
      >>> idx.shape
      (300, 5)
      >>> bool((idx != jax.numpy.arange(300)[:, None]).all())
      True
    """
    settings = check_method(method, metric, params)
    local_k = settings.local_k
    x, y, _, metric = arguments.validate_knn(x, y, 1, metric, False, check_finite)
    num_ref = x.shape[0] if y is None else y.shape[0]
    if num_ref < 2:
        raise ValueError("hubness reduction needs at least 2 reference points.")
    candidates = min(_checks.check_static_int(candidates, "candidates"), num_ref - 1)
    k = _checks.check_k(k, candidates, f"candidates={candidates} primary neighbours per point")
    if method in USES_LOCAL_K:
        if local_k > candidates:
            raise ValueError(
                f"local_k={local_k} is larger than candidates={candidates} (with "
                f"{num_ref} reference points at most {num_ref - 1} candidates exist); pass a "
                "smaller local_k."
            )
        if method == "csls" and y is not None and local_k > x.shape[0]:
            raise ValueError(
                f"csls averages each reference point's local_k={local_k} nearest queries, but "
                f"there are only {x.shape[0]} queries; pass local_k <= {x.shape[0]}."
            )
    else:
        local_k = 1  # unused: keep it out of the static arguments
    if method not in MUTUAL_PROXIMITY:
        settings = Settings(local_k, "all", None)
    elif method == "mp_gaussian" or settings.stats == "candidates":
        settings = Settings(local_k, settings.stats, None)
    else:
        settings = Settings(local_k, settings.stats, settings.stats_sample)
    block_size = arguments.check_block_size(block_size)
    if approximate is not False:
        found = ivf.as_settings(approximate)
        if found is not None:
            settings = settings._replace(approximate=found.validate(num_ref))
    return _reduced_knn(
        x,
        y,
        k=k,
        method=method,
        candidates=candidates,
        metric=metric,
        settings=settings,
        block_size=block_size,
    )


def _primary(x, y, k, metric, block_size, settings):
    if settings.approximate is not None:
        found = settings.approximate.validate(len(y if y is not None else x))
        return search.knn(x, y, search.Options(k, metric, approximate=found))
    return search.knn(x, y, search.Options(k, metric, block_size=block_size))


@functools.partial(
    jax.jit,
    static_argnames=("k", "method", "candidates", "metric", "settings", "block_size"),
)
def _reduced_knn(x, y, *, k, method, candidates, metric, settings, block_size):
    (x, y), placement = _mesh.gather(x, y)
    with _mesh.context(placement):
        out = _reduced_core(x, y, k, method, candidates, metric, settings, block_size)
    return _mesh.scatter(out, placement)


def _reduced_core(x, y, k, method, candidates, metric, settings, block_size):
    local_k = settings.local_k
    in_sample = y is None
    ref = x if in_sample else y
    dq, iq = _primary(x, y, candidates, metric, block_size, settings)
    valid = iq >= 0  # -1: an empty slot (non-finite points under check_finite=False)
    safe = jnp.where(valid, iq, 0)
    n = x.shape[0]
    own = jnp.arange(n, dtype=jnp.int32) if in_sample else jnp.full((n,), -1, jnp.int32)
    if method in _EUCLIDEAN_ONLY:
        if method == "dis_sim_local":
            ir = iq if in_sample else _primary(ref, None, local_k, metric, block_size, settings)[1]
            s = dis_sim_local(x, ref, safe, jnp.where(ir >= 0, ir, 0), local_k)
        else:
            s = dis_sim_global(x, ref, safe)
    elif method in MUTUAL_PROXIMITY and settings.stats == "all":
        s = _mp_all_points(x, y, dq, safe, own, method, metric, settings.stats_sample)
    else:
        # the reference points' own lists (for csls: to their nearest queries)
        if in_sample:
            dr, ir = dq, iq
        elif method == "csls":
            dr, ir = _primary(ref, x, local_k, metric, block_size, settings)
        else:
            dr, ir = _primary(ref, None, candidates, metric, block_size, settings)
        s = secondary(method, dq, safe, dr, local_k, ir=ir, own=own, num_ref=_finite_count(ref))
    s = jnp.where(valid, s, jnp.full((), jnp.inf, s.dtype))
    s, idx = order(s, dq, iq, k)
    return s, jnp.where(s == jnp.inf, -1, idx)


def _finite_count(ref):
    return jnp.sum(jnp.all(jnp.isfinite(ref), axis=1)).astype(jnp.int32)


def _mp_all_points(x, y, dq, iq, own, method, metric, sample):
    """Mutual proximity with each point's statistics over all (or sampled) reference points."""
    ops = _proximity.Operands(x, y, metric)
    in_sample = y is None
    if method == "mp_gaussian":
        mu_r, sd_r = _proximity.row_moments(ops, reference_side=True, in_sample=in_sample)
        if in_sample:
            mu_q, sd_q = mu_r, sd_r
        else:
            mu_q, sd_q = _proximity.row_moments(ops, reference_side=False, in_sample=False)
        return _gaussian(dq, mu_q[:, None], sd_q[:, None], mu_r[iq], sd_r[iq])
    m = ops.reference.shape[0]
    points = _proximity.sample_points(m, sample)
    tr = _proximity.empiric_tables(ops, points, reference_side=True)
    tq = tr if in_sample else _proximity.empiric_tables(ops, points, reference_side=False)
    return _proximity.mp_empiric_tables(dq, iq, tq, tr, points, ops.ref_finite[points], own)


def order(s: jax.Array, primary: jax.Array, idx: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The k smallest secondary distances per row; ties by primary distance, then index.

    Secondary distances tie often (mutual proximity's ranks, saturated probabilities); the
    primary distance keeps such ties meaningful instead of favouring low indices.
    """
    s = jnp.where(jnp.isnan(s), jnp.full((), jnp.inf, s.dtype), s)
    s, _, idx = jax.lax.sort((s, primary, idx), dimension=-1, num_keys=3)
    return s[:, :k], idx[:, :k]


def _safe_div(num, den):
    """``num / den`` with 0 / 0 = 0 and x / 0 = inf for x > 0."""
    safe = jnp.where(den > 0, den, jnp.ones_like(den))
    inf = jnp.full((), jnp.inf, num.dtype)
    return jnp.where(den > 0, num / safe, jnp.where(num == 0, jnp.zeros_like(num), inf))


def secondary(
    method: str,
    dq: jax.Array,
    iq: jax.Array,
    dr: jax.Array,
    local_k: int,
    *,
    ir: jax.Array | None = None,
    own: jax.Array | None = None,
    num_ref: jax.Array | int | None = None,
) -> jax.Array:
    """Secondary distances ``[n, c]`` of the candidate pairs ``(x, iq[x, j])`` from lists only.

    Mutual proximity here uses the ``"candidates"`` statistics (see the module docstring).

    Args:
      method: any of :data:`METHODS` but the DisSim ones.
      dq: sorted primary distances ``[n, c]`` of each query's candidates (inf in empty slots).
      iq: candidate indices ``[n, c]`` into the reference set.
      dr: sorted primary distances ``[m, c_r]`` of each reference point's own list (for
        ``csls``: to its nearest queries).
      local_k: neighbourhood size of the local statistics.
      ir: indices ``[m, c_r]`` of the reference lists (-1 in empty slots); ``mp_empiric`` only.
      own: ``[n]`` or ``[n, e]`` reference indices that are the query itself (-1: none);
        ``mp_empiric`` only.
      num_ref: number of (finite) reference points; ``mp_empiric`` only.
    """
    if method == "mp_empiric":
        if ir is None or own is None or num_ref is None:
            raise ValueError("mp_empiric needs ir, own and num_ref.")
        own = own[:, None] if own.ndim == 1 else own
        total = jnp.asarray(num_ref, jnp.int32) - jnp.sum(own >= 0, axis=1, dtype=jnp.int32)
        return _proximity.mp_empiric_lists(dq, iq, dr, ir, own, total.astype(jnp.int32))
    if method == "mp_gaussian":
        mu_q, sd_q = _finite_stats(dq)
        mu_r, sd_r = _finite_stats(dr)
        return _gaussian(dq, mu_q[:, None], sd_q[:, None], mu_r[iq], sd_r[iq])
    if method == "local_scaling":
        scale = dq[:, local_k - 1][:, None] * dr[:, local_k - 1][iq]
        return 1.0 - jnp.exp(-_safe_div(dq * dq, scale))
    if method == "nicdm":
        mean_q = dq[:, :local_k].mean(1)[:, None]
        mean_r = dr[:, :local_k].mean(1)[iq]
        return _safe_div(dq, jnp.sqrt(mean_q * mean_r))
    if method == "csls":
        return 2.0 * dq - dq[:, :local_k].mean(1)[:, None] - dr[:, :local_k].mean(1)[iq]
    raise ValueError(f"no secondary() formula for {method!r}")


def _gaussian(d, mu_x, sd_x, mu_y, sd_y):
    return 1.0 - _normal_sf(d, mu_x, sd_x) * _normal_sf(d, mu_y, sd_y)


def _finite_stats(d):
    """Mean and population deviation of each row's finite entries (empty slots are inf)."""
    finite = jnp.isfinite(d)
    count = jnp.maximum(jnp.sum(finite, axis=1), 1).astype(d.dtype)
    z = jnp.where(finite, d, 0)
    mean = jnp.sum(z, axis=1) / count
    dev = jnp.where(finite, d - mean[:, None], 0)
    return mean, jnp.sqrt(jnp.sum(dev * dev, axis=1) / count)


def _normal_sf(d, mu, sd):
    """Normal survival function; a zero deviation gives a step at the mean."""
    z = _safe_div(d - mu, sd * jnp.sqrt(2.0))
    return 0.5 * erfc(z)


def dis_sim_local(x, ref, iq, ir, local_k):
    """DisSimLocal ``|x - y|^2 - |x - c_x|^2 - |y - c_y|^2`` for the candidates ``iq``.

    ``c_x`` is the centroid of ``ref[iq[x, :local_k]]`` and ``c_y`` of ``ref[ir[y, :local_k]]``.
    """
    dtype = _checks.compute_dtype(x, ref)
    x, ref = x.astype(dtype), ref.astype(dtype)
    cx = ref[iq[:, :local_k]].mean(1)
    cy = ref[ir[:, :local_k]].mean(1)
    own_x = jnp.sum((x - cx) ** 2, axis=-1)
    own_y = jnp.sum((ref - cy) ** 2, axis=-1)

    def row(args):  # one query at a time, batched: never [n, c, d] at once
        xi, cand = args
        diff = xi[None, :] - ref[cand]
        return jnp.sum(diff * diff, axis=-1)

    sq = jax.lax.map(row, (x, iq), batch_size=256)
    return sq - own_x[:, None] - own_y[iq]


def dis_sim_global(x, ref, iq):
    """DisSimGlobal ``|x - y|^2 - |x - c|^2 - |y - c|^2`` for the candidates ``iq``, ``c`` the
    mean of the (finite) reference points."""
    dtype = _checks.compute_dtype(x, ref)
    x, ref = x.astype(dtype), ref.astype(dtype)
    finite = jnp.all(jnp.isfinite(ref), axis=1)
    count = jnp.maximum(jnp.sum(finite), 1).astype(dtype)
    c = jnp.sum(jnp.where(finite[:, None], ref, 0), axis=0) / count
    own_x = jnp.sum((x - c) ** 2, axis=-1)
    own_y = jnp.sum((ref - c) ** 2, axis=-1)

    def row(args):
        xi, cand = args
        diff = xi[None, :] - ref[cand]
        return jnp.sum(diff * diff, axis=-1)

    sq = jax.lax.map(row, (x, iq), batch_size=256)
    return sq - own_x[:, None] - own_y[iq]
