"""Hubness reduction: re-rank exact k-NN candidates by a secondary distance.

:func:`knn` retrieves the exact ``candidates`` nearest neighbours of every query (never the query
itself in-sample), computes a secondary distance for each candidate pair from neighbourhood
statistics, and keeps the k best by (secondary distance, index). Notation: ``d = d(x, y)`` is the
primary distance of the chosen metric; ``D_x`` is x's sorted candidate list (c distances); a
reference point's statistics come from its own in-sample list in the reference set (itself
excluded).

Methods (``local_k`` defaults to 5, or 10 for ``csls``):

* ``"mp_empiric"`` -- mutual proximity, empirical (Schnitzer et al., JMLR 2012), as in
  scikit-hubness: ``1 - |{t : D_x[t] > d and D_y[t] > d}| / c``, i.e.
  ``max(#{D_x <= d}, #{D_y <= d}) / c`` on the sorted lists.
* ``"mp_gaussian"`` -- mutual proximity with Gaussian marginals (Schnitzer et al. 2012):
  ``1 - SF(d; mu_x, sigma_x) * SF(d; mu_y, sigma_y)`` with mean and (population) standard
  deviation of each point's c candidate distances; SF is the normal survival function.
* ``"local_scaling"`` -- Zelnik-Manor & Perona (NIPS 2004): ``1 - exp(-d^2 / (s_x s_y))``, with
  ``s_x`` the distance to x's ``local_k``-th neighbour.
* ``"nicdm"`` -- non-iterative contextual dissimilarity (Jegou et al., TPAMI 2010):
  ``d / sqrt(m_x m_y)``, ``m_x`` the mean distance to x's ``local_k`` nearest neighbours.
* ``"dis_sim_local"`` -- DisSimLocal (Hara et al., AAAI 2016), Euclidean metrics only:
  ``|x - y|^2 - |x - c_x|^2 - |y - c_y|^2``, ``c_x`` the centroid of x's ``local_k`` nearest
  reference points.
* ``"csls"`` -- cross-domain similarity local scaling (Conneau et al., ICLR 2018), written as a
  distance: ``2 d - r_x - r_y``, ``r_x`` the mean distance from x to its ``local_k`` nearest
  reference points and ``r_y`` the mean distance from y to its ``local_k`` nearest queries
  (for cosine this is ``r_x + r_y - 2 cos``, the paper's CSLS negated, up to a constant).

Zero scales (duplicates) are handled without NaN: a zero distance stays the smallest secondary
distance.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.special import erfc
from jaxtyping import Array, Float, Int

from hubjax import _checks, _mesh, neighbors

__all__ = ["METHODS", "knn", "order", "secondary", "dis_sim_local", "check_method"]

METHODS = ("mp_empiric", "mp_gaussian", "local_scaling", "nicdm", "dis_sim_local", "csls")
_DEFAULT_LOCAL_K = {"csls": 10}
USES_LOCAL_K = ("local_scaling", "nicdm", "dis_sim_local", "csls")


def check_method(method: str, metric: str, params: dict) -> int:
    """Validates a reduction method and its parameters; returns ``local_k``."""
    if method not in METHODS:
        raise ValueError(f"Unknown reduction method {method!r}; expected one of {METHODS}.")
    unknown = set(params) - {"local_k"}
    if unknown:
        raise TypeError(f"Unknown parameter(s) for {method!r}: {sorted(unknown)}.")
    if method == "dis_sim_local" and metric not in ("sqeuclidean", "euclidean"):
        raise ValueError(f"dis_sim_local needs a Euclidean metric, got {metric!r}.")
    if method in ("local_scaling", "nicdm") and metric == "dot":
        raise ValueError(f"{method} needs non-negative distances; metric 'dot' has none.")
    local_k = params.get("local_k", _DEFAULT_LOCAL_K.get(method, 5))
    return _checks.check_static_int(local_k, "local_k")


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
    **params,
) -> tuple[Float[Array, "n k"], Int[Array, "n k"]]:
    """k nearest neighbours under a hubness-reducing secondary distance.

    Args:
      x: queries ``[n, d]``.
      y: reference points ``[m, d]``; ``None`` for in-sample search (lists never contain the
        query itself).
      k: neighbours to return (static); ``k <= candidates``.
      method: one of :data:`METHODS` (see the module docstring for formulas and references).
      candidates: exact primary neighbours retrieved per point (static). Clipped to the
        available candidates (``n - 1`` in-sample, ``m - 1`` with ``y``, since reference
        statistics come from in-sample lists of ``y``).
      metric: primary metric (static), as in :func:`hubjax.knn`.
      block_size, check_finite: as in :func:`hubjax.knn`.
      **params: ``local_k`` -- neighbourhood size of the local statistics (static, <= candidates).

    Returns:
      ``(secondary_distances [n, k], indices [n, k])``, sorted by (secondary distance, index).

    Raises:
      ValueError / TypeError: as :func:`hubjax.knn`, plus unknown methods or parameters,
        ``k > candidates``, ``local_k > candidates``, a method that does not fit the metric.

    Example:
      >>> import jax, hubjax
      >>> x = jax.random.normal(jax.random.key(0), (300, 50))
      >>> dist, idx = hubjax.reduction.knn(x, k=5, method="mp_gaussian", candidates=30)
      >>> idx.shape
      (300, 5)
      >>> bool((idx != jax.numpy.arange(300)[:, None]).all())
      True
    """
    local_k = check_method(method, metric, params)
    x, y, _ = neighbors._validate(x, y, 1, metric, False, check_finite)
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
        local_k = 1  # unused by mutual proximity: keep it out of the static arguments
    block_size = neighbors.check_block_size(block_size)
    return _reduced_knn(
        x,
        y,
        k=k,
        method=method,
        candidates=candidates,
        metric=metric,
        local_k=local_k,
        block_size=block_size,
    )


def _primary(x, y, k, metric, block_size):
    return neighbors._knn(x, y, k=k, metric=metric, include_self=False, block_size=block_size)


@functools.partial(
    jax.jit,
    static_argnames=("k", "method", "candidates", "metric", "local_k", "block_size"),
)
def _reduced_knn(x, y, *, k, method, candidates, metric, local_k, block_size):
    (x, y), placement = _mesh.gather(x, y)
    with _mesh.context(placement):
        out = _reduced_core(x, y, k, method, candidates, metric, local_k, block_size)
    return _mesh.scatter(out, placement)


def _reduced_core(x, y, k, method, candidates, metric, local_k, block_size):
    dq, iq = _primary(x, y, candidates, metric, block_size)
    valid = iq >= 0  # -1: an empty slot (non-finite points under check_finite=False)
    safe = jnp.where(valid, iq, 0)
    if method == "dis_sim_local":
        ref = x if y is None else y
        ir = iq if y is None else _primary(y, None, local_k, metric, block_size)[1]
        s = dis_sim_local(x, ref, safe, jnp.where(ir >= 0, ir, 0), local_k)
    else:
        # the reference points' own lists (for csls: to their nearest queries)
        if y is None:
            dr = dq
        elif method == "csls":
            dr = _primary(y, x, local_k, metric, block_size)[0]
        else:
            dr = _primary(y, None, candidates, metric, block_size)[0]
        s = secondary(method, dq, safe, dr, local_k)
    s = jnp.where(valid, s, jnp.full((), jnp.inf, s.dtype))
    s, idx = order(s, dq, iq, k)
    return s, jnp.where(s == jnp.inf, -1, idx)


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


def secondary(method: str, dq: jax.Array, iq: jax.Array, dr: jax.Array, local_k: int) -> jax.Array:
    """Secondary distances ``[n, c]`` of the candidate pairs ``(x, iq[x, j])``.

    Args:
      method: any of :data:`METHODS` but ``dis_sim_local``.
      dq: sorted primary distances ``[n, c]`` of each query's candidates.
      iq: candidate indices ``[n, c]`` into the reference set.
      dr: sorted primary distances ``[m, c_r]`` of each reference point's own list (for
        ``csls``: to its nearest queries).
      local_k: neighbourhood size of the local statistics.
    """
    if method == "mp_empiric":
        c = dq.shape[1]
        rank_q = jnp.sum(dq[:, None, :] <= dq[:, :, None], axis=-1)
        rank_r = jnp.sum(dr[iq] <= dq[:, :, None], axis=-1)
        return jnp.maximum(rank_q, rank_r).astype(dq.dtype) / c
    if method == "mp_gaussian":
        mu_q, sd_q = _finite_stats(dq)
        mu_r, sd_r = _finite_stats(dr)
        return 1.0 - _normal_sf(dq, mu_q[:, None], sd_q[:, None]) * _normal_sf(
            dq, mu_r[iq], sd_r[iq]
        )
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
