"""Approximate hubness at scale: hubjax's IVF engine vs exact hubjax vs faiss IndexIVFFlat.

Usage (from the repository root)::

    python -m benchmarks.approximate                    # 1M x 128 and the 200k x 64 comparison
    python -m benchmarks.approximate --n 200000 --d 64  # one size only
    python -m benchmarks.approximate --quick            # 50k points, a smoke test
    python -m benchmarks.approximate --sweep nprobe=8 nprobe=12   # settings on 200k x 64

Data: a Gaussian mixture (``clusters`` centres, spreads drawn from 0.3 to 3, uneven weights),
float32, fixed seed. For each size, in one process:

* hubjax approximate: the in-sample hubness report (``hubjax.hubness(..., approximate=...)``),
  median of ``repeats`` warm runs, compile time apart, peak resident-set growth (over the
  first call and over the warm ones);
* recall@k on 2000 sampled queries against their exact lists (``hubjax.sampled_hubness``'s
  list search, exact);
* exact hubjax: time, and the errors of the approximate skewness and Robin Hood index against
  it. Sizes up to ``--exact-max`` are computed in the run; above that size the exact counts are
  read from the cache (``--cache``, outside git: ``$HUBJAX_BENCH_CACHE`` or
  ``~/.cache/hubjax-benchmarks``), where ``--exact-max`` at or above the size writes them once
  (1M x 128: about 20 minutes); in every case above ``--exact-max`` the exact skewness is also
  bracketed by a sampled estimate (1 % of the queries, 95 % interval);
* faiss ``IndexIVFFlat`` with the same number of lists, ``nprobe`` raised until its recall on
  the same queries reaches hubjax's: train + add + search of every point + counting (above
  ``FAISS_QUERIES`` points: the search of a random 100 000 of them, its time scaled to n --
  faiss's IVF scan costs the same per query, and all of them took over 20 minutes at 1M).

Results are printed as a markdown table and written to ``benchmarks/results/approximate-*.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
FAISS_QUERIES = 100_000  # faiss searches at most this many queries; its time is scaled to n
LARGE = 500_000  # from this size: one timed run, and the exact counts come from the cache
CACHE = Path(os.environ.get("HUBJAX_BENCH_CACHE", Path.home() / ".cache" / "hubjax-benchmarks"))


def exact_cached(x, k, cache: Path, compute: bool):
    """Exact in-sample k-occurrence counts of the benchmark data ``x`` and the seconds they took:
    read from ``cache`` (keyed by shape and k; the data is a fixed-seed mixture), or computed
    and written there when ``compute``; None when neither."""
    import jax

    import hubjax

    n, d = x.shape
    path = Path(cache) / f"exact-{n}x{d}-k{k}-seed0.npz"
    if path.exists():
        with np.load(path) as f:
            return np.asarray(f["counts"]), float(f["seconds"])
    if not compute:
        return None
    t = time.perf_counter()
    counts = np.asarray(jax.block_until_ready(hubjax.hub_values(x, k=k)))
    seconds = time.perf_counter() - t
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, counts=counts, seconds=seconds)
    return counts, seconds


def mixture(n: int, d: int, clusters: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32) * 3
    weights = rng.dirichlet(np.full(clusters, 0.7))
    spreads = rng.uniform(0.3, 3.0, clusters).astype(np.float32)
    label = rng.choice(clusters, size=n, p=weights)
    x = np.empty((n, d), np.float32)
    for start in range(0, n, 100_000):
        lab = label[start : start + 100_000]
        noise = rng.standard_normal((lab.size, d), dtype=np.float32)
        x[start : start + lab.size] = centres[lab] + noise * spreads[lab, None]
    return x


class PeakRSS:
    """Largest resident-set growth while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        self.base = self._rss()
        self.peak = self.base
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def timed(fn, repeats):
    import jax

    out = jax.block_until_ready(fn())  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _without_self(lists, queries, k):
    return np.array([[j for j in r if j != q][:k] for r, q in zip(lists, queries, strict=True)])


