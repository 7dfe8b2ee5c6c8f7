"""The compiled CPU selection kernel equals the portable XLA path bit for bit.

The kernel (``hubjax/_src/kernels/_cpu_select.cc``, an XLA FFI handler built by
``pip install``) keeps running top-K lists; the portable path does a two-stage group selection
and a merge. Both must return the same K smallest (value, index) pairs in the same order, and
every candidate source built on them must give the same neighbours and distances either way.
"""

import functools
import importlib.util
import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import HYPOTHESIS_SEED, engine_knn, examples, knn_dense, sample
from hypothesis import given, seed, settings
from hypothesis import strategies as st

import hubjax
from hubjax import distributed, occurrence
from hubjax._src import pairs, sources
from hubjax._src import select as _select
from hubjax._src.kernels import cpu as _cpu
from hubjax._src.metric import resolve

needs_kernel = pytest.mark.skipif(
    not _cpu.available(), reason="the compiled CPU kernel is not usable on this machine"
)


def test_kernel_is_built_by_the_normal_install():
    # CI (Linux, x86-64, g++) installs with `pip install -e .`: the build must not have been
    # skipped silently (setup.py marks the extension optional for machines without a compiler),
    # and it must be used whenever the running jaxlib is at least the one it was built with.
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the build is only required on Linux x86-64")
    assert importlib.util.find_spec("hubjax._src.kernels._cpu_select") is not None
    import jaxlib.version

    from hubjax._src.kernels import _cpu_select

    built = _cpu._version(_cpu_select.build_jaxlib())
    if _cpu._version(jaxlib.version.__version__) >= built:
        assert _cpu.available()
    else:
        assert not _cpu.available()  # refused up front: the XLA FFI would reject it


def test_portable_switch(monkeypatch):
    monkeypatch.setenv("HUBJAX_SELECT", "portable")
    assert not _cpu.enabled()
    monkeypatch.setenv("HUBJAX_SELECT", "auto")
    assert _cpu.enabled() == _cpu.available()


def _reference(values, index, k):
    order = np.lexsort((index, values), axis=-1)[..., :k]
    return np.take_along_axis(values, order, -1), np.take_along_axis(index, order, -1)


def _sorted_lists(rng, lists, k, first, levels):
    """Random sorted running lists: values from a few levels (ties), distinct indices >= first."""
    v = np.sort(rng.integers(0, levels, (lists, k)).astype(np.float32), axis=1)
    v[:, k // 2 :] = np.inf if k > 1 and rng.random() < 0.3 else v[:, k // 2 :]
    i = np.broadcast_to(first + np.arange(k, dtype=np.int32), (lists, k)).copy()
    return v, i


def _values(rng, shape, kind):
    if kind == "ties":
        return rng.integers(0, 4, shape).astype(np.float32)
    if kind == "offset":  # uncentred: tiny differences on a large value, with inf padding
        v = (1e4 + rng.normal(size=shape)).astype(np.float32)
        v[..., -3:] = np.inf
        return v
    return rng.normal(size=shape).astype(np.float32)


@needs_kernel
@settings(max_examples=examples(6, 12), deadline=None)
@seed(HYPOTHESIS_SEED)
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 37),
    segs=st.integers(1, 4),
    seg_width=st.integers(1, 70),
    k=st.integers(1, 100),
    kind=st.sampled_from(["normal", "ties", "offset"]),
    merge=st.booleans(),
)
def test_rows_kernel_equals_portable_and_reference(seed, rows, segs, seg_width, k, kind, merge):
    rng = np.random.default_rng(seed)
    width = segs * seg_width
    k = min(k, width)
    d = _values(rng, (rows, width), kind)
    base = np.sort(rng.choice(10, segs, replace=False)).astype(np.int32) * seg_width
    if merge:
        init_v, init_i = _sorted_lists(rng, rows, k, 10 * seg_width, 4)
    else:
        init_v, init_i = (np.asarray(a) for a in _select.sentinel_lists(rows, k, 10 * seg_width))
    args = [jnp.asarray(a) for a in (d, base, init_v, init_i)]
    kv, ki = jax.jit(lambda *a: _cpu.select_rows(*a, seg_width=seg_width))(*args)
    pv, pi = _select.update_rows_portable(*args, seg_width=seg_width, merge=merge)
    np.testing.assert_array_equal(np.asarray(ki), np.asarray(pi))
    np.testing.assert_array_equal(np.asarray(kv), np.asarray(pv))
    glob = (base[:, None] + np.arange(seg_width)).reshape(-1)
    rv, ri = _reference(
        np.concatenate([d, init_v], 1),
        np.concatenate([np.broadcast_to(glob, d.shape), init_i], 1),
        k,
    )
    np.testing.assert_array_equal(np.asarray(ki), ri)
    np.testing.assert_array_equal(np.asarray(kv), rv)


