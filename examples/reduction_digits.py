"""Leave-one-out k-NN accuracy with and without hubness reduction, default settings, on
scikit-learn's bundled 8x8 digits (mild hubness) and on dexter (300 x 20 000 bag of words,
strong hubness; scikit-hubness's copy in ``tests/data/dexter``). Offline.

    python examples/reduction_digits.py            # prints two markdown tables
"""

from __future__ import annotations

import dexter  # examples/dexter.py: this folder is on sys.path when the script runs
import numpy as np
from sklearn.datasets import load_digits

import hubjax


def loo_accuracy(idx: np.ndarray, labels: np.ndarray) -> float:
    """Majority vote of each point's k neighbours (never itself); ties to the smallest label."""
    votes = labels[idx]
    counts = np.apply_along_axis(np.bincount, 1, votes, minlength=labels.max() + 1)
    return float(np.mean(counts.argmax(1) == labels))


def table(title, x, labels, metric, k, candidates):
    rows = []
    for method in (None, *hubjax.reduction.METHODS):
        m = "euclidean" if method and method.startswith("dis_sim") else metric
        if method is None:
            _, idx = hubjax.knn(x, k=k, metric=m)
        else:
            _, idx = hubjax.reduction.knn(x, k=k, method=method, candidates=candidates, metric=m)
        report = hubjax.hubness(x, k=k, metric=m, reduction=method, candidates=candidates)
        name = method or "none"
        rows.append((name, m, loo_accuracy(np.asarray(idx), labels), report))
    lines = [
        f"{title}, k = {k}, {candidates} candidates:",
        "",
        "| reduction | metric | LOO k-NN accuracy | k-skewness | Robin Hood |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {name} | {m} | {a:.4f} | {float(r.k_skewness):.3f} | {float(r.robinhood):.3f} |"
        for name, m, a, r in rows
    ]
    return "\n".join(lines)


def load_dexter():
    x, labels = dexter.load()
    return x, (labels > 0).astype(int)


def main(k: int = 5, candidates: int = 50) -> str:
    digits = load_digits()
    x = digits.data.astype(np.float32)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    out = [table("Digits (1797 x 64, standardised)", x, digits.target, "euclidean", k, candidates)]
    x, labels = load_dexter()
    title = "Dexter (300 x 20 000, cosine; DisSim methods euclidean)"
    out.append(table(title, x, labels, "cosine", k, candidates))
    return "\n\n".join(out)


if __name__ == "__main__":
    print(main())