def _recall(got, exact, k):
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, exact, strict=True)]))


def faiss_ivf(x, k, nlist, queries, exact_lists, target_recall, threads):
    """faiss IndexIVFFlat: nprobe raised until recall >= target; time of the full self-search."""
    import faiss

    faiss.omp_set_num_threads(threads)
    d = x.shape[1]
    t = time.perf_counter()
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist)
    train = x[np.random.default_rng(1).choice(len(x), min(len(x), 64 * nlist), replace=False)]
    index.train(train)
    index.add(x)
    build = time.perf_counter() - t
    chosen, recall = None, 0.0
    for nprobe in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128):
        index.nprobe = nprobe
        _, idx = index.search(x[queries], k + 1)
        recall = _recall(_without_self(idx, queries, k), exact_lists, k)
        chosen = nprobe
        if recall >= target_recall:
            break
    # faiss's IVF scan costs the same per query, so above FAISS_QUERIES points it searches a
    # random subset and the time is scaled to all n (reported as such; counts then omitted)
    sub = len(x) if len(x) <= FAISS_QUERIES else FAISS_QUERIES
    rows = (
        np.arange(len(x))
        if sub == len(x)
        else np.sort(np.random.default_rng(3).choice(len(x), sub, replace=False))
    )
    t = time.perf_counter()
    _, idx = index.search(x[rows], k + 1)
    own = idx == rows[:, None]
    drop = np.where(own.any(1), own.argmax(1), k)
    cols = np.arange(k)[None, :]
    lists = np.take_along_axis(idx, cols + (cols >= drop[:, None]), axis=1)
    counts = np.bincount(lists[lists >= 0].ravel(), minlength=len(x)) if sub == len(x) else None
    search = (time.perf_counter() - t) * len(x) / sub
    return {
        "nprobe": chosen,
        "recall": recall,
        "build_s": build,
        "search_s": search,
        "searched_queries": int(sub),
        "total_s": build + search,
        "counts": counts,
    }


