"""Demo: hubness appears as the dimension grows.

For d = 2 ... 1024 draws several sets of n standard-normal points in d dimensions, computes each
set's in-sample k-occurrence and prints the mean (and spread) over the sets of its skewness, the
largest hub value and the share of anti-hubs: one sample per d zig-zags (skewness 6.7, 4.4, 8.3,
5.1 at d = 64 ... 512 for n = 2000), the mean of several rises as the message says. With
``--plot FILE`` it also draws the k-occurrence histograms (counts from 0, so the anti-hubs show)
and the curves.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from hubjax import measures

DIMENSIONS = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SAMPLES = 3


def dimension_sweep(
    *, n: int = 2000, k: int = 10, dimensions=DIMENSIONS, samples: int = SAMPLES, seed: int = 0
) -> list[dict]:
    """One row per dimension: the mean and standard deviation over ``samples`` sets of the
    skewness, the max k-occurrence and the anti-hub share, and the first set's counts."""
    rows = []
    key = jax.random.key(seed)
    for d in dimensions:
        start = time.perf_counter()
        found = []
        for s in range(samples):
            x = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, d), s), (n, d))
            report = measures.hubness(x, k=k)
            counts = np.asarray(jax.block_until_ready(report.k_occurrence))
            found.append(
                (float(report.k_skewness), int(counts.max()), np.mean(counts == 0), counts)
            )
        skew, top, anti, counts = zip(*found, strict=True)
        rows.append(
            {
                "d": d,
                "k_skewness": float(np.mean(skew)),
                "k_skewness_sd": float(np.std(skew)),
                "max_k_occurrence": float(np.mean(top)),
                "antihub_occurrence": float(np.mean(anti)),
                "samples": samples,
                "seconds": time.perf_counter() - start,
                "counts": counts[0],
            }
        )
    return rows


def format_table(rows: list[dict], *, n: int, k: int) -> str:
    samples = rows[0]["samples"] if rows else 0
    lines = [
        f"Hubness of {n} standard-normal points, k = {k} (in-sample, self excluded); "
        f"mean over {samples} sets per dimension",
        f"{'d':>6} {'skewness':>9} {'+-':>5} {'max O':>7} {'anti-hubs':>9} {'time s':>7}",
    ]
    for r in rows:
        lines.append(
            f"{r['d']:>6} {r['k_skewness']:>9.2f} {r['k_skewness_sd']:>5.2f} "
            f"{r['max_k_occurrence']:>7.1f} {r['antihub_occurrence']:>9.3f} {r['seconds']:>7.2f}"
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
            # a linear count axis from 0: the anti-hubs (O = 0) are the first point
            ax1.plot(np.arange(hist.size), np.maximum(hist, 0.5), marker=".", label=f"d = {r['d']}")
    ax1.set(yscale="log", xlabel=f"k-occurrence O (k = {k})", ylabel="points (log)")
    ax1.set_ylim(bottom=0.8)
    ax1.set_title("k-occurrence histogram (one set)")
    ax1.legend()
    dims = [r["d"] for r in rows]
    ax2.errorbar(
        dims,
        [r["k_skewness"] for r in rows],
        yerr=[r["k_skewness_sd"] for r in rows],
        marker="o",
        capsize=3,
        label="skewness",
    )
    ax2.set(xscale="log", xlabel="dimension d", ylabel="k-occurrence skewness")
    right = ax2.twinx()
    right.plot(dims, [r["antihub_occurrence"] for r in rows], "s--", color="C1", label="anti-hubs")
    right.set_ylabel("share of anti-hubs (O = 0)")
    ax2.set_title(f"Hubness vs dimension (mean of {rows[0]['samples']} sets)")
    ax2.grid(True, alpha=0.3)
    fig.legend(loc="upper left", bbox_to_anchor=(0.56, 0.88))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(
    *, n: int, k: int, plot_path: str | None, samples: int = SAMPLES, dims=DIMENSIONS
) -> list[dict]:
    rows = dimension_sweep(n=n, k=k, samples=samples, dimensions=tuple(dims))
    print(format_table(rows, n=n, k=k))
    if plot_path:
        plot(rows, plot_path, k=k)
        print(f"plot written to {plot_path}")
    return rows
