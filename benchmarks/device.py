"""Exact hub values on a GPU or TPU, against the bare all-pairs matmul and torch, in one run.

Usage (from the repository root)::

    python -m benchmarks.device                   # on a GPU/TPU host: the grid below
    python -m benchmarks.device --budget 400      # stop starting cases after 400 s
    python -m benchmarks.device --quick           # small sizes, any backend (CPU too): a smoke
                                                  # test, nothing written

One process, cases in order of importance, each written to the table as soon as it is done
(``benchmarks/results/device-<date>-<device>.md`` and ``.json``, or ``--out DIR``), so a run cut
short still leaves what it measured:

1. **Selection of one strip** (the diagnosis): the pieces of the GPU/TPU candidate source on one
   ``[rows, m]`` strip of the 100k-point case: the ranking matmul, the group minima, the
   two-stage selection (:func:`hubjax._src.select.smallest_k`) and the ``lax.top_k`` calls it
   is made of, with the short ``top_k`` (k = 16, XLA's fast GPU path) for scale, and the
   certified selection whose groups come from ``lax.approx_min_k``
   (:func:`hubjax._src.select.smallest_k_certified`, ``HUBJAX_TPU_SELECT=approx_min_k``): on a
   TPU the figure that decides whether it should become the default there.
2. **Same bits as the CPU**: ``knn`` and ``hub_values`` of 10 000 x 128 on the accelerator and on
   the host's CPU backend of the same process, compared bit for bit.
3. **Exact hub values** (in-sample, squared Euclidean; 10k, 100k and 1M points; d = 128, 512;
   k = 10, 50), **query vs reference** ``knn``, **the sampler** at the paper's settings (one
   batch of 10 000 latents, d = 512, k = 5) and **the distributed ring** over all local devices.
   Per case: compilation timed apart (``jit(...).lower(...).compile()``), then the median of
   warm calls of the compiled program with ``block_until_ready``; in the same run the **bare
   all-pairs ranking matmul** (float32 at HIGHEST precision, in the search's own strips: the
   floor of any exact method that computes every pair) and, where PyTorch with CUDA is
   installed, the **peer**: chunked ``torch.cdist`` + ``topk`` + ``bincount``, timed the same
   way, with the number of points whose hub value differs from hubjax's exact one.

Inputs are Gaussian float32 arrays already on the device. JAX's preallocation is turned off
(unless the environment sets it) so that torch can share the card; the device's name, the
versions and the command are printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

# (name, kind, n, m (None: in-sample), d, k, repeats); in order of importance: a case is started
# only while the budget lasts.
CASES = (
    ("hub 100k x 128, k = 10", "hub", 100_000, None, 128, 10, 3),
    ("hub 100k x 128, k = 50", "hub", 100_000, None, 128, 50, 3),
    ("hub 10k x 128, k = 10", "hub", 10_000, None, 128, 10, 5),
    ("hub 100k x 512, k = 10", "hub", 100_000, None, 512, 10, 3),
    ("knn 10k queries x 100k x 128, k = 10", "knn", 10_000, 100_000, 128, 10, 3),
    ("sampler, 10k latents x 512, k = 5", "sample", 10_000, None, 512, 5, 3),
    ("ring over local devices, 100k x 128, k = 10", "ring", 100_000, None, 128, 10, 3),
    ("hub 10k x 512, k = 50", "hub", 10_000, None, 512, 50, 3),
    ("hub 1M x 128, k = 10", "hub", 1_000_000, None, 128, 10, 1),
)
QUICK = (
    ("hub 3000 x 32, k = 50", "hub", 3000, None, 32, 50, 1),
    ("knn 500 queries x 3000 x 32, k = 10", "knn", 500, 3000, 32, 10, 1),
    ("sampler, 1000 latents x 16, k = 5", "sample", 1000, None, 16, 5, 1),
    ("ring over local devices, 3000 x 32, k = 10", "ring", 3000, None, 32, 10, 1),
)
# (n, d) of the strip diagnosis and of the bitwise check
STRIP_CASE, QUICK_STRIP = (100_000, 128), (1000, 16)
BITWISE_CASE, QUICK_BITWISE = (10_000, 128), (1000, 32)


class Budget:
    """Seconds left of ``total``; a case starts only with ``need`` seconds left."""

    def __init__(self, total: float):
        self.start, self.total = time.perf_counter(), total

    def left(self) -> float:
        return self.total - (time.perf_counter() - self.start)


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    """Median and all of ``repeats`` warm calls of ``fn`` (which blocks until its result is
    ready)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def compiled(fn, *args):
    """``(compiled program, compile seconds)`` of ``jit(fn)`` at ``args``."""
    import jax

    t = time.perf_counter()
    program = jax.jit(fn).lower(*args).compile()
    return program, time.perf_counter() - t


