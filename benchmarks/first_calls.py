"""Programs compiled and time of the first call of the common calls, each in a fresh process.

Usage (from the repository root)::

    python -m benchmarks.first_calls [--source PATH]

For each call: the programs JAX compiles on its first call (in a new process, after the CPU
kernel's one-time self-test), the first call's seconds and a warm repeat's. The cross-validation
rows run 5 folds of scikit-learn's digits (1797 x 64: folds of 1437/1438 and 359/360 rows), so
they show whether each fold compiles again. ``--source`` runs another checkout (its directory
is the processes' working directory), for before/after records. Printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.run import machine

_DIGITS = "from sklearn.datasets import load_digits; X, labels = load_digits(return_X_y=True)"
_CV = "from sklearn.model_selection import KFold, cross_val_score; from sklearn.pipeline import make_pipeline; from sklearn.neighbors import KNeighborsClassifier, KNeighborsTransformer"  # noqa: E501
CASES = {
    "knn 5000 x 256": "x = np.random.default_rng(0).standard_normal((5000, 256)).astype(np.float32); f = lambda: hubjax.knn(x, k=10)",  # noqa: E501
    "hubness 5000 x 256": "x = np.random.default_rng(0).standard_normal((5000, 256)).astype(np.float32); f = lambda: hubjax.hubness(x, k=10)",  # noqa: E501
    "Hubness(k=10).fit(digits).score()": f"{_DIGITS}; from hubjax.sklearn import Hubness; f = lambda: Hubness(k=10).fit(X).score()",  # noqa: E501
    "5-fold Hubness fit/score (digits)": f"{_DIGITS}; from sklearn.model_selection import KFold; from hubjax.sklearn import Hubness; f = lambda: [Hubness(k=10).fit(X[a]).score(X[b]) for a, b in KFold(5).split(X)]",  # noqa: E501
    "cross_val_score DisSimLocal (digits)": f"{_DIGITS}; {_CV}; from hubjax.sklearn import DisSimLocal; p = make_pipeline(DisSimLocal(n_neighbors=50), KNeighborsClassifier(n_neighbors=5, metric='precomputed')); f = lambda: cross_val_score(p, X, labels, cv=5)",  # noqa: E501
    "cross_val_score mp_empiric (digits)": f"{_DIGITS}; {_CV}; from hubjax.sklearn import HubnessReduction; p = make_pipeline(KNeighborsTransformer(n_neighbors=50, mode='distance'), HubnessReduction(method='mp_empiric'), KNeighborsClassifier(n_neighbors=5, metric='precomputed')); f = lambda: cross_val_score(p, X, labels, cv=5)",  # noqa: E501
    "CLI analyze of two files, 60 and 57 x 5": "import tempfile; from hubjax import __main__ as entry; d = tempfile.mkdtemp(); [np.save(f'{d}/{n}.npy', np.random.default_rng(n).normal(size=(n, 5)).astype(np.float32)) for n in (60, 57)]; os.environ['HUBJAX_CACHE_DIR'] = 'off'; f = lambda: [entry.main(['analyze', f'{d}/{n}.npy', '--json']) for n in (60, 57)]",  # noqa: E501
}
TEMPLATE = """
import contextlib, io, json, os, time
import numpy as np, jax, hubjax
from benchmarks.compiles import compiled
from hubjax._src.kernels import cpu
cpu.available()
{setup}
with compiled() as names, contextlib.redirect_stdout(io.StringIO()):
    start = time.perf_counter(); jax.block_until_ready(f()); first = time.perf_counter() - start
with contextlib.redirect_stdout(io.StringIO()):
    start = time.perf_counter(); jax.block_until_ready(f()); warm = time.perf_counter() - start
print("RESULT" + json.dumps(dict(compiles=len(names), first=first, warm=warm, names=sorted(set(names)))))
"""  # noqa: E501


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="a checkout to run (default: this one)")
    args = parser.parse_args(argv)
    root = Path(args.source or Path(__file__).resolve().parents[1]).resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "HUBJAX_"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    info = machine()
    print(f"CPU: {info['cpu']}, {info['cores']} cores; jax {info['versions']['jax']}; {root}\n")
    print("| call | programs compiled | first call s | warm s | programs |")
    print("| --- | --- | --- | --- | --- |")
    for name, setup in CASES.items():
        code = TEMPLATE.format(setup=setup)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env
        )
        found = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
        if not found:
            print(f"| {name} | failed: {out.stderr.strip().splitlines()[-1:]} | | | |")
            continue
        r = json.loads(found[-1][len("RESULT") :])
        names = ", ".join(n.removeprefix("jit(").removesuffix(")") for n in r["names"])
        print(f"| {name} | {r['compiles']} | {r['first']:.2f} | {r['warm']:.3f} | {names} |")


if __name__ == "__main__":
    main()
