"""The optional compiled CPU kernels (``_cpu_select.cc``) behind :mod:`hubjax._select`.

On XLA:CPU every ``lax.top_k`` costs microseconds per row and the group selection reads each
ranking tile twice; the kernels keep a running top-K per list and reject most values with one
vectorised compare, so selection costs about one read of the tile. ``select_pairs`` serves the
tiled in-sample engine (a tile's rows and columns in one read); ``sort_rows`` and ``pair_sums``
are the exact re-ranking's last steps. Where the CPU has AVX-512, :func:`tiled_lists` and
:func:`query_lists` go further: they compute the ranking products themselves and select from
registers, so no ranking tile is written or read at all (:func:`fused`). They are used only
where the computation is lowered for CPU (``lax.platform_dependent``); GPU/TPU and a missing
build use the portable XLA path, which gives the same result bit for bit (tested).

Environment (read once): ``HUBJAX_SELECT=portable`` before tracing forces the portable path on
CPU too; ``HUBJAX_THREADS`` caps the kernels' threads (default: XLA's intra-op pool, all cores);
``HUBJAX_ISA=base|avx2|avx512`` caps the instruction set of the hot loops (default: the widest
the CPU has; for tests); ``HUBJAX_ISA=avx512-emulated`` runs the AVX-512 code, fused kernels
included, with its intrinsics emulated on any x86-64 CPU (slow; for tests, same bits).
"""

from __future__ import annotations

import functools
import os
import re
import warnings

import jax
import jax.numpy as jnp
import jaxlib.version
import numpy as np

try:  # built by ``pip install`` where a C++17 compiler and jaxlib's FFI headers are present
    from hubjax._src.kernels import _cpu_select
except ImportError:
    _cpu_select = None


@functools.cache
def available() -> bool:
    """Whether the compiled kernel is built, registered and gives the portable result."""
    if _cpu_select is None:
        return False
    built, running = _cpu_select.build_jaxlib(), jaxlib.version.__version__
    if _version(running) < _version(built):
        warnings.warn(
            f"hubjax's CPU selection kernel was built against jaxlib {built} but jaxlib "
            f"{running} is running, whose XLA FFI may refuse it; using the portable XLA path "
            "(results are identical; reinstall hubjax to rebuild the kernel for this jaxlib: "
            "pip install --no-build-isolation --force-reinstall --no-deps hubjax).",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    try:
        for name, capsule in _cpu_select.capsules().items():
            jax.ffi.register_ffi_target(name, capsule, platform="cpu")
        return _probe()
    except Exception as error:  # an FFI version the running jaxlib refuses, say
        warnings.warn(
            f"hubjax's compiled CPU selection kernel is unusable ({error}); using the portable "
            "XLA path.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _probe() -> bool:
    """Runs the kernel once on a small tie-heavy input (eagerly, even when called while the
    caller's function is being traced) and compares it with a NumPy lexsort."""
    rng = np.random.default_rng(0)
    d = rng.integers(0, 5, (3, 40)).astype(np.float32)
    k = 4
    init_v = np.full((3, k), np.inf, np.float32)
    init_i = np.broadcast_to(np.arange(100, 100 + k, dtype=np.int32), (3, k)).copy()
    cpu = jax.devices("cpu")[0]
    with jax.ensure_compile_time_eval(), jax.default_device(cpu):
        args = [jax.device_put(a, cpu) for a in (d, np.zeros(1, np.int32), init_v, init_i)]
        _, i = jax.jit(functools.partial(select_rows, seg_width=40))(*args)
        i = np.asarray(i)
    order = np.lexsort((np.broadcast_to(np.arange(40), d.shape), d), axis=-1)[:, :k]
    return bool(np.array_equal(i, order))


def threads() -> int:
    """Threads the kernels use: the CPU count (XLA's intra-op pool), capped by HUBJAX_THREADS."""
    count = os.cpu_count() or 1
    configured = int(os.environ.get("HUBJAX_THREADS", "0") or 0)
    return max(1, min(count, configured) if configured > 0 else count)


def enabled() -> bool:
    """Whether CPU lowerings use the kernel (built, working and not switched off)."""
    return os.environ.get("HUBJAX_SELECT", "auto") != "portable" and available()


def _varying(a) -> frozenset:
    aval = jax.typeof(a)
    manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.10
    return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()) or ())


def _varying_like(outputs, *inputs):
    """Inside ``shard_map``: marks the kernel's outputs as varying over the manual mesh axes
    its inputs vary over, as the portable path's are (depending on the jax version an FFI
    call's outputs carry none or some of them)."""
    axes = frozenset().union(*(_varying(a) for a in inputs))
    out = []
    for o in outputs:
        missing = tuple(sorted(axes - _varying(o)))
        if missing:
            if hasattr(jax.lax, "pcast"):
                o = jax.lax.pcast(o, missing, to="varying")
            else:  # jax < 0.8
                o = jax.lax.pvary(o, missing)
        out.append(o)
    return tuple(out)


def _call(target, out, *args, **attrs):
    """One kernel call with result shapes ``out``; integer attributes as int64."""
    call = jax.ffi.ffi_call(target, out, vmap_method="broadcast_all")
    attrs = {name: np.int64(value) for name, value in attrs.items()}
    return _varying_like(call(*args, **attrs), *args)


