"""Plain NumPy float64 references for the tests. Deliberately simple and slow."""

import numpy as np
from scipy import stats


def distances(x, y, metric):
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if metric in ("sqeuclidean", "euclidean"):
        d = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
        return np.sqrt(d) if metric == "euclidean" else d
    if metric == "dot":
        return -(x @ y.T)
    nx = np.linalg.norm(x, axis=1)
    ny = np.linalg.norm(y, axis=1)
    sim = np.zeros((len(x), len(y)))
    for i in range(len(x)):
        for j in range(len(y)):
            if nx[i] > 0 and ny[j] > 0:
                sim[i, j] = x[i] @ y[j] / (nx[i] * ny[j])
    return 1.0 - sim


def self_distance(x, metric):
    x = np.asarray(x, np.float64)
    if metric == "dot":
        return -(x * x).sum(1)
    if metric == "cosine":
        return np.where(np.linalg.norm(x, axis=1) > 0, 0.0, 1.0)
    return np.zeros(len(x))


def knn(x, y=None, *, k, metric="sqeuclidean", include_self=False):
    """(distances, indices) sorted by (distance, index); in-sample conventions of design.md."""
    in_sample = y is None
    d = distances(x, x if in_sample else y, metric)
    n, m = d.shape
    dist = np.empty((n, k))
    idx = np.empty((n, k), np.int64)
    for i in range(n):
        cols = np.arange(m)
        if in_sample:
            cols = cols[cols != i]
        order = cols[np.lexsort((cols, d[i, cols]))]
        if in_sample and include_self:
            order = np.concatenate([[i], order[: k - 1]])
        else:
            order = order[:k]
        idx[i] = order
        dist[i] = d[i, order]
        if in_sample and include_self:
            dist[i, 0] = self_distance(x[i : i + 1], metric)[0]
    return dist, idx


def k_occurrence(idx, m):
    return np.bincount(np.asarray(idx).ravel(), minlength=m)


def measures(o, k, hub_size=2.0):
    """Every hubness measure of the counts ``o`` in float64, as scikit-hubness defines them."""
    o = np.asarray(o, np.float64)
    m = len(o)
    mean, std = o.mean(), o.std(ddof=1)
    trunc = stats.truncnorm((0 - mean) / std, (np.iinfo(np.int64).max - mean) / std).moment(3)
    pairwise = np.abs(o[:, None] - o[None, :]).sum()
    return {
        "k_skewness": stats.skew(o),
        "k_skewness_truncnorm": trunc,
        "robinhood": 0.5 * np.abs(o - mean).sum() / o.sum(),
        "gini": pairwise / (2 * m * o.sum()),
        "atkinson": 1 - np.mean(o**0.5) ** 2 / mean,
        "antihub_occurrence": np.mean(o == 0),
        "hub_occurrence": o[o >= hub_size * k].sum() / o.sum(),
        "groupie_ratio": o.max() / o.sum(),
    }
