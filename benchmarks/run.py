"""hubjax vs faiss-cpu vs scikit-learn: exact k-NN / hub values, timed in the same process.

Usage (from the repository root)::

    pip install -e ".[benchmarks]"
    python -m benchmarks.run                 # full grid, writes benchmarks/results/<backend>.*
    python -m benchmarks.run --quick         # small sizes, a smoke test (nothing written)
    python -m benchmarks.run --only hub-10k-512 --repeats 7

Each workload runs in a fresh subprocess, so its peak memory is its own. Inside it the
libraries take turns (hubjax, faiss, scikit-learn, hubjax, ...) after one warm-up call each, so
machine noise hits all of them alike; the table reports medians and the ratio hubjax / faiss of
those medians. hubjax's compile time is measured on its own (``jit(...).lower().compile()``
of the whole call, a cache miss); "first call" adds it to one run. Peak memory is the
largest resident-set growth above the pre-call baseline, sampled every 2 ms during the calls.
"portable" is hubjax with ``HUBJAX_SELECT=portable`` (the XLA selection instead of the compiled
CPU kernel), compiled in the same process and timed in the same rounds; the JSON records whether
both gave identical results (``kernel_equals_portable``). The ``sample-*`` workload is one batch
of the hubness-prior sampler at the paper's defaults (draw, hub values, accept); its faiss
column is the hub values of such a batch.
"full matmul" is the bare ranking matrix product of all n x m pairs in hubjax's own strips,
timed in the same rounds: the floor for any method that computes every pair (faiss does), so
"hubjax / full matmul" above 1 is what selection costs, and below 1 what symmetry saves. The
JSON also keeps ``matmul_gflops`` (a 4096 x 4096 x d product) and ``matmul_bound_s`` (the
pairwise flops at that throughput).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
# the page whose <!-- bench:... --> section the run rewrites
README = ROOT / "docs" / "performance.md"

# name, kind, n queries, m indexed (None: in-sample), d, k, repeats, peers
WORKLOADS = [
    ("hub-10k-512", "hub", 10_000, None, 512, 10, 5, ("faiss", "sklearn")),
    ("hub-20k-128", "hub", 20_000, None, 128, 10, 5, ("faiss", "sklearn")),
    ("knn-10kx20k-128", "knn", 10_000, 20_000, 128, 10, 5, ("faiss", "sklearn")),
    ("hub-100k-128", "hub", 100_000, None, 128, 10, 1, ("faiss",)),
    ("hub-10k-128-k5", "hub", 10_000, None, 128, 5, 5, ("faiss",)),
    ("hub-10k-128-k50", "hub", 10_000, None, 128, 50, 5, ("faiss",)),
    ("hub-10k-64", "hub", 10_000, None, 64, 10, 5, ("faiss",)),
    ("hub-10k-256", "hub", 10_000, None, 256, 10, 5, ("faiss",)),
    ("hub-10k-1024", "hub", 10_000, None, 1024, 10, 5, ("faiss",)),
    # uncentred data (a common offset of 100, as in ReLU / pixel / count features): the same
    # work, plus an exactness column for hubjax and faiss against a float64 reference
    ("hub-10k-512-offset100", "hub", 10_000, None, 512, 10, 5, ("faiss",), 100.0),
    # the hubness-prior sampler at the paper's defaults: one batch of 10 000 latents, d = 512,
    # k = 5, end to end (draw, hub values, accept); faiss: the hub values of such a batch
    ("sample-10k-512-k5", "sample", 10_000, None, 512, 5, 5, ("faiss",)),
]
EXACTNESS = {"hub-10k-512", "hub-10k-512-offset100", "quick-hub"}
QUICK = [
    ("quick-hub", "hub", 2_000, None, 64, 10, 3, ("faiss", "sklearn")),
    ("quick-knn", "knn", 1_000, 3_000, 32, 5, 3, ("faiss", "sklearn")),
]


class PeakRSS:
    """Largest resident-set growth while the block runs (sampled in a thread)."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak = 0

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.peak = 0
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss - self.base)


