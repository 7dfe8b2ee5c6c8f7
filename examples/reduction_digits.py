"""Leave-one-out k-NN accuracy on scikit-learn's bundled 8x8 digits, with and without hubness
reduction. Offline: the digits ship with scikit-learn.

    python examples/reduction_digits.py            # prints a markdown table
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

import hubjax


def loo_accuracy(idx: np.ndarray, labels: np.ndarray) -> float:
    """Majority vote of each point's k neighbours (never itself); ties to the smallest label."""
    votes = labels[idx]
    counts = np.apply_along_axis(np.bincount, 1, votes, minlength=labels.max() + 1)
    return float(np.mean(counts.argmax(1) == labels))


def main(k: int = 5, candidates: int = 50) -> str:
    digits = load_digits()
    x = digits.data.astype(np.float32)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    labels = digits.target
    rows = []
    for method in (None, *hubjax.reduction.METHODS):
        if method is None:
            _, idx = hubjax.knn(x, k=k, metric="euclidean")
        else:
            _, idx = hubjax.reduction.knn(
                x, k=k, method=method, candidates=candidates, metric="euclidean"
            )
        report = hubjax.hubness(x, k=k, metric="euclidean", reduction=method, candidates=candidates)
        rows.append(
            (
                method or "none",
                loo_accuracy(np.asarray(idx), labels),
                float(report.k_skewness),
                float(report.robinhood),
            )
        )
    lines = [
        f"Digits (1797 x 64, standardised), k = {k}, {candidates} candidates, euclidean:",
        "",
        "| reduction | LOO k-NN accuracy | k-skewness | Robin Hood |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {m} | {a:.4f} | {s:.3f} | {r:.3f} |" for m, a, s, r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
