"""scikit-learn estimators, for users coming from scikit-hubness.

* :class:`Hubness` -- ``Hubness(k=10, return_value="k_skewness").fit(X).score()`` on vectors or
  (``metric="precomputed"``) on a k-NN graph, with scikit-hubness 0.30's parameters.
* :class:`HubnessReduction` -- a transformer that re-weights a k-NN distance graph (from
  ``KNeighborsTransformer``) by a secondary distance, like scikit-hubness's
  ``MutualProximity`` / ``LocalScaling`` transformers::

      from sklearn.neighbors import KNeighborsTransformer, KNeighborsClassifier
      from sklearn.pipeline import make_pipeline
      from hubjax.sklearn import HubnessReduction
      pipe = make_pipeline(
          KNeighborsTransformer(n_neighbors=50, mode="distance"),
          HubnessReduction(method="mp_gaussian"),
          KNeighborsClassifier(n_neighbors=5, metric="precomputed"),
      )

* :class:`DisSimLocal` -- vectors in, DisSimLocal-weighted k-NN graph out (DisSimLocal needs
  the vectors, so it replaces ``KNeighborsTransformer`` in such a pipeline).

**Graphs.** A graph is a sparse matrix ``[n_queries, n_indexed]`` of neighbour distances (rows
may hold different numbers of entries) or a dense distance matrix (every entry a neighbour).
Distances must be finite and non-negative. In-sample is decided by what was fitted, never by a
graph's shape: the graph given to ``fit`` is the indexed points' own (row i is point i, so entry
``(i, i)`` is the point itself and is left out), :class:`Hubness` ``score()`` without an argument
scores it in-sample, and every other graph's rows are new queries whose stored entries are all
neighbours.

Deliberate differences from scikit-hubness are listed in the migration guide
(``docs/migration.rst``).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp

try:
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.utils.validation import check_array, check_is_fitted, check_random_state
except ImportError:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        "hubjax.sklearn needs scikit-learn: pip install scikit-learn (or, in the hubjax "
        "repository, pip install '.[sklearn]')"
    ) from None

import jax
import jax.numpy as jnp

from hubjax import measures, neighbors, reduction
from hubjax._src import buckets as _buckets
from hubjax._src import graphs as _graphs
from hubjax._src import metric as _metric
from hubjax._src import report as _report

__all__ = ["Hubness", "HubnessReduction", "DisSimLocal", "resolve_reduction"]

_MEASURES = measures.HubnessReport.MEASURES
_RETURN_VALUES = ("all", "all_but_gini", *_MEASURES)
_GRAPH_METHODS = ("mp_empiric", "mp_gaussian", "local_scaling", "nicdm", "csls")

# scikit-hubness (0.21 and 0.30) names -> hubjax methods
_MP_NAMES = ("mp", "mutual_proximity", "mutualproximity")
_LS_NAMES = ("ls", "local_scaling", "localscaling")
_DSL_NAMES = ("dsl", "dis_sim_local", "dissimlocal")


def resolve_reduction(hubness: str | None, params: dict | None) -> tuple[str | None, dict]:
    """Maps scikit-hubness's reduction names and parameters to a hubjax method.

    ``"mp"``/``"mutual_proximity"`` with ``method="normal"`` (default) or ``"empiric"``;
    ``"ls"``/``"local_scaling"`` with ``method="standard"`` (default) or ``"nicdm"``;
    ``"dsl"``/``"dis_sim_local"``; and ``k`` as the old name of ``local_k``. hubjax's own names
    pass through.

    Example:
      >>> from hubjax.sklearn import resolve_reduction
      >>> resolve_reduction("mutual_proximity", {"method": "empiric"})
      ('mp_empiric', {})
      >>> resolve_reduction("ls", {"k": 7})
      ('local_scaling', {'local_k': 7})
    """
    params = dict(params or {})
    if hubness is None:
        if params:
            raise ValueError(f"hubness_params={params} given without a hubness method.")
        return None, {}
    if not isinstance(hubness, str):
        raise TypeError(f"hubness must be a method name or None, got {hubness!r}.")
    name = hubness.lower()
    if "k" in params:
        if "local_k" in params:
            raise TypeError("hubness_params has both 'k' and 'local_k'; pass only local_k.")
        params["local_k"] = params.pop("k")
    flavour = params.pop("method", None)
    if name in _MP_NAMES:
        if flavour in (None, "normal", "gauss", "gaussi", "gaussian"):
            return "mp_gaussian", _without(params, "local_k")
        if flavour in ("empiric", "exact"):
            return "mp_empiric", _without(params, "local_k")
        raise ValueError(f"mutual proximity method must be 'normal' or 'empiric', got {flavour!r}.")
    if flavour is not None:
        if name in _LS_NAMES and flavour in ("standard", "nicdm"):
            name = "nicdm" if flavour == "nicdm" else "local_scaling"
        else:
            raise TypeError(f"Unknown hubness_params key 'method' for {hubness!r}.")
    if name in _LS_NAMES:
        return "local_scaling", params
    if name in _DSL_NAMES:
        return "dis_sim_local", params
    if name not in reduction.METHODS:
        raise ValueError(
            f"Unknown hubness method {hubness!r}; expected one of {reduction.METHODS} or "
            "scikit-hubness's 'mp', 'ls', 'dsl'."
        )
    return name, params


def _without(params, key):
    params.pop(key, None)  # scikit-hubness passed k to every method; MP has no local size
    return params


def _check_verbose(verbose) -> int:
    if verbose is None or verbose is False:
        return 0
    if verbose is True:
        return 1
    if isinstance(verbose, (int, np.integer)):
        return max(int(verbose), 0)
    raise TypeError(f"verbose must be an int, bool or None, got {verbose!r}.")


def _x64(dtype):
    """Computes in float64 for float64 graphs (x64 is off by default in JAX)."""
    if np.dtype(dtype) != np.float64:
        return contextlib.nullcontext()
    if hasattr(jax, "enable_x64"):  # newer jax: a config context manager
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older jax

    return enable_x64()


def _features_message(got, est, *, graph=False):
    """scikit-learn's wording, plus what a graph's columns are."""
    msg = (
        f"X has {got} features, but {type(est).__name__} is expecting {est.n_features_in_} "
        "features as input."
    )
    if graph:
        msg += " A query graph needs one column per indexed point: [n_queries, n_indexed]."
    return msg


def _check_k(k, name="k") -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name} (n_neighbors) must be an int >= 1, got {k!r}.")
    return int(k)


class Hubness(BaseEstimator):
    """Hubness of a data set, scikit-hubness style.

    Args:
      k: neighbours per point (scikit-hubness's ``k``; ``n_neighbors`` elsewhere).
      return_value: a measure name (see :class:`hubjax.HubnessReport`), ``"all"`` (a dict of
        every measure) or ``"all_but_gini"``.
      hub_size: hubs occur at least ``hub_size * k`` times (> 0).
      metric: ``"euclidean"`` (default), ``"minkowski"`` (with ``p=2`` only), ``"sqeuclidean"``,
        ``"cosine"``, ``"dot"``, or ``"precomputed"``: ``fit``/``score`` take k-NN graphs or
        dense distance matrices instead of vectors.
      p: Minkowski power; only 2 is supported.
      hubness: ``None`` or a reduction: a method of :func:`hubjax.reduction.knn`, or
        scikit-hubness's names (see :func:`resolve_reduction`). With ``metric="precomputed"``
        the methods of :class:`HubnessReduction`.
      hubness_params: the reduction's parameters, e.g. ``{"local_k": 7}`` (``{"k": 7}`` is read
        as ``local_k``).
      candidates: primary neighbours re-ranked by the reduction (vectors only).
      return_k_occurrence, return_hubs, return_antihubs: :meth:`score` returns a dict that also
        holds ``"k_occurrence"`` (``[n_indexed]``), ``"hubs"`` / ``"antihubs"`` (indices).
      store_k_occurrence, store_k_neighbors: keep ``k_occurrence_`` / ``k_neighbors_`` after
        :meth:`score`.
      shuffle_equal: with graph input, order exactly tied distances randomly
        (``random_state``) before cutting each row at k, instead of by index. Vector input
        gets exact lists whose ties go to the smaller index; there it has no effect.
      random_state: seed or ``RandomState`` for ``shuffle_equal``.
      verbose: > 0 prints one line per :meth:`score` to stderr.
      include_self: in-sample scoring counts each point as the first of its own k neighbours
        (k - 1 others), as scikit-hubness 0.30 does on vectors; its numbers are then reproduced.
        Not with a reduction.
      n_jobs: accepted for scikit-hubness's signature and ignored: the search uses every core
        (XLA's thread pool; ``HUBJAX_THREADS`` caps the CPU kernel's threads).

    Example:
      >>> import numpy as np
      >>> from hubjax.sklearn import Hubness
      >>> X = np.random.default_rng(0).normal(size=(300, 64)).astype(np.float32)
      >>> score = Hubness(k=10).fit(X).score()
      >>> score > 0.5
      True
      >>> out = Hubness(k=10, return_value="robinhood", return_hubs=True).fit(X).score()
      >>> sorted(out)
      ['hubs', 'robinhood']
    """

    def __init__(
        self,
        k=10,
        return_value="k_skewness",
        hub_size=2.0,
        metric="euclidean",
        p=2,
        hubness=None,
        hubness_params=None,
        candidates=50,
        return_k_occurrence=False,
        return_hubs=False,
        return_antihubs=False,
        store_k_occurrence=False,
        store_k_neighbors=False,
        shuffle_equal=False,
        random_state=None,
        verbose=0,
        include_self=False,
        n_jobs=None,
    ):
        self.k = k
        self.return_value = return_value
        self.hub_size = hub_size
        self.metric = metric
        self.p = p
        self.hubness = hubness
        self.hubness_params = hubness_params
        self.candidates = candidates
        self.return_k_occurrence = return_k_occurrence
        self.return_hubs = return_hubs
        self.return_antihubs = return_antihubs
        self.store_k_occurrence = store_k_occurrence
        self.store_k_neighbors = store_k_neighbors
        self.shuffle_equal = shuffle_equal
        self.random_state = random_state
        self.verbose = verbose
        self.include_self = include_self
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        graph = _metric.is_precomputed(self.metric)
        tags.input_tags.sparse = graph
        tags.input_tags.pairwise = graph
        tags.input_tags.positive_only = graph  # distances
        tags.requires_fit = True
        return tags

    def _metric(self) -> str:
        return _metric.from_sklearn(self.metric, self.p)

    def fit(self, X, y=None):
        """Stores the indexed points: vectors ``[n_indexed, n_features]`` or, with
        ``metric="precomputed"``, a graph ``[n_indexed, n_indexed]``.

        Raises:
          ValueError: bad parameters (naming them), NaN/inf, too few samples for ``k``, a graph
            whose rows hold fewer than k neighbours besides the point itself.
          TypeError: sparse input with a vector metric.
        """
        _check_k(self.k)
        if self.return_value not in _RETURN_VALUES:
            raise ValueError(
                f"return_value must be one of {_RETURN_VALUES}, got {self.return_value!r}."
            )
        if not np.isscalar(self.hub_size) or not self.hub_size > 0:
            raise ValueError(f"hub_size must be a number > 0, got {self.hub_size!r}.")
        self.verbose_ = _check_verbose(self.verbose)
        metric = self._metric()
        method, params = resolve_reduction(self.hubness, self.hubness_params)
        if method is not None:
            if _metric.is_precomputed(metric) and method not in _GRAPH_METHODS:
                raise ValueError(
                    f"hubness={self.hubness!r} needs vectors; with metric='precomputed' use one of "
                    f"{_GRAPH_METHODS}."
                )
            if not _metric.is_precomputed(metric):
                reduction.check_method(method, metric, params)
            elif set(params) - {"local_k"}:
                raise TypeError(
                    f"hubness_params {sorted(set(params) - {'local_k'})} do not apply to graphs; "
                    "only local_k does."
                )
        if self.include_self and method is not None:
            raise ValueError("include_self=True cannot be combined with a hubness reduction.")
        self.method_, self.method_params_ = method, params
        self.metric_ = metric
        self._random = check_random_state(self.random_state)
        if _metric.is_precomputed(metric):
            rows = _square_graph(X)
            n, m = rows.shape
            self.graph_ = rows
            self.n_features_in_ = m
        else:
            if sp.issparse(X):
                raise TypeError(
                    f"Hubness(metric={self.metric!r}) needs dense vectors, got a sparse matrix. "
                    "Pass metric='precomputed' if it is a k-NN graph, or X.toarray() if it holds "
                    "feature vectors."
                )
            X = check_array(X, dtype=[np.float32, np.float64], ensure_min_samples=2)
            n = X.shape[0]
            self.X_indexed_ = X
            self.n_features_in_ = X.shape[1]
        self.n_samples_in_ = n
        return self

    def _lists(self, X):
        """``(indices [n_queries, k], n_indexed)`` of the lists the score counts."""
        k = _check_k(self.k)
        in_sample = X is None
        if _metric.is_precomputed(self.metric_):
            m = self.n_samples_in_
            if in_sample:
                rows = self.graph_
            else:
                rows = _graphs.rows(X, name="X")
                if rows.shape[1] != m:
                    raise ValueError(_features_message(rows.shape[1], self, graph=True))
            if self.method_ is not None:
                red = HubnessReduction(method=self.method_, **self.method_params_)
                red._fit_rows(self.graph_)
                values, idx = red._transform_rows(rows, in_sample=in_sample)
                rows = _graphs.Rows(values, idx, (idx >= 0).sum(1), rows.shape)
            with_self = in_sample and bool(self.include_self)
            idx = _graphs.neighbour_lists(
                rows,
                k - with_self,
                exclude_own=in_sample,
                shuffle_ties=bool(self.shuffle_equal),
                rng=self._random,
            )
            if with_self:
                idx = np.concatenate([np.arange(m)[:, None], idx], axis=1)
            return idx, m
        train = self.X_indexed_
        m = train.shape[0]
        if in_sample:
            if k > train.shape[0] - 1 + bool(self.include_self):
                raise ValueError(
                    f"k={k} neighbours per point need at least k + 1 = {k + 1} indexed samples "
                    f"(a point is not its own neighbour), got n_samples = {train.shape[0]}; pass "
                    "a smaller k."
                )
            args = (train, None)
        else:
            if sp.issparse(X):
                raise TypeError("score(X) needs dense query vectors, got a sparse matrix.")
            X = check_array(X, dtype=[np.float32, np.float64])
            if X.shape[1] != self.n_features_in_:
                raise ValueError(_features_message(X.shape[1], self))
            if k > train.shape[0]:
                raise ValueError(
                    f"k={k} is larger than the n_samples = {train.shape[0]} indexed points; pass "
                    "a smaller k."
                )
            args = (X, train)
        # padded to row-count buckets: cross-validation folds share compiled programs
        num_queries = args[0].shape[0]
        padded = [a if a is None else _buckets.pad(a, "X") for a in args]
        idx, _ = measures.neighbour_lists(
            *padded,
            k=k,
            metric=self.metric_,
            include_self=in_sample and bool(self.include_self),
            block_size=None,
            check_finite=False,
            reduction=self.method_,
            candidates=self.candidates,
            reduction_params=self.method_params_,
        )
        return np.asarray(idx)[:num_queries], m

    def score(self, X=None, y=None):
        """Hubness of the indexed points in-sample (``X=None``) or of queries ``X`` against them.

        Args:
          X: ``None``, query vectors ``[n_queries, n_features]``, or with
            ``metric="precomputed"`` the graph of queries vs indexed points
            ``[n_queries, n_indexed]``.
          y: ignored.

        Returns:
          The measure named by ``return_value`` as a float, or a dict when ``return_value`` is
          ``"all"``/``"all_but_gini"`` or a ``return_*`` flag is set.
        """
        check_is_fitted(self, "n_samples_in_")
        start = time.perf_counter()
        idx, m = self._lists(X)
        k = _check_k(self.k)
        counts = _k_occurrence(idx, m)
        values = _measures64(counts, k, self.hub_size)
        if self.store_k_occurrence:
            self.k_occurrence_ = counts
        if self.store_k_neighbors:
            self.k_neighbors_ = idx
        if self.verbose_:
            print(
                f"Hubness: k={k}, {idx.shape[0]} queries, {m} indexed points, "
                f"k_skewness={values['k_skewness']:.4f} ({time.perf_counter() - start:.2f} s)",
                file=sys.stderr,
            )
        if self.return_value == "all":
            out = values
        elif self.return_value == "all_but_gini":
            out = {name: v for name, v in values.items() if name != "gini"}
        else:
            out = {self.return_value: values[self.return_value]}
        if self.return_k_occurrence:
            out["k_occurrence"] = counts
        if self.return_hubs:
            out["hubs"] = np.flatnonzero(counts >= self.hub_size * k)
        if self.return_antihubs:
            out["antihubs"] = np.flatnonzero(counts == 0)
        if len(out) == 1 and self.return_value in out:
            return out[self.return_value]
        return out


def _k_occurrence(idx, m):
    """How often each of the m indexed points occurs in the lists ``idx`` (int64 ``[m]``)."""
    flat = np.asarray(idx).reshape(-1)
    return np.bincount(flat[flat >= 0], minlength=m).astype(np.int64)


def _measures64(counts, k, hub_size) -> dict[str, float]:
    """Every measure of the integer k-occurrence ``counts`` in float64 (scikit-hubness
    computes in float64, and its tests compare to 10 decimals): the library's own measure
    functions, one compiled program per number of indexed points."""
    with _x64(np.float64):
        values = jax.device_get(
            _report.measures_of_counts(counts, np.float64(k), np.float64(hub_size))
        )
    return {name: float(values[name]) for name in _MEASURES}


def _empty_rows(a, fill):
    """``a [n, c]`` padded with rows of ``fill`` to the row-count bucket of n."""
    n = a.shape[0]
    return np.concatenate([a, np.full((_buckets.size(n) - n, a.shape[1]), fill, a.dtype)])


@functools.partial(jax.jit, static_argnames=("method", "local_k"))
def _secondary_graph(dq, iq, dr, ir, own, num_ref, scale, *, method, local_k):
    """The secondary values ``[n, c]`` of a graph's rows, as one compiled program (eagerly,
    each of its operations would compile on its own, for every new row count)."""
    safe = jnp.where(iq >= 0, iq, 0)
    s = reduction.secondary(method, dq, safe, dr, local_k, ir=ir, own=own, num_ref=num_ref)
    if method == "csls":  # drop -r_x, shift by the largest r_y: >= 0
        s = s + dq[:, :local_k].mean(1)[:, None] + scale
    return jnp.maximum(s, 0)


class HubnessReduction(TransformerMixin, BaseEstimator):
    """Re-weights a k-NN distance graph by a secondary distance (a scikit-learn transformer).

    ``fit(G_train)`` learns each indexed point's neighbourhood statistics from its row of the
    training graph ``[n_indexed, n_indexed]``; there row i is point i, so its own entry
    ``(i, i)`` (if stored) is left out. ``transform(G)`` replaces each entry ``G[i, j]`` by the
    secondary distance between query i (statistics from all entries of its row) and indexed
    point j. Every row of ``transform`` is a new query, whatever the graph's shape: like in
    ``KNeighborsTransformer``'s graphs, a query that is an indexed point has itself as a
    neighbour. So ``fit_transform(G)`` equals ``fit(G).transform(G)`` and rows can be
    transformed in any batches. Statistics use the entries the graph holds; for mutual
    proximity over all points pass dense distance matrices, or use
    :func:`hubjax.reduction.knn` on the vectors. Rows may hold different numbers of entries
    (radius graphs, duplicates displacing a point's own entry).

    Output values are non-negative (scikit-learn's precomputed estimators refuse negative
    ones): ``csls`` drops its query term ``-r_x`` (constant along a row, so every row's ranking
    is the paper's) and adds the largest fitted ``r_y``: ``2 d + (max r - r_y)``. Its ``r_y``
    is the mean distance from y to its ``local_k`` nearest indexed points (the queries are not
    known row by row).

    Args:
      method: ``"mp_gaussian"`` (default), ``"mp_empiric"``, ``"local_scaling"``, ``"nicdm"`` or
        ``"csls"`` (see :mod:`hubjax.reduction`).
      local_k: neighbourhood size of the local statistics (default 5, or 10 for csls).

    Example:
      >>> import numpy as np
      >>> from sklearn.neighbors import KNeighborsTransformer
      >>> from hubjax.sklearn import HubnessReduction
      >>> X = np.random.default_rng(0).normal(size=(200, 20))
      >>> G = KNeighborsTransformer(n_neighbors=30, mode="distance").fit_transform(X)
      >>> R = HubnessReduction(method="mp_gaussian").fit_transform(G)
      >>> R.shape, R.dtype, bool(R.data.min() >= 0)
      ((200, 200), dtype('float64'), True)
    """

    def __init__(self, method="mp_gaussian", local_k=None):
        self.method = method
        self.local_k = local_k

    # The input is a distance graph: scikit-learn's checks then pass distance matrices.
    metric = "precomputed"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.pairwise = True
        tags.input_tags.positive_only = True  # distances
        return tags

    def _settings(self):
        if self.method not in _GRAPH_METHODS:
            hint = ""
            if str(self.method).startswith("dis"):
                hint = " (it needs vectors: use hubjax.sklearn.DisSimLocal)"
            raise ValueError(f"method must be one of {_GRAPH_METHODS}, got {self.method!r}{hint}.")
        params = {} if self.local_k is None else {"local_k": self.local_k}
        if self.method in reduction.MUTUAL_PROXIMITY:
            if params:
                raise ValueError(f"local_k does not apply to {self.method!r}; leave it None.")
        return reduction.check_method(self.method, "euclidean", params).local_k

    def fit(self, X, y=None):
        """Learns the indexed points' statistics from their graph ``X [n_indexed, n_indexed]``."""
        self._fit_rows(_graphs.rows(X, name="X", min_rows=2))
        return self

    def _fit_rows(self, rows):
        _check_square(rows)
        n, m = rows.shape
        self.local_k_ = self._settings()
        self.train_ = _graphs.drop(rows, rows.idx == np.arange(n)[:, None])
        self._check_width(self.train_, "the fitted graph")
        self.n_indexed_ = m
        self.n_features_in_ = m
        # csls: the largest r_y, so that the transformed values are >= 0
        self.scale_ = 0.0
        if self.method == "csls":
            self.scale_ = float(self.train_.dist[:, : self.local_k_].mean(1).max())
        return self

    def _check_width(self, rows, what):
        have = (rows.idx >= 0).sum(1)
        need = self.local_k_ if self.method in reduction.USES_LOCAL_K else 1
        if have.min() < need:
            row = int(have.argmin())
            raise ValueError(
                f"row {row} of {what} holds {int(have[row])} neighbours, fewer "
                f"than {'local_k=' + str(need) if need > 1 else 'one'}; build the graph with more "
                "neighbours (n_neighbors)."
            )

    def transform(self, X):
        """Secondary distances of the graph ``X [n_queries, n_indexed]``.

        Returns:
          CSR matrix of the same shape and dtype (float32 or float64), the same entries, each
          row sorted by (new value, primary distance, index). Infinite values (a zero local
          scale) are returned as the dtype's largest finite value.
        """
        check_is_fitted(self, "train_")
        rows = _graphs.rows(X, name="X")
        values, idx = self._transform_rows(rows)
        return _graphs.to_csr(values, idx, rows.shape, rows.dtype)

    def _transform_rows(self, rows, *, in_sample=False):
        """``in_sample``: the rows are the indexed points (Hubness's in-sample score); entry
        (i, i) is then left out of row i's statistics and kept at distance 0."""
        if rows.shape[1] != self.n_indexed_:
            raise ValueError(_features_message(rows.shape[1], self, graph=True))
        own_mask = (rows.idx == np.arange(rows.shape[0])[:, None]) & in_sample
        query = _graphs.drop(rows, own_mask)
        self._check_width(query, "X")
        own = np.where(own_mask, rows.idx, -1)
        dtype = rows.dtype
        n = own.shape[0]
        with _x64(dtype):
            # converted on the host (a device-side cast compiles a program per shape) and padded
            # to row-count buckets with empty rows, which no real row references: folds of a
            # cross-validation share one program
            s = _secondary_graph(
                _empty_rows(np.asarray(query.dist, dtype), np.inf),
                _empty_rows(np.asarray(query.idx, np.int32), -1),
                _empty_rows(np.asarray(self.train_.dist, dtype), np.inf),
                _empty_rows(np.asarray(self.train_.idx, np.int32), -1),
                _empty_rows(np.asarray(own, np.int32), -1),
                np.int32(self.n_indexed_),
                np.asarray(self.scale_, dtype),
                method=self.method,
                local_k=self.local_k_,
            )
            s = np.asarray(s, dtype)[:n]
        # infinite values (a zero local scale) as the largest float: scikit-learn refuses inf
        s = np.minimum(s, np.finfo(dtype).max)
        values = np.concatenate([s, np.zeros(own.shape, dtype)], axis=1)
        idx = np.concatenate([query.idx, own], axis=1)
        primary = np.concatenate([query.dist, np.zeros(own.shape, dtype)], axis=1)
        # ties of the secondary distance (frequent for mutual proximity) by primary distance
        return _graphs.sort_rows(values, idx, primary)


class DisSimLocal(TransformerMixin, BaseEstimator):
    """DisSimLocal (Hara et al., AAAI 2016): vectors in, re-weighted k-NN graph out.

    ``fit(X)`` stores the indexed vectors and each one's local centroid ``c_y`` (mean of its
    ``local_k`` nearest other indexed points). ``transform(Q)`` finds each query's
    ``n_neighbors`` exact squared-Euclidean neighbours among the indexed points and weights them
    by ``|q - y|^2 - |y - c_y|^2``, shifted by the largest fitted ``|y - c_y|^2`` so all values
    are >= 0. That is DisSimLocal's ``|q - y|^2 - |q - c_q|^2 - |y - c_y|^2`` without its query
    term, which is constant along a row: every row ranks exactly as DisSimLocal. Like
    ``KNeighborsTransformer``, a query that is an indexed point finds itself at distance 0.

    **scikit-hubness's form** ``DisSimLocal(k=5).fit_transform(graph, vectors=X)``: with
    ``vectors=`` the ``X`` of ``fit`` and ``transform`` are squared-Euclidean k-NN graphs (as
    ``KNeighborsTransformer`` makes them, ``graph.data **= 2``) and ``vectors`` the points of
    their rows. The centroids come from each indexed point's nearest ``local_k`` graph
    entries, and each stored entry is re-weighted as above (the graph's neighbours, not a new
    search). A ``local_k`` larger than a row's entries is reduced with a warning; distances
    that are not the vectors' squared Euclidean distances give a warning (DisSimLocal is not
    defined for them).

    Args:
      n_neighbors: entries per row of the output graph (the candidates re-ranked; vector
        input).
      local_k: size of the neighbourhoods whose centroids are taken.
      squared: return the (shifted) squared values; False returns their square roots.
      k, return_squared_distances: scikit-hubness's names of ``local_k`` and ``squared``; they
        win when given. ``k`` that is not an int raises ``TypeError``, an int below 1
        ``ValueError``, as there.

    Example:
      >>> import numpy as np
      >>> from sklearn.neighbors import KNeighborsClassifier
      >>> from sklearn.pipeline import make_pipeline
      >>> from hubjax.sklearn import DisSimLocal
      >>> rng = np.random.default_rng(0)
      >>> X, labels = rng.normal(size=(200, 30)), rng.integers(0, 2, 200)
      >>> pipe = make_pipeline(DisSimLocal(n_neighbors=20),
      ...                      KNeighborsClassifier(n_neighbors=5, metric="precomputed"))
      >>> pipe.fit(X, labels).predict(X[:3]).shape
      (3,)
      >>> from sklearn.neighbors import NearestNeighbors
      >>> graph = NearestNeighbors(n_neighbors=10).fit(X).kneighbors_graph(mode="distance")
      >>> graph.data **= 2
      >>> DisSimLocal(k=5).fit_transform(graph, vectors=X).shape
      (200, 200)
    """

    def __init__(
        self, n_neighbors=50, local_k=5, squared=True, k=None, return_squared_distances=None
    ):
        self.n_neighbors = n_neighbors
        self.local_k = local_k
        self.squared = squared
        self.k = k
        self.return_squared_distances = return_squared_distances

    def _local_k(self) -> int:
        if self.k is None:
            return _check_k(self.local_k, "local_k")
        if isinstance(self.k, (bool, np.bool_)) or not isinstance(self.k, (int, np.integer)):
            raise TypeError(f"k (local_k) must be an int >= 1, got {self.k!r}.")
        if self.k < 1:
            raise ValueError(f"k (local_k) must be >= 1, got {self.k}.")
        return int(self.k)

    def _squared(self) -> bool:
        if self.return_squared_distances is None:
            return bool(self.squared)
        return bool(self.return_squared_distances)

    def fit_transform(self, X, y=None, vectors=None):
        """``fit(X, vectors=vectors).transform(X, vectors=vectors)``."""
        return self.fit(X, vectors=vectors).transform(X, vectors=vectors)

    def _fit_graph(self, X, vectors):
        rows = _square_graph(X)
        n, m = rows.shape
        points = _vectors(vectors, n)
        train = _graphs.drop(rows, rows.idx == np.arange(n)[:, None])
        local_k = _clipped(self._local_k(), train, "X")
        _warn_unless_squared(train, points, points)
        centroids = points[train.idx[:, :local_k]].mean(1)
        self.X_indexed_ = points
        self.centroid_dist_ = ((points - centroids) ** 2).sum(1).astype(points.dtype)
        self.shift_ = self.centroid_dist_.max()
        self.local_k_ = local_k
        self.graph_input_ = True
        self.n_features_in_ = m
        return self

    def _transform_graph(self, X, vectors):
        rows = _graphs.rows(X, name="X")
        if rows.shape[1] != self.X_indexed_.shape[0]:
            raise ValueError(_features_message(rows.shape[1], self, graph=True))
        points = _vectors(vectors, rows.shape[0])
        _clipped(self._local_k(), rows, "X")  # the warning scikit-hubness gives here too
        _warn_unless_squared(rows, points, self.X_indexed_)
        safe = np.where(rows.idx >= 0, rows.idx, 0)
        values = np.maximum(rows.dist - self.centroid_dist_[safe] + self.shift_, 0)
        if not self._squared():
            values = np.sqrt(values)
        values, idx = _graphs.sort_rows(values, rows.idx, rows.dist)
        return _graphs.to_csr(values, idx, rows.shape, rows.dtype)

    def fit(self, X, y=None, vectors=None):
        """Stores the indexed vectors ``X [n_indexed, n_features]`` and their centroids (or,
        with ``vectors``, the graph ``X [n_indexed, n_indexed]`` of the points ``vectors``)."""
        if vectors is not None:
            return self._fit_graph(X, vectors)
        X = check_array(X, dtype=[np.float32, np.float64], ensure_min_samples=2)
        n = X.shape[0]
        local_k = self._local_k()
        _check_k(self.n_neighbors, "n_neighbors")
        if local_k > n - 1:
            raise ValueError(
                f"local_k={local_k} neighbours need at least {local_k + 1} indexed samples, got "
                f"n_samples = {n}."
            )
        with _x64(X.dtype):
            # padded to a row-count bucket (see Hubness): folds share the compiled search
            _, idx = neighbors.knn(
                _buckets.pad(X, "X"), k=local_k, metric="sqeuclidean", check_finite=False
            )
            centroids = X[np.asarray(idx)[:n]].mean(1)
        self.X_indexed_ = X
        self.centroid_dist_ = ((X - centroids) ** 2).sum(1).astype(X.dtype)
        self.shift_ = self.centroid_dist_.max()
        self.local_k_ = local_k
        self.graph_input_ = False
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X, vectors=None):
        """The DisSimLocal graph ``[n_queries, n_indexed]`` (CSR, rows sorted by value) of the
        query vectors ``X`` (or, when fitted on a graph, of the query graph ``X`` with the
        query points ``vectors``)."""
        check_is_fitted(self, "X_indexed_")
        if self.graph_input_:
            if vectors is None:
                raise ValueError(
                    "DisSimLocal was fitted on a graph: transform needs the queries' vectors too, "
                    "transform(graph, vectors=X_query)."
                )
            return self._transform_graph(X, vectors)
        if vectors is not None:
            raise ValueError(
                "DisSimLocal was fitted on vectors: transform(X) takes query vectors; fit(graph, "
                "vectors=X) for graph input."
            )
        X = check_array(X, dtype=[np.float32, np.float64])
        if X.shape[1] != self.n_features_in_:
            raise ValueError(_features_message(X.shape[1], self))
        train = self.X_indexed_
        k = min(_check_k(self.n_neighbors, "n_neighbors"), train.shape[0])
        dtype = np.result_type(X.dtype, train.dtype)
        num_queries = X.shape[0]
        with _x64(dtype):
            dq, iq = neighbors.knn(
                _buckets.pad(X.astype(dtype), "X"),
                _buckets.pad(train.astype(dtype), "the fitted X"),
                k=k,
                metric="sqeuclidean",
                check_finite=False,
            )
        dq, iq = np.asarray(dq, dtype)[:num_queries], np.asarray(iq)[:num_queries]
        values = dq - self.centroid_dist_[iq] + self.shift_
        values = np.maximum(values, 0)
        if not self._squared():
            values = np.sqrt(values)
        if np.isnan(values).any():  # pragma: no cover - inputs are checked finite
            warnings.warn("DisSimLocal produced NaN values.", stacklevel=2)
        values, iq = _graphs.sort_rows(values, iq, dq)
        return _graphs.to_csr(values, iq, (X.shape[0], train.shape[0]), dtype)


def _vectors(vectors, n):
    points = check_array(vectors, dtype=[np.float32, np.float64], input_name="vectors")
    if points.shape[0] != n:
        raise ValueError(
            f"vectors has {points.shape[0]} rows but the graph X has {n}: one vector per row."
        )
    return points


def _clipped(local_k, rows, what):
    """``local_k``, reduced with a warning to the fewest entries a row of ``rows`` holds."""
    width = int((rows.idx >= 0).sum(1).min())
    if local_k > width:
        warnings.warn(
            f"k (local_k) = {local_k} is larger than the {width} neighbours a row of {what} "
            f"holds; reducing to k={width}.",
            stacklevel=3,
        )
        return width
    return local_k


def _warn_unless_squared(rows, queries, indexed):
    """Warns when a graph's stored distances are not the squared Euclidean distances of its
    points (checked on up to 2 000 entries)."""
    qi, slot = np.nonzero(rows.idx >= 0)
    pick = np.linspace(0, qi.size - 1, min(qi.size, 2000)).astype(int)
    qi, yi = qi[pick], rows.idx[qi[pick], slot[pick]]
    stored = rows.dist[qi, slot[pick]].astype(np.float64)
    diff = queries[qi].astype(np.float64) - indexed[yi].astype(np.float64)
    squared = (diff * diff).sum(1)
    scale = max(float(squared.max(initial=0.0)), np.finfo(np.float64).tiny)
    if not np.allclose(stored, squared, rtol=1e-3, atol=1e-5 * scale):
        warnings.warn(
            "DisSimLocal is not defined for other than squared Euclidean distances: the graph's "
            "distances are not the squared Euclidean distances of the vectors (Euclidean ones "
            "need graph.data **= 2).",
            stacklevel=3,
        )


def _square_graph(X):
    """The validated rows of the indexed points' own graph ``X [n_indexed, n_indexed]``."""
    rows = _graphs.rows(X, name="X", min_rows=2)
    _check_square(rows)
    return rows


def _check_square(rows):
    if rows.shape[0] != rows.shape[1]:
        raise ValueError(
            f"fit needs the square graph of the indexed points [n_indexed, n_indexed], got "
            f"shape {rows.shape}."
        )
