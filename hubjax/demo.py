"""Demo: hubness appears as the dimension grows.

Draws n standard-normal points in d dimensions for d = 2 ... 1024, computes the in-sample
k-occurrence of each set and prints its skewness, the largest hub value and the anti-hub share.
With ``--plot FILE`` it also draws the k-occurrence histograms and the skewness curve.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from hubjax import measures

DIMENSIONS = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def dimension_sweep(
    *, n: int = 2000, k: int = 10, dimensions=DIMENSIONS, seed: int = 0
) -> list[dict]:
    """One row per dimension: skewness, max k-occurrence, anti-hub share, the counts."""
    rows = []
    key = jax.random.key(seed)
    for d in dimensions:
        x = jax.random.normal(jax.random.fold_in(key, d), (n, d))
        start = time.perf_counter()
        report = measures.hubness(x, k=k)
        counts = np.asarray(jax.block_until_ready(report.k_occurrence))
        rows.append(
            {
                "d": d,
                "k_skewness": float(report.k_skewness),
                "max_k_occurrence": int(counts.max()),
                "antihub_occurrence": float(report.antihub_occurrence),
                "robinhood": float(report.robinhood),
                "seconds": time.perf_counter() - start,
                "counts": counts,
            }
        )
    return rows


def format_table(rows: list[dict], *, n: int, k: int) -> str:
    lines = [
        f"Hubness of {n} standard-normal points, k = {k} (in-sample, self excluded)",
        f"{'d':>6} {'skewness':>9} {'max O':>6} {'anti-hubs':>9} {'robinhood':>9} {'time s':>7}",
    ]
    for r in rows:
        lines.append(
            f"{r['d']:>6} {r['k_skewness']:>9.3f} {r['max_k_occurrence']:>6} "
            f"{r['antihub_occurrence']:>9.3f} {r['robinhood']:>9.3f} {r['seconds']:>7.2f}"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: str, *, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        if r["d"] in (2, 16, 128, 1024):
            hist = np.bincount(r["counts"])
            nonzero = np.flatnonzero(hist)
            ax1.plot(nonzero, hist[nonzero], marker=".", label=f"d = {r['d']}")
    ax1.set(xscale="log", yscale="log", xlabel=f"k-occurrence (k = {k})", ylabel="points")
    ax1.set_title("k-occurrence histogram")
    ax1.legend()
    ax2.semilogx([r["d"] for r in rows], [r["k_skewness"] for r in rows], marker="o")
    ax2.set(xlabel="dimension d", ylabel="k-occurrence skewness", title="Hubness vs dimension")
    ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(*, n: int, k: int, plot_path: str | None) -> list[dict]:
    rows = dimension_sweep(n=n, k=k)
    print(format_table(rows, n=n, k=k))
    if plot_path:
        plot(rows, plot_path, k=k)
        print(f"plot written to {plot_path}")
    return rows
