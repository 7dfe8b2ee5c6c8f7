"""Hubness in retrieval: audit a gallery, and re-rank with query-bank normalisations.

With embeddings (text-to-image with CLIP-like models, dense retrieval for RAG, cross-lingual
word vectors) a few gallery items are returned for a large share of all queries. :func:`audit`
measures that and flags the items; :func:`bank_statistics` and :func:`search` re-rank with the
published normalisations, each a statistic of every gallery item over a *bank* of queries
(queries like the real ones, e.g. the training set's), computed once:

* ``inverted_softmax`` (Smith et al., ICLR 2017):
  ``s(q, g) - logsumexp_B(beta s(b, g)) / beta``; ``beta`` 20.
* ``qb_norm``, the dynamic inverted softmax (Bogolin et al., CVPR 2022): the inverted softmax
  for the queries whose plain top-1 is some bank query's top-1, ``s(q, g)`` for the others.
* ``db_norm``, the dual inverted softmax (Wang et al., EMNLP 2023):
  ``s(q, g) - [logsumexp_B(beta s(b, g)) + logsumexp_G(beta' s(h, g))] / (beta + beta')`` with
  a gallery bank G (items like the gallery's).
* ``nnn``, Nearest Neighbor Normalization (EMNLP 2024): ``s(q, g) - alpha * mean of the k
  largest s(b, g)``; ``alpha`` 0.75, ``k`` 128.
* ``csls`` (Conneau et al., ICLR 2018): ``s(q, g) - r_B(g) / 2``, ``r_B(g)`` the mean of the k
  largest ``s(b, g)``; ``k`` 10.

Each score is the published one up to a positive factor and a term of the query alone, which
leave every query's ranking unchanged: inverted softmax in log form is ``beta`` times the score
above, the dual inverted softmax ``beta + beta'`` times it, CSLS ``2 * score - r_G(q)``.

The similarity is ``x.y`` (``metric="dot"``) or the cosine (``"cosine"``, the default). The
normalised search is the exact ``dot`` search of :func:`hubjax.knn` on the rows
``[q, t(q)]`` and ``[g, -bias(g)]`` (:mod:`hubjax._src.banks`): exact, ties to the smaller index,
streamed tile by tile with memory ``O(block x m)``, never the ``[n, m]`` score matrix.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from hubjax._src import arguments, banks, checks, exportable
from hubjax._src import metric as _metric
from hubjax._src.report import HubnessReport

__all__ = [
    "METHODS",
    "AuditReport",
    "BankStatistics",
    "audit",
    "bank_statistics",
    "bank_top1",
    "log_sum_exp",
    "recall_at_k",
    "search",
    "top_mean",
]

METHODS = ("inverted_softmax", "qb_norm", "db_norm", "nnn", "csls")
_DEFAULT_K = {"nnn": 128, "csls": 10}


@exportable.register
@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["bias", "active"],
    meta_fields=["method", "metric"],
)
@dataclasses.dataclass(frozen=True)
class BankStatistics:
    """What :func:`search` needs of a bank, per gallery item, computed once.

    A pytree (``bias`` and ``active`` are traced; ``method`` and ``metric`` static), so it
    passes through ``jit``, ``vmap`` and ``jax.export``.

    Attributes:
      bias: ``[m]`` the shift subtracted from every similarity to item g (``+inf``: never
        retrieved, e.g. a non-finite item).
      active: ``[m]`` bool: QB-Norm's set (the items that are some bank query's top-1); all
        True for the other methods.
      method: one of :data:`METHODS`.
      metric: ``"cosine"`` or ``"dot"``.
    """

    bias: jax.Array
    active: jax.Array
    method: str
    metric: str


def _similarity_metric(metric):
    resolved = _metric.resolve(metric)
    if not resolved.similarity:
        raise ValueError(
            f"retrieval scores by a similarity: metric must be 'cosine' or 'dot', got {metric!r}."
        )
    return resolved


def _pair(bank, gallery, metric, check_finite, names=("bank", "gallery")):
    metric = _similarity_metric(metric)
    bank = checks.as_points(bank, names[0])
    gallery = checks.as_points(gallery, names[1])
    if bank.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of features, got "
            f"{names[0]} {tuple(bank.shape)} and {names[1]} {tuple(gallery.shape)}."
        )
    if check_finite:
        checks.check_finite(bank, names[0])
        checks.check_finite(gallery, names[1])
    return bank, gallery, metric


def _positive(value, name):
    """A concrete ``value`` must be a positive finite number; a traced one is passed on."""
    if isinstance(value, (bool, np.bool_)) or (
        not isinstance(value, jax.core.Tracer)
        and not np.issubdtype(np.asarray(value).dtype, np.number)
    ):
        raise TypeError(f"{name} must be a number, got {value!r}.")
    if checks.is_concrete(value):
        v = np.asarray(value)
        if v.shape != () or not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    return value


def log_sum_exp(
    bank: Float[Array, "b d"],
    gallery: Float[Array, "m d"],
    *,
    beta: float = 20.0,
    metric: str = "cosine",
    check_finite: bool = True,
) -> Float[Array, " m"]:
    """``logsumexp over bank rows b of beta * s(b, g)`` for every gallery item g, streamed.

    Stable at any ``beta`` (a running maximum per item; ``exp`` of a value above 88 never
    appears), from similarity tiles of 1024 bank rows by about 4 MiB at full float32 precision.

    Args:
      bank: queries of the bank ``[b, d]``.
      gallery: gallery items ``[m, d]``.
      beta: inverse temperature, positive (may be traced: one compilation for every value).
      metric: ``"cosine"`` or ``"dot"`` (static).
      check_finite: raise on NaN/inf in concrete inputs; under ``jit`` non-finite bank rows
        are left out and non-finite gallery items get ``+inf``.

    Returns:
      ``[m]`` in the inputs' float dtype (at least float32).

    Example:
      >>> import jax.numpy as jnp
      >>> from hubjax import retrieval
      >>> bank = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> gallery = jnp.array([[1.0, 0.0]])
      >>> lse = retrieval.log_sum_exp(bank, gallery, beta=1.0)
      >>> bool(jnp.allclose(lse, jnp.log(jnp.e + 1.0)))
      True
    """
    bank, gallery, resolved = _pair(bank, gallery, metric, check_finite)
    beta = _positive(beta, "beta")
    rows = banks.bank_rows(bank.shape[0])
    return banks.log_sum_exp(bank, gallery, beta, metric=resolved, rows=rows)


def top_mean(
    bank: Float[Array, "b d"],
    gallery: Float[Array, "m d"],
    *,
    k: int,
    metric: str = "cosine",
    block_size: int | None = None,
    check_finite: bool = True,
) -> Float[Array, " m"]:
    """The mean of each gallery item's k largest similarities to the bank (exact search).

    Args:
      bank: ``[b, d]``.
      gallery: ``[m, d]``.
      k: similarities averaged (static), ``1 <= k <= b``.
      metric, block_size, check_finite: as in :func:`log_sum_exp` and :func:`hubjax.knn`.
        Under ``jit``, an item with fewer than k finite bank rows averages over those.

    Returns:
      ``[m]`` (NaN for a non-finite gallery item).

    Example:
      >>> import jax.numpy as jnp
      >>> from hubjax import retrieval
      >>> bank = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
      >>> retrieval.top_mean(bank, jnp.array([[2.0, 0.0]]), k=2, metric="dot")
      Array([2.], dtype=float32)
    """
    bank, gallery, resolved = _pair(bank, gallery, metric, check_finite)
    k = checks.check_k(k, bank.shape[0], f"the bank has {bank.shape[0]} rows")
    block = arguments.check_block_size(block_size)
    return banks.top_mean(bank, gallery, k=k, metric=resolved, block_size=block)


def bank_top1(
    bank: Float[Array, "b d"],
    gallery: Float[Array, "m d"],
    *,
    metric: str = "cosine",
    block_size: int | None = None,
    check_finite: bool = True,
) -> Bool[Array, " m"]:
    """Which gallery items are the most similar item of at least one bank query (QB-Norm's
    activation set; exact search, ties to the smaller index).

    Args:
      bank: ``[b, d]``.
      gallery: ``[m, d]``.
      metric, block_size, check_finite: as in :func:`top_mean` (under ``jit``, a non-finite
        bank row has no top-1 and a non-finite item is nobody's).

    Returns:
      bool ``[m]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from hubjax import retrieval
      >>> gallery = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
      >>> retrieval.bank_top1(jnp.array([[0.9, 0.1], [0.8, 0.3]]), gallery)
      Array([ True, False, False], dtype=bool)
    """
    bank, gallery, resolved = _pair(bank, gallery, metric, check_finite)
    block = arguments.check_block_size(block_size)
    return banks.bank_top1(bank, gallery, metric=resolved, block_size=block)


def bank_statistics(
    bank: Float[Array, "b d"],
    gallery: Float[Array, "m d"],
    *,
    method: str,
    metric: str = "cosine",
    beta: float = 20.0,
    k: int | None = None,
    alpha: float = 0.75,
    gallery_bank: Float[Array, "h d"] | None = None,
    gallery_beta: float | None = None,
    block_size: int | None = None,
    check_finite: bool = True,
) -> BankStatistics:
    """The per-item statistics of ``method`` (one of :data:`METHODS`), for :func:`search`.

    Only what the method needs is computed: one streamed log-sum-exp pass for
    ``inverted_softmax`` and ``qb_norm`` (whose bank top-1 items, exact, come from the same
    similarity tiles); two passes (bank, gallery bank) for ``db_norm``; one exact k-NN search
    of the gallery among the bank for ``nnn`` and ``csls``. The cost grows with the bank rows
    read: ``db_norm`` reads ``b + h``, as a :func:`hubjax.knn` of the gallery against
    ``b + h`` rows does (a bank split between its two banks costs what one bank of that size
    costs the other methods).

    Args:
      bank: the query bank ``[b, d]``.
      gallery: the gallery ``[m, d]`` that :func:`search` will search.
      method: ``"inverted_softmax"``, ``"qb_norm"``, ``"db_norm"``, ``"nnn"`` or ``"csls"``.
      metric: ``"cosine"`` (default) or ``"dot"`` (static).
      beta: inverse temperature of the softmax methods (positive; may be traced).
      k: bank neighbours averaged by ``nnn`` (default 128) and ``csls`` (default 10), or all
        b where the bank is smaller; at most b (static).
      alpha: ``nnn``'s weight of the mean (may be traced).
      gallery_bank: ``db_norm``'s gallery bank ``[h, d]`` (items like the gallery's, e.g. the
        training gallery); required for ``db_norm`` only.
      gallery_beta: ``db_norm``'s inverse temperature over the gallery bank (default ``beta``).
      block_size, check_finite: as in :func:`hubjax.knn`.

    Returns:
      :class:`BankStatistics`.

    Raises:
      ValueError: an unknown method, a metric without a similarity, mismatched features,
        ``k`` above the bank size, a non-positive ``beta``, ``gallery_bank`` missing for
        ``db_norm`` (or given for another method), non-finite values (when checked).

    Example:
      >>> import jax
      >>> from hubjax import retrieval
      >>> keys = jax.random.split(jax.random.key(0), 3)
      >>> bank, gallery = (jax.random.normal(kk, (200, 16)) for kk in keys[:2])
      >>> stats = retrieval.bank_statistics(bank, gallery, method="csls")
      >>> stats.bias.shape
      (200,)
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}.")
    bank, gallery, resolved = _pair(bank, gallery, metric, check_finite)
    if (gallery_bank is not None) != (method == "db_norm"):
        raise ValueError(
            "db_norm needs gallery_bank; the other methods take none."
            if method == "db_norm"
            else f"gallery_bank is used by db_norm only, not by {method!r}."
        )
    block = arguments.check_block_size(block_size)
    active = jnp.ones(gallery.shape[0], bool)
    if method in ("nnn", "csls"):
        k = min(_DEFAULT_K[method], bank.shape[0]) if k is None else k
        k = checks.check_k(k, bank.shape[0], f"the bank has {bank.shape[0]} rows")
        alpha = _finite(alpha, "alpha")
        mean = banks.top_mean(bank, gallery, k=k, metric=resolved, block_size=block)
        if method == "nnn":
            bias = jnp.asarray(alpha, mean.dtype) * mean
        else:
            bias = mean / 2
        return BankStatistics(bias, active, method, resolved.name)
    if k is not None:
        raise ValueError(f"k applies to nnn and csls, not to {method!r}.")
    beta = _positive(beta, "beta")
    if method == "db_norm":
        gallery_bank, _, _ = _pair(
            gallery_bank, gallery, resolved, check_finite, ("gallery_bank", "gallery")
        )
        gallery_beta = beta if gallery_beta is None else _positive(gallery_beta, "gallery_beta")
    rows = banks.bank_rows(bank.shape[0])
    if method == "qb_norm":  # the bank's top-1 items from the log-sum-exp's own tiles
        lse, active = banks.log_sum_exp(bank, gallery, beta, metric=resolved, rows=rows, top1=True)
    else:
        lse = banks.log_sum_exp(bank, gallery, beta, metric=resolved, rows=rows)
    total, temperature = lse, jnp.asarray(beta, lse.dtype)
    if method == "db_norm":
        rows = banks.bank_rows(gallery_bank.shape[0])
        total = total + banks.log_sum_exp(
            gallery_bank, gallery, gallery_beta, metric=resolved, rows=rows
        )
        temperature = temperature + jnp.asarray(gallery_beta, lse.dtype)
    return BankStatistics(total / temperature, active, method, resolved.name)


