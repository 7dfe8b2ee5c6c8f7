"""Sample-quality metrics (k-NN balls) against the k-NN search they start from.

Usage (from the repository root)::

    python -m benchmarks.metrics            # 20 000 x 64 real and generated samples
    python -m benchmarks.metrics --quick    # small sizes, a smoke test (nothing written)

``precision_recall`` and ``density_coverage`` find each sample's k-NN radius (an exact
``knn`` within its set) and then count, tile by tile, the balls holding each sample of the
other set. In one process, per case: each metric on device arrays (compile apart, median of
``repeats`` warm calls, ``block_until_ready``) and, as the peer, the in-sample ``knn`` of the
real samples, with the ratio. The CPU's model is printed with the table, which is written to
``benchmarks/results/metrics-<date>-<cpu flags>.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.run import case_table_command, cpu_line

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "metrics"  # results/metrics-<date>-<cpu flags>.md
REPEATS = 3

CASES = ((20_000, 64),)
QUICK = ((600, 16),)


def run(cases, repeats: int) -> list[dict]:
    import jax

    import hubjax
    from benchmarks.retrieval import timed

    rows = []
    for n, d in cases:
        rng = np.random.default_rng(0)
        real = jax.device_put(rng.standard_normal((n, d), dtype=np.float32))
        fake = jax.device_put(0.9 * rng.standard_normal((n, d), dtype=np.float32) + 0.1)
        peer, _, _ = timed(lambda real=real: hubjax.knn(real, k=5), repeats)
        for name, fn in (
            ("precision_recall", hubjax.metrics.precision_recall),
            ("density_coverage", hubjax.metrics.density_coverage),
        ):
            warm, first, _ = timed(lambda fn=fn, a=real, b=fake: fn(a, b), repeats)
            rows.append(dict(case=f"{name}, {n} x {d}", s=warm, first=first, peer=peer))
    return rows


def to_markdown(rows, info, repeats: int) -> str:
    lines = [
        cpu_line(info) + f" Device inputs, median of {repeats} warm calls; peer: the in-sample "
        "`knn(real, k=5)` in the same process (`python -m benchmarks.metrics`).",
        "",
        "| metric | warm (s) | first call (s) | knn (s) | ratio |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['s']:.3f} | {r['first']:.2f} | {r['peer']:.3f} | "
            f"{r['s'] / r['peer']:.2f}x |"
        )
    return "\n".join(lines)


main = case_table_command(__name__)


if __name__ == "__main__":
    raise SystemExit(main())
