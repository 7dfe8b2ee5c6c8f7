"""scikit-learn style estimators, for users coming from scikit-hubness.

* :class:`Hubness` -- ``Hubness(k=10, return_value="k_skewness", ...).fit(X).score()``, with
  scikit-hubness's parameter names (``hubness`` / ``hubness_params`` select a reduction).
* :class:`HubnessReduction` -- a transformer for scikit-learn pipelines built on
  ``KNeighborsTransformer``: it re-weights a sparse k-NN distance graph with a secondary distance,
  like scikit-hubness 0.30's ``MutualProximity`` / ``LocalScaling`` / ... transformers::

      from sklearn.neighbors import KNeighborsTransformer, KNeighborsClassifier
      from sklearn.pipeline import make_pipeline
      from hubjax.sklearn import HubnessReduction
      pipe = make_pipeline(
          KNeighborsTransformer(n_neighbors=50, mode="distance"),
          HubnessReduction(method="mp_gaussian"),
          KNeighborsClassifier(n_neighbors=5, metric="precomputed"),
      )

Differences from scikit-hubness: in-sample scoring never counts a point as its own neighbour
(scikit-hubness's development version did); ``hub_occurrence`` is divided by ``k * n_queries``;
local scaling includes its exponential; k-NN is always exact (no ANN ``algorithm`` option);
``metric`` names follow hubjax (``"euclidean"``, ``"sqeuclidean"``, ``"cosine"``, ``"dot"``).
``dis_sim_local`` needs vectors and is not available in :class:`HubnessReduction`.
"""

from __future__ import annotations

import numpy as np

try:
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.neighbors import sort_graph_by_row_values
    from sklearn.utils.validation import check_is_fitted
except ImportError:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("hubjax.sklearn needs scikit-learn: pip install 'hubjax[sklearn]'") from None

from hubjax import measures, reduction

__all__ = ["Hubness", "HubnessReduction"]

_MEASURES = measures.HubnessReport.MEASURES


class Hubness(BaseEstimator):
    """Hubness of a data set, scikit-hubness style.

    Args:
      k: neighbours per point.
      return_value: a measure name (see :class:`hubjax.HubnessReport`) or ``"all"`` for a dict.
      hub_size: hubs occur at least ``hub_size * k`` times.
      metric: hubjax metric name.
      hubness: ``None`` or a reduction method of :func:`hubjax.reduction.knn`.
      hubness_params: extra reduction parameters, e.g. ``{"local_k": 7}``.
      candidates: primary neighbours for the reduction.
      store_k_occurrence: keep ``k_occurrence_`` after :meth:`score`.
      store_k_neighbors: keep ``k_neighbors_`` (the neighbour indices) after :meth:`score`.

    Example:
      >>> import numpy as np
      >>> from hubjax.sklearn import Hubness
      >>> X = np.random.default_rng(0).normal(size=(300, 64)).astype(np.float32)
      >>> score = Hubness(k=10).fit(X).score()
      >>> score > 0.5
      True
    """

    def __init__(
        self,
        k=10,
        return_value="k_skewness",
        hub_size=2.0,
        metric="euclidean",
        hubness=None,
        hubness_params=None,
        candidates=50,
        store_k_occurrence=False,
        store_k_neighbors=False,
    ):
        self.k = k
        self.return_value = return_value
        self.hub_size = hub_size
        self.metric = metric
        self.hubness = hubness
        self.hubness_params = hubness_params
        self.candidates = candidates
        self.store_k_occurrence = store_k_occurrence
        self.store_k_neighbors = store_k_neighbors

    def fit(self, X, y=None):
        """Stores the indexed points ``X [m, d]``."""
        if self.return_value != "all" and self.return_value not in _MEASURES:
            raise ValueError(f"return_value must be 'all' or one of {_MEASURES}.")
        self.X_train_ = np.asarray(X)
        self.n_features_in_ = self.X_train_.shape[1] if self.X_train_.ndim == 2 else None
        return self

    def score(self, X=None, y=None):
        """Hubness of the fitted points in-sample (``X=None``) or of ``X`` queried against them."""
        check_is_fitted(self, "X_train_")
        queries = None if X is None else np.asarray(X)
        args = (queries, self.X_train_) if queries is not None else (self.X_train_, None)
        idx, num_points = measures.neighbour_lists(
            *args,
            k=self.k,
            metric=self.metric,
            include_self=False,
            block_size=None,
            check_finite=True,
            reduction=self.hubness,
            candidates=self.candidates,
            reduction_params=self.hubness_params,
        )
        report = measures._report(
            idx, num_points=num_points, k=self.k, hub_size=float(self.hub_size), metric=self.metric
        )
        if self.store_k_occurrence:
            self.k_occurrence_ = np.asarray(report.k_occurrence)
        if self.store_k_neighbors:
            self.k_neighbors_ = np.asarray(idx)
        values = report.measures()
        return values if self.return_value == "all" else values[self.return_value]


