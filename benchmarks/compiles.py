"""Compilations and time of scikit-learn cross-validation with a graph hubness reduction.

Usage (from the repository root)::

    python -m benchmarks.compiles

Each fold of ``cross_val_score`` hands the estimators a new row count, so whatever compiles
per shape compiles per fold. For every method of :class:`hubjax.sklearn.HubnessReduction`, in
one process: 5-fold cross-validation of ``KNeighborsTransformer -> HubnessReduction ->
KNeighborsClassifier`` on 300 x 10 Gaussian points (fixed seed), its first run (compilations
included) and the median of ``--repeats`` warm runs, the number of programs JAX compiled, and
the peer in the same run: the same pipeline without the reduction (scikit-learn only). Results
are printed as a markdown table and written to ``benchmarks/results/compiles-<date>.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import statistics
import time
from pathlib import Path

import jax
import numpy as np
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier, KNeighborsTransformer
from sklearn.pipeline import make_pipeline

from benchmarks.run import machine
from hubjax import reduction
from hubjax.sklearn import HubnessReduction

RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def compiled():
    """Collects the names of the programs JAX compiles inside the block (also used by
    ``tests/test_compiles.py``)."""
    names = []

    class Handler(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Compiling "):
                names.append(message.split()[1])

    logger = logging.getLogger("jax")
    handler, level = Handler(level=logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles(True):
            yield names
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def timed(fn, repeats):
    """``(first run s, median warm s, compilations of the first run)``."""
    with compiled() as names:
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - start)
    return first, statistics.median(warm), len(names)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    x = np.random.default_rng(13).normal(size=(300, 10)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(int)
    neighbours = KNeighborsTransformer(n_neighbors=30, mode="distance")
    classifier = KNeighborsClassifier(n_neighbors=5, metric="precomputed")
    peer = make_pipeline(neighbours, classifier)
    _, peer_s, _ = timed(lambda: cross_val_score(peer, x, labels, cv=5), args.repeats)
    rows = []
    for method in reduction.METHODS:
        if method.startswith("dis_sim"):
            continue  # vectors, not graphs: DisSimLocal is its own estimator
        pipe = make_pipeline(neighbours, HubnessReduction(method=method), classifier)
        first, warm, compiles = timed(
            lambda p=pipe: cross_val_score(p, x, labels, cv=5), args.repeats
        )
        rows.append((method, compiles, first, warm, warm / peer_s))
    info = machine()
    lines = [
        f"# Cross-validation compilations ({datetime.date.today()})",
        "",
        f"CPU: {info['cpu']}, {info['cores']} cores; jax {info['versions']['jax']}, "
        f"scikit-learn {info['versions']['sklearn']}. 300 x 10, 5 folds, "
        f"warm: median of {args.repeats}. Peer (no reduction), warm: {peer_s:.3f} s.",
        "",
        "| method | programs compiled | first run s | warm s | warm / peer |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {m} | {c} | {f:.2f} | {w:.3f} | {r:.2f}x |" for m, c, f, w, r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"compiles-{datetime.date.today()}.md").write_text(text)


if __name__ == "__main__":
    main()