def gaussian(n: int, d: int, seed: int = 0):
    import jax

    return jax.random.normal(jax.random.key(seed), (n, d), dtype=np.float32)


def platform_of(device) -> str:
    """The candidate-source platform (``hubjax._src.platforms.PLATFORMS``) of ``device``."""
    return device.platform if device.platform in ("cpu", "tpu") else "gpu"


def torch_peer():
    """torch with CUDA, or ``None``."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def torch_hub_values(torch, x, k: int, y=None, chunk_bytes: int = 2 << 30):
    """The peer: hub values (in-sample, self excluded) or k-NN indices (``y`` given) from chunked
    ``torch.cdist`` + ``topk`` (+ ``bincount``), float32; returns a function that runs it."""
    ref = x if y is None else y
    n, m = x.shape[0], ref.shape[0]
    rows = max(1, min(n, chunk_bytes // (4 * m)))
    counts = torch.zeros(m, dtype=torch.int64, device=x.device)

    def run():
        counts.zero_()
        lists = []
        for s in range(0, n, rows):
            d = torch.cdist(x[s : s + rows], ref)
            if y is None:
                r = torch.arange(d.shape[0], device=x.device)
                d[r, s + r] = float("inf")
            idx = d.topk(k, largest=False).indices
            if y is None:
                counts.add_(torch.bincount(idx.reshape(-1), minlength=m))
            else:
                lists.append(idx)
        torch.cuda.synchronize()
        return counts if y is None else torch.cat(lists)

    return run


def strip_diagnosis(quick: bool) -> list[dict]:
    """The selection's pieces on one strip of the in-sample case (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from hubjax._src import numerics, search, select

    n, d = QUICK_STRIP if quick else STRIP_CASE
    platform = platform_of(jax.devices()[0])
    width = numerics.round_up(n, 128)
    rows = search.strip_rows(n, n, num_features=d, platform=platform)
    strips = -(-n // rows)
    key = jax.random.key(1)
    tile = jax.random.normal(key, (rows, width), dtype=jnp.float32)
    q = jax.random.normal(key, (rows, d + 2), dtype=jnp.float32)
    r = jax.random.normal(jax.random.key(2), (width, d + 2), dtype=jnp.float32)
    group = select.pick_group(width, 19)
    pieces = {
        "ranking matmul (d + 2, HIGHEST)": (
            lambda q, r: lax.optimization_barrier(numerics.ranking_tile(q, r))[:, 0],
            (q, r),
        ),
        f"group minima (groups of {group})": (
            lambda t: t.reshape(rows, -1, group).min(axis=-1)[:, :4],
            (tile,),
        ),
    }
    minima = tile.reshape(rows, -1, group).min(axis=-1)
    for keep in (19, 59):
        pieces[f"smallest_k(strip, {keep}) (two-stage)"] = (
            lambda t, keep=keep: select.smallest_k(t, keep),
            (tile,),
        )
        pieces[f"top_k(group minima [{minima.shape[1]}], {keep})"] = (
            lambda m, keep=keep: lax.top_k(-m, keep),
            (minima,),
        )
        pieces[f"top_k([{keep * group}], {keep}) (second stage)"] = (
            lambda t, keep=keep: lax.top_k(-t[:, : keep * group], keep),
            (tile,),
        )
        # HUBJAX_TPU_SELECT=approx_min_k: the same bits, groups from lax.approx_min_k
        pieces[f"smallest_k_certified(strip, {keep}) (approx_min_k groups)"] = (
            lambda t, keep=keep: select.smallest_k_certified(t, keep),
            (tile,),
        )
        pieces[f"approx_min_k(group minima [{minima.shape[1]}], {keep})"] = (
            lambda m, keep=keep: select.approx_groups(m, keep),
            (minima,),
        )
    pieces[f"top_k(group minima [{minima.shape[1]}], 16) (XLA's short top_k)"] = (
        lambda m: lax.top_k(-m, 16),
        (minima,),
    )
    pieces[f"top_k(strip [{width}], 19) (one stage)"] = (
        lambda t: lax.top_k(-t, 19),
        (tile,),
    )
    # sort-free candidates for a later source, timed only (their tie handling is not exact):
    # rounds of the short top_k with the chosen entries masked, and one argmin per kept entry
    for keep in (19, 59):
        pieces[f"rounds of top_k(group minima, 16) for {keep}"] = (
            lambda m, keep=keep: _rounds_of_16(m, keep),
            (minima,),
        )
        pieces[f"{keep} argmin passes over the group minima"] = (
            lambda m, keep=keep: _argmin_passes(m, keep),
            (minima,),
        )
    pieces["top_k(int32 bits of group minima, 16)"] = (
        lambda m: lax.top_k(lax.bitcast_convert_type(m, jnp.int32), 16),
        (minima,),
    )
    out = []
    for name, (fn, args) in pieces.items():
        program, _ = compiled(fn, *args)
        jax.block_until_ready(program(*args))
        s, _ = timed(lambda program=program, args=args: jax.block_until_ready(program(*args)), 10)
        out.append(
            dict(piece=name, strip_ms=1e3 * s, call_s=s * strips, rows=rows, width=width, n=n)
        )
    return out


def _rounds_of_16(minima, keep: int):
    import jax.numpy as jnp
    from jax import lax

    rows = jnp.arange(minima.shape[0])[:, None]
    neg, chosen = -minima, []
    for _ in range(-(-keep // 16)):
        _, idx = lax.top_k(neg, 16)
        chosen.append(idx)
        neg = neg.at[rows, idx].set(-jnp.inf)
    return jnp.concatenate(chosen, axis=1)[:, :keep]


def _argmin_passes(minima, keep: int):
    import jax.numpy as jnp
    from jax import lax

    rows = jnp.arange(minima.shape[0])

    def body(i, state):
        m, out = state
        a = jnp.argmin(m, axis=1).astype(jnp.int32)
        return m.at[rows, a].set(jnp.inf), out.at[:, i].set(a)

    out = jnp.zeros((minima.shape[0], keep), jnp.int32)
    return lax.fori_loop(0, keep, body, (minima, out))[1]


# (n, d, k, repeats) of the in-sample source comparison
SOURCE_CASES = (
    (100_000, 128, 10, 3),
    (100_000, 128, 50, 3),
    (100_000, 64, 10, 3),
    (100_000, 256, 10, 3),
    (1_000_000, 128, 10, 1),
)
QUICK_SOURCES = ((3000, 32, 10, 1),)


# (label, source, block size) of the comparison; the first is the reference of the ratios
VARIANTS = (("strip", "strip", None), ("symmetric", "symmetric", None))
WIDE_BLOCK = ("symmetric, block 4096", "symmetric", 4096)


def source_comparison(quick: bool, budget: Budget) -> list[dict]:
    """The in-sample search (k-NN lists) through the strip source and through the symmetric one
    (each block pair once: half the products, a column selection more), same process, same
    input; whether the lists agree bit for bit."""
    import jax

    from hubjax._src import search
    from hubjax._src.metric import SQEUCLIDEAN

    out = []
    for n, d, k, repeats in QUICK_SOURCES if quick else SOURCE_CASES:
        if budget.left() < (100 if n >= 1_000_000 else 0):
            break
        x = gaussian(n, d)
        row = dict(n=n, d=d, k=k, s={}, compile_s={})
        lists = {}
        for label, source, block in VARIANTS + ((WIDE_BLOCK,) if n >= 100_000 else ()):
            options = search.Options(k, SQEUCLIDEAN, source=source, block_size=block)
            program, row["compile_s"][label] = compiled(
                lambda x, options=options: search.knn(x, None, options), x
            )
            lists[label] = [np.asarray(a) for a in jax.block_until_ready(program(x))]
            row["s"][label], _ = timed(
                lambda program=program, x=x: jax.block_until_ready(program(x)), repeats
            )
        a = lists["strip"]
        row["identical"] = all(
            np.array_equal(a[0].view(np.uint32), b[0].view(np.uint32))
            and np.array_equal(a[1], b[1])
            for b in lists.values()
        )
        out.append(row)
        print(f"sources {n} x {d}, k = {k}: {row}", flush=True)
    return out


# (n, d, k) and the strip budgets (MiB) of the strip-size sweep
STRIP_SWEEP = (((100_000, 128, 10), (100_000, 128, 50)), (256, 512, 1024, 2048))
QUICK_STRIP_SWEEP = (((3000, 32, 10),), (1, 2))


def strip_sweep(quick: bool, torch) -> list[dict]:
    """``hub_values`` with the accelerator's strip budget (``search.STRIP_BYTES``) set to each
    size in turn, retraced each time, and the peer in the same run."""
    import jax

    import hubjax
    from hubjax._src import search

    cases, sizes = QUICK_STRIP_SWEEP if quick else STRIP_SWEEP
    platform = platform_of(jax.devices()[0])
    saved = search.STRIP_BYTES[platform]
    out = []
    for n, d, k in cases:
        x = gaussian(n, d)
        row = dict(n=n, d=d, k=k, s={}, rows={})
        if torch is not None:
            peer = torch_hub_values(torch, torch.from_dlpack(x), k)
            peer()
            row["torch_s"], _ = timed(peer, 3)
        try:
            for mib in sizes:
                search.STRIP_BYTES[platform] = mib << 20
                jax.clear_caches()
                program, _ = compiled(
                    lambda x, k=k: hubjax.hub_values(x, k=k, check_finite=False), x
                )
                jax.block_until_ready(program(x))
                row["s"][mib], _ = timed(
                    lambda program=program, x=x: jax.block_until_ready(program(x)), 5
                )
                row["rows"][mib] = search.strip_rows(n, n, num_features=d, platform=platform)
        finally:
            search.STRIP_BYTES[platform] = saved
            jax.clear_caches()
        out.append(row)
        print(f"strip sweep {n} x {d}, k = {k}: {row}", flush=True)
    return out


def bitwise_check(quick: bool) -> dict:
    """knn and hub values on the accelerator and on the CPU backend, compared bit for bit."""
    import jax

    import hubjax

    n, d = QUICK_BITWISE if quick else BITWISE_CASE
    x = np.asarray(gaussian(n, d, seed=3)) + np.float32(3.0)  # uncentred, as users' data is
    cpu = jax.devices("cpu")[0]
    accel = jax.devices()[0]
    out = {"n": n, "d": d, "device": str(accel), "host": str(cpu)}
    results = {}
    for name, dev in (("device", accel), ("cpu", cpu)):
        xd = jax.device_put(x, dev)
        dist, idx = hubjax.knn(xd, k=10)
        hub = hubjax.hub_values(xd, k=10)
        results[name] = [np.asarray(a) for a in (dist, idx, hub)]
    a, b = results["device"], results["cpu"]
    out["distances_identical"] = bool(np.array_equal(a[0].view(np.uint32), b[0].view(np.uint32)))
    out["indices_identical"] = bool(np.array_equal(a[1], b[1]))
    out["hub_values_identical"] = bool(np.array_equal(a[2], b[2]))
    out["rows_differing"] = int(np.sum(np.any(a[1] != b[1], axis=1)))
    return out


def hubjax_call(kind: str, k: int):
    """The timed hubjax function of a case and whether it takes ``(x,)``, ``(x, y)`` or a key."""
    import hubjax

    if kind == "hub":
        return lambda x: hubjax.hub_values(x, k=k, check_finite=False)
    if kind == "ring":
        return lambda x: hubjax.distributed.hub_values(x, k=k, check_finite=False)
    if kind == "knn":
        return lambda x, y: hubjax.knn(x, y, k=k, check_finite=False)[1]
    if kind == "sample":
        return None
    raise ValueError(kind)


def run_case(case, torch) -> dict:
    import jax

    import hubjax
    from benchmarks.run import _full_matmul_fn

    name, kind, n, m, d, k, repeats = case
    platform = platform_of(jax.devices()[0])
    row = dict(case=name, kind=kind, n=n, m=m, d=d, k=k, repeats=repeats)
    if kind == "sample":

        def sample(key):
            return hubjax.sampling.hubness_sample(
                key, 100, latent_dim=d, k=k, batch_size=n, max_batches=1, raise_on_shortfall=False
            )[1].accepted

        key = jax.random.key(0)
        program, row["compile_s"] = compiled(sample, key)
        jax.block_until_ready(program(key))
        row["s"], row["times"] = timed(lambda: jax.block_until_ready(program(key)), repeats)
        x = gaussian(n, d)
        floor = _full_matmul_fn(x, None, platform=platform)
        floor()
        row["floor_s"], _ = timed(floor, repeats)
        row["ratio_floor"] = row["s"] / row["floor_s"]
        return row
    x = gaussian(n, d)
    y = gaussian(m, d, seed=1) if m else None
    args = (x,) if y is None else (x, y)
    program, row["compile_s"] = compiled(hubjax_call(kind, k), *args)
    t = time.perf_counter()
    ours = jax.block_until_ready(program(*args))
    row["first_run_s"] = time.perf_counter() - t
    if repeats > 1:
        row["s"], row["times"] = timed(lambda: jax.block_until_ready(program(*args)), repeats)
    else:
        row["s"], row["times"] = row["first_run_s"], [row["first_run_s"]]
    if kind == "ring":
        single = jax.jit(hubjax_call("hub", k)).lower(x).compile()
        same = jax.block_until_ready(single(x))
        row["identical_to_single_device"] = bool(np.array_equal(np.asarray(ours), np.asarray(same)))
        row["single_s"], _ = timed(lambda: jax.block_until_ready(single(x)), repeats)
        row["ratio_single"] = row["s"] / row["single_s"]
        return row
    floor = _full_matmul_fn(x, y, platform=platform)
    floor()
    row["floor_s"], _ = timed(floor, max(1, repeats))
    row["ratio_floor"] = row["s"] / row["floor_s"]
    if torch is not None:
        try:
            row.update(_torch_columns(torch, x, y, k, repeats, ours, row["s"]))
        except Exception as error:
            traceback.print_exc()
            row["torch_error"] = repr(error)[:200]
    return row


def _torch_columns(torch, x, y, k: int, repeats: int, ours, ours_s: float) -> dict:
    """The peer's time on the same device arrays, and where its answer differs from ours."""
    peer = torch_hub_values(
        torch, torch.from_dlpack(x), k, None if y is None else torch.from_dlpack(y)
    )
    theirs = peer().cpu().numpy()
    row = {}
    row["torch_s"], _ = timed(peer, max(1, repeats))
    row["torch_over_hubjax"] = row["torch_s"] / ours_s
    ours = np.asarray(ours)
    if y is None:
        row["hub_values_differing"] = int(np.sum(theirs != ours))
    else:
        row["rows_differing"] = int(np.sum(np.any(np.sort(theirs, 1) != np.sort(ours, 1), 1)))
    return row


def machine(torch) -> dict:
    import jax

    from benchmarks.run import machine as host

    info = host()
    devices = jax.devices()
    info["device"] = getattr(devices[0], "device_kind", str(devices[0]))
    info["platform"] = devices[0].platform
    info["device_count"] = len(devices)
    info["versions"]["torch"] = None if torch is None else torch.__version__
    info["command"] = "python -m benchmarks.device " + " ".join(sys.argv[1:])
    return info


def to_markdown(
    info: dict, strips: list[dict], bitwise: dict | None, rows: list[dict], sources=(), sweep=()
) -> str:
    v = info["versions"]
    lines = [
        f"Device: {info['device']} x {info['device_count']} ({info['platform']}); host CPU "
        f"{info['cpu']} ({info['cores']} cores); jax {v['jax']}, jaxlib {v['jaxlib']}, "
        f"torch {v['torch']}, Python {v['python']}; {info['date']}. Command: "
        f"`{info['command']}`.",
        "",
    ]
    if strips:
        s = strips[0]
        lines += [
            f"Selection of one strip ({s['rows']} x {s['width']}, from the {s['n']}-point "
            "in-sample case; 'per call' multiplies by the strips of one call):",
            "",
            "| piece | one strip (ms) | per call (s) |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {p['piece']} | {p['strip_ms']:.3f} | {p['call_s']:.3f} |" for p in strips]
        lines.append("")
    if bitwise:
        same = all(bitwise[f] for f in ("distances_identical", "indices_identical"))
        lines += [
            f"Same bits as the CPU backend ({bitwise['n']} x {bitwise['d']}, uncentred, k = 10): "
            f"knn {'identical' if same else 'DIFFERENT'} (rows differing: "
            f"{bitwise['rows_differing']}), hub values "
            f"{'identical' if bitwise['hub_values_identical'] else 'DIFFERENT'}.",
            "",
        ]
    lines += [
        "| case | hubjax (s) | compile (s) | all-pairs matmul (s) | hubjax / matmul | "
        "torch (s) | torch / hubjax | points differing from torch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def f(r, key, fmt, unit=""):
        return format(r[key], fmt) + unit if r.get(key) is not None else "-"

    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | failed: {r['error']} | | | | | | |")
            continue
        differing = r.get("hub_values_differing", r.get("rows_differing"))
        if r["kind"] == "ring":
            extra = (
                f"single device {r['single_s']:.3f} s, ratio {r['ratio_single']:.2f}x, "
                f"identical: {r['identical_to_single_device']}"
            )
            lines.append(f"| {r['case']} | {r['s']:.3f} | {r['compile_s']:.1f} | {extra} | | | | |")
            continue
        lines.append(
            f"| {r['case']} | {r['s']:.3f} | {r['compile_s']:.1f} | {f(r, 'floor_s', '.3f')} | "
            f"{f(r, 'ratio_floor', '.2f', 'x')} | {f(r, 'torch_s', '.3f')} | "
            f"{f(r, 'torch_over_hubjax', '.2f', 'x')} | {'-' if differing is None else differing} |"
        )
    if sources:
        lines += [
            "",
            "In-sample search (k-NN lists) through each source, same input, same process "
            "(seconds; compile in brackets; ratio to the strip source):",
            "",
            "| n x d, k | " + " | ".join(v[0] for v in (*VARIANTS, WIDE_BLOCK)) + " | same bits |",
            "| --- | " + "--- | " * (len(VARIANTS) + 1) + "--- |",
        ]
        for r in sources:
            cells = []
            for label, _, _ in (*VARIANTS, WIDE_BLOCK):
                if label not in r["s"]:
                    cells.append("-")
                    continue
                ratio = r["s"][label] / r["s"]["strip"]
                cells.append(f"{r['s'][label]:.3f} ({r['compile_s'][label]:.1f}) {ratio:.2f}x")
            lines.append(
                f"| {r['n']} x {r['d']}, k = {r['k']} | "
                + " | ".join(cells)
                + f" | {r['identical']} |"
            )
    if sweep:
        lines += [
            "",
            "hub_values with the accelerator's strip budget set to each size (seconds; rows per "
            "strip in brackets; torch / hubjax):",
            "",
            "| n x d, k | torch (s) | " + " | ".join(f"{m} MiB" for m in sweep[0]["s"]) + " |",
            "| --- | --- |" + " --- |" * len(sweep[0]["s"]),
        ]
        for r in sweep:
            torch_s = r.get("torch_s")
            cells = [
                f"{s:.4f} ({r['rows'][m]})" + (f" {torch_s / s:.2f}x" if torch_s else "")
                for m, s in r["s"].items()
            ]
            lines.append(
                f"| {r['n']} x {r['d']}, k = {r['k']} | "
                + ("-" if torch_s is None else f"{torch_s:.4f}")
                + " | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines)


def _give_up(name: str, limit: float, rows: list, write) -> None:
    rows.append(dict(case=name, error=f"stopped after {limit:.0f} s (--case-limit)"))
    print(write(), flush=True)
    os._exit(3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, nothing written")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds to start cases in")
    parser.add_argument("--out", type=Path, default=None, help="folder for the table and JSON")
    parser.add_argument("--case-limit", type=float, default=150.0, help="seconds per case")
    parser.add_argument(
        "--sections",
        default="strips,bitwise,cases,sources",
        help="comma-separated: strips (selection diagnosis), bitwise, cases, sources, "
        "strip-sizes (not in the default run)",
    )
    parser.add_argument("--case", default="", help="only the cases whose name contains this")
    args = parser.parse_args(argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    jax.devices()  # JAX takes the card first; torch shares what it leaves
    torch = None if args.quick else torch_peer()
    budget = Budget(args.budget)
    info = machine(torch)
    slug = "".join(c if c.isalnum() else "-" for c in info["device"].lower()).strip("-")
    out = None if args.quick else (args.out or RESULTS)
    stem = f"device-{info['date']}-{slug}"
    strips, bitwise, rows, sources, sweep = [], None, [], [], []
    sections = set(args.sections.split(","))

    def write():
        table = to_markdown(info, strips, bitwise, rows, sources, sweep)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{stem}.md").write_text(table + "\n")
            record = dict(
                info=info, strips=strips, bitwise=bitwise, rows=rows, sources=sources, sweep=sweep
            )
            (out / f"{stem}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
        return table

    print(f"device {info['device']} x {info['device_count']}, torch {info['versions']['torch']}")
    if "strips" in sections:
        try:
            strips = strip_diagnosis(args.quick)
        except Exception as error:  # keep the run going: the cases below matter more
            traceback.print_exc()
            strips = [
                dict(piece=f"failed: {error!r}"[:200], strip_ms=0, call_s=0, rows=0, width=0, n=0)
            ]
        write()
    if "bitwise" in sections:
        try:
            bitwise = bitwise_check(args.quick)
        except Exception:
            traceback.print_exc()
        write()
    cases = QUICK if args.quick else CASES
    for case in cases if "cases" in sections else ():
        if args.case and args.case not in case[0]:
            continue
        if budget.left() < (100 if case[2] >= 1_000_000 else 0):
            rows.append(dict(case=case[0], error="not started: budget spent"))
            continue
        t = time.perf_counter()
        # a case that runs past its limit is recorded as such and ends the run (XLA cannot be
        # interrupted), so what was measured before it still comes back
        watchdog = threading.Timer(
            args.case_limit, _give_up, (case[0], args.case_limit, rows, write)
        )
        watchdog.start()
        try:
            rows.append(run_case(case, torch))
        except Exception as error:
            traceback.print_exc()
            rows.append(dict(case=case[0], error=repr(error)[:200]))
        watchdog.cancel()
        print(f"{case[0]}: {time.perf_counter() - t:.1f} s", flush=True)
        write()
    if "sources" in sections:
        try:
            sources = source_comparison(args.quick, budget)
        except Exception:
            traceback.print_exc()
    if "strip-sizes" in sections:
        try:
            sweep.extend(strip_sweep(args.quick, torch))
        except Exception:
            traceback.print_exc()
    print(write())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