class HubnessReduction(TransformerMixin, BaseEstimator):
    """Re-weights a sparse k-NN distance graph (``KNeighborsTransformer``) by a secondary distance.

    ``fit(G_train)`` learns each training point's neighbourhood statistics from its row of the
    training graph (its own entry, the diagonal, excluded); ``transform(G)`` replaces each stored
    distance ``G[i, j]`` by the secondary distance between query i (statistics from its row) and
    training point j. A square graph of the fitted size is taken as in-sample: its diagonal
    entries are skipped for the statistics and kept at distance 0. Every row must hold the same
    number of entries (as ``KNeighborsTransformer`` produces).

    Args:
      method: ``"mp_empiric"``, ``"mp_gaussian"``, ``"local_scaling"``, ``"nicdm"`` or
        ``"csls"`` (see :mod:`hubjax.reduction`).
      local_k: neighbourhood size of the local statistics (default 5, or 10 for csls).
    """

    def __init__(self, method="mp_gaussian", local_k=None):
        self.method = method
        self.local_k = local_k

    def _local_k(self):
        if self.method == "dis_sim_local":
            raise ValueError("dis_sim_local needs vectors; use hubjax.reduction.knn instead.")
        params = {} if self.local_k is None else {"local_k": self.local_k}
        return reduction.check_method(self.method, "euclidean", params)

    def fit(self, X, y=None):
        self.local_k_ = self._local_k()
        dist, _ = self._rows(X, in_sample=True)
        self.n_train_ = X.shape[0]
        self.train_dist_ = dist
        return self

    def _rows(self, graph, in_sample):
        graph = graph.tocsr()
        graph.sort_indices()
        counts = np.diff(graph.indptr)
        rows = np.repeat(np.arange(graph.shape[0]), counts)
        keep = ~(in_sample & (graph.indices == rows))
        kept = np.bincount(rows[keep], minlength=graph.shape[0])
        if kept.min() != kept.max():
            raise ValueError("every row of the graph must hold the same number of neighbours.")
        c = int(kept[0])
        if c < self.local_k_:
            raise ValueError(f"rows hold {c} neighbours, fewer than local_k={self.local_k_}.")
        dist = graph.data[keep].reshape(-1, c).astype(np.float32)
        idx = graph.indices[keep].reshape(-1, c)
        order = np.lexsort((idx, dist), axis=1)
        return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)

    def transform(self, X):
        check_is_fitted(self, "train_dist_")
        import jax.numpy as jnp
        import scipy.sparse as sp

        graph = X.tocsr()
        in_sample = graph.shape == (self.n_train_, self.n_train_)
        dq, iq = self._rows(graph, in_sample=in_sample)
        s = np.asarray(
            reduction.secondary(
                self.method,
                jnp.asarray(dq),
                jnp.asarray(iq),
                jnp.asarray(self.train_dist_),
                self.local_k_,
            )
        )
        data, rows, cols = s.ravel(), np.repeat(np.arange(graph.shape[0]), dq.shape[1]), iq.ravel()
        if in_sample:  # keep each point's own entry at distance 0 (scikit-learn's convention)
            diag = np.arange(graph.shape[0])
            data = np.concatenate([data, np.zeros(len(diag), data.dtype)])
            rows, cols = np.concatenate([rows, diag]), np.concatenate([cols, diag])
        out = sp.csr_matrix((data, (rows, cols)), shape=graph.shape)
        # rows ordered by distance, as scikit-learn's precomputed-graph estimators prefer
        return sort_graph_by_row_values(out, copy=False, warn_when_not_sorted=False)
