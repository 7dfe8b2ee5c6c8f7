"""Scaling table of hubjax.distributed.hub_values over 1, 2, 4, 8 devices.

    python -m benchmarks.scaling            # writes benchmarks/results/scaling-<backend>.md/json

On a CPU the devices are fake (``--xla_force_host_platform_device_count``, added to the
``XLA_FLAGS`` you set): they share the same cores, so this is a correctness and overhead check,
not a speed-up claim. On GPUs and TPUs each row uses the first ``count`` devices (a mesh of
those), and a count beyond the devices present is reported as skipped. Each device count runs in
its own process; the single-device ``hubjax.hub_values`` is timed in the same process for the
ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def with_host_devices(flags: str, count: int) -> str:
    """``flags`` (the user's ``XLA_FLAGS``) with the fake host device count set to ``count``."""
    kept = [f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join([*kept, f"--xla_force_host_platform_device_count={count}"])


def worker(n: int, d: int, k: int, repeats: int, count: int) -> dict:
    import jax
    import numpy as np
    from jax.sharding import Mesh

    import hubjax

    devices = jax.devices()
    if len(devices) < count:
        return {"devices": count, "skipped": f"{len(devices)} {devices[0].platform} devices"}
    mesh = Mesh(np.asarray(devices[:count]), ("points",))
    x = jax.numpy.asarray(np.random.default_rng(0).normal(size=(n, d)).astype(np.float32))
    fns = {
        "sharded": lambda: hubjax.distributed.hub_values(x, k=k, mesh=mesh, check_finite=False),
        "single": lambda: hubjax.hub_values(x, k=k, check_finite=False),
    }
    first = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        jax.block_until_ready(fn())
        first[name] = time.perf_counter() - t
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t)
    same = bool((np.asarray(fns["sharded"]()) == np.asarray(fns["single"]())).all())
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        "devices": count,
        "backend": jax.default_backend(),
        "median_s": med,
        "first_call_s": first,
        "ratio": med["sharded"] / med["single"],
        "identical": same,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.n, args.d, args.k, args.repeats, args.count)))
        return 0
    rows = []
    for count in args.devices:
        # fake host devices matter on CPU only; elsewhere the flag leaves the accelerators alone
        env = dict(os.environ, XLA_FLAGS=with_host_devices(os.environ.get("XLA_FLAGS", ""), count))
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.scaling",
            "--worker",
            "--count",
            str(count),
            "--n",
            str(args.n),
            "--d",
            str(args.d),
            "--k",
            str(args.k),
            "--repeats",
            str(args.repeats),
        ]
        res = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1]
        )
        if res.returncode:
            print(res.stderr[-2000:], file=sys.stderr)
            continue
        row = json.loads(res.stdout.strip().splitlines()[-1])
        if "skipped" in row:
            print(f"{count} devices: skipped, only {row['skipped']}", flush=True)
            continue
        rows.append(row)
        print(
            f"{row['devices']} devices: sharded {row['median_s']['sharded']:.3f} s, "
            f"single {row['median_s']['single']:.3f} s, identical {row['identical']}",
            flush=True,
        )
    backend = rows[0]["backend"] if rows else "cpu"
    lines = [
        f"hub values, n = {args.n}, d = {args.d}, k = {args.k}; backend {backend} "
        "(CPU devices are fake: same 2 cores).",
        "",
        "| devices | sharded s | single-device s | sharded / single | identical |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['devices']} | {r['median_s']['sharded']:.3f} | {r['median_s']['single']:.3f} "
            f"| {r['ratio']:.2f}x | {r['identical']} |"
        )
    markdown = "\n".join(lines)
    print(markdown)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"scaling-{backend}.md").write_text(markdown + "\n")
    (RESULTS / f"scaling-{backend}.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
