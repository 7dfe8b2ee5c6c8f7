"""hubjax.sklearn: what scikit-hubness's own suite checks of its estimator and transformers
(parameters, graph input, each reduction's values, error cases), plus scikit-learn's
``check_estimator``. Written for hubjax; references are plain NumPy."""

import warnings

import numpy as np
import pytest
import reference
import scipy.sparse as sp
from helpers import load_example, random_points, sample
from scipy.spatial.distance import squareform
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier, KNeighborsTransformer, NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import check_estimator

import hubjax
from hubjax import reduction
from hubjax.sklearn import DisSimLocal, Hubness, HubnessReduction, resolve_reduction

GRAPH_METHODS = ["mp_empiric", "mp_gaussian", "local_scaling", "nicdm", "csls"]
# ten pairwise distances of five points; the skewness of its k = 2 occurrence, computed by hand
# in a spreadsheet (scikit-hubness's ground truth)
SPREADSHEET = squareform(np.array([0.2, 0.1, 0.8, 0.4, 0.3, 0.5, 0.7, 1.0, 0.6, 0.9]))
SPREADSHEET_SKEWNESS = -0.2561204163


def np_counts(idx, m):
    return np.bincount(np.asarray(idx).ravel(), minlength=m)


def np_in_sample_lists(d, k):
    """k nearest others of every row of a full distance matrix; ties to the smaller index."""
    n = len(d)
    out = np.empty((n, k), int)
    for i in range(n):
        cols = np.array([j for j in range(n) if j != i])
        out[i] = cols[np.lexsort((cols, d[i, cols]))][:k]
    return out


# --- scikit-learn's own checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    "estimator",
    [
        Hubness(),
        Hubness(metric="precomputed", k=3),
        Hubness(hubness="mp_gaussian", candidates=5, k=3),
        *sample(
            [HubnessReduction(method=m) for m in GRAPH_METHODS if m in reduction.MUTUAL_PROXIMITY]
            + [HubnessReduction(method=m, local_k=3) for m in GRAPH_METHODS[2:]],
            2,
            key="check_estimator",
        ),
        DisSimLocal(n_neighbors=10, local_k=3),
    ],
    ids=lambda e: f"{type(e).__name__}-{e.get_params().get('method', e.get_params().get('k'))}",
)
def test_check_estimator(estimator):
    check_estimator(estimator)


# --- Hubness: values --------------------------------------------------------------------------


@pytest.mark.parametrize("graph", ["sparse", "dense"])
def test_spreadsheet_ground_truth(graph):
    g = sp.csr_matrix(SPREADSHEET) if graph == "sparse" else SPREADSHEET
    hub = Hubness(k=2, metric="precomputed").fit(g)
    # to 10 decimals, as scikit-hubness's own test: the measures are float64 of integer counts
    np.testing.assert_allclose(hub.score(), SPREADSHEET_SKEWNESS, atol=1e-10)
    # the same graph given as queries: no entry is the point itself, every entry is a neighbour
    queries = sp.csr_matrix(SPREADSHEET) if graph == "sparse" else SPREADSHEET + np.eye(5)
    np.testing.assert_allclose(hub.score(queries), SPREADSHEET_SKEWNESS, atol=1e-10)


@pytest.mark.parametrize(("n", "d", "k"), [(20, 2, 1), (20, 500, 5), (200, 2, 10), (200, 50, 10)])
def test_measures_match_numpy(n, d, k):
    x = 99.0 * (np.random.default_rng(n + d).random((n, d)) - 0.5)  # uncentred, uniform
    hub = Hubness(k=k, return_value="all", return_k_occurrence=True, store_k_neighbors=True)
    res = hub.fit(x).score()
    lists = np_in_sample_lists(reference.distances(x, x, "euclidean"), k)
    occ = np_counts(lists, n)
    np.testing.assert_array_equal(res["k_occurrence"], occ)
    np.testing.assert_array_equal(np_counts(hub.k_neighbors_, n), occ)
    assert hub.k_neighbors_.shape == (n, k)
    # float64 from the integer counts: scikit-hubness's numbers to 10 decimals
    for name, value in reference.measures(occ, k).items():
        assert isinstance(res[name], float)
        np.testing.assert_allclose(res[name], value, rtol=1e-10, atol=1e-12, err_msg=name)