def _hubjax_call(kind, x, y, k):
    """``(fn, args)``: the hubjax call a workload times, as a function of traced arguments."""
    import jax

    import hubjax

    if kind == "hub":
        return (lambda x: hubjax.hub_values(x, k=k, check_finite=False)), (x,)
    if kind == "sample":

        def sample(key):  # one paper-default batch: 10 000 latents, hub values at k, threshold
            return hubjax.sampling.hubness_sample(
                key,
                100,
                latent_dim=x.shape[1],
                k=k,
                batch_size=x.shape[0],
                max_batches=1,
                raise_on_shortfall=False,
            )[1].accepted

        return sample, (jax.random.key(0),)
    return (lambda x, y: hubjax.knn(x, y, k=k, check_finite=False)[1]), (x, y)


def _hubjax_fn(kind, x, y, k, select="auto"):
    """hubjax's call, compiled ahead with the selection path ``select`` ("auto": the compiled CPU
    kernel where built; "portable": the XLA path). The environment switch is read at trace
    time, so each variant is traced after clearing the caches and kept as a compiled object."""
    import jax

    fn, args = _hubjax_call(kind, x, y, k)
    previous = os.environ.get("HUBJAX_SELECT")
    os.environ["HUBJAX_SELECT"] = select
    try:
        jax.clear_caches()
        compiled = jax.jit(fn).lower(*args).compile()
    finally:
        if previous is None:
            del os.environ["HUBJAX_SELECT"]
        else:
            os.environ["HUBJAX_SELECT"] = previous
        jax.clear_caches()
    return lambda: jax.block_until_ready(compiled(*args))


def _hubjax_compile_seconds(kind, x, y, k) -> float:
    """Trace + compile time of the whole hubjax call (a fresh jit wrapper: a cache miss)."""
    import jax

    fn, args = _hubjax_call(kind, x, y, k)
    jax.clear_caches()
    t = time.perf_counter()
    jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - t


def _faiss_fn(kind, x, y, k):
    import faiss

    def run():
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(y if kind == "knn" else x)
        if kind == "knn":
            return index.search(x, k)[1]
        _, idx = index.search(x, k + 1)  # the point itself comes first (or a duplicate)
        rows = np.arange(len(x))[:, None]
        keep = np.where((idx == rows).any(1)[:, None], idx != rows, np.arange(k + 1) < k)
        return np.bincount(idx[keep].reshape(len(x), k).ravel(), minlength=len(x))

    return run


def _sklearn_fn(kind, x, y, k):
    from sklearn.neighbors import NearestNeighbors

    def run():
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(y if kind == "knn" else x)
        if kind == "knn":
            return nn.kneighbors(x, return_distance=False)
        idx = nn.kneighbors(return_distance=False)
        return np.bincount(idx.ravel(), minlength=len(x))

    return run


def wrong_rows(x: np.ndarray, idx: np.ndarray, k: int) -> int:
    """In-sample rows whose neighbours' float64 distances are not the k smallest (beyond a
    1e-5 relative near-tie), against a float64 reference computed on centred data."""
    x64 = x.astype(np.float64)
    x64 = x64 - x64.mean(axis=0)
    sq = (x64 * x64).sum(1)
    wrong = 0
    for start in range(0, len(x), 1000):
        rows = slice(start, start + 1000)
        d = sq[rows, None] + sq[None, :] - 2 * x64[rows] @ x64.T
        d[np.arange(d.shape[0]), np.arange(start, start + d.shape[0])] = np.inf
        true = np.sort(d, axis=1)[:, :k]
        got = np.sort(np.take_along_axis(d, idx[rows].astype(np.int64), axis=1), axis=1)
        tol = 1e-5 * np.abs(true).max(axis=1, keepdims=True)
        wrong += int((np.abs(got - true) > tol).any(axis=1).sum())
    return wrong


def _exactness(x, k, with_faiss) -> dict:
    """Wrong rows of hubjax's (and faiss's) in-sample k-NN lists against float64."""
    import hubjax

    out = {"hubjax": wrong_rows(x, np.asarray(hubjax.knn(x, k=k)[1]), k)}
    if with_faiss:
        import faiss

        index = faiss.IndexFlatL2(x.shape[1])
        index.add(x)
        _, idx = index.search(x, k + 1)
        rows = np.arange(len(x))[:, None]
        keep = np.where((idx == rows).any(1)[:, None], idx != rows, np.arange(k + 1) < k)
        out["faiss"] = wrong_rows(x, idx[keep].reshape(len(x), k), k)
    return out


