"""``knn(x, x)`` (one array) against the search of a copy, ``knn(x, x.copy())``.

Usage (from the repository root)::

    python -m benchmarks.itself            # 2 000 x 20 000, 20 000 x 128, 10 000 x 1 024
    python -m benchmarks.itself --quick    # small sizes, a smoke test (nothing written)

The same array as ``x`` and ``y`` is searched as one array: in-sample, each point then merged
into its own list (``Options.self_query``), bit for bit the lists of the query-mode search of a
copy. In one process, per case: both on device arrays (compile apart, median of ``repeats``
warm calls, ``block_until_ready``), the copy's search as the peer, with the ratio; XLA's
temporaries of both compiled programs as multiples of the input; and a check that the lists are
the same bits. The CPU's model and whether the fused AVX-512 kernel ran are printed with the
table, which is written to ``benchmarks/results/itself-<date>-<cpu flags>.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.run import case_table_command, cpu_line

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "itself"  # results/itself-<date>-<cpu flags>.md
REPEATS = 5

# (name, n, d): the wide case of issue 31, a narrow and a middling embedding size.
CASES = (
    ("Gaussian", 2000, 20_000),
    ("Gaussian", 20_000, 128),
    ("Gaussian", 10_000, 1024),
)
QUICK = (("Gaussian", 300, 3000), ("Gaussian", 2000, 64))


def run(cases, repeats: int) -> list[dict]:
    import jax
    import jax.numpy as jnp

    import hubjax
    from benchmarks.retrieval import timed

    itself = jax.jit(lambda x: hubjax.knn(x, x, k=10))
    pair = jax.jit(lambda x, y: hubjax.knn(x, y, k=10))
    rows = []
    for name, n, d in cases:
        x = jax.device_put(np.random.default_rng(0).standard_normal((n, d), dtype=np.float32))
        copy = jnp.array(x, copy=True)
        warm, first, got = timed(lambda x=x: itself(x), repeats)
        peer, peer_first, want = timed(lambda x=x, c=copy: pair(x, c), repeats)
        same = all(
            np.asarray(a).tobytes() == np.asarray(b).tobytes()
            for a, b in zip(got, want, strict=True)
        )
        shape = jax.ShapeDtypeStruct((n, d), jnp.float32)
        temps = itself.lower(shape).compile().memory_analysis().temp_size_in_bytes
        peer_temps = pair.lower(shape, shape).compile().memory_analysis().temp_size_in_bytes
        rows.append(
            dict(
                case=f"{name}, {n} x {d}",
                s=warm,
                first=first,
                peer=peer,
                peer_first=peer_first,
                ratio=warm / peer,
                temps=temps / (n * d * 4),
                peer_temps=peer_temps / (n * d * 4),
                same=same,
            )
        )
    return rows


def to_markdown(rows, info, repeats: int) -> str:
    lines = [
        cpu_line(info) + " `hubjax.knn(x, x, k=10)` (one array) against `hubjax.knn(x, copy, "
        f"k=10)`, each jitted, device inputs, median of {repeats} warm calls in the same "
        "process (`python -m benchmarks.itself`).",
        "",
        "| case | knn(x, x) (s) | first call (s) | knn(x, copy) (s) | first call (s) | ratio | "
        "XLA temporaries / input, x / copy | same bits |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['s']:.3f} | {r['first']:.2f} | {r['peer']:.3f} | "
            f"{r['peer_first']:.2f} | {r['ratio']:.2f}x | {r['temps']:.2f}x / "
            f"{r['peer_temps']:.2f}x | {'yes' if r['same'] else 'NO'} |"
        )
    return "\n".join(lines)


main = case_table_command(__name__)


if __name__ == "__main__":
    raise SystemExit(main())