def _finite(value, name):
    if checks.is_concrete(value) and not np.isfinite(np.asarray(value, dtype=float)).all():
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return value


def search(
    queries: Float[Array, "n d"],
    gallery: Float[Array, "m d"],
    statistics: BankStatistics | None = None,
    *,
    k: int = 10,
    metric: str | None = None,
    block_size: int | None = None,
    check_finite: bool = True,
) -> tuple[Float[Array, "n k"], Int[Array, "n k"]]:
    """Exact top-k of every query among the gallery, by the normalised score of
    ``statistics`` (by the similarity itself when ``None``).

    The score ``s(q, g) - t(q) bias(g)`` is the inner product of ``[q, t(q)]`` and
    ``[g, -bias(g)]``, so the search is :func:`hubjax.knn`'s exact ``dot`` search on those rows:
    its rounding-error certificate and re-check keep the result exact with respect to the
    reported per-pair scores, equal scores go to the smaller index, and the bits do not depend
    on ``block_size``. For ``qb_norm`` one pass over the similarity tiles selects both each
    query's plain top-k and its normalised top-k (each made exact by the same finisher); the
    plain top-1 then decides which list a query gets (active: the normalised one).

    Args:
      queries: ``[n, d]``.
      gallery: ``[m, d]``; the gallery the statistics were computed for.
      statistics: from :func:`bank_statistics`, or ``None``.
      k: results per query (static), ``k <= m``.
      metric: ``"cosine"`` or ``"dot"``; default: the statistics' metric, else ``"cosine"``.
      block_size, check_finite: as in :func:`hubjax.knn` (under ``jit``, non-finite queries
        get the empty row and non-finite gallery items are never retrieved).

    Returns:
      ``(scores [n, k], indices [n, k])``, highest score first; empty slots ``(-inf, -1)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from hubjax import retrieval
      >>> gallery = jnp.array([[1.0, 0.0], [0.6, 0.8]])
      >>> queries = jnp.array([[0.9, 0.3]])
      >>> retrieval.search(queries, gallery, k=1)[1]
      Array([[0]], dtype=int32)
      >>> stats = retrieval.BankStatistics(
      ...     jnp.array([0.5, 0.0]), jnp.ones(2, bool), "nnn", "cosine")
      >>> retrieval.search(queries, gallery, stats, k=1)[1]
      Array([[1]], dtype=int32)
    """
    if metric is None:
        metric = "cosine" if statistics is None else statistics.metric
    queries, gallery, resolved = _pair(
        queries, gallery, metric, check_finite, ("queries", "gallery")
    )
    if statistics is not None:
        _check_statistics(statistics, gallery, resolved, metric)
    k = checks.check_k(k, gallery.shape[0], f"the gallery has {gallery.shape[0]} items")
    block = arguments.check_block_size(block_size)
    if statistics is None:
        return banks.plain_search(queries, gallery, k=k, metric=resolved, block_size=block)
    return banks.normalised_search(
        queries,
        gallery,
        statistics.bias,
        statistics.active,
        k=k,
        metric=resolved,
        block_size=block,
        dynamic=statistics.method == "qb_norm",
    )