def run(n, d, k, exact_max, repeats, threads, settings_kwargs, cache=CACHE):
    import jax
    import jax.numpy as jnp
    from scipy import stats

    import hubjax
    from hubjax import approximate, measures
    from hubjax._src import search
    from hubjax._src.metric import SQEUCLIDEAN

    x = mixture(n, d)
    settings = approximate.IVF(**settings_kwargs)
    row = {"n": n, "d": d, "k": k, "nlist": settings.lists(n), "nprobe": settings.probes(n)}

    def approx():
        return hubjax.hubness(x, k=k, approximate=settings)

    # peak: resident-set growth over the first call (compilation included; later calls reuse
    # the memory the allocator kept) and over the timed ones
    with PeakRSS() as first:
        t = time.perf_counter()
        jax.block_until_ready(approx())
        row["first_call_s"] = time.perf_counter() - t
    with PeakRSS() as peak:
        row["approx_s"], report = timed(approx, repeats)
    row["approx_peak_mb"] = max(first.growth_mb, peak.growth_mb)
    counts = np.asarray(report.k_occurrence)
    row["approx_skewness"] = float(report.k_skewness)
    row["approx_robinhood"] = float(report.robinhood)

    # recall on 2000 sampled queries against their exact lists
    queries = np.sort(np.random.default_rng(2).choice(n, 2000, replace=False))
    exact_lists = np.asarray(
        search.sampled_lists(jnp.asarray(x), jnp.asarray(queries, jnp.int32), k, SQEUCLIDEAN, None)
    )
    _, approx_lists = approximate.knn(x[queries], x, k=k + 1, settings=settings)
    approx_lists = _without_self(np.asarray(approx_lists), queries, k)
    row["recall"] = _recall(approx_lists, exact_lists, k)
    # the recall of the in-sample search itself, on the same queries
    _, in_sample = approximate.knn(x, k=k, settings=settings)
    got = np.asarray(in_sample)[queries]
    row["recall_in_sample"] = _recall(got, exact_lists, k)

    if n <= exact_max and n < LARGE:
        t_exact, exact = timed(lambda: hubjax.hubness(x, k=k), repeats)  # median, as approx
        row["exact_s"] = t_exact
        row["exact_skewness"] = float(exact.k_skewness)
        row["exact_robinhood"] = float(exact.robinhood)
    else:  # the cached exact counts (computed here once with --exact-max >= n)
        cached = exact_cached(x, k, cache, compute=n <= exact_max)
        if cached is not None:
            row["exact_s"], row["exact_cached"] = cached[1], True
            row["exact_skewness"] = float(measures.k_skewness(cached[0]))
            row["exact_robinhood"] = float(measures.robinhood(cached[0]))
        # 1 % of the queries, below the default 10 % (the table states the share): at a
        # million points the interval is a side note to the exact counts cached beside it
        est = hubjax.sampled_hubness(
            x, k=k, num_queries=n // 100, key=jax.random.key(0), min_share=0.01
        )
        lo, hi = est.interval("k_skewness")
        row["sampled_skewness"] = float(est.measures["k_skewness"])
        row["sampled_interval"] = [lo, hi]
    if "exact_skewness" in row:
        row["skewness_error"] = row["approx_skewness"] / row["exact_skewness"] - 1
        row["robinhood_error"] = row["approx_robinhood"] / row["exact_robinhood"] - 1

    row["faiss"] = None  # the peer, where installed (the table says when it was not)
    if importlib.util.find_spec("faiss") is not None:
        f = faiss_ivf(x, k, settings.lists(n), queries, exact_lists, row["recall"], threads)
        row["faiss"] = {key: v for key, v in f.items() if key != "counts"}
        if f["counts"] is not None:
            row["faiss_skewness"] = float(stats.skew(f["counts"]))
        row["approx_over_faiss"] = row["approx_s"] / f["total_s"]
    if "exact_s" in row:
        row["approx_over_exact"] = row["approx_s"] / row["exact_s"]
    row["measures"] = {
        name: float(v) for name, v in measures.HubnessReport.measures(report).items()
    }
    del counts
    return row


