"""knn must not materialise the n x n matrix: peak memory stays far below it."""

import subprocess
import sys
import textwrap

from helpers import default_level_env

# Each script prints how much its process's peak resident set grew over the measured call.
PREAMBLE = """
import resource
import jax, numpy as np
import hubjax

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""


def peak_growth(script: str) -> float:
    """Runs ``PREAMBLE + script`` in a fresh process; the MiB it prints last."""
    out = subprocess.run(
        [sys.executable, "-c", PREAMBLE + script],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=default_level_env(),  # memory as users' programs use it
    )
    return float(out.stdout.strip().splitlines()[-1])


SCRIPT = textwrap.dedent(
    """
    n = 20_000
    x = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    hubjax.hub_values(x[:500], k=10)  # load and initialise XLA first
    before = peak_mb()
    counts = jax.block_until_ready(hubjax.hub_values(x, k=10))
    assert int(counts.sum()) == n * 10
    print(peak_mb() - before)
    """
)


def test_knn_memory_is_far_below_dense_matrix():
    growth_mb = peak_growth(SCRIPT)
    dense_mb = 20_000 * 20_000 * 4 / 2**20  # 1526 MiB for the float32 matrix alone
    assert growth_mb < dense_mb / 4, f"peak grew by {growth_mb:.0f} MiB"


WIDE = textwrap.dedent(
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 20_000), dtype=np.float32)
    y = rng.standard_normal((500, 20_000), dtype=np.float32)
    hubjax.knn(x[:20], y[:30], k=3)  # load and initialise XLA first
    before = peak_mb()
    jax.block_until_ready(hubjax.knn(x, y, k=10))
    jax.block_until_ready(hubjax.hub_values(x, k=10))
    print(peak_mb() - before)
    """
)


def test_wide_data_memory_is_bounded_for_any_dimension():
    """The refine step once gathered [rows, k + 9, d] at once: over 1.5 GB here (+3 GB for 2000
    queries). Now it is chunked. The growth measured includes compilation and the device copy
    of the inputs (about 600 MiB together on this CPU; a repeat call adds under 50 MiB)."""
    growth_mb = peak_growth(WIDE)
    data_mb = 1500 * 20_000 * 4 / 2**20  # 114 MiB of inputs
    assert growth_mb < 6 * data_mb + 300, f"peak grew by {growth_mb:.0f} MiB"


PR_SCRIPT = textwrap.dedent(
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20_000, 64), dtype=np.float32)
    b = rng.standard_normal((20_000, 64), dtype=np.float32)
    small = hubjax.metrics.precision_recall(a[:2000], b[:2000], k=3)  # initialise XLA first
    jax.block_until_ready(small)
    before = peak_mb()
    jax.block_until_ready(hubjax.metrics.precision_recall(a, b, k=3))
    print(peak_mb() - before)
    """
)


def test_precision_recall_memory_on_many_points():
    """20 000 x 64 per set (5 MiB each): the ball counts' tiles hold about 2 MiB of distances.
    Measured here: the peak grows by 120 MiB (compiling this size included); with the former
    1024-row tiles (80 MB each) by 287 MiB."""
    growth = peak_growth(PR_SCRIPT)
    assert growth < 200, f"peak grew by {growth:.0f} MiB"