def _check_statistics(statistics, gallery, resolved, metric):
    if not isinstance(statistics, BankStatistics):
        raise TypeError(f"statistics must be a BankStatistics, got {type(statistics).__name__}.")
    if _metric.resolve(statistics.metric) is not resolved:
        raise ValueError(
            f"the statistics were computed with metric {statistics.metric!r}, not {metric!r}."
        )
    if statistics.bias.shape[-1:] != (gallery.shape[0],):
        raise ValueError(
            f"the statistics are for {statistics.bias.shape[-1]} gallery items; the gallery "
            f"has {gallery.shape[0]}."
        )


def recall_at_k(
    indices: Int[Array, "n c"], truth: Int[Array, "n ..."], *, k: int | None = None
) -> Float[Array, ""]:
    """Share of queries with a relevant item among their first k results.

    Args:
      indices: result lists ``[n, c]`` (e.g. from :func:`search`); -1 is an empty slot.
      truth: the relevant item of each query ``[n]``, or several ``[n, t]`` padded with -1.
        Queries without any relevant item are left out.
      k: results looked at (static), ``k <= c``; default ``c``.

    Returns:
      a float scalar in [0, 1] (NaN when no query has a relevant item).

    Example:
      >>> import jax.numpy as jnp
      >>> from hubjax import retrieval
      >>> idx = jnp.array([[3, 1], [0, 2]])
      >>> float(retrieval.recall_at_k(idx, jnp.array([1, 1]), k=2))
      0.5
      >>> float(retrieval.recall_at_k(idx, jnp.array([1, 1]), k=1))
      0.0
    """
    indices = jnp.asarray(indices)
    truth = jnp.asarray(truth)
    for name, a in (("indices", indices), ("truth", truth)):
        if not jnp.issubdtype(a.dtype, jnp.integer):
            raise TypeError(f"{name} must be integers, got dtype {a.dtype}.")
    if indices.ndim != 2 or truth.ndim not in (1, 2) or truth.shape[0] != indices.shape[0]:
        raise ValueError(
            f"indices must be [n, c] and truth [n] or [n, t], got {indices.shape} and "
            f"{truth.shape}."
        )
    c = indices.shape[1]
    k = c if k is None else checks.check_k(k, c, f"the lists hold {c} results")
    return _recall(indices[:, :k], truth if truth.ndim == 2 else truth[:, None])