def test_precomputed_graphs_and_vectors_agree():
    x, q = random_points(120, 20, seed=1), random_points(40, 20, seed=2)
    vec = Hubness(k=5, return_value="all").fit(x)
    dense = Hubness(k=5, return_value="all", metric="precomputed")
    dense.fit(reference.distances(x, x, "euclidean"))
    # KNeighborsTransformer's graph holds each point itself (distance 0) plus n_neighbors others
    graph = KNeighborsTransformer(n_neighbors=8).fit(x)
    sparse = Hubness(k=5, return_value="all", metric="precomputed").fit(graph.transform(x))
    for other in (dense, sparse):
        assert other.score() == pytest.approx(vec.score(), abs=1e-6)
    query_graph = NearestNeighbors(n_neighbors=8).fit(x).kneighbors_graph(q, mode="distance")
    assert sparse.score(query_graph) == pytest.approx(vec.score(q), abs=1e-6)
    assert dense.score(reference.distances(q, x, "euclidean")) == pytest.approx(
        vec.score(q), abs=1e-6
    )


def test_include_self_reproduces_scikit_hubness_counting():
    """scikit-hubness 0.30 lists each point as its own first neighbour (k - 1 others)."""
    x = random_points(150, 30, seed=3)
    got = Hubness(k=6, include_self=True, return_value="all").fit(x).score()
    assert got == pytest.approx(hubjax.hubness(x, k=6, include_self=True).measures(), abs=1e-6)
    graph = KNeighborsTransformer(n_neighbors=6).fit_transform(x)
    from_graph = Hubness(k=6, include_self=True, metric="precomputed", return_value="all")
    assert from_graph.fit(graph).score() == pytest.approx(got, abs=1e-6)
    assert got["antihub_occurrence"] == 0.0


@pytest.mark.parametrize("return_value", ["all", "k_skewness"])
@pytest.mark.parametrize("flag", ["return_k_occurrence", "return_hubs", "return_antihubs"])
@pytest.mark.parametrize("on", [True, False])
def test_return_flags(return_value, flag, on):
    x = random_points(100, 40, seed=4)
    result = Hubness(k=5, return_value=return_value, **{flag: on}).fit(x).score()
    key = {"return_k_occurrence": "k_occurrence", "return_hubs": "hubs"}.get(flag, "antihubs")
    if not on:  # a float without flags, a dict of measures with "all"
        with pytest.raises(KeyError if return_value == "all" else TypeError):
            result[key]
        return
    occ = np.asarray(hubjax.hub_values(x, k=5))
    expected = {
        "k_occurrence": occ,
        "hubs": np.flatnonzero(occ >= 10),
        "antihubs": np.flatnonzero(occ == 0),
    }[key]
    np.testing.assert_array_equal(result[key], expected)
    assert return_value in result or set(result) >= set(hubjax.HubnessReport.MEASURES)


def test_all_but_gini():
    res = Hubness(return_value="all_but_gini").fit(random_points(60, 8)).score()
    assert set(res) == set(hubjax.HubnessReport.MEASURES) - {"gini"}


def test_store_k_occurrence_and_minkowski():
    x = random_points(80, 10, seed=5)
    hub = Hubness(k=4, metric="minkowski", p=2, store_k_occurrence=True).fit(x)
    assert hub.score() == pytest.approx(Hubness(k=4).fit(x).score())
    np.testing.assert_array_equal(hub.k_occurrence_, hubjax.hub_values(x, k=4))
    with pytest.raises(ValueError, match="p=1"):
        Hubness(metric="minkowski", p=1).fit(x)


