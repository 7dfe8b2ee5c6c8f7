"""Exact hub values on wide data (thousands of features) against the bare all-pairs matmul.

Usage (from the repository root)::

    python -m benchmarks.wide            # 2 000 x 20 000, 300 x 20 000 sparse, 10 000 x 128
    python -m benchmarks.wide --quick    # small sizes, a smoke test (nothing written)

On wide data the ranking's worst-case rounding bound (a d-term sum) is wide next to the gaps
between near neighbours, so many rows' short candidate lists fail to certify and go to the
finisher's longer ranked list (:func:`hubjax._src.finisher.widen`) or its per-pair re-check.
This measures what that costs. In one process, per case: ``hubjax.hub_values(x, k=10)`` on a
device array (compile apart, median of ``repeats`` warm calls, ``block_until_ready``) and, as
the peer, the bare ranking matmul of every point against every point
(:func:`benchmarks.run._full_matmul_fn`, the floor of any exact method that computes all
pairs), with the ratio; XLA's temporaries of the compiled program as a multiple of the input.
The CPU's model and whether the fused AVX-512 kernel ran are printed with the table, which is
written to ``benchmarks/results/wide-<date>-<cpu flags>.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.run import case_table_command, cpu_line

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "wide"  # results/wide-<date>-<cpu flags>.md
REPEATS = 5

# (name, n, d, data): the wide case, a text-like sparse set of dexter's shape, and a
# narrow set where nothing should change.
CASES = (
    ("Gaussian", 2000, 20_000, "gaussian"),
    ("sparse non-negative (dexter's shape, 1 % filled)", 300, 20_000, "sparse"),
    ("Gaussian, narrow", 10_000, 128, "gaussian"),
)
QUICK = (("Gaussian", 300, 3000, "gaussian"), ("sparse", 200, 3000, "sparse"))


def points(n: int, d: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if kind == "sparse":
        x = rng.gamma(2.0, 50.0, size=(n, d)).astype(np.float32)
        return np.where(rng.random((n, d)) < 0.01, x, np.float32(0))
    return rng.standard_normal((n, d), dtype=np.float32)


def run(cases, repeats: int) -> list[dict]:
    import jax
    import jax.numpy as jnp

    import hubjax
    from benchmarks.retrieval import timed
    from benchmarks.run import _full_matmul_fn

    hub = jax.jit(lambda x: hubjax.hub_values(x, k=10))
    rows = []
    for name, n, d, kind in cases:
        x = jax.device_put(points(n, d, kind))
        warm, first, _ = timed(lambda x=x: hub(x), repeats)
        floor, _, _ = timed(_full_matmul_fn(x, None), repeats)
        shape = jax.ShapeDtypeStruct((n, d), jnp.float32)
        temps = hub.lower(shape).compile().memory_analysis().temp_size_in_bytes
        rows.append(
            dict(
                case=f"{name}, {n} x {d}",
                first=first,
                s=warm,
                floor=floor,
                ratio=warm / floor,
                temps=temps / (n * d * 4),
            )
        )
    return rows


def to_markdown(rows, info, repeats: int) -> str:
    lines = [
        cpu_line(info, "no AVX-512 (tiled source)")
        + " `hubjax.hub_values(x, k=10)`, jitted, device input, median of "
        f"{repeats} warm calls; peer: the bare all-pairs ranking matmul in the same process "
        "(`python -m benchmarks.wide`).",
        "",
        "| case | hub values (s) | first call (s) | all-pairs matmul (s) | ratio | "
        "XLA temporaries / input |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['s']:.3f} | {r['first']:.2f} | {r['floor']:.3f} | "
            f"{r['ratio']:.2f}x | {r['temps']:.2f}x |"
        )
    return "\n".join(lines)


main = case_table_command(__name__)


if __name__ == "__main__":
    raise SystemExit(main())