@jax.jit
def _recall(indices, truth):
    relevant = truth >= 0
    hit = (
        (indices[:, :, None] == truth[:, None, :])
        & relevant[:, None, :]
        & (indices >= 0)[..., None]
    )
    counted = jnp.any(relevant, axis=1)
    found = jnp.any(hit, axis=(1, 2)) & counted
    dtype = jnp.result_type(float)
    return jnp.sum(found).astype(dtype) / jnp.sum(counted).astype(dtype)


@exportable.register
@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["report", "robust_z", "flagged", "top1_flagged_share", "threshold"],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class AuditReport:
    """Hubness of a gallery under a set of queries, and the items that stand out.

    Attributes:
      report: :class:`hubjax.HubnessReport` of the gallery's k-occurrence (the number of
        queries whose k results hold each item) ``k_occurrence [m]``.
      robust_z: ``[m]`` robust z-score of each item's k-occurrence:
        ``(O - median) / (MAD / 0.6745)``, or with the mean absolute deviation
        (``/ 0.7979``) where more than half the items share one count (MAD = 0).
      flagged: ``[m]`` bool, ``robust_z > threshold``.
      top1_flagged_share: share of the queries (with a result) whose top-1 is flagged.
      threshold: the z-score above which an item is flagged.
    """

    report: HubnessReport
    robust_z: jax.Array
    flagged: jax.Array
    top1_flagged_share: jax.Array
    threshold: jax.Array

    def __str__(self) -> str:
        head = (
            f"AuditReport(k={self.report.k}, metric={self.report.metric!r}, "
            f"threshold={float(self.threshold):g})"
            if checks.is_concrete(self.threshold) and np.ndim(self.threshold) == 0
            else "AuditReport"
        )
        if head == "AuditReport":
            return head
        flagged = np.flatnonzero(np.asarray(self.flagged))
        counts = np.asarray(self.report.k_occurrence)
        z = np.asarray(self.robust_z)
        order = flagged[np.argsort(-z[flagged], kind="stable")]
        rows = [
            head,
            f"  k_skewness             {float(self.report.k_skewness): .4f}",
            f"  items flagged          {flagged.size} of {counts.size}",
            f"  top-1 on flagged items {float(self.top1_flagged_share):.1%} of queries",
        ]
        rows += [f"  item {i:>8d}  k-occurrence {counts[i]:>6d}  z {z[i]:8.2f}" for i in order[:10]]
        if order.size > 10:
            rows.append(f"  ... {order.size - 10} more")
        return "\n".join(rows)


