"""Results pinned bit for bit: the search core may be restructured, its answers may not change.

``tests/data/search_digests.json`` holds SHA-256 digests of the results of a grid of calls
(every metric, both in-sample conventions and query-vs-reference, k from 1 to 100, jit and vmap,
the distributed ring on 8 devices, hub values and the hubness report) on data shaped like users'
data: Gaussian, tie-heavy small integers, uncentred (offset 1e4), and Gaussian with NaN rows. The
data comes from a seeded NumPy generator, so it is the same on every machine; the results are
bitwise the same for every engine, block size, instruction set and device count, so the digests
are too. A change to the core that moves a single bit fails here.

Regenerate only for an intended change of results, and say why in the commit:
``python -m tests.test_search_digests --write``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hubjax
from hubjax import distributed

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ``python -m tests.test_search_digests``
from helpers import default_level_env, sample

DIGESTS = Path(__file__).resolve().parent / "data" / "search_digests.json"
METRICS = ("sqeuclidean", "euclidean", "cosine", "dot")
# (name, n, d, k, mode): mode "out" excludes self, "self" includes it, "xy" searches y (n // 2
# references); n and d are not multiples of any block size or alignment.
CASES = (
    ("k100-out", 203, 19, 100, "out"),
    ("k7-self", 203, 19, 7, "self"),
    ("k1-out", 67, 5, 1, "out"),
    ("k10-xy", 203, 19, 10, "xy"),
)


def point_sets(n: int, d: int) -> np.ndarray:
    """``[4, n, d]`` float32: Gaussian, ties, uncentred, NaN rows (seeded)."""
    rng = np.random.default_rng(n * 1000 + d)
    gauss = rng.standard_normal((n, d))
    ties = rng.integers(0, 3, (n, d)).astype(np.float64)
    uncentred = 1e4 + rng.standard_normal((n, d))
    nan_rows = rng.standard_normal((n, d))
    nan_rows[[3, n // 2]] = np.nan
    return np.stack([gauss, ties, uncentred, nan_rows]).astype(np.float32)


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:24]


def _knn_batched(sets, metric, k, mode):
    n = sets.shape[1]

    def one(x):
        if mode == "xy":
            return hubjax.knn(x[n // 2 :], x[: n // 2], k=k, metric=metric, check_finite=False)
        return hubjax.knn(x, k=k, metric=metric, include_self=mode == "self", check_finite=False)

    return jax.jit(jax.vmap(one))(jnp.asarray(sets))


def compute(name: str) -> str:
    """The digest of one entry of the grid (``knn/<metric>/<case>``, ``hub``, ``ring``, ...)."""
    kind, *rest = name.split("/")
    if kind == "knn":
        metric, case = rest
        _, n, d, k, mode = next(c for c in CASES if c[0] == case)
        return digest(*_knn_batched(point_sets(n, d), metric, k, mode))
    if kind == "hub_values":
        (metric,) = rest
        x = point_sets(150, 33)[2]
        return digest(hubjax.hub_values(x, k=10, metric=metric))
    if kind == "hubness":
        x = point_sets(150, 33)[0]
        report = hubjax.hubness(x, k=5)
        return digest(*jax.tree.leaves(report))
    if kind == "ring":
        (metric,) = rest
        x = point_sets(203, 19)[1][:200]  # 25 points per device
        dist, idx = distributed.knn(x, k=12, metric=metric)
        counts = distributed.hub_values(x, k=12, metric=metric, include_self=True)
        return digest(dist, idx, counts)
    raise KeyError(name)


def names() -> list[str]:
    out = [f"knn/{m}/{c[0]}" for m in METRICS for c in CASES]
    out += [f"hub_values/{m}" for m in METRICS] + ["hubness"]
    return out + [f"ring/{m}" for m in ("sqeuclidean", "cosine")]


@pytest.mark.parametrize("name", sample(names(), 6, key="digests"))
def test_results_bitwise_as_pinned(name):
    if name.startswith("ring/") and jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices")
    expected = json.loads(DIGESTS.read_text())[name]
    assert compute(name) == expected


def test_every_entry_is_pinned():
    assert sorted(json.loads(DIGESTS.read_text())) == sorted(names())


def test_pinned_bits_at_the_default_optimisation_level():
    """The suite compiles at XLA's backend optimisation level 0 for speed (``conftest.py``);
    users' programs compile at the default level. A share of the grid, computed in a fresh
    process at that level, has the pinned digests too."""
    chosen = sample(names(), 2, key="digests-default-level")
    out = subprocess.run(
        [sys.executable, "-m", "tests.test_search_digests", "--print", *chosen],
        cwd=DIGESTS.parents[2],
        env=default_level_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    expected = json.loads(DIGESTS.read_text())
    assert json.loads(out.stdout.splitlines()[-1]) == {n: expected[n] for n in chosen}


if __name__ == "__main__" and "--print" in sys.argv:
    chosen = sys.argv[sys.argv.index("--print") + 1 :]
    print(json.dumps({n: compute(n) for n in chosen}))

if __name__ == "__main__" and "--write" in sys.argv:
    import os

    assert "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", ""), (
        "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
    )
    DIGESTS.write_text(json.dumps({n: compute(n) for n in names()}, indent=1) + "\n")
    print(f"wrote {DIGESTS}")