@pytest.mark.parametrize("verbose", [-1, 0, 1, 2, 3, None, True])
def test_verbose(verbose, capsys):
    value = Hubness(k=2, metric="precomputed", verbose=verbose).fit(SPREADSHEET).score()
    np.testing.assert_allclose(value, SPREADSHEET_SKEWNESS, atol=1e-7)
    printed = capsys.readouterr().err
    assert ("k_skewness" in printed) == bool(verbose and verbose > 0)


def test_shuffle_equal_breaks_graph_ties_randomly():
    # points 1..6 are at distance 1 from point 0 and 5 from each other: every list but 0's
    # holds 0 and a tie among the rest
    d = np.full((7, 7), 5.0)
    d[0, 1:] = d[1:, 0] = 1.0
    np.fill_diagonal(d, 0)
    fixed = Hubness(k=2, metric="precomputed", return_k_occurrence=True).fit(d).score()
    # ties to the smaller index: point 1 becomes a hub by its index alone
    np.testing.assert_array_equal(fixed["k_occurrence"], [6, 6, 2, 0, 0, 0, 0])
    draws = {
        tuple(
            Hubness(k=2, metric="precomputed", return_k_occurrence=True, shuffle_equal=True)
            .set_params(random_state=seed)
            .fit(d)
            .score()["k_occurrence"]
        )
        for seed in range(6)
    }
    assert len(draws) > 1
    # without ties, shuffling changes nothing
    x = random_points(50, 6, seed=6)
    g = reference.distances(x, x, "euclidean")
    plain = Hubness(metric="precomputed").fit(g).score()
    assert Hubness(metric="precomputed", shuffle_equal=True).fit(g).score() == plain


def test_reduction_parameters_scikit_hubness_names():
    x = random_points(150, 30, seed=7)
    base = Hubness(k=5, hubness="local_scaling", hubness_params={"local_k": 7}).fit(x).score()
    old = Hubness(k=5, hubness="ls", hubness_params={"k": 7}).fit(x).score()  # <= 0.21 style
    assert old == base
    assert resolve_reduction("mp", {"method": "empiric"}) == ("mp_empiric", {})
    assert resolve_reduction("mutual_proximity", None) == ("mp_gaussian", {})
    assert resolve_reduction("local_scaling", {"method": "nicdm"}) == ("nicdm", {})
    assert resolve_reduction("dsl", {"k": 3}) == ("dis_sim_local", {"local_k": 3})
    with pytest.raises(ValueError, match="Unknown hubness method"):
        Hubness(hubness="magic").fit(x)
    with pytest.raises(TypeError, match="sigma"):
        Hubness(hubness="nicdm", hubness_params={"sigma": 1}).fit(x)


def test_reduced_hubness_equals_the_functional_api():
    x = random_points(200, 40, seed=8)
    for method in ("mp_gaussian", "mp_empiric", "dis_sim_global"):
        got = Hubness(k=5, hubness=method, candidates=30, return_value="all").fit(x).score()
        want = hubjax.hubness(x, k=5, metric="euclidean", reduction=method, candidates=30)
        assert got == pytest.approx(want.measures(), abs=1e-6)


# --- Hubness: errors --------------------------------------------------------------------------


