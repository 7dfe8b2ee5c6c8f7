"""Query-bank normalisations on real data: dexter (UCI; 300 labelled bag-of-words documents x
20 000 features, strong hubness; scikit-hubness's copy in ``tests/data/dexter``). Offline.

Each of 10 seeded splits draws 100 queries, a gallery of 100 documents and a bank of the other
100; DBNorm's gallery bank is the gallery itself (its items are known when it is indexed). For
every method, with its defaults, the table gives the label precision at 1 and 10 (the share of
retrieved documents with the query's label) and the gallery's k-skewness under the queries'
top-10, each the mean over the splits (and its standard error)::

    python examples/retrieval_dexter.py          # prints the table, writes examples/results/

The README's retrieval table is this script's output.
"""

from __future__ import annotations

import pathlib
import sys

import dexter  # examples/dexter.py: this folder is on sys.path when the script runs
import numpy as np

from hubjax import measures, occurrence, retrieval

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPLITS = 10
K = 10


def evaluate(x, labels, method, seed):
    order = np.random.default_rng(seed).permutation(len(x))
    q, g, b = order[:100], order[100:200], order[200:]
    queries, gallery, bank = x[q], x[g], x[b]
    stats = None
    if method is not None:
        extra = {"gallery_bank": gallery} if method == "db_norm" else {}
        stats = retrieval.bank_statistics(bank, gallery, method=method, **extra)
    _, idx = retrieval.search(queries, gallery, stats, k=K)
    idx = np.asarray(idx)
    same = labels[g][idx] == labels[q][:, None]
    counts = occurrence.k_occurrence(idx, len(g))
    return same[:, 0].mean(), same.mean(), float(measures.k_skewness(counts))


def main() -> int:
    x, labels = dexter.load()
    methods = [None, *retrieval.METHODS]
    lines = [
        "| normalisation | precision@1 | precision@10 | gallery k-skewness (k = 10) |",
        "| --- | --- | --- | --- |",
    ]
    for method in methods:
        runs = np.array([evaluate(x, labels, method, seed) for seed in range(SPLITS)])
        mean, se = runs.mean(axis=0), runs.std(axis=0, ddof=1) / np.sqrt(SPLITS)
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(mean, se, strict=True)]
        lines.append(f"| {method or 'none (cosine)'} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    out = ROOT / "examples" / "results"
    out.mkdir(exist_ok=True)
    (out / "retrieval_dexter.md").write_text(
        f"dexter, {SPLITS} splits of 100 queries / 100 gallery / 100 bank (DBNorm's gallery "
        f"bank: the gallery), cosine, each method's defaults; mean ± standard error over the "
        f"splits.\n\n{table}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