def audit(
    queries: Float[Array, "n d"],
    gallery: Float[Array, "m d"],
    *,
    k: int = 10,
    metric: str = "cosine",
    statistics: BankStatistics | None = None,
    threshold: float = 3.5,
    hub_size: float = 2.0,
    block_size: int | None = None,
    check_finite: bool = True,
) -> AuditReport:
    """Audit a gallery: its hubness under the queries' top-k, and the items flagged as hubs.

    Each query retrieves its k most similar gallery items (exact; normalised by
    ``statistics`` if given, to audit a re-ranking); an item's k-occurrence is the number of
    queries that retrieve it. Items whose robust z-score exceeds ``threshold`` (3.5, the
    customary cut of Iglewicz and Hoaglin) are flagged, and the share of queries whose top-1
    is a flagged item says how much of the retrieval they take.

    Args:
      queries: ``[n, d]``.
      gallery: ``[m, d]``.
      k: results per query (static), ``k <= m``.
      metric: ``"cosine"`` (default) or ``"dot"``.
      statistics: a :class:`BankStatistics` to audit the normalised search instead.
      threshold: robust z-score above which an item is flagged (may be traced).
      hub_size: the report's hub definition, ``O >= hub_size * k`` (static).
      block_size, check_finite: as in :func:`hubjax.knn`.

    Returns:
      :class:`AuditReport`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from hubjax import retrieval
      >>> queries = jax.random.normal(jax.random.key(0), (300, 32)) + 0.5  # a common direction
      >>> gallery = jax.random.normal(jax.random.key(1), (100, 32)) + 0.5
      >>> planted = gallery.at[7].set(queries.mean(axis=0))  # close to every query
      >>> result = retrieval.audit(queries, planted, k=5)
      >>> bool(result.flagged[7]), int(result.report.k_occurrence[7])  # 5 on average
      (True, 162)
    """
    if not (isinstance(threshold, jax.core.Tracer) or math.isfinite(float(threshold))):
        raise ValueError(f"threshold must be finite, got {threshold!r}.")
    hub_size = float(hub_size)
    if not (math.isfinite(hub_size) and hub_size > 0):
        raise ValueError(f"hub_size must be a positive finite number, got {hub_size}.")
    _, idx = search(
        queries,
        gallery,
        statistics,
        k=k,
        metric=metric if statistics is None else None,
        block_size=block_size,
        check_finite=check_finite,
    )
    resolved = _similarity_metric(metric if statistics is None else statistics.metric)
    rep, z, flagged, share = banks.audit_of_lists(
        idx,
        jnp.asarray(threshold, jnp.result_type(float)),
        num_points=gallery.shape[0],
        k=int(k),
        hub_size=hub_size,
        metric=resolved.name,
    )
    return AuditReport(rep, z, flagged, share, jnp.asarray(threshold))