@needs_kernel
@settings(max_examples=examples(6, 12), deadline=None)
@seed(HYPOTHESIS_SEED)
@given(
    seed=st.integers(0, 2**31 - 1),
    segs=st.integers(1, 4),
    seg_width=st.integers(1, 70),
    k=st.integers(1, 100),
    kind=st.sampled_from(["normal", "ties", "offset"]),
    row_base=st.integers(0, 1000),
)
def test_cols_kernel_equals_portable_and_reference(seed, segs, seg_width, k, kind, row_base):
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(k, k + 40))
    d = _values(rng, (rows, segs * seg_width), kind)
    chosen = rng.permutation(segs)[: int(rng.integers(1, segs + 1))].astype(np.int32)
    lists = len(chosen) * seg_width
    init_v, init_i = _sorted_lists(rng, lists, k, row_base + rows, 4)
    args = [jnp.asarray(a) for a in (d, chosen, np.array([row_base], np.int32), init_v, init_i)]
    kv, ki = jax.jit(lambda *a: _cpu.select_cols(*a, seg_width=seg_width))(*args)
    pv, pi = _select.update_cols_portable(*args, seg_width=seg_width)
    np.testing.assert_array_equal(np.asarray(ki), np.asarray(pi))
    np.testing.assert_array_equal(np.asarray(kv), np.asarray(pv))
    columns = (chosen[:, None] * seg_width + np.arange(seg_width)).reshape(-1)
    new_v = d[:, columns].T
    new_i = np.broadcast_to(row_base + np.arange(rows, dtype=np.int32), new_v.shape)
    rv, ri = _reference(np.concatenate([new_v, init_v], 1), np.concatenate([new_i, init_i], 1), k)
    np.testing.assert_array_equal(np.asarray(ki), ri)
    np.testing.assert_array_equal(np.asarray(kv), rv)


@needs_kernel
def test_kernels_under_vmap_equal_the_unbatched_calls():
    rng = np.random.default_rng(3)
    batch, rows, seg_width, k = 3, 11, 24, 5
    d = rng.integers(0, 3, (batch, rows, 2 * seg_width)).astype(np.float32)
    base = np.array([[0, 2], [1, 2], [0, 1]], np.int32) * seg_width
    init_v, init_i = (np.asarray(a) for a in _select.sentinel_lists(rows, k, 10 * seg_width))
    init_v, init_i = (
        np.broadcast_to(init_v, (batch, rows, k)),
        np.broadcast_to(init_i, (batch, rows, k)),
    )
    rows_fn = jax.jit(jax.vmap(lambda *a: _cpu.select_rows(*a, seg_width=seg_width)))
    bv, bi = rows_fn(d, base, init_v, init_i)
    # the lists (not the tile) are shared: in_axes None on them exercises broadcast_all
    shared = jax.jit(
        jax.vmap(
            lambda a, s, v, i: _cpu.select_rows(a, s, v, i, seg_width=seg_width), (0, 0, None, None)
        )
    )(d, base, init_v[0], init_i[0])
    chosen = np.array([[1], [0], [1]], np.int32)
    row_base = np.array([[0], [100], [7]], np.int32)
    cv0, ci0 = _select.sentinel_lists(seg_width, k, 1000)
    cols_fn = jax.jit(
        jax.vmap(lambda *a: _cpu.select_cols(*a, seg_width=seg_width), (0, 0, 0, None, None))
    )
    cv, ci = cols_fn(d, chosen, row_base, cv0, ci0)
    for b in range(batch):
        v, i = _select.update_rows_portable(
            jnp.asarray(d[b]), jnp.asarray(base[b]), init_v[b], init_i[b], seg_width=seg_width
        )
        np.testing.assert_array_equal(bi[b], i)
        np.testing.assert_array_equal(bv[b], v)
        np.testing.assert_array_equal(shared[1][b], i)
        v, i = _select.update_cols_portable(
            jnp.asarray(d[b]), chosen[b], row_base[b], cv0, ci0, seg_width=seg_width
        )
        np.testing.assert_array_equal(ci[b], i)
        np.testing.assert_array_equal(cv[b], v)


def _both_paths(monkeypatch, fn):
    """``fn()`` traced with the kernel and again with the portable path (fresh traces)."""
    out = []
    for mode in ("auto", "portable"):
        monkeypatch.setenv("HUBJAX_SELECT", mode)
        jax.clear_caches()
        out.append(jax.tree.map(np.asarray, fn()))
    jax.clear_caches()
    return out