def _like(*lists):
    """Result shapes of running lists updated in place: (values, indices) pairs."""
    return tuple(
        jax.ShapeDtypeStruct(a.shape, jnp.float32 if n % 2 == 0 else jnp.int32)
        for n, a in enumerate(lists)
    )


def select_rows(d, seg_base, init_v, init_i, *, seg_width: int):
    """Kernel call: rows of ``d [b, w]`` merged into the sorted lists ``init [b, K]``."""
    return _call(
        "hubjax_select_rows",
        _like(init_v, init_i),
        d,
        seg_base,
        init_v,
        init_i,
        seg_width=seg_width,
    )


def select_cols(d, col_segs, row_base, init_v, init_i, *, seg_width: int):
    """Kernel call: the chosen column segments of ``d [r, w]`` merged into ``init [h*s, K]``."""
    return _call(
        "hubjax_select_cols",
        _like(init_v, init_i),
        d,
        col_segs,
        row_base,
        init_v,
        init_i,
        seg_width=seg_width,
    )


def select_pairs(d, row_base, col_base, mode, rows_v, rows_i, cols_v, cols_i):
    """Kernel call: tiles ``d [p, b, c]`` (rows ``row_base[t] + r``, columns ``col_base[t] + j``)
    merged into the rows' lists ``[p, b, K]`` and (where ``mode == 2``) the columns' lists
    ``[p, c, K]``; ``mode`` 1 updates the rows only, 0 nothing."""
    lists = (rows_v, rows_i, cols_v, cols_i)
    return _call("hubjax_select_pairs", _like(*lists), d, row_base, col_base, mode, *lists)


def fused() -> bool:
    """Whether CPU lowerings of the in-sample search use the fused kernel (:func:`tiled_lists`):
    the kernel is enabled and the CPU has AVX-512 (``HUBJAX_ISA`` not capping it)."""
    return enabled() and _fused_isa()


@functools.cache
def _fused_isa() -> bool:
    return _cpu_select is not None and bool(_cpu_select.fused())


def tiled_lists(
    features, shift, penalty, *, keep: int, euclidean: bool, block: int = 0, norms: bool = False
):
    """Kernel call (AVX-512, see :func:`fused`): each point's ``keep`` smallest rankings over
    all points, itself included, ``(values, indices) [..., m, keep]`` sorted by (value, index),
    from the prepared points ``features [..., m, d]``, ``shift [..., d]`` (used where
    ``euclidean``) and ``penalty [..., m]``. The kernel builds the reference operands of
    :func:`hubjax.distances.ranking_operands` itself (XLA holds no copy of them) and computes
    the products, a few registers at a time, comparing them with the lists' thresholds before
    they reach memory: the ranking of (i, j) is ``-scale * (f_i . f_j) + (offset_i +
    offset_j)`` (``scale`` 2 for the Euclidean metrics, else 1), the dot product one fused
    multiply-add per feature in feature order, so (i, j) and (j, i) rank the same and each pair
    is computed once and offered to both lists. ``block`` (0: chosen for the cache) changes the
    work split, never the result. With ``norms``, also returns each point's squared norm
    ``[..., m]`` as the operands hold it (the features minus ``shift`` where ``euclidean``,
    summed in feature order)."""
    shape = (*features.shape[:-1], keep)
    # the packed points live in a scratch result (XLA's memory, which XLA can share with dead
    # buffers) padded to the kernel's whole blocks (with less room it would allocate its own)
    m, d = features.shape[-2:]
    unit = _cpu_select.fused_block(m, d + 2, block)
    padded = -(-m // unit) * unit
    scratch = jax.ShapeDtypeStruct((*features.shape[:-2], padded * (d + 2)), jnp.float32)
    out = (
        jax.ShapeDtypeStruct(shape, jnp.float32),
        jax.ShapeDtypeStruct(shape, jnp.int32),
        jax.ShapeDtypeStruct(features.shape[:-1], jnp.float32),
        scratch,
    )
    values, index, sq, _ = _call(
        "hubjax_tiled_lists", out, features, shift, penalty, euclidean=int(euclidean), block=block
    )
    return (values, index, sq) if norms else (values, index)


def query_lists(query, reference, *, keep: int, block: int = 0):
    """Kernel call (AVX-512, see :func:`fused`): each query's ``keep`` smallest rankings
    ``query[i] . reference[j]`` over the references, ``(values, indices) [..., n, keep]``
    sorted by (value, index); each product is one fused multiply-add per feature in feature
    order, computed in registers and never written to memory. ``block`` (0: chosen for the
    cache) changes the work split, never the result."""
    shape = (*query.shape[:-1], keep)
    out = (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape, jnp.int32))
    return _call("hubjax_query_lists", out, query, reference, block=block)


def sort_rows(values, index, *, k: int):
    """Kernel call: the k smallest of each row of ``values, index [b, c]`` by (value, index)."""
    shape = (*values.shape[:-1], k)
    out = (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape, jnp.int32))
    return _call("hubjax_sort_rows", out, values, index)


def pair_sums(x, y, columns, *, product: bool):
    """Kernel call: ``[b, c]`` sums over features of ``x[b] * y[columns]`` (``product``) or of
    their squared differences, in :func:`hubjax.distances.tree_sum`'s order."""
    out = (jax.ShapeDtypeStruct(columns.shape, jnp.float32),)
    return _call("hubjax_pair_sums", out, x, y, columns, product=product)[0]
