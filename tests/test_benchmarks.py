"""The benchmark's own helpers: the matmul floor it compares against, and its table."""

import numpy as np
import pytest
from helpers import random_points

from benchmarks import approximate, run


@pytest.mark.parametrize("n, m", [(1000, 3000), (37, None)])
def test_full_matmul_floor_computes_every_ranking_value(n, m):
    # 1000 x 3000 is a shape where a row-axis reduction of the dot made XLA:CPU (jax 0.10.1)
    # fuse both into a YNNPACK kernel that segfaulted; the floor keeps the dot unfused.
    x = random_points(n, 32, seed=1)
    y = random_points(m, 32, seed=2) if m else None
    ref = x if y is None else y
    first = np.asarray(run._full_matmul_fn(x, y)()).reshape(-1)[:n]
    x64, r64 = x.astype(np.float64), ref.astype(np.float64)
    expected = (x64**2).sum(1) + (r64[0] ** 2).sum() - 2 * x64 @ r64[0]
    np.testing.assert_allclose(first, expected, rtol=1e-4, atol=1e-3)


def test_markdown_table_has_one_cell_per_column():
    row = {
        "workload": "w",
        "n": 10,
        "m": 10,
        "d": 4,
        "k": 2,
        "median_s": {"hubjax": 1.0, "faiss": 2.0, "full-matmul": 0.5},
        "peak_mb": {"hubjax": 3.0, "faiss": 4.0},
        "compile_s": 0.1,
        "ratio_faiss": 0.5,
        "ratio_full_matmul": 2.0,
    }
    info = {
        "cpu": "cpu",
        "cores": 2,
        "backend": "cpu",
        "device": "cpu",
        "versions": {"jax": "x", "faiss": "y", "sklearn": "z", "python": "3"},
        "date": "today",
    }
    lines = run.to_markdown(info, [row]).splitlines()
    header, body = lines[2], lines[4]
    assert header.count("|") == body.count("|")
    assert "| 0.50x | - |" in body and "| 0.500 | 2.00x |" in body


def test_wide_benchmark_runs_and_reports_its_peer(capsys):
    """``python -m benchmarks.wide --quick``: every case timed against the all-pairs matmul in
    the same process, with the CPU named and nothing written."""
    from benchmarks import wide

    before = sorted(wide.RESULTS.iterdir())
    assert wide.main(["--quick"]) == 0
    table = capsys.readouterr().out
    assert "CPU " in table and "all-pairs matmul" in table
    body = [line for line in table.splitlines() if line.startswith("| Gaussian")]
    assert len(body) == 1 and body[0].count("x |") == 2  # a ratio and the temporaries
    assert sorted(wide.RESULTS.iterdir()) == before


def test_itself_benchmark_runs_and_reports_its_peer(capsys):
    """``python -m benchmarks.itself --quick``: ``knn(x, x)`` timed against the search of a
    copy in the same process, the same bits, nothing written."""
    from benchmarks import itself

    before = sorted(itself.RESULTS.iterdir())
    assert itself.main(["--quick"]) == 0
    table = capsys.readouterr().out
    assert "CPU " in table and "knn(x, copy)" in table
    body = [line for line in table.splitlines() if line.startswith("| Gaussian")]
    assert len(body) == 2 and all(line.endswith("| yes |") for line in body)
    assert sorted(itself.RESULTS.iterdir()) == before


def test_device_benchmark_runs_on_cpu(capsys):
    """``python -m benchmarks.device --quick``: the GPU/TPU benchmark keeps working on any
    backend (small sizes, nothing written): each case against the matmul and the source
    comparison. (Its bitwise check compares the device with the CPU backend: nothing to compare
    on a CPU-only host.)"""
    from benchmarks import device

    before = sorted(device.RESULTS.iterdir())
    assert device.main(["--quick", "--sections", "cases,sources"]) == 0
    table = capsys.readouterr().out
    assert sorted(device.RESULTS.iterdir()) == before
    cases = [line for line in table.splitlines() if line.startswith(("| hub ", "| knn ", "| s"))]
    assert len(cases) == 3 and all("failed" not in line for line in cases)
    assert all(line.count("x |") == 1 for line in cases)  # the ratio to the matmul
    assert "| 3000 x 32, k = 10 | " in table and table.count("| True |") == 1  # same bits
    assert "identical: True" in table  # the ring equals one device


def test_scaling_keeps_the_users_flags_and_uses_count_devices():
    """``python -m benchmarks.scaling`` adds the fake host device count to the user's
    ``XLA_FLAGS`` instead of replacing them, and each row shards over exactly ``count``
    devices (the first ones; more than there are is reported as skipped)."""
    import jax

    from benchmarks import scaling

    flags = "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=8"
    assert scaling.with_host_devices(flags, 2) == (
        "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=2"
    )
    assert scaling.with_host_devices("", 4) == "--xla_force_host_platform_device_count=4"
    count = min(2, jax.device_count())
    row = scaling.worker(300, 8, 5, 1, count)
    assert row["devices"] == count and row["identical"]
    assert "skipped" in scaling.worker(300, 8, 5, 1, jax.device_count() + 1)


def test_approximate_table_says_when_the_peer_is_not_installed():
    """faiss is optional: without it the approximate benchmark still writes its table (it
    stopped with ModuleNotFoundError after minutes of work), and says so in the peer's cells."""
    row = {
        "n": 1000,
        "d": 8,
        "nlist": 8,
        "nprobe": 8,
        "approx_s": 1.0,
        "first_call_s": 2.0,
        "approx_peak_mb": 3.0,
        "recall": 0.9,
        "recall_in_sample": 0.9,
        "approx_skewness": 1.0,
        "approx_robinhood": 0.5,
        "sampled_skewness": 1.1,
        "sampled_interval": [0.9, 1.3],
        "faiss": None,
    }
    header, _, line = approximate.to_markdown([row]).splitlines()
    assert line.count("|") == header.count("|") and "not installed" in line


def test_metrics_benchmark_runs_and_reports_its_peer(capsys):
    """``python -m benchmarks.metrics --quick``: both metrics timed against ``knn`` in the same
    process, with the CPU named and nothing written."""
    from benchmarks import metrics

    before = sorted(metrics.RESULTS.iterdir())
    assert metrics.main(["--quick"]) == 0
    table = capsys.readouterr().out
    assert "CPU " in table and "`knn(real, k=5)`" in table
    assert (
        sum(line.startswith(("| precision_recall", "| density")) for line in table.splitlines())
        == 2
    )
    assert sorted(metrics.RESULTS.iterdir()) == before


def test_retrieval_benchmark_times_db_norm_on_the_peers_bank_rows(capsys):
    """``python -m benchmarks.retrieval --quick --methods db_norm --skip-search``: DBNorm's
    statistics over the peer's bank rows split between its two banks, as a ratio to ``knn`` in
    the same process, nothing written; unknown methods are refused."""
    from benchmarks import retrieval

    before = sorted(retrieval.RESULTS.iterdir())
    assert retrieval.main(["--quick", "--methods", "db_norm", "--skip-search"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[2:]] == [
        "| knn(gallery, bank, k=10) [peer of the statistics]",
        "| bank_statistics(db_norm), banks of 2000 + 2000 rows",
    ]
    assert float(rows[-1].split(" | ")[-1].strip(" |")) > 0
    assert sorted(retrieval.RESULTS.iterdir()) == before
    with pytest.raises(SystemExit):
        retrieval.main(["--quick", "--methods", "dbnorm"])
