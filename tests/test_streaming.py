"""``.npy`` files read in blocks: counts equal to the in-memory search, bounded memory."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import default_level_env, random_points

import hubjax
from hubjax import __main__ as entry
from hubjax import streaming
from hubjax._src import float32


@pytest.mark.parametrize(
    ("metric", "block_rows"), [("sqeuclidean", 100), ("cosine", 333), ("dot", 1000)]
)
def test_streamed_counts_equal_in_memory(tmp_path, metric, block_rows):
    x = random_points(1001, 12, seed=1) + np.float32(300.0)  # uncentred
    x[500] = x[7]  # a duplicate
    path = tmp_path / "x.npy"
    np.save(path, x)
    got = streaming.stream_hub_values(path, k=6, metric=metric, block_bytes=block_rows * 12 * 4)
    np.testing.assert_array_equal(got, hubjax.hub_values(x, k=6, metric=metric))


@pytest.mark.parametrize("dtype", [np.float64, np.int16, np.int64])
def test_wide_and_integer_files_match_the_loaded_path(tmp_path, dtype):
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(400, 6)) * 1000 + 1e5).astype(dtype)
    path = tmp_path / "x.npy"
    np.save(path, x)
    got = streaming.stream_hub_values(path, k=5, block_bytes=64 * 6 * 4)
    want = hubjax.hub_values(float32.to_float32(x, "sqeuclidean"), k=5)
    np.testing.assert_array_equal(got, want)


def test_cli_stream_report_equals_in_memory(tmp_path, capsys):
    x = random_points(700, 16, seed=3)
    path = tmp_path / "x.npy"
    np.save(path, x)
    outs = []
    for extra in ([], ["--stream", "--block-mb", "1"]):
        code = entry.main(["analyze", str(path), "--k", "5", "--json", *extra])
        out = capsys.readouterr()
        assert code == 0, out.err
        outs.append(json.loads(out.out))
    assert outs[0] == outs[1]


def test_stream_errors(tmp_path, capsys):
    x = random_points(50, 4)
    good = tmp_path / "good.npy"
    np.save(good, x)
    truncated = tmp_path / "cut.npy"
    truncated.write_bytes(good.read_bytes()[:-40])
    fortran = tmp_path / "f.npy"
    np.save(fortran, np.asfortranarray(x))
    nan = tmp_path / "nan.npy"
    bad = x.copy()
    bad[17, 2] = np.nan
    np.save(nan, bad)
    csv = tmp_path / "x.csv"
    np.savetxt(csv, x, delimiter=",")
    cases = [
        (truncated, [], "truncated"),
        (fortran, [], "Fortran"),
        (nan, [], "row 17"),
        (good, ["--k", "50"], "too large"),
        (csv, [], ".npy files only"),
        (good, ["--reduction", "nicdm"], "--stream"),
        (good, ["--block-mb", "0"], "block-mb"),
    ]
    for path, extra, message in cases:
        code = entry.main(["analyze", str(path), "--stream", *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (path, err)


PROFILE = """
import sys
from hubjax import streaming

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

path, block = sys.argv[1], int(sys.argv[2])
streaming.stream_hub_values(path, k=10, block_bytes=block)  # warm: compiled, pools in place
trace = []
streaming.stream_hub_values(
    path, k=10, block_bytes=block, progress=lambda done, total: trace.append(rss())
)
print(" ".join(map(str, trace)))
"""


def test_memory_does_not_grow_with_the_part_of_the_file_read(tmp_path):
    """Streaming a file of 16 blocks of 1 MiB: the resident set after each query block stays
    flat -- its trend over the run is far below a block per block -- so the peak does not
    depend on how much of the file has been read, nor on the file size."""
    d, rows = 1024, 256
    big = tmp_path / "big.npy"
    np.save(big, np.random.default_rng(4).normal(size=(16 * rows, d)).astype(np.float32))
    # A fixed mmap threshold: glibc otherwise raises it after each freed large buffer and parks
    # multi-MB buffers in per-thread arenas, so the resident set steps up and down by whole
    # buffers depending on which of XLA's threads allocated them (allocator caching, bounded,
    # not growth with the file; it showed with 8 host devices and the kernel on XLA's pool).
    env = default_level_env(MALLOC_MMAP_THRESHOLD_=str(256 << 10))
    out = subprocess.run(
        [sys.executable, "-c", PROFILE, str(big), str(1 << 20)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    trace = np.array(out.stdout.split(), dtype=np.int64)
    assert len(trace) == 16  # 16 x 16 block pairs (24 x 24 cost 20 s of the suite)
    slope = np.polyfit(np.arange(16), trace / 2**20, 1)[0]  # MiB per query block
    assert slope < 0.25, (slope, trace / 2**20)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_handed_to_jax_never_share_memory(tmp_path, monkeypatch, dtype):
    """JAX may read (or alias) a host array after device_put returns: every block it gets
    must be memory that is never written again. Handing it the reused read buffer made the
    counts wrong under CPU load, intermittently."""
    x = random_points(301, 5, seed=2).astype(dtype) + dtype(50.0)
    path = tmp_path / "x.npy"
    np.save(path, x)
    seen = []

    def record(a):
        seen.append(a)
        return jax.device_put(a)

    monkeypatch.setattr(streaming, "_to_device", record)
    got = streaming.stream_hub_values(path, k=4, block_bytes=50 * 5 * 4)
    assert len(seen) > 6
    for i, a in enumerate(seen):
        for b in seen[i + 1 :]:
            assert not np.shares_memory(a, b)
    if dtype == np.float32:
        np.testing.assert_array_equal(got, hubjax.hub_values(x, k=4))
    else:
        assert int(got.sum()) == 301 * 4


def test_streaming_under_x64(tmp_path):
    """With jax_enable_x64 on (and the suite's strict promotion) the counts are the same."""
    from hubjax.sklearn import _x64

    x = random_points(200, 6, seed=3)
    path = tmp_path / "x.npy"
    np.save(path, x)
    expected = streaming.stream_hub_values(path, k=5, block_bytes=64 * 6 * 4)
    with _x64(np.float64):
        got = streaming.stream_hub_values(path, k=5, block_bytes=64 * 6 * 4)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, hubjax.hub_values(x, k=5))