def matmul_throughput(d: int) -> float:
    """GFLOP/s of a plain float32 4096 x 4096 x d matrix product on the default device."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (4096, d))
    b = jax.random.normal(jax.random.key(1), (4096, d))
    f = jax.jit(lambda a, b: jnp.matmul(a, b.T, precision="highest"))
    jax.block_until_ready(f(a, b))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(f(a, b))
        times.append(time.perf_counter() - t)
    return 2 * 4096 * 4096 * d / statistics.median(times) / 1e9


def _full_matmul_fn(x, y, platform="cpu"):
    """The bare ranking matmul of every query against every reference, in hubjax's strips for
    ``platform`` (``"cpu"``, or ``"gpu"``/``"tpu"``: the wider strips those programs use).

    Each strip ``[rows, m]`` goes through ``lax.optimization_barrier`` and only its first column
    is kept, so the product is neither optimised away nor fused with a consumer. (Reducing the
    strip along its rows instead, ``.min(axis=0)``, made XLA:CPU in jax 0.10.1 fuse the dot and
    the reduction into one YNNPACK kernel that segfaults for some shapes, e.g. 1000 x 3000;
    hubjax's engines keep the dot in a fusion of its own.) This is the floor of any method that
    computes the whole n x m product -- faiss's too -- and hubjax's time over it is the cost of
    its selection.
    """
    import jax
    import jax.numpy as jnp
    from jax import lax

    from hubjax._src import numerics, search
    from hubjax._src.metric import SQEUCLIDEAN

    ref = x if y is None else y
    rows = search.strip_rows(x.shape[0], ref.shape[0], platform=platform)
    num = -(-x.shape[0] // rows)

    @jax.jit
    def run(x, ref):
        xp = numerics.pad(SQEUCLIDEAN.prepare(x, jnp.float32), num * rows)
        rp = SQEUCLIDEAN.prepare(ref, jnp.float32)
        shift = SQEUCLIDEAN.centre(rp)
        query = SQEUCLIDEAN.ranking_operands(xp, "query", shift).operands
        reference = SQEUCLIDEAN.ranking_operands(rp, "reference", shift).operands
        strips = query.reshape(num, rows, -1)
        return lax.map(
            lambda q: lax.optimization_barrier(
                numerics.ranking_tile(q, reference, split=platform == "tpu")
            )[:, 0],
            strips,
        )

    return lambda: jax.block_until_ready(run(x, ref))


def run_workload(spec) -> dict:
    """Runs one workload in this process; returns its measurements."""
    import jax
    import jax.numpy as jnp

    name, kind, n, m, d, k, repeats, peers = spec[:8]
    offset = spec[8] if len(spec) > 8 else 0.0
    rng = np.random.default_rng(0)
    x = (offset + rng.normal(size=(n, d))).astype(np.float32)
    y = (offset + rng.normal(size=(m, d))).astype(np.float32) if m else None
    xj, yj = jnp.asarray(x), (jnp.asarray(y) if m else None)
    fns = {
        "hubjax": _hubjax_fn(kind, xj, yj, k),
        "portable": _hubjax_fn(kind, xj, yj, k, select="portable"),
        "full-matmul": _full_matmul_fn(xj, yj),
    }
    makers = {"faiss": _faiss_fn, "sklearn": _sklearn_fn}
    for peer in peers:
        fns[peer] = makers[peer]("hub" if kind == "sample" else kind, x, y, k)

    out = {"workload": name, "kind": kind, "n": n, "m": m or n, "d": d, "k": k}
    out["compile_s"] = _hubjax_compile_seconds(kind, xj, yj, k)
    with PeakRSS() as mem:
        t = time.perf_counter()
        first = fns["hubjax"]()
        first_call = time.perf_counter() - t
    results = {"hubjax": np.asarray(first)}
    peaks = {"hubjax": mem.peak}
    with PeakRSS() as mem:
        results["portable"] = np.asarray(fns["portable"]())
    peaks["portable"] = mem.peak
    out["kernel_equals_portable"] = bool(np.array_equal(results["hubjax"], results["portable"]))
    for peer in peers:  # warm-up (thread pools, allocations)
        with PeakRSS() as mem:
            results[peer] = np.asarray(fns[peer]())
        peaks[peer] = mem.peak
    fns["full-matmul"]()  # compile and warm up, after the peers' first (peak-memory) call
    peaks["full-matmul"] = 0
    times = {lib: [] for lib in fns}
    for _ in range(repeats):
        for lib, fn in fns.items():
            with PeakRSS() as mem:
                t = time.perf_counter()
                fn()
                times[lib].append(time.perf_counter() - t)
            peaks[lib] = max(peaks[lib], mem.peak)
    med = {lib: statistics.median(ts) for lib, ts in times.items()}
    out["median_s"] = med
    out["first_call_s"] = first_call
    out["peak_mb"] = {lib: p / 2**20 for lib, p in peaks.items()}
    if "faiss" in med:
        out["ratio_faiss"] = med["hubjax"] / med["faiss"]
    if "faiss" in med and kind != "sample":
        # agreement with faiss (float rounding can swap near-ties, so not always 1.0)
        a, b = results["hubjax"], results["faiss"]
        out["agreement_faiss"] = float(np.mean(a == b))
    if "sklearn" in med:
        out["ratio_sklearn"] = med["hubjax"] / med["sklearn"]
    out["ratio_full_matmul"] = med["hubjax"] / med["full-matmul"]
    out["ratio_portable"] = med["hubjax"] / med["portable"]
    if "faiss" in med:
        out["portable_ratio_faiss"] = med["portable"] / med["faiss"]
    out["offset"] = offset
    if name in EXACTNESS and kind == "hub":
        out["wrong_rows"] = _exactness(x, k, "faiss" in peers)
    gflops = matmul_throughput(d)
    pair_flops = 2.0 * n * (m or n) * d
    out["matmul_gflops"] = gflops
    out["matmul_bound_s"] = pair_flops / gflops / 1e9
    out["backend"] = jax.default_backend()
    return out


def case_table_main(argv, *, doc, prefix, run, to_markdown, cases, quick, repeats) -> int:
    """The command line of a benchmark over ``cases`` (``--quick``: the ``quick`` cases, one
    repeat, nothing written): prints ``to_markdown(rows, info, repeats)`` of the rows of
    ``run(cases, repeats)`` and the :func:`machine` ``info`` (with ``info["fused"]``: whether
    the fused AVX-512 kernel ran), and writes it to ``results/<prefix>-<date>-<cpu flags>.md``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    args = parser.parse_args(argv)
    cases, repeats = (quick, 1) if args.quick else (cases, args.repeats)
    from hubjax._src.kernels import cpu

    rows = run(cases, repeats)
    info = machine()
    info["fused"] = cpu.fused()
    table = to_markdown(rows, info, repeats)
    print(table)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        flags = "avx512" if info["fused"] else "no-avx512"
        (RESULTS / f"{prefix}-{info['date']}-{flags}.md").write_text(table + "\n")
    return 0


def case_table_command(module_name: str):
    """``main(argv=None) -> int`` of the case-table benchmark module ``module_name``:
    :func:`case_table_main` with that module's docstring, ``PREFIX``, ``run``,
    ``to_markdown``, ``CASES``, ``QUICK`` and ``REPEATS``."""

    def main(argv=None) -> int:
        m = sys.modules[module_name]
        return case_table_main(
            argv,
            doc=m.__doc__,
            prefix=m.PREFIX,
            run=m.run,
            to_markdown=m.to_markdown,
            cases=m.CASES,
            quick=m.QUICK,
            repeats=m.REPEATS,
        )

    return main


def cpu_line(info: dict, without: str = "no AVX-512") -> str:
    """The table's first words: the CPU (from :func:`case_table_main`'s ``info``), whether the
    fused AVX-512 kernel ran (else ``without``), the jax version and the date."""
    kernel = "fused AVX-512 kernel" if info["fused"] else without
    return (
        f"CPU {info['cpu']} ({info['cores']} cores), {kernel}; jax {info['versions']['jax']}, "
        f"{info['date']}."
    )


def machine() -> dict:
    import jax

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "jax": jax.__version__}
    for mod in ("jaxlib", "numpy", "faiss", "sklearn"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = None
    dev = jax.devices()[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d"),
    }


def to_markdown(info: dict, rows: list[dict]) -> str:
    v = info["versions"]
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores; backend {info['backend']} "
        f"({info['device']}); jax {v['jax']}, faiss {v['faiss']}, scikit-learn {v['sklearn']}, "
        f"Python {v['python']}; {info['date']}.",
        "",
        "| workload | n x m, d, k | hubjax s | faiss s | sklearn s | hubjax/faiss | "
        "hubjax/sklearn | compile s | peak MB hubjax / faiss | full matmul s | "
        "hubjax/full matmul | portable s | portable/faiss | wrong rows hubjax / faiss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        med, peak = r["median_s"], r["peak_mb"]

        def fmt(lib, med=med):
            return f"{med[lib]:.3f}" if lib in med else "-"

        lines.append(
            f"| {r['workload']} | {r['n']} x {r['m']}, {r['d']}, {r['k']} | {fmt('hubjax')} | "
            f"{fmt('faiss')} | {fmt('sklearn')} | "
            f"{_ratio(r, 'ratio_faiss')} | {_ratio(r, 'ratio_sklearn')} | {r['compile_s']:.2f} | "
            f"{peak['hubjax']:.0f} / {peak['faiss']:.0f} | "
            f"{fmt('full-matmul')} | {_ratio(r, 'ratio_full_matmul')} | {fmt('portable')} | "
            f"{_ratio(r, 'portable_ratio_faiss')} | {_wrong(r)} |"
        )
    return "\n".join(lines)


def _wrong(row):
    w = row.get("wrong_rows")
    if not w:
        return "-"
    return f"{w['hubjax']} / {w.get('faiss', '-')} of {row['n']}"


def _ratio(row, key):
    return f"{row[key]:.2f}x" if key in row else "-"


def update_readme(markdown: str, backend: str) -> None:
    start, end = f"<!-- bench:{backend}:start -->", f"<!-- bench:{backend}:end -->"
    text = README.read_text()
    if start not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{start}\n{markdown}\n{end}{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke-test grid")
    parser.add_argument("--only", nargs="*", help="workload names to run")
    parser.add_argument("--repeats", type=int, help="override repeats per workload")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    grid = QUICK if args.quick else WORKLOADS
    if args.worker:
        spec = next(s for s in QUICK + WORKLOADS if s[0] == args.worker)
        if args.repeats:
            spec = (*spec[:6], args.repeats, *spec[7:])
        print(json.dumps(run_workload(spec)))
        return 0
    if args.only:
        grid = [s for s in QUICK + WORKLOADS if s[0] in args.only]
    rows = []
    for spec in grid:
        cmd = [sys.executable, "-m", "benchmarks.run", "--worker", spec[0]]
        if args.repeats:
            cmd += ["--repeats", str(args.repeats)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode:
            print(f"{spec[0]} failed:\n{res.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{row['workload']:>18}: hubjax {row['median_s']['hubjax']:.3f} s, "
            f"x{row.get('ratio_faiss', float('nan')):.2f} faiss, "
            f"x{row['ratio_full_matmul']:.2f} full matmul, "
            f"portable {row['median_s']['portable']:.3f} s (x{row['ratio_portable']:.2f}), "
            f"compile {row['compile_s']:.2f} s, peak {row['peak_mb']['hubjax']:.0f} MB",
            flush=True,
        )
    info = machine()
    markdown = to_markdown(info, rows)
    print(markdown)
    if not (args.quick or args.no_write or args.only):
        RESULTS.mkdir(exist_ok=True)
        stem = RESULTS / info["backend"]
        stem.with_suffix(".json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
        stem.with_suffix(".md").write_text(markdown + "\n")
        update_readme(markdown, info["backend"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