def test_errors_name_the_values():
    x = random_points(12, 3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_neighbors"):
            Hubness(k=bad).fit(x)
    with pytest.raises(ValueError, match=r"k=20 .* n_samples = 12"):
        Hubness(k=20).fit(x).score()
    with pytest.raises(ValueError, match="return_value"):
        Hubness(return_value="k_neighbors").fit(x)
    with pytest.raises(ValueError, match="hub_size"):
        Hubness(hub_size=0).fit(x)
    with pytest.raises(ValueError, match="Unknown metric"):
        Hubness(metric="manhattan").fit(x)
    with pytest.raises(TypeError, match="metric='precomputed'"):
        Hubness().fit(sp.csr_matrix(x))
    with pytest.raises(ValueError, match="NaN"):
        Hubness().fit(np.where(np.eye(12, 3) > 0, np.nan, x))
    with pytest.raises(ValueError, match="expecting 3 features"):
        Hubness(k=2).fit(x).score(random_points(4, 5))
    graph = KNeighborsTransformer(n_neighbors=3).fit_transform(x)  # self + 3 others
    with pytest.raises(ValueError, match=r"k=5 .* holds only 3 neighbours"):
        Hubness(k=5, metric="precomputed").fit(graph).score()
    with pytest.raises(ValueError, match="square graph"):
        Hubness(metric="precomputed").fit(graph[:5])
    with pytest.raises(ValueError, match="Negative"):
        Hubness(metric="precomputed").fit(-SPREADSHEET)
    with pytest.raises(ValueError, match="needs vectors"):
        Hubness(metric="precomputed", hubness="dis_sim_local").fit(graph)
    with pytest.raises(ValueError, match="include_self"):
        Hubness(include_self=True, hubness="nicdm").fit(x)


# --- HubnessReduction -------------------------------------------------------------------------


@pytest.mark.parametrize("method", GRAPH_METHODS)
def test_graph_reduction_equals_the_formulas_on_the_same_candidates(method):
    """Queries' graph rows are reduction.knn's candidate lists; the training graph from
    KNeighborsTransformer holds each point itself plus c others, the reference lists."""
    x = random_points(120, 16, seed=9).astype(np.float64)
    q = random_points(30, 16, seed=20).astype(np.float64)
    c, local_k = 20, 5
    fitted = KNeighborsTransformer(n_neighbors=c).fit(x)
    red = HubnessReduction(method=method, local_k=None if "mp" in method else local_k)
    red.fit(fitted.transform(x))
    out = red.transform(NearestNeighbors(n_neighbors=c).fit(x).kneighbors_graph(q, mode="distance"))
    assert sp.issparse(out) and out.shape == (30, 120) and out.dtype == np.float64
    assert out.data.min() >= 0
    if method == "csls":  # r_y from y's nearest indexed points (its fitted row)
        dq, iq = reference.knn(q, x, k=c, metric="euclidean")
        dr, _ = reference.knn(x, k=local_k, metric="euclidean")
        s = 2 * dq - dq[:, :local_k].mean(1)[:, None] - dr.mean(1)[iq]
        idx = iq
    else:
        params = {"stats": "candidates"} if "mp" in method else {"local_k": local_k}
        s, idx = reduction.knn(q, x, k=c, method=method, candidates=c, metric="euclidean", **params)
        s, idx = np.asarray(s), np.asarray(idx)
    for i in range(30):
        got = np.asarray(out[i, idx[i]].todense()).ravel()
        if method == "csls":  # the transformer drops -r_x and shifts: same ranking per row
            got = got - got[0] + s[i, 0]
        np.testing.assert_allclose(got, s[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", GRAPH_METHODS)
def test_fit_transform_is_fit_then_transform_and_rows_are_independent(method):
    x = random_points(90, 8, seed=21)
    graph = KNeighborsTransformer(n_neighbors=12).fit_transform(x)
    red = HubnessReduction(method=method, local_k=None if "mp" in method else 4)
    whole = red.fit_transform(graph)
    np.testing.assert_allclose(red.transform(graph).toarray(), whole.toarray())
    part = red.transform(graph[20:35])
    np.testing.assert_allclose(part.toarray(), whole[20:35].toarray())


@pytest.mark.parametrize("method", reduction.MUTUAL_PROXIMITY)
def test_dense_distance_matrix_gives_mutual_proximity_over_all_points(method):
    x = random_points(80, 12, seed=10).astype(np.float64)
    q = random_points(25, 12, seed=22).astype(np.float64)
    red = HubnessReduction(method=method).fit(reference.distances(x, x, "euclidean"))
    out = red.transform(reference.distances(q, x, "euclidean"))
    s, idx = reduction.knn(q, x, k=10, method=method, candidates=30, metric="euclidean")
    for i in range(25):
        got = np.asarray(out[i, np.asarray(idx[i])].todense()).ravel()
        np.testing.assert_allclose(got, np.asarray(s[i]), rtol=1e-4, atol=1e-5)


def test_in_sample_graph_hubness_with_reduction_leaves_each_point_out():
    x = random_points(90, 30, seed=23)
    d = reference.distances(x, x, "euclidean")
    for method in reduction.MUTUAL_PROXIMITY:
        got = Hubness(k=5, metric="precomputed", hubness=method, return_value="all")
        want = hubjax.hubness(x, k=5, metric="euclidean", reduction=method, candidates=89)
        assert got.fit(d).score() == pytest.approx(want.measures(), abs=1e-5)


def test_test_graph_of_training_size_gets_no_fake_self_edges():
    """A test set as large as the training set is not in-sample: no zero 'self' entries."""
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(4, 30)) * 3
    labels = rng.integers(0, 4, 400)
    x = centres[labels] + rng.normal(size=(400, 30))
    train, test, y_train, y_test = x[:200], x[200:], labels[:200], labels[200:]
    knt = KNeighborsTransformer(n_neighbors=30).fit(train)
    red = HubnessReduction(method="mp_gaussian").fit(knt.transform(train))
    g_test = red.transform(knt.transform(test))  # 200 x 200, like the training graph
    assert g_test.diagonal().max() > 0  # no fake zero self edges
    clf = KNeighborsClassifier(n_neighbors=1, metric="precomputed").fit(
        red.transform(knt.transform(train)), y_train
    )
    assert np.mean(clf.predict(g_test) == y_test) > 0.9


def test_pipeline_and_cross_validation():
    rng = np.random.default_rng(12)
    x = random_points(300, 10, seed=13)
    labels = (x[:, 0] > 0).astype(int)
    pipe = make_pipeline(
        KNeighborsTransformer(n_neighbors=30, mode="distance"),
        HubnessReduction(method="mp_gaussian"),
        KNeighborsClassifier(n_neighbors=5, metric="precomputed"),
    )
    pipe.fit(x, labels)
    test = rng.normal(size=(80, 10)).astype(np.float32)
    assert np.mean(pipe.predict(test) == (test[:, 0] > 0)) > 0.8
    for method in GRAPH_METHODS:  # every method's output is accepted (csls included)
        pipe.set_params(hubnessreduction__method=method)
        assert cross_val_score(pipe, x, labels, cv=3).mean() > 0.7


def test_duplicates_and_ragged_graphs():
    x = np.repeat(random_points(30, 5, seed=14), 3, axis=0)  # every point three times
    graph = KNeighborsTransformer(n_neighbors=10).fit_transform(x)
    zero = graph.copy()
    zero.data = (graph.data == 0).astype(float)
    for method in GRAPH_METHODS:
        out = HubnessReduction(method=method, local_k=None if "mp" in method else 3)
        out = out.fit_transform(graph)  # rows whose own entry a duplicate displaced: no error
        assert np.isfinite(out.data).all() and out.data.min() >= 0
        if method in ("local_scaling", "nicdm"):  # a zero distance stays 0
            np.testing.assert_array_equal(out.multiply(zero).data, 0)
    # a radius graph: rows of different lengths
    xr = random_points(100, 4, seed=15)
    radius = NearestNeighbors(radius=2.5).fit(xr).radius_neighbors_graph(mode="distance")
    assert len(set(np.diff(radius.indptr))) > 1
    out = HubnessReduction(method="mp_empiric").fit_transform(radius)
    assert out.nnz >= radius.nnz


def test_dtypes_preserved():
    x = random_points(60, 6, seed=16)
    for dtype in (np.float32, np.float64):
        graph = KNeighborsTransformer(n_neighbors=10).fit_transform(x).astype(dtype)
        assert HubnessReduction().fit_transform(graph).dtype == dtype
        assert DisSimLocal(n_neighbors=10).fit_transform(x.astype(dtype)).dtype == dtype


def test_reducer_errors():
    graph = KNeighborsTransformer(n_neighbors=4).fit_transform(random_points(20, 3))
    with pytest.raises(ValueError, match="DisSimLocal"):
        HubnessReduction(method="dis_sim_local").fit(graph)
    with pytest.raises(ValueError, match="local_k does not apply"):
        HubnessReduction(method="mp_gaussian", local_k=3).fit(graph)
    with pytest.raises(ValueError, match="fewer than local_k=5"):
        HubnessReduction(method="nicdm").fit(graph)
    red = HubnessReduction(method="nicdm", local_k=2).fit(graph)
    with pytest.raises(ValueError, match="expecting 20 features"):
        red.transform(graph[:, :10])
    with pytest.raises(ValueError, match="square graph"):
        HubnessReduction().fit(graph[:7])


# --- DisSimLocal ------------------------------------------------------------------------------


@pytest.mark.parametrize("in_sample", [True, False])
def test_dis_sim_local_ranks_like_the_published_formula(in_sample):
    x = random_points(150, 12, seed=17).astype(np.float64) + 5.0
    q = x if in_sample else random_points(40, 12, seed=18).astype(np.float64) + 5.0
    c, local_k = 15, 4
    out = DisSimLocal(n_neighbors=c, local_k=local_k).fit(x).transform(q)
    assert out.shape == (len(q), 150) and out.data.min() >= 0
    # NumPy: |q - y|^2 - |q - c_q|^2 - |y - c_y|^2 over q's c nearest, centroids of local_k
    dqx = reference.distances(q, x, "sqeuclidean")
    _, ir = reference.knn(x, k=local_k, metric="sqeuclidean")
    cy = x[ir].mean(1)
    for i in range(len(q)):
        cand = np.lexsort((np.arange(150), dqx[i]))[:c]
        cq = x[cand[:local_k]].mean(0)
        dsl = dqx[i, cand] - ((q[i] - cq) ** 2).sum() - ((x[cand] - cy[cand]) ** 2).sum(1)
        got = np.asarray(out[i, cand].todense()).ravel()
        np.testing.assert_allclose(got - got.min(), dsl - dsl.min(), rtol=1e-6, atol=1e-6)
    roots = DisSimLocal(n_neighbors=c, local_k=local_k, squared=False).fit(x).transform(q)
    np.testing.assert_allclose(roots.data**2, out.data, rtol=1e-6)


def test_dis_sim_local_pipeline_reduces_hubness():
    x = random_points(400, 60, seed=19)
    graph = DisSimLocal(n_neighbors=40).fit_transform(x)
    plain = Hubness(k=10).fit(x).score()
    reduced = Hubness(k=10, metric="precomputed").fit(graph).score()
    assert reduced < plain - 0.3


def test_migration_guide_numbers(capsys):
    """docs/migration.rst quotes what examples/scikit_hubness_readme.py prints; its headline
    reduction is the published mutual proximity's (positive), not the 50-NN graph's."""
    got = load_example("scikit_hubness_readme").main()
    quoted = {
        "k_skewness": 3.977,
        "accuracy": 0.793,
        "accuracy_mp": 0.867,
        "k_skewness_mp_graph": 4.557,
        "k_skewness_mp_all": 1.159,
    }
    assert got == pytest.approx(quoted, abs=2e-3)
    printed = capsys.readouterr().out
    assert "k-skewness after MP: 1.159 (reduction of 2.818)" in printed
    assert "reduction of -" not in printed


# --- DisSimLocal in scikit-hubness's form: graph plus vectors ---------------------------------


def _squared_graph(x, n_neighbors, metric="sqeuclidean"):
    return (
        NearestNeighbors(n_neighbors=n_neighbors, metric=metric)
        .fit(x)
        .kneighbors_graph(mode="distance")
    )


@pytest.mark.parametrize("squared", [True, False])
def test_dis_sim_local_graph_and_vectors_ranks_like_the_formula(squared):
    x = random_points(120, 12, seed=21).astype(np.float64) + 3.0
    graph = _squared_graph(x, 15)
    out = DisSimLocal(k=5, return_squared_distances=squared).fit_transform(graph, vectors=x)
    # the published formula on the graph's own entries, centroids from the graph's lists
    d2 = reference.distances(x, x, "sqeuclidean")
    idx = np.asarray(graph.indices).reshape(120, 15)
    cent = x[idx[:, :5]].mean(1)
    cy = ((x - cent) ** 2).sum(1)
    cq = ((x - cent) ** 2).sum(1)  # in-sample: a query's centroid is its own
    formula = d2[np.arange(120)[:, None], idx] - cq[:, None] - cy[idx]
    order = np.lexsort((idx, formula), axis=1)
    got = np.asarray(out.indices).reshape(120, 15)
    np.testing.assert_array_equal(got, np.take_along_axis(idx, order, 1))
    values = np.asarray(out.data).reshape(120, 15)
    assert (values >= 0).all()
    shifted = np.take_along_axis(formula, order, 1) + cq[:, None]  # less the query's own term
    want = shifted + cy.max()
    np.testing.assert_allclose(values if squared else values**2, want, rtol=1e-9, atol=1e-9)
    assert out.shape == (120, 120) and out.dtype == np.float64


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine", "cityblock"])
def test_dis_sim_local_warns_on_non_squared_euclidean_graphs(metric):
    x = np.random.default_rng(22).random((30, 10))
    graph = _squared_graph(x, 5, metric)
    reducer = DisSimLocal(k=2)
    if metric == "sqeuclidean":
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            reducer.fit_transform(graph, vectors=x)
    else:
        with pytest.warns(UserWarning, match="not defined for other"):
            reducer.fit_transform(graph, vectors=x)


@pytest.mark.parametrize(
    ("k", "error"), [("invalid", TypeError), (1.5, TypeError), (-1, ValueError), (0, ValueError)]
)
def test_dis_sim_local_k_errors_as_scikit_hubness(k, error):
    x = random_points(10, 4, seed=23)
    with pytest.raises(error, match="k"):
        DisSimLocal(k=k).fit(_squared_graph(x, 5), vectors=x)


@pytest.mark.parametrize("k", [9, 10, 11])
def test_dis_sim_local_too_large_k_is_reduced_with_a_warning(k):
    x = random_points(10, 4, seed=24)
    graph = _squared_graph(x, 9)
    reducer = DisSimLocal(k=k)
    if k <= 9:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            reducer.fit(graph, vectors=x).transform(graph, vectors=x)
    else:
        with pytest.warns(UserWarning, match="reducing to k=9"):
            reducer.fit(graph, vectors=x)
        assert reducer.local_k_ == 9
        with pytest.warns(UserWarning, match="reducing to k=9"):
            reducer.transform(graph, vectors=x)


def test_dis_sim_local_graph_mode_errors_name_what_is_missing():
    x = random_points(20, 4, seed=25)
    graph = _squared_graph(x, 5)
    fitted = DisSimLocal(k=3).fit(graph, vectors=x)
    with pytest.raises(ValueError, match="transform needs the queries' vectors"):
        fitted.transform(graph)
    with pytest.raises(ValueError, match="vectors has 19 rows but the graph X has 20"):
        DisSimLocal(k=3).fit(graph, vectors=x[:19])
    with pytest.raises(ValueError, match="fitted on vectors"):
        DisSimLocal(local_k=3, n_neighbors=5).fit(x).transform(x, vectors=x)


def test_hubness_accepts_scikit_hubness_n_jobs():
    x = random_points(60, 5, seed=26)
    assert Hubness(k=5, n_jobs=4).fit(x).score() == Hubness(k=5).fit(x).score()
    assert Hubness(n_jobs=-1).get_params()["n_jobs"] == -1
