"""Start-up and repeat times of the command line on a small file.

Usage (from the repository root)::

    python -m benchmarks.cli [--repeats 5] [--source PATH]

Each figure is the median wall time of ``--repeats`` fresh processes (the command as a user runs
it: ``python -m hubjax ...``) on a 60 x 5 float32 ``.npy`` file:

* ``--help`` and a missing file: the answers that need no computation;
* ``analyze``, first run: an empty compilation-cache folder (every run starts from a new one);
* ``analyze``, repeat run: the folder the previous run filled;
* ``analyze``, another file of 57 rows after the 60-row run (the same row-count bucket);
* ``analyze`` with the cache off (``HUBJAX_CACHE_DIR=off``);
* the peer, in the same run: ``python -c "import jax"``, the floor every JAX program pays.

``--source`` runs another checkout's hubjax (``PYTHONPATH``), for before/after records.
Results are printed as a markdown table and written to ``benchmarks/results/cli-<date>.md``
(unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.run import machine

RESULTS = Path(__file__).resolve().parent / "results"


def timed(argv, env, cwd) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--source", help="a checkout whose hubjax to run (default: installed)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "HUBJAX_"))}
    if args.source:
        base["PYTHONPATH"] = str(Path(args.source).resolve())
    hubjax = [sys.executable, "-m", "hubjax"]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        np.save(tmp / "a.npy", rng.normal(size=(60, 5)).astype(np.float32))
        np.save(tmp / "b.npy", rng.normal(size=(57, 5)).astype(np.float32))
        cases = {
            "python -c 'import jax' (peer)": lambda i: (
                [sys.executable, "-c", "import jax"],
                base,
            ),
            "hubjax --help": lambda i: ([*hubjax, "--help"], base),
            "hubjax analyze missing.npy (error)": lambda i: (
                [*hubjax, "analyze", "missing.npy"],
                base,
            ),
        }
        for name, make in cases.items():
            rows[name] = [timed(*make(i), tmp) for i in range(args.repeats)]
        first, repeat, other, off = [], [], [], []
        for i in range(args.repeats):
            env = {**base, "HUBJAX_CACHE_DIR": str(tmp / f"cache{i}")}
            first.append(timed([*hubjax, "analyze", "a.npy"], env, tmp))
            repeat.append(timed([*hubjax, "analyze", "a.npy"], env, tmp))
            other.append(timed([*hubjax, "analyze", "b.npy"], env, tmp))
            off.append(
                timed([*hubjax, "analyze", "a.npy"], {**base, "HUBJAX_CACHE_DIR": "off"}, tmp)
            )
        rows["hubjax analyze a.npy, first run (empty cache)"] = first
        rows["hubjax analyze a.npy, repeat run"] = repeat
        rows["hubjax analyze b.npy (57 rows) after a.npy"] = other
        rows["hubjax analyze a.npy, HUBJAX_CACHE_DIR=off"] = off
    info = machine()
    peer = statistics.median(rows["python -c 'import jax' (peer)"])
    lines = [
        f"# Command line start-up ({datetime.date.today()})",
        "",
        f"CPU: {info['cpu']}, {info['cores']} cores; jax {info['versions']['jax']}; "
        f"hubjax from {args.source or 'the installed package'}. 60 x 5 float32 file; median of "
        f"{args.repeats} fresh processes.",
        "",
        "| command | median s | / import jax |",
        "| --- | --- | --- |",
    ]
    for name, times in rows.items():
        median = statistics.median(times)
        lines.append(f"| {name} | {median:.2f} | {median / peer:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"cli-{datetime.date.today()}.md").write_text(text)


if __name__ == "__main__":
    main()
