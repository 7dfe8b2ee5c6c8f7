"""Query-bank normalisations at scale: bank statistics and normalised search vs exact ``knn``.

Usage (from the repository root)::

    python -m benchmarks.retrieval                   # 100k bank x 100k gallery x 512
    python -m benchmarks.retrieval --n 20000         # every side 20k
    python -m benchmarks.retrieval --quick           # 4k, a smoke test
    python -m benchmarks.retrieval --methods db_norm --skip-search   # only those rows

Data: uncentred Gaussian embeddings (a shared offset, as real ones have), float32, fixed seed:
a bank, a gallery and a query set of ``n`` rows each, ``d`` features, cosine similarity. In one
process, each timing the median of ``repeats`` warm runs (compile apart, ``block_until_ready``):

* the peer: ``hubjax.knn(gallery, bank, k=10, metric="cosine")`` (the exact search of the same
  sizes), and ``hubjax.knn(queries, gallery, k=10, metric="cosine")``;
* :func:`hubjax.retrieval.bank_statistics` for each method, as a ratio to the first; DBNorm
  splits the same ``n`` bank rows between its two banks (query bank ``bank[: n // 2]``, gallery
  bank ``bank[n // 2 :]``, rows of the same distribution as the gallery's), so every method's
  statistics read the peer's ``n`` bank rows: a DBNorm with two banks of ``n`` rows each reads
  ``2 n`` and costs twice as much, like a ``knn`` against ``2 n`` bank rows;
* :func:`hubjax.retrieval.search` (k = 10) with each method's statistics, as a ratio to the
  second.

Printed as a markdown table with the CPU and written to ``benchmarks/results/retrieval-*.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, repeats):
    import jax

    t = time.perf_counter()
    out = jax.block_until_ready(fn())  # compile + first run
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), first, out


def run(n: int, d: int, repeats: int, methods=None, search: bool = True) -> tuple[list[dict], dict]:
    import hubjax
    from benchmarks.run import machine
    from hubjax import retrieval

    rng = np.random.default_rng(0)
    offset = rng.normal(size=d).astype(np.float32)
    bank, gallery, queries = (
        (rng.normal(size=(n, d)).astype(np.float32) + offset) for _ in range(3)
    )
    rows = []
    peer_stats, _, _ = timed(lambda: hubjax.knn(gallery, bank, k=10, metric="cosine"), repeats)
    rows.append(dict(what="knn(gallery, bank, k=10) [peer of the statistics]", s=peer_stats))
    if search:
        peer_search, _, _ = timed(
            lambda: hubjax.knn(queries, gallery, k=10, metric="cosine"), repeats
        )
        rows.append(dict(what="knn(queries, gallery, k=10) [peer of the search]", s=peer_search))
        plain, first, _ = timed(lambda: retrieval.search(queries, gallery, k=10), repeats)
        rows.append(
            dict(what="search, no normalisation", s=plain, first=first, ratio=plain / peer_search)
        )
    for method in methods or retrieval.METHODS:
        what, used, extra = f"bank_statistics({method})", bank, {}
        if method == "db_norm":
            half = n // 2
            used, extra = bank[:half], {"gallery_bank": bank[half:]}
            what = f"bank_statistics(db_norm), banks of {half} + {n - half} rows"
        t, first, stats = timed(
            lambda m=method, b=used, e=extra: retrieval.bank_statistics(b, gallery, method=m, **e),
            repeats,
        )
        rows.append(dict(what=what, s=t, first=first, ratio=t / peer_stats))
        if not search:
            continue
        t, first, _ = timed(lambda s=stats: retrieval.search(queries, gallery, s, k=10), repeats)
        rows.append(dict(what=f"search({method})", s=t, first=first, ratio=t / peer_search))
    return rows, machine()


def to_markdown(rows, info, n, d) -> str:
    lines = [
        f"Bank, gallery and queries of {n} x {d} each (cosine), median of warm runs; "
        f"CPU {info['cpu']} ({info['cores']} cores), jax {info['versions']['jax']}, "
        f"{info['date']}.",
        "",
        "| computation | seconds (warm) | first call (with compile) | ratio to its knn peer |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "1 (peer)"
        first = f"{r['first']:.2f}" if "first" in r else ""
        lines.append(f"| {r['what']} | {r['s']:.2f} | {first} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4000 rows, one repeat")
    parser.add_argument(
        "--methods", nargs="+", metavar="METHOD", help="time these methods only (default: all)"
    )
    parser.add_argument("--skip-search", action="store_true", help="time the bank statistics only")
    args = parser.parse_args(argv)
    from hubjax import retrieval

    unknown = sorted(set(args.methods or ()) - set(retrieval.METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(retrieval.METHODS)}")
    if args.n < 2 or args.d < 1 or args.repeats < 1:
        parser.error("--n must be at least 2, --d and --repeats at least 1")
    n, repeats = (4000, 1) if args.quick else (args.n, args.repeats)
    rows, info = run(n, args.d, repeats, args.methods, not args.skip_search)
    table = to_markdown(rows, info, n, args.d)
    print(table)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        part = "" if args.methods is None and not args.skip_search else "-part"
        name = f"retrieval-{info['date']}-{n}x{args.d}{part}.md"
        (RESULTS / name).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
