"""How many programs the common calls compile: one per public call where a single search is
the work (eager checks read NumPy and CPU arrays in place, conversions happen on the host), and
none on a repeat with the same shapes."""

from __future__ import annotations

import numpy as np
import pytest

import hubjax
from benchmarks.compiles import compiled
from hubjax._src.kernels import cpu


@pytest.fixture(scope="module", autouse=True)
def _kernel_probed():
    cpu.available()  # the kernel's one-time self-test compiles a program of its own


def test_knn_compiles_one_program_and_repeats_none():
    x = np.random.default_rng(0).standard_normal((437, 13)).astype(np.float32)
    with compiled() as first:
        hubjax.knn(x, k=7)
    assert first == ["jit(knn)"], first
    with compiled() as again:
        hubjax.knn(x + 1, k=7)
        hubjax.knn(x.astype(np.float64), k=7)  # canonicalised to float32 on the host
        hubjax.knn(x.astype(np.int32), k=7)  # cast on the host
    assert again == [], again
    with compiled() as other:
        hubjax.knn(x[:-1], k=7)
    assert other == ["jit(knn)"], other


def test_hubness_compiles_one_program_search_and_report_together():
    x = np.random.default_rng(1).standard_normal((391, 11)).astype(np.float32)
    with compiled() as names:
        hubjax.hubness(x, k=6)
    assert names == ["jit(_exact_report)"], names
    with compiled() as names:
        hubjax.hubness(x * 2, k=6)
        hubjax.hubness(x.astype(np.float64), k=6)
    assert names == [], names
    with compiled() as names:
        hubjax.hub_values(x, k=6)
    assert sorted(names) == ["jit(counts_of)", "jit(knn)"], names


def test_non_finite_input_is_still_refused_without_compiling():
    x = np.random.default_rng(2).standard_normal((100, 5))
    x[3, 1] = np.nan
    x[7, 4] = 1e300  # finite in float64, beyond float32's range
    with compiled() as names, pytest.raises(ValueError, match=r"2 row\(s\): 3, 7"):
        hubjax.knn(x, k=3)
    assert names == []


def test_graph_reduction_compiles_one_program_per_graph_shape():
    """``HubnessReduction.transform`` computes its secondary distances as one program (eagerly,
    its operations compiled one by one: 153 programs for five methods' 5-fold
    cross-validation, 10 now); a repeat on the same shape compiles none."""
    from sklearn.neighbors import KNeighborsTransformer

    from hubjax.sklearn import HubnessReduction

    x = np.random.default_rng(3).standard_normal((90, 6)).astype(np.float32)
    graph = KNeighborsTransformer(n_neighbors=10, mode="distance").fit_transform(x)
    reducer = HubnessReduction(method="mp_gaussian").fit(graph)
    with compiled() as names:
        reducer.transform(graph)
    assert names == ["jit(_secondary_graph)"], names
    with compiled() as names:
        reducer.transform(graph * 2.0)
    assert names == [], names


def test_estimators_compile_once_per_row_count_bucket():
    """Cross-validation folds hand the estimators new row counts (here 150 and 151 indexed
    points, 37 and 38 queries: one bucket each); the search compiles once per bucket, not per
    fold, and the float64 measures once per number of indexed points."""
    from sklearn.neighbors import KNeighborsTransformer

    from hubjax.sklearn import DisSimLocal, Hubness, HubnessReduction

    x = np.random.default_rng(4).standard_normal((189, 7))
    with compiled() as names:
        for m in (150, 151):
            Hubness(k=5).fit(x[:m]).score(x[m:])
    assert sorted(names) == ["jit(knn)", *["jit(measures_of_counts)"] * 2], names
    with compiled() as names:
        for m in (150, 151):
            DisSimLocal(n_neighbors=9, local_k=3).fit(x[:m]).transform(x[m:])
    # the in-sample centroids' search, and the queries' search (its bucket is the same)
    assert sorted(names) == ["jit(knn)", "jit(knn)"], names
    with compiled() as names:
        for m in (150, 151):
            graphs = KNeighborsTransformer(n_neighbors=10, mode="distance").fit(x[:m])
            HubnessReduction(method="mp_empiric").fit(graphs.transform(x[:m])).transform(
                graphs.transform(x[m:])
            )
    assert names == ["jit(_secondary_graph)"], names