def _data(kind, n, d, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "ties":
        return rng.integers(0, 3, (n, d)).astype(np.float32)
    if kind == "offset":
        return (100 + rng.normal(size=(n, d))).astype(np.float32)
    if kind == "relu":
        return np.maximum(rng.normal(size=(n, d)), 0).astype(np.float32)
    return rng.normal(size=(n, d)).astype(np.float32)


@needs_kernel
@pytest.mark.parametrize(
    ("kind", "metric", "engine", "block_size", "k"),
    sample(
        [
            ("normal", "sqeuclidean", "symmetric", 96, 10),
            ("ties", "euclidean", "symmetric", 160, 5),
            ("offset", "sqeuclidean", "symmetric", 128, 7),
            ("relu", "cosine", "symmetric", 96, 3),
            ("normal", "sqeuclidean", "tiled", 96, 10),
            ("ties", "euclidean", "tiled", 160, 5),
            ("offset", "sqeuclidean", "tiled", 240, 30),
            ("relu", "cosine", "tiled", 96, 3),
            ("ties", "dot", "tiled", 128, 12),
            ("ties", "sqeuclidean", "strip", 100, 40),
            ("offset", "euclidean", "strip", 257, 100),
            ("normal", "dot", "strip", 64, 9),
        ],
        3,
        key="engines_with_and_without_kernel",
    ),
)
def test_engines_identical_with_and_without_the_kernel(
    monkeypatch, kind, metric, engine, block_size, k
):
    x = _data(kind, 701, 24)
    if engine == "tiled":
        assert sources.tiled_plan(701, k, block_size, 2) is not None

    def run():
        return engine_knn(
            x, None, k=k, metric=metric, include_self=False, block_size=block_size, engine=engine
        )

    (kd, ki), (pd, pi) = _both_paths(monkeypatch, run)
    np.testing.assert_array_equal(ki, pi)
    np.testing.assert_array_equal(kd, pd)
    ref_d, ref_i = knn_dense(x, k=k, metric=metric)
    np.testing.assert_array_equal(ki, np.asarray(ref_i))
    np.testing.assert_array_equal(kd, np.asarray(ref_d))


@needs_kernel
def test_query_reference_vmap_and_distributed_identical(monkeypatch):
    x = _data("offset", 300, 16, seed=1)
    y = _data("offset", 517, 16, seed=2)
    batch = np.stack([_data("ties", 200, 8, seed=s) for s in range(3)])

    def run():
        qr = hubjax.knn(x, y, k=12, block_size=64)
        hv = jax.jit(jax.vmap(lambda b: occurrence.hub_values(b, k=5, block_size=64)))(batch)
        dist = distributed.hub_values(x, k=6)
        return qr, hv, dist

    kernel, portable = _both_paths(monkeypatch, run)
    for a, b in zip(jax.tree.leaves(kernel), jax.tree.leaves(portable), strict=True):
        np.testing.assert_array_equal(a, b)


@needs_kernel
@settings(max_examples=examples(6, 12), deadline=None)
@seed(HYPOTHESIS_SEED)
@given(
    seed=st.integers(0, 2**31 - 1),
    tiles=st.integers(1, 3),
    rows=st.integers(1, 40),
    cols=st.integers(1, 70),
    k=st.integers(1, 100),
    kind=st.sampled_from(["normal", "ties", "offset"]),
)
def test_pairs_kernel_equals_portable_and_reference(seed, tiles, rows, cols, k, kind):
    rng = np.random.default_rng(seed)
    k = min(k, rows, cols)  # the engine's lists are never longer than a tile's side
    d = _values(rng, (tiles, rows, cols), kind)
    row_base = (np.arange(tiles) * 1000).astype(np.int32)
    col_base = (np.arange(tiles) * 1000 + 500).astype(np.int32)
    mode = rng.integers(0, 3, tiles).astype(np.int32)
    rv, ri = _sorted_lists(rng, tiles * rows, k, 10_000, 4)
    cv, ci = _sorted_lists(rng, tiles * cols, k, 10_000, 4)
    args = [
        jnp.asarray(a)
        for a in (
            d,
            row_base,
            col_base,
            mode,
            rv.reshape(tiles, rows, k),
            ri.reshape(tiles, rows, k),
            cv.reshape(tiles, cols, k),
            ci.reshape(tiles, cols, k),
        )
    ]
    kernel = jax.jit(_cpu.select_pairs)(*args)
    portable = jax.jit(_select.update_pairs_portable)(*args)
    for a, b in zip(kernel, portable, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for t in range(tiles):  # against a plain lexsort of list + tile
        new_i = np.broadcast_to(col_base[t] + np.arange(cols, dtype=np.int32), (rows, cols))
        want = _reference(
            np.concatenate([d[t], rv.reshape(tiles, rows, k)[t]], 1),
            np.concatenate([new_i, ri.reshape(tiles, rows, k)[t]], 1),
            k,
        )
        if mode[t] == 0:
            want = (rv.reshape(tiles, rows, k)[t], ri.reshape(tiles, rows, k)[t])
        np.testing.assert_array_equal(np.asarray(kernel[1][t]), want[1])
        np.testing.assert_array_equal(np.asarray(kernel[0][t]), want[0])
        new_i = np.broadcast_to(row_base[t] + np.arange(rows, dtype=np.int32), (cols, rows))
        want = _reference(
            np.concatenate([d[t].T, cv.reshape(tiles, cols, k)[t]], 1),
            np.concatenate([new_i, ci.reshape(tiles, cols, k)[t]], 1),
            k,
        )
        if mode[t] != 2:
            want = (cv.reshape(tiles, cols, k)[t], ci.reshape(tiles, cols, k)[t])
        np.testing.assert_array_equal(np.asarray(kernel[3][t]), want[1])
        np.testing.assert_array_equal(np.asarray(kernel[2][t]), want[0])


@needs_kernel
@pytest.mark.parametrize(
    ("kind", "k"),
    sample(
        [
            (kind, k)
            for kind in ("normal", "ties", "offset", "relu")
            for k in (1, 9, 16, 17, 33, 59, 100, 128, 129)
        ],
        8,
        key="long_rows",
    ),
)
def test_kernels_on_long_rows_into_lists_not_yet_full(kind, k):
    """Long rows merged into lists that are empty or part full: the case where the kernels
    first bound each row's k-th value in one vectorised pass (lane minima) and offer only the
    values below it. Widths not a multiple of 16, exact ties at the bound, +inf columns."""
    rng = np.random.default_rng(k)
    rows, width = 7, 16 * 40 + 5
    if kind == "relu":  # many exact zeros: ties at and below the bound
        d = np.maximum(rng.normal(size=(rows, width)), 0).astype(np.float32)
    else:
        d = _values(rng, (rows, width), kind)
    d[0, :] = 2.0  # a row of one value: every lane bound ties
    empty_v, empty_i = (np.asarray(a) for a in _select.sentinel_lists(rows, k, width))
    part_v, part_i = empty_v.copy(), empty_i.copy()
    part_v[:, : k // 2] = np.sort(rng.integers(0, 3, (rows, k // 2)), axis=1)
    for init_v, init_i in ((empty_v, empty_i), (part_v, part_i)):
        glob = np.broadcast_to(np.arange(width, dtype=np.int32), d.shape)
        want = _reference(np.concatenate([d, init_v], 1), np.concatenate([glob, init_i], 1), k)
        args = [jnp.asarray(a) for a in (d, np.zeros(1, np.int32), init_v, init_i)]
        kv, ki = jax.jit(lambda *a: _cpu.select_rows(*a, seg_width=width))(*args)
        np.testing.assert_array_equal(np.asarray(ki), want[1])
        np.testing.assert_array_equal(np.asarray(kv), want[0])
        # the same rows (and k more, so that every column sees k) as one diagonal tile (rows
        # only) and as an off-diagonal one (rows and columns)
        tile = np.concatenate([d, _values(rng, (k, width), "normal")])[None].repeat(2, 0)
        more_v, more_i = (np.asarray(a) for a in _select.sentinel_lists(k, k, width))
        lists_v = np.concatenate([init_v, more_v])[None].repeat(2, 0)
        lists_i = np.concatenate([init_i, more_i])[None].repeat(2, 0)
        col_v = np.full((2, width, k), np.inf, np.float32)
        col_i = np.broadcast_to(10 * width + np.arange(k, dtype=np.int32), (2, width, k))
        pair_args = [
            jnp.asarray(a)
            for a in (
                tile,
                np.array([10 * width, 20 * width], np.int32),
                np.zeros(2, np.int32),
                np.array([1, 2], np.int32),
                lists_v,
                lists_i,
                col_v,
                col_i,
            )
        ]
        kernel = jax.jit(_cpu.select_pairs)(*pair_args)
        portable = jax.jit(_select.update_pairs_portable)(*pair_args)
        for a, b in zip(kernel, portable, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(kernel[1][0][:rows]), want[1])
        np.testing.assert_array_equal(np.asarray(kernel[0][1][:rows]), want[0])


@pytest.mark.parametrize("num_blocks", [3, 5, 7, 9, 11, 23])
@pytest.mark.parametrize("tiles", [1, 2, 3, 4])
def test_pair_schedule_covers_each_block_pair_once(num_blocks, tiles):
    tiles = min(tiles, (num_blocks + 1) // 2)
    steps = sources.pair_schedule(num_blocks, tiles)
    assert steps.shape[1:] == (tiles, 3)
    seen = []
    for step in steps:
        used = [int(b) for r, c, m in step if m for b in ((r,) if m == 1 else (r, c))]
        assert len(used) == len(set(used)), step  # no list is updated twice in one step
        assert all(0 <= b < num_blocks for b in used)
        seen += [tuple(sorted((int(r), int(c)))) for r, c, m in step if m]
        assert all(m == 1 if r == c else m in (0, 2) for r, c, m in step if m)
    want = [(a, b) for a in range(num_blocks) for b in range(a, num_blocks)]
    assert sorted(seen) == want


@needs_kernel
@settings(max_examples=examples(8, 15), deadline=None)
@seed(HYPOTHESIS_SEED)
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 30),
    c=st.integers(1, 300),
    kind=st.sampled_from(["normal", "ties", "offset"]),
    nearly_sorted=st.booleans(),
)
def test_sort_kernel_equals_portable(seed, rows, c, kind, nearly_sorted):
    """Rows up to 256 are sorted by insertion, longer ones by nth_element and sort; nearly
    sorted rows (what the exact re-ranking passes: its first entry, the point itself, made
    +inf) are the insertion's fast case."""
    rng = np.random.default_rng(seed)
    v = _values(rng, (rows, c), kind)
    if nearly_sorted:
        v = np.sort(v, axis=1)
        v[:, 0] = np.inf
    i = np.stack([rng.permutation(10 * c)[:c] for _ in range(rows)]).astype(np.int32)
    k = int(rng.integers(1, c + 1))
    kv, ki = jax.jit(lambda v, i: _cpu.sort_rows(v, i, k=k))(v, i)
    pv, pi = _select.smallest_k_pairs_portable(jnp.asarray(v), jnp.asarray(i), k)
    want = _reference(v, i, k)
    for got in ((kv, ki), (pv, pi)):
        np.testing.assert_array_equal(np.asarray(got[1]), want[1])
        np.testing.assert_array_equal(np.asarray(got[0]), want[0])


@needs_kernel
@pytest.mark.parametrize("metric", ["sqeuclidean", "dot"])
@pytest.mark.parametrize(
    "d", [1, 2, 3, 15, 16, 17, 32, 33, 64, 100, 128, 131, 256, 512, 1000, 1024]
)
def test_pair_sums_kernel_bitwise_equal_to_xla_for_every_tree_shape(metric, d):
    """Feature counts whose pairwise tree pads at different levels (the kernel finishes the
    last levels in one vector register)."""
    rng = np.random.default_rng(d)
    x = (rng.normal(size=(5, d)) * rng.uniform(1e-3, 1e3, d)).astype(np.float32)
    y = (rng.normal(size=(11, d)) * rng.uniform(1e-3, 1e3, d)).astype(np.float32)
    cols = rng.integers(0, 11, (5, 7)).astype(np.int32)
    xj, yj, cj = jnp.asarray(x), jnp.asarray(y), jnp.asarray(cols)
    want = jax.jit(lambda x, y, c: resolve(metric).pair_values(x[:, None, :], y[c]))(xj, yj, cj)
    got = jax.jit(lambda x, y, c: pairs._values_rows(x, y, c, resolve(metric)))(xj, yj, cj)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@needs_kernel
@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine", "dot"])
def test_pair_tile_through_the_kernel_equals_the_portable_tile_on_wide_rows(monkeypatch, metric):
    """The exact re-check and the dense reference compute their tiles through the kernel on CPU
    (no [b, c, d] intermediate): the same bits as XLA's tree sums, at a width past every
    register tree (d = 3001), with zero and NaN rows."""
    x = _data("offset", 37, 3001)
    y = _data("relu", 70, 3001, seed=1)
    x[3] = 0.0
    y[5, 7] = np.nan

    def tile(a, b):
        m = resolve(metric)
        return pairs.pair_tile(m.prepare(a, jnp.float32), m.prepare(b, jnp.float32), m)

    def run():  # one program: eager preparation would compile each of its operations
        return jax.jit(tile)(x, y)

    kernel, portable = _both_paths(monkeypatch, run)
    np.testing.assert_array_equal(kernel, portable)


@needs_kernel
@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine", "dot"])
@pytest.mark.parametrize("kind", ["normal", "offset", "tiny", "huge", "nan", "odd"])
def test_pair_sums_kernel_bitwise_equal_to_xla(metric, kind):
    rng = np.random.default_rng(7)
    d = 37 if kind == "odd" else 64  # odd lengths pad the pairwise tree with zeros
    x = rng.normal(size=(23, d)).astype(np.float32)
    y = rng.normal(size=(41, d)).astype(np.float32)
    if kind == "offset":
        x, y = x + 1e4, y + 1e4
    if kind == "tiny":  # products underflow to subnormals and zero
        x, y = x * 1e-21, y * 1e-21
    if kind == "huge":  # products overflow to inf
        x, y = x * 1e20, y * 1e20
    if kind == "nan":
        x[3, 5] = np.nan
        y[7, :] = np.inf
    cols = rng.integers(0, 41, (23, 9)).astype(np.int32)
    xj, yj, cj = jnp.asarray(x), jnp.asarray(y), jnp.asarray(cols)
    portable = jax.jit(lambda x, y, c: resolve(metric).pair_values(x[:, None, :], y[c]))
    dispatched = jax.jit(lambda x, y, c: pairs._values_rows(x, y, c, resolve(metric)))
    want = np.asarray(portable(xj, yj, cj))
    np.testing.assert_array_equal(np.asarray(dispatched(xj, yj, cj)), want)
    batched = jax.jit(jax.vmap(lambda x, c: pairs._values_rows(x, yj, c, resolve(metric))))
    got = np.asarray(batched(jnp.stack([xj, xj[::-1]]), jnp.stack([cj, cj])))
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], np.asarray(portable(xj[::-1], yj, cj)))