def to_markdown(rows) -> str:
    lines = [
        "| n x d | nlist / nprobe | approx s (first call) | peak MB | recall@10 | skewness approx"
        " / exact | Robin Hood approx / exact | exact s | approx / exact | faiss IVF s (nprobe,"
        " recall) | approx / faiss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "exact_s" in r:
            skew = (
                f"{r['approx_skewness']:.3f} / {r['exact_skewness']:.3f}"
                f" ({100 * r['skewness_error']:+.1f} %)"
            )
            if "sampled_skewness" in r:
                lo, hi = r["sampled_interval"]
                skew += f"; sampled {r['sampled_skewness']:.3f} [{lo:.3f}, {hi:.3f}]"
            rh = (
                f"{r['approx_robinhood']:.3f} / {r['exact_robinhood']:.3f}"
                f" ({100 * r['robinhood_error']:+.1f} %)"
            )
            exact = f"{r['exact_s']:.1f}" + (" (cached)" if r.get("exact_cached") else "")
            ratio = f"{r['approx_over_exact']:.2f}x"
        else:
            lo, hi = r["sampled_interval"]
            skew = (
                f"{r['approx_skewness']:.3f} / sampled {r['sampled_skewness']:.3f}"
                f" [{lo:.3f}, {hi:.3f}]"
            )
            rh = f"{r['approx_robinhood']:.3f} / -"
            exact, ratio = "-", "-"
        f = r["faiss"]
        peer = "not installed | -"
        if f is not None:
            peer = f"{f['total_s']:.1f} ({f['nprobe']}, {f['recall']:.3f}) |"
            peer += f" {r['approx_over_faiss']:.2f}x"
        lines.append(
            f"| {r['n']:,} x {r['d']} | {r['nlist']} / {r['nprobe']} | {r['approx_s']:.1f}"
            f" ({r['first_call_s']:.1f}) | {r['approx_peak_mb']:.0f} | {r['recall']:.3f}"
            f" (in-sample {r['recall_in_sample']:.3f}) | {skew} | {rh} | {exact} | {ratio} |"
            f" {peer} |"
        )
    return "\n".join(lines)


def _number(text):
    return None if text == "none" else float(text) if "." in text else int(text)


def sweep(n, d, k, specs, repeats):
    """Recall@k (2000 sampled queries) and warm time of the in-sample approximate search for
    each ``IVF`` setting, with the exact hubjax search timed in the same process."""
    import jax
    import jax.numpy as jnp

    import hubjax
    from hubjax import approximate
    from hubjax._src import search
    from hubjax._src.metric import SQEUCLIDEAN

    x = jnp.asarray(mixture(n, d))
    queries = np.sort(np.random.default_rng(2).choice(n, 2000, replace=False))
    exact_lists = np.asarray(
        search.sampled_lists(x, jnp.asarray(queries, jnp.int32), k, SQEUCLIDEAN, None)
    )
    exact_s, _ = timed(lambda: hubjax.knn(x, k=k), 1)
    lines = [
        f"exact hubjax in-sample k-NN, {n:,} x {d}, k = {k}: {exact_s:.1f} s",
        "",
        "| settings | nlist | recall@10 | warm s (first call) | / exact |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in specs:
        kw = {key: _number(v) for key, v in (item.split("=") for item in spec.split(","))}
        settings = approximate.IVF(**kw)
        t = time.perf_counter()
        jax.block_until_ready(approximate.knn(x, k=k, settings=settings))
        first = time.perf_counter() - t
        warm, (_, idx) = timed(lambda s=settings: approximate.knn(x, k=k, settings=s), repeats)
        rec = _recall(np.asarray(idx)[queries], exact_lists, k)
        lines.append(
            f"| {spec} | {settings.lists(n)} | {rec:.3f} | {warm:.2f} ({first:.1f}) |"
            f" {warm / exact_s:.2f}x |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="*", default=None)
    p.add_argument("--d", type=int, default=None)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument(
        "--exact-max",
        type=int,
        default=200_000,
        help="exact hubjax up to this size in the run; above 500k it is read from --cache, "
        "and computed and cached there when --exact-max is at least the size",
    )
    p.add_argument("--cache", type=Path, default=CACHE, help="exact counts cache (outside git)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None, help="markdown file to write (default: results dir)")
    p.add_argument(
        "--sweep",
        nargs="+",
        metavar="SPEC",
        help="IVF settings to compare on one size, e.g. nprobe=8 nprobe=12,chunk=128",
    )
    args = p.parse_args(argv)
    if args.sweep:
        table = sweep(args.n[0] if args.n else 200_000, args.d or 64, args.k, args.sweep,
                      args.repeats)  # fmt: skip
        print(table)
        return 0
    if args.quick:
        sizes = [(50_000, args.d or 64)]
    elif args.n:
        sizes = [(n, args.d or 128) for n in args.n]
    else:
        sizes = [(1_000_000, 128), (200_000, 64)]
    kwargs = {}
    if args.nprobe:
        kwargs["nprobe"] = args.nprobe
    if args.chunk:
        kwargs["chunk"] = args.chunk
    rows = []
    for n, d in sizes:
        repeats = args.repeats if n < LARGE else 1
        row = run(n, d, args.k, args.exact_max, repeats, args.threads, kwargs, args.cache)
        print(json.dumps(row, indent=1), flush=True)
        rows.append(row)
    table = to_markdown(rows)
    print(table)
    if not args.quick:
        name = f"approximate-{time.strftime('%Y-%m-%d')}.md"
        out = Path(args.out) if args.out else RESULTS / name
        out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
