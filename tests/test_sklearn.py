import numpy as np
import pytest
import scipy.sparse as sp
from helpers import random_points
from sklearn.neighbors import KNeighborsClassifier, KNeighborsTransformer
from sklearn.pipeline import make_pipeline

import hubjax
from hubjax import reduction
from hubjax.sklearn import Hubness, HubnessReduction


def test_hubness_estimator_matches_api():
    x = random_points(200, 40, seed=1)
    est = Hubness(k=8, return_value="all", store_k_occurrence=True, store_k_neighbors=True)
    values = est.fit(x).score()
    report = hubjax.hubness(x, k=8, metric="euclidean")
    assert values == pytest.approx(report.measures(), rel=1e-6)
    np.testing.assert_array_equal(est.k_occurrence_, report.k_occurrence)
    assert est.k_neighbors_.shape == (200, 8)
    assert not (est.k_neighbors_ == np.arange(200)[:, None]).any()


def test_hubness_estimator_queries_and_reduction():
    x, q = random_points(150, 30, seed=2), random_points(60, 30, seed=3)
    score = Hubness(k=5, return_value="robinhood").fit(x).score(q)
    assert score == pytest.approx(float(hubjax.hubness(q, x, k=5, metric="euclidean").robinhood))
    reduced = Hubness(k=5, hubness="mp_gaussian", candidates=30).fit(x).score()
    plain = Hubness(k=5).fit(x).score()
    assert reduced < plain
    with pytest.raises(ValueError, match="return_value"):
        Hubness(return_value="nope").fit(x)


@pytest.mark.parametrize("method", ["mp_empiric", "mp_gaussian", "local_scaling", "nicdm", "csls"])
def test_graph_reducer_matches_reduction_knn(method):
    x = random_points(120, 16, seed=4)
    c = 20
    graph = KNeighborsTransformer(n_neighbors=c, mode="distance").fit_transform(x)
    reducer = HubnessReduction(method=method, local_k=5).fit(graph)
    out = reducer.transform(graph)
    assert sp.issparse(out) and out.shape == graph.shape
    np.testing.assert_array_equal(out.diagonal(), 0.0)
    # the transformer's secondary distances equal the API's on the same candidates
    _, idx = reduction.knn(x, k=c, method=method, candidates=c, metric="euclidean", local_k=5)
    secondary, _ = reduction.knn(x, k=c, method=method, candidates=c, metric="euclidean", local_k=5)
    for i in (0, 17, 119):
        got = np.asarray(out[i, np.asarray(idx[i])].todense()).ravel()
        np.testing.assert_allclose(got, np.asarray(secondary[i]), rtol=1e-4, atol=1e-5)


def test_pipeline_with_kneighbors_classifier():
    rng = np.random.default_rng(5)
    x = random_points(200, 10, seed=6)
    labels = (x[:, 0] > 0).astype(int)
    pipe = make_pipeline(
        KNeighborsTransformer(n_neighbors=30, mode="distance"),
        HubnessReduction(method="mp_gaussian"),
        KNeighborsClassifier(n_neighbors=5, metric="precomputed"),
    )
    pipe.fit(x, labels)
    test = rng.normal(size=(50, 10)).astype(np.float32)
    accuracy = np.mean(pipe.predict(test) == (test[:, 0] > 0))
    assert accuracy > 0.8


def test_reducer_rejects_bad_graphs():
    with pytest.raises(ValueError, match="needs vectors"):
        HubnessReduction(method="dis_sim_local").fit(sp.eye(5, format="csr"))
    ragged = sp.csr_matrix(np.array([[0, 1.0, 2.0], [1.0, 0, 0], [2.0, 3.0, 0]]))
    with pytest.raises(ValueError, match="same number"):
        HubnessReduction(method="nicdm", local_k=1).fit(ragged)
