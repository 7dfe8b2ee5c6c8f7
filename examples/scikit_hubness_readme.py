"""scikit-hubness's README example, translated to hubjax (see docs/migration.rst).

Run from the repository root: ``python examples/scikit_hubness_readme.py``. The dexter data
(scikit-hubness's copy of the UCI set) is read from ``tests/data/dexter``.
"""

import pathlib

import numpy as np
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier, KNeighborsTransformer

from hubjax.sklearn import Hubness, HubnessReduction

DEXTER = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "dexter"


def load_dexter():
    """Dense ``X [300, 20000]`` (bag of words) and labels ``y [300]``, like scikit-hubness's."""
    X = np.zeros((300, 20_000))
    for row, line in enumerate((DEXTER / "dexter_train.data").read_text().splitlines()):
        for word in line.split():
            col, val = word.split(":")
            X[row, int(col) - 1] = int(val)
    return X, np.loadtxt(DEXTER / "dexter_train.labels")


def main():
    X, y = load_dexter()
    print(f"X.shape = {X.shape}, y.shape = {y.shape}")

    # assess the actual degree of hubness in dexter
    hub = Hubness(k=10, metric="cosine")
    hub.fit(X)
    k_skew = hub.score()
    print(f"Skewness = {k_skew:.3f}")

    hub = Hubness(k=10, return_value="all", metric="cosine")
    scores = hub.fit(X).score()
    print(f"Robin hood index:   {scores.get('robinhood'):.3f}")
    print(f"Antihub occurrence: {scores.get('antihub_occurrence'):.3f}")
    print(f"Hub occurrence:     {scores.get('hub_occurrence'):.3f}")

    # kNN classification on a precomputed graph, without and with hubness reduction
    knn = KNeighborsTransformer(n_neighbors=50, metric="cosine")
    kneighbors_graph = knn.fit_transform(X, y)
    clf = KNeighborsClassifier(n_neighbors=5, metric="precomputed")
    acc_standard = cross_val_score(clf, kneighbors_graph, y, cv=5)
    mp = HubnessReduction(method="mp_gaussian")
    mp_graph = mp.fit_transform(kneighbors_graph)
    acc_mp = cross_val_score(clf, mp_graph, y, cv=5)
    print(f"Accuracy (vanilla kNN): {acc_standard.mean():.3f}")
    print(f"Accuracy (kNN with hubness reduction): {acc_mp.mean():.3f}")

    # mutual proximity as published: each point's statistics over all points
    full = Hubness(k=10, metric="cosine", hubness="mp_gaussian", return_value="all")
    full_scores = full.fit(X).score()
    print(
        f"k-skewness after MP: {full_scores['k_skewness']:.3f} "
        f"(reduction of {scores['k_skewness'] - full_scores['k_skewness']:.3f})"
    )
    print(
        f"Robinhood after MP:  {full_scores['robinhood']:.3f} "
        f"(reduction of {scores['robinhood'] - full_scores['robinhood']:.3f})"
    )

    # the graph variant: statistics from each point's 50 graph neighbours only, which on dexter
    # raise hubness (docs/migration.rst explains why); a graph needs metric="precomputed"
    graph_hub = Hubness(k=10, return_value="all", metric="precomputed")
    mp_scores = graph_hub.fit(mp_graph).score()
    print(
        f"k-skewness after MP on the 50-NN graph (candidates' statistics only): "
        f"{mp_scores['k_skewness']:.3f}"
    )
    return {
        "k_skewness": k_skew,
        "accuracy": acc_standard.mean(),
        "accuracy_mp": acc_mp.mean(),
        "k_skewness_mp_graph": mp_scores["k_skewness"],
        "k_skewness_mp_all": full_scores["k_skewness"],
    }


if __name__ == "__main__":
    main()