def _cpu_select_isa():
    """The instruction set the kernel's hot loops use in this process (``HUBJAX_ISA``)."""
    return _cpu._cpu_select.isa() if _cpu._cpu_select is not None else None


needs_fused = pytest.mark.skipif(
    not (_cpu.available() and _cpu.fused()), reason="the fused kernels need AVX-512"
)


def _points(kind, n, d, seed):
    """Prepared points ``[n, d]`` and penalties ``[n]`` (a non-finite point: zero features,
    +inf penalty, as :meth:`hubjax._src.metric.Metric.prepare` makes it)."""
    rng = np.random.default_rng(seed)
    if kind == "ties":  # small integers: every product and sum is exact in float32
        x = rng.integers(-2, 3, (n, d)).astype(np.float32)
    elif kind == "offset":  # uncentred: a large common offset
        x = (300 + rng.normal(size=(n, d))).astype(np.float32)
    elif kind == "relu":
        x = np.maximum(rng.normal(size=(n, d)), 0).astype(np.float32)
    elif kind == "dup":  # duplicated points
        x = np.repeat(rng.normal(size=(-(-n // 3), d)), 3, axis=0)[:n].astype(np.float32)
    else:
        x = rng.normal(size=(n, d)).astype(np.float32)
    penalty = np.zeros(n, np.float32)
    if kind == "nan" and n > 2:
        x[1] = 0
        penalty[1] = np.inf
    return x, penalty


def _operands(x, penalty, shift=None):
    """Reference operands ``[n, d + 2]`` (features minus shift, 1, squared norm + penalty) like
    :meth:`hubjax._src.metric.Metric.ranking_operands`."""
    f = x if shift is None else (x - shift).astype(np.float32)
    sq = (f.astype(np.float64) ** 2).sum(1, keepdims=True) + penalty[:, None]
    return np.concatenate([f, np.ones((len(x), 1), np.float32), sq.astype(np.float32)], 1)


def _check_lists(values, index, exact, bound, keep):
    """``(values, index) [n, keep]`` are the keep smallest of each row of ``exact`` (float64
    rankings, +inf allowed) up to ``bound`` [n, m]: sorted by (value, index), distinct indices,
    values within the bound, and nothing outside clearly smaller than the last one kept."""
    n, m = exact.shape
    assert values.shape == index.shape == (n, keep)
    for r in range(n):
        v, i = values[r], index[r]
        real = i < m
        assert np.array_equal(np.lexsort((i, v)), np.arange(keep)), "not sorted"
        assert len(set(i.tolist())) == keep
        assert real.sum() == min(keep, m)
        j = i[real]
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(exact[r, j])
            assert np.all(np.abs(v[real][finite] - exact[r, j][finite]) <= bound[r, j][finite])
            assert np.all(np.isinf(v[real][~finite]))
            out = np.ones(m, bool)
            out[j] = False
            if keep < m:
                last = v[real][-1]
                assert not np.any(exact[r, out] < last - 2 * bound[r, out])


def _ranking64(q, r):
    with np.errstate(invalid="ignore"):
        exact = q.astype(np.float64) @ r.astype(np.float64).T
        terms = np.abs(q.astype(np.float64)) @ np.abs(r.astype(np.float64)).T
    exact[~np.isfinite(exact)] = np.inf
    terms[~np.isfinite(terms)] = 0
    return exact, (q.shape[1] + 8) * 2.0**-23 * terms


@needs_fused
@pytest.mark.parametrize(
    ("kind", "n", "d", "keep"),
    sample(
        [
            (kind, *size)
            for kind in ("normal", "ties", "offset", "relu", "dup", "nan")
            for size in [
                (1, 3, 1),
                (5, 2, 5),
                (77, 5, 9),
                (301, 17, 20),
                (333, 8, 59),
                (260, 3, 120),
                (150, 300, 12),
            ]
        ],
        14,  # a third a run: the grid of 42 cost 20-30 s, in a subprocess without AVX-512
        key="fused_in_sample",
    ),
)
def test_fused_in_sample_lists_are_exact_and_do_not_depend_on_blocks(kind, n, d, keep):
    x, penalty = _points(kind, n, d, seed=n + d)
    shift = np.zeros(d, np.float32) if kind == "ties" else x.mean(0).astype(np.float32)
    ref = _operands(x, penalty, shift)
    keep = min(keep, n)
    q = np.concatenate([-2 * ref[:, :d], ref[:, -1:], ref[:, d : d + 1]], 1)

    def lists(x, s, p, b):
        return _cpu.tiled_lists(x, s, p, keep=keep, euclidean=True, block=b)

    outs = [
        jax.tree.map(np.asarray, jax.jit(functools.partial(lists, b=b))(x, shift, penalty))
        for b in (0, 32, 64, 96)
    ]
    for v, i in outs[1:]:  # every pair ranks the same in either orientation
        np.testing.assert_array_equal(v, outs[0][0])
        np.testing.assert_array_equal(i, outs[0][1])
    exact, bound = _ranking64(q, ref)
    v, i = outs[0]
    if kind == "ties":  # exact arithmetic: the lists are the lexicographic smallest exactly
        order = np.lexsort((np.broadcast_to(np.arange(n), (n, n)), exact), axis=1)[:, :keep]
        np.testing.assert_array_equal(i, order)
        np.testing.assert_array_equal(v, np.take_along_axis(exact, order, 1).astype(np.float32))
    _check_lists(v, i, exact, bound, keep)
    # the squared norms it reports (the error bound's): the shifted features, summed in
    # feature order, each step rounded to float32
    _, _, sq = jax.jit(
        lambda x, s, p: _cpu.tiled_lists(x, s, p, keep=keep, euclidean=True, norms=True)
    )(x, shift, penalty)
    f = (x - shift).astype(np.float32)
    want = np.zeros(n, np.float32)
    for e in range(d):
        want = (want + f[:, e] * f[:, e]).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(sq), want)
    f64 = (x.astype(np.float64) - shift) ** 2
    np.testing.assert_allclose(np.asarray(sq), f64.sum(1), rtol=(d + 2) * 2.0**-23, atol=0)


@needs_fused
@pytest.mark.parametrize(
    ("kind", "n", "m", "d", "keep"),
    sample(
        [
            (kind, *size)
            for kind in ("normal", "ties", "offset", "relu", "nan")
            for size in [
                (1, 1, 2, 1),
                (7, 40, 3, 9),
                (150, 333, 17, 20),
                (64, 500, 6, 100),
                (93, 129, 9, 129),
                (40, 200, 258, 10),
            ]
        ],
        10,
        key="fused_query",
    ),
)
def test_fused_query_lists_are_exact_and_do_not_depend_on_blocks(kind, n, m, d, keep):
    ref = _operands(*_points(kind, m, d, seed=m))
    x = _operands(*_points(kind, n, d, seed=n + 1))
    q = np.concatenate([-2 * x[:, :d], x[:, -1:], x[:, d : d + 1]], 1)
    keep = min(keep, m)
    outs = [
        jax.tree.map(
            np.asarray,
            jax.jit(lambda q, r, b=b: _cpu.query_lists(q, r, keep=keep, block=b))(q, ref),
        )
        for b in (0, 32, 96)
    ]
    for v, i in outs[1:]:
        np.testing.assert_array_equal(v, outs[0][0])
        np.testing.assert_array_equal(i, outs[0][1])
    exact, bound = _ranking64(q, ref)
    v, i = outs[0]
    if kind == "ties":
        order = np.lexsort((np.broadcast_to(np.arange(m), (n, m)), exact), axis=1)[:, :keep]
        np.testing.assert_array_equal(i, order)
        np.testing.assert_array_equal(v, np.take_along_axis(exact, order, 1).astype(np.float32))
    _check_lists(v, i, exact, bound, keep)


@needs_fused
def test_fused_kernels_under_vmap_equal_the_unbatched_calls():
    kinds = ("normal", "ties", "nan")
    xs, ps = (
        np.stack(a) for a in zip(*[_points(kind, 203, 7, seed=3) for kind in kinds], strict=True)
    )
    shifts = xs.mean(1)
    refs = np.stack([_operands(*_points(kind, 203, 7, seed=3)) for kind in kinds])
    qs = np.stack([_operands(*_points(kind, 50, 7, seed=4)) for kind in kinds])

    def lists(x, s, p):
        return _cpu.tiled_lists(x, s, p, keep=11, euclidean=False, block=64)

    tiled = jax.jit(jax.vmap(lists))
    query = jax.jit(jax.vmap(lambda q, r: _cpu.query_lists(q, r, keep=11, block=64)))
    bt, bq = tiled(xs, shifts, ps), query(qs, refs)
    for b in range(3):
        one = jax.jit(lists)(xs[b], shifts[b], ps[b])
        np.testing.assert_array_equal(np.asarray(bt[0][b]), np.asarray(one[0]))
        np.testing.assert_array_equal(np.asarray(bt[1][b]), np.asarray(one[1]))
        one = _cpu.query_lists(jnp.asarray(qs[b]), jnp.asarray(refs[b]), keep=11, block=64)
        np.testing.assert_array_equal(np.asarray(bq[0][b]), np.asarray(one[0]))
        np.testing.assert_array_equal(np.asarray(bq[1][b]), np.asarray(one[1]))


def _fused_outputs():
    """The fused kernels' raw lists (and the in-sample norms) on data shaped like users': ties,
    NaN rows, uncentred, sizes that do not fill a block, both list kinds (sorted insertion
    and, from keep 112 on, the buffered one). One process computes them per instruction set."""
    out = {}
    for kind, n, d, keep in [
        ("ties", 301, 17, 20),
        ("nan", 333, 8, 59),
        ("offset", 260, 3, 120),
        ("relu", 150, 300, 12),
        ("dup", 77, 5, 9),
    ]:
        x, penalty = _points(kind, n, d, seed=n + d)
        shift = x.mean(0).astype(np.float32)
        keep = min(keep, n)
        for euclidean in (True, False):
            v, i, sq = _cpu.tiled_lists(
                x, shift, penalty, keep=keep, euclidean=euclidean, block=64, norms=True
            )
            for name, a in (("v", v), ("i", i), ("sq", sq)):
                out[f"tiled-{kind}-{euclidean}-{name}"] = np.asarray(a)
        ref = _operands(x, penalty, shift)
        q = _operands(*_points(kind, 93, d, seed=n))
        v, i = _cpu.query_lists(q, ref, keep=keep, block=32)
        out[f"query-{kind}-v"], out[f"query-{kind}-i"] = np.asarray(v), np.asarray(i)
    return out


@needs_fused
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 emulation")
def test_emulated_avx512_copy_gives_the_native_bits(tmp_path):
    """``HUBJAX_ISA=avx512-emulated`` (the AVX-512 code with its intrinsics emulated lane by
    lane, for CPUs without AVX-512) computes what the native instructions compute, bit for
    bit: the fused kernels' lists and norms here, whole searches in the variants test."""
    if _cpu_select_isa() != "avx512":
        pytest.skip("compares with the native AVX-512 copy")
    script = (
        "import sys\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "import numpy as np, test_cpu_kernel as t\n"
        "from hubjax._src.kernels import _cpu_select\n"
        "assert _cpu_select.isa() == 'avx512-emulated'\n"
        f"np.savez({str(tmp_path / 'emulated.npz')!r}, **t._fused_outputs())\n"
    )
    env = dict(os.environ, HUBJAX_ISA="avx512-emulated")
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    native = _fused_outputs()
    emulated = np.load(tmp_path / "emulated.npz")
    assert sorted(emulated.files) == sorted(native)
    for name, want in native.items():
        np.testing.assert_array_equal(emulated[name], want, err_msg=name)


@needs_kernel
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 emulation")
def test_emulated_copy_runs_the_fused_tests_where_the_cpu_lacks_avx512():
    """Without AVX-512 the ``test_fused_*`` tests above skip in this process; they run here
    instead, in a process with the emulated AVX-512 copy, so every x86-64 host checks the
    fused kernels' logic (about 20 s)."""
    if _cpu.fused():
        pytest.skip("the fused kernels run natively in this process (test_fused_*)")
    env = dict(os.environ, HUBJAX_ISA="avx512-emulated")
    here = os.path.abspath(__file__)
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", here, "-k", "test_fused_"],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(here)),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and "skipped" not in res.stdout, res.stdout[-2000:]


@needs_kernel
def test_default_in_sample_engine_is_the_tiled_one_and_compiles_once():
    x = _data("normal", 900, 16)
    f = jax.jit(lambda x: occurrence.hub_values(x, k=5, block_size=128))
    target = "hubjax_tiled_lists" if _cpu.fused() else "hubjax_select_pairs"
    assert target in f.lower(x).as_text()
    f(x)
    with jax.log_compiles():
        cache = f._cache_size()
        f(x + 1)
        assert f._cache_size() == cache


@needs_kernel
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 variants")
def test_every_instruction_set_variant_gives_the_same_neighbours(tmp_path):
    # HUBJAX_ISA picks the hot loops' instruction set once per process: one process each, all
    # checked against the dense references computed once here
    x = np.random.default_rng(0).integers(0, 3, (700, 12)).astype(np.float32)
    refs = {}
    for k in (5, 40):
        refs[f"r{k}d"], refs[f"r{k}i"] = knn_dense(x, k=k)
        refs[f"q{k}d"], refs[f"q{k}i"] = knn_dense(x, x[::-1], k=k)
    np.savez(tmp_path / "refs.npz", x=x, **{n: np.asarray(a) for n, a in refs.items()})
    script = (
        "import sys\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "import numpy as np, jax.numpy as jnp, helpers\n"
        "from hubjax._src.kernels import _cpu_select\n"
        f"ref = np.load({str(tmp_path / 'refs.npz')!r})\n"
        "x = ref['x']\n"
        "for k in (5, 40):\n"
        "    t = helpers.engine_knn(x, None, k=k, metric='sqeuclidean', include_self=False,\n"
        "                       block_size=128, engine='tiled')\n"
        "    s = helpers.engine_knn(x, jnp.asarray(x[::-1]), k=k, metric='sqeuclidean',\n"
        "                       include_self=False, block_size=100)\n"
        "    assert np.array_equal(t[1], ref[f'r{k}i']) and np.array_equal(t[0], ref[f'r{k}d'])\n"
        "    assert np.array_equal(s[1], ref[f'q{k}i']) and np.array_equal(s[0], ref[f'q{k}d'])\n"
        "print(_cpu_select.isa())\n"
    )
    # avx512-emulated: the AVX-512 code (fused kernels included) on any x86-64 CPU
    for isa in ("base", "avx2", "avx512", "avx512-emulated"):
        env = dict(os.environ, HUBJAX_ISA=isa)
        # without AVX-512 a request for it falls back to the AVX2 copy, checked above: only
        # the fallback is checked (the same searches again cost 7 s)
        fallback = isa == "avx512" and not _cpu.fused()
        # the copy this process runs is the one every other test of the suite checks: its
        # process only reports its name (the searches again cost 6 s)
        native = isa == _cpu_select_isa()
        code = "from hubjax._src.kernels import _cpu_select; print(_cpu_select.isa())"
        out = subprocess.run(
            [sys.executable, "-c", code if fallback or native else script],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() in ("base", "avx2", "avx512", "avx512-emulated")
        if isa in ("base", "avx512-emulated"):
            assert out.stdout.strip() == isa
        if fallback:
            assert out.stdout.strip() in ("avx2", "base")
