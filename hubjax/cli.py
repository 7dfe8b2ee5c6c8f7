"""``hubjax analyze PATH``: the hubness report of a data file, for people and for scripts.

The options and the file reader live in :mod:`hubjax._src.command` (no JAX: ``--help`` and
input errors answer at once); this module computes. float64 data is centred (Euclidean
metrics) and, beyond float32's range, rescaled by a power of two in its own precision before
the float32 cast; neither changes any neighbour. The points are padded to a row-count bucket
(:mod:`hubjax._src.buckets`), so files of similar sizes share compiled programs, and compiled
programs are kept on disk between runs (:func:`use_compilation_cache`). Bad input -- a missing
file, an unreadable or truncated file, non-numeric or non-finite data, k too large, a bad
option value -- is reported as one line on stderr with exit status 2, never a traceback.
``--json`` is strict JSON (undefined measures are ``null``; measures rounded to the float32
precision they are computed in).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hubjax import approximate, measures, retrieval, streaming
from hubjax._src import buckets, command, float32
from hubjax._src.command import UsageError


class Progress:
    """Prints the running stage and elapsed time to stderr every few seconds on long runs."""

    def __init__(self, stage: str, every: float = 5.0, enabled: bool = True):
        self.stage, self.every, self.enabled = stage, every, enabled

    def __enter__(self):
        self.start = time.perf_counter()
        self.done = threading.Event()
        if self.enabled:
            self.thread = threading.Thread(target=self._tick, daemon=True)
            self.thread.start()
        return self

    def _tick(self):
        while not self.done.wait(self.every):
            elapsed = time.perf_counter() - self.start
            print(f"hubjax: {self.stage} ... {elapsed:.0f} s", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        self.done.set()


def analyze(args, data: np.ndarray | None = None) -> dict:
    """Computes the report of ``args.path`` (already loaded: ``data``); returns it as a
    JSON-ready dict."""
    if command.streams(args):
        return _analyze_streamed(args)
    if data is None:
        data = command.load_data(args)
    try:
        x = float32.to_float32(data, args.metric)
    except ValueError as err:
        raise UsageError(str(err)) from None
    n, d = x.shape
    if args.reduction is None:
        available = n - 1
        if args.k > available:
            raise UsageError(f"--k {args.k} is too large: {n} points leave {available} neighbours")
    else:
        if args.k > min(args.candidates, n - 1):
            raise UsageError(
                f"--k {args.k} is too large: at most min(--candidates, n - 1) = "
                f"{min(args.candidates, n - 1)} with --reduction"
            )
    if args.k < 1:
        raise UsageError("--k must be at least 1")
    asked = _ivf_settings(args)
    settings, note = asked, None
    if asked is not None and args.nprobe is None and args.reduction is None:
        with Progress(f"choosing the approximate search's probes for {n} points"):
            settings, note = _choose_probes(x, args, asked)
        if note:
            print(f"hubjax analyze: note: {note}", file=sys.stderr)
    with Progress(f"k-NN and hubness of {n} points x {d} features"):
        try:
            # measures.hubness in its two steps, so that the recall check reuses the lists
            # exact search on points padded to a row-count bucket: new files of similar sizes
            # reuse the compiled search; the real rows' lists are the unpadded ones
            padded = x if settings is not None else buckets.pad(x, "the data")
            idx, _ = measures.neighbour_lists(
                padded,
                None,
                k=args.k,
                metric=args.metric,
                include_self=False,
                block_size=None,
                check_finite=False,
                reduction=args.reduction,
                candidates=args.candidates,
                reduction_params=None,
                approximate=settings or False,
            )
            idx = np.asarray(idx)[:n]  # on the host: a device slice compiles per shape
            report = measures.report_of_lists(
                idx,
                num_points=n,
                k=args.k,
                hub_size=float(args.hub_size),
                metric=args.metric,
            )
            report = jax.block_until_ready(report)
            recall = None
            if settings is not None and args.reduction is None:
                recall = approximate.sampled_recall(
                    x, k=args.k, metric=args.metric, settings=settings, lists=idx
                )
        except (ValueError, TypeError) as err:
            raise UsageError(str(err).splitlines()[0]) from None
    result = _result(args, report, n, d)
    if asked is not None:
        least = approximate.TARGET_RECALL if args.min_recall is None else args.min_recall
        result["approximate"] = {
            "used": settings is not None,
            "note": note,
            "nlist": None if settings is None else settings.lists(n),
            "nprobe": None if settings is None else settings.probes(n),
            "ratio": None if settings is None else settings.ratio,
            "recall_sampled": recall,
            "min_recall": least,
            "recall_ok": None if recall is None else bool(recall >= least),
        }
        if result["approximate"]["recall_ok"] is False:
            print(
                f"hubjax analyze: warning: measured recall {recall:.3f} is below "
                f"{'--min-recall ' if args.min_recall is not None else ''}{least}; raise "
                "--nprobe, or leave it out to have it chosen",
                file=sys.stderr,
            )
    return result


# Below this many points ``--approximate`` searches exactly: a one-off exact search is faster
# than choosing the probes and building an index. 2-core AMD EPYC (AVX-512), first calls,
# clustered points: 100 000 x 32, exact 3.6 s against 5.9 s to choose the probes plus 4.0 s to
# search (0.5 s warm against the exact 2.2 s: a library user who searches again gains);
# 200 000 x 64, exact 16.8-20.4 s against 7.9-8.4 s
# (benchmarks/results/approximate-2026-12-02.md) plus about 6 s.
APPROXIMATE_MIN_POINTS = 200_000


def _choose_probes(x, args, settings):
    """``(settings or None, note)``: :func:`hubjax.approximate.tune`'s choice of ``nprobe``
    for ``--approximate`` without ``--nprobe``; None (with the reason) where the exact search
    is the better choice."""
    n = x.shape[0]
    if n < APPROXIMATE_MIN_POINTS:
        return None, (
            f"--approximate: {n} points are searched exactly (below {APPROXIMATE_MIN_POINTS} "
            "points an exact search is faster than building an index)"
        )
    target = approximate.TARGET_RECALL if args.min_recall is None else args.min_recall
    tuned = approximate.tune(
        x, k=args.k, metric=args.metric, target_recall=target, settings=settings
    )
    if tuned.settings is None:
        tried = ", ".join(f"{p} lists: {r:.3f}" for p, _, r in tuned.trials)
        return None, (
            f"--approximate: recall@{args.k} {target} needs more than "
            f"{approximate.MAX_PROBED:.0%} of the {settings.lists(n)} lists ({tried}); "
            "searched exactly, which is then about as fast"
        )
    return tuned.settings, None


def _ivf_settings(args):
    if not getattr(args, "approximate", False):
        for name in ("nlist", "nprobe", "ratio", "min_recall"):
            if getattr(args, name, None) is not None:
                raise UsageError(f"--{name.replace('_', '-')} needs --approximate")
        return None
    kwargs = {name: getattr(args, name) for name in ("nlist", "nprobe")}
    for name, value in kwargs.items():
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be at least 1")
    ratio = getattr(args, "ratio", None)
    if ratio is not None:
        try:
            kwargs["ratio"] = None if ratio.lower() == "none" else float(ratio)
        except ValueError:
            raise UsageError(f"--ratio must be a number or 'none', got {ratio!r}") from None
        if kwargs["ratio"] is not None and not kwargs["ratio"] >= 0:
            raise UsageError(f"--ratio must be at least 0, got {ratio}")
    return approximate.IVF(**kwargs)


def _analyze_streamed(args) -> dict:
    """The report of a .npy file read in blocks (memory bound: see hubjax.streaming)."""
    if not Path(args.path).exists():
        raise UsageError(f"no such file: {args.path}")
    try:
        n, d = streaming.NpyFile(args.path).shape
        if args.k < 1 or args.k > n - 1:
            raise UsageError(f"--k {args.k} is too large: {n} points leave {n - 1} neighbours")
        with Progress(f"streamed k-NN of {n} points x {d} features"):
            counts = streaming.stream_hub_values(
                args.path, k=args.k, metric=args.metric, block_bytes=args.block_mb << 20
            )
    except (ValueError, OSError, EOFError) as err:
        raise UsageError(str(err).splitlines()[0]) from None
    report = measures.report_of_counts(
        jnp.asarray(counts), k=args.k, num_queries=n, hub_size=args.hub_size, metric=args.metric
    )
    return _result(args, report, n, d)


def _result(args, report, n, d) -> dict:
    counts = np.asarray(report.k_occurrence)
    top = np.lexsort((np.arange(n), -counts))[: max(args.top, 0)]
    hist = np.asarray(report.histogram)
    return {
        "path": str(args.path),
        "key": getattr(args, "key", None),
        "n_points": n,
        "n_features": d,
        "k": args.k,
        "metric": args.metric,
        "reduction": args.reduction,
        "candidates": args.candidates if args.reduction else None,
        "hub_size": args.hub_size,
        "measures": {name: _float32(v) for name, v in report.measures().items()},
        "max_k_occurrence": int(counts.max()),
        "n_hubs": int(np.sum(counts >= args.hub_size * args.k)),
        "n_antihubs": int(np.sum(counts == 0)),
        # index: 0-based, as in the array; row: 1-based, as in the file and every message
        "top_hubs": [
            {"index": int(i), "row": int(i) + 1, "k_occurrence": int(counts[i])} for i in top
        ],
        "histogram": hist[: int(counts.max()) + 1].tolist(),
        "k_occurrence": counts.tolist(),
    }


def _float32(value: float) -> float:
    """A float32 measure as the shortest decimal that reads back as the same float32
    (``0.1665``, not ``0.1665000021457672``): the digits the computation has."""
    return float(str(np.float32(value)))


def format_report(r: dict) -> str:
    red = f", reduction {r['reduction']} ({r['candidates']} candidates)" if r["reduction"] else ""
    lines = [
        f"{r['path']}{'[' + r['key'] + ']' if r.get('key') else ''}: {r['n_points']} points x "
        f"{r['n_features']} features",
        f"k = {r['k']}, metric {r['metric']}{red}",
    ]
    if r.get("approximate"):
        a = r["approximate"]
        rec = "n/a" if a["recall_sampled"] is None else f"{a['recall_sampled']:.3f}"
        if a["used"]:
            lines.append(
                f"approximate (IVF, {a['nlist']} lists, up to {a['nprobe']} probed): recall@k "
                f"{rec} on 1000 sampled queries"
            )
        else:
            lines.append("exact search (--approximate would not pay here; see the note)")
    lines += measure_lines(r["measures"])
    lines += [
        f"  hubs (O >= {r['hub_size'] * r['k']:g}): {r['n_hubs']}    "
        f"anti-hubs (O = 0): {r['n_antihubs']}    max O: {r['max_k_occurrence']}",
    ]
    if r["top_hubs"]:
        shown = ", ".join(f"row {h['row']} ({h['k_occurrence']})" for h in r["top_hubs"])
        lines.append(f"  top hubs (rows from 1, k-occurrence): {shown}")
    return "\n".join(lines)


def measure_lines(values: dict) -> list[str]:
    """The measures of a report as aligned lines, a blank line before and after."""
    return ["", *(f"  {name:<22} {value: .4f}" for name, value in values.items()), ""]


def save_plot(draw, result: dict, written, command: str) -> tuple:
    """Writes the figure ``draw(result)`` to ``written``; returns ``(written or None,
    failed)``. A missing matplotlib or an unwritable file is one line on stderr; the report is
    printed anyway (the work is not thrown away)."""
    try:
        plot(result, str(written), draw)
    except ImportError:
        print(
            f"hubjax {command}: --plot needs matplotlib: pip install matplotlib "
            "(report below, no plot written)",
            file=sys.stderr,
        )
        return None, False
    except (OSError, ValueError) as err:
        print(
            f"hubjax {command}: error: cannot write plot {written}: {err}".splitlines()[0],
            file=sys.stderr,
        )
        return None, True
    return written, False


def figure(r: dict):
    """The ``--plot`` figure of a report: every non-zero count of the k-occurrence histogram as
    a marker on a stem (visible however wide the axis: a bar one unit wide on an axis of ~1000
    units is less than a pixel), counts from 0 so the anti-hubs show, log-scaled numbers of
    points, the top hubs marked; and the top hubs' k-occurrence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = np.asarray(r["histogram"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    nonzero = np.flatnonzero(hist)
    ax1.vlines(nonzero, 0.8, hist[nonzero], color="C0", linewidth=1)
    ax1.plot(nonzero, hist[nonzero], "o", color="C0", markersize=3, label="points with count O")
    hubs = [h["k_occurrence"] for h in r["top_hubs"]]
    if hubs:
        ax1.plot(hubs, np.ones(len(hubs)), "v", color="C3", markersize=6, label="top hubs")
    threshold = r["hub_size"] * r["k"]
    ax1.axvline(threshold, color="grey", linestyle=":", label=f"hub threshold {threshold:g}")
    ax1.set(yscale="log", xlabel=f"k-occurrence O (k = {r['k']})", ylabel="points (log)")
    ax1.set_xlim(-0.02 * max(hist.size, 2), hist.size)
    ax1.set_ylim(bottom=0.5)
    ax1.set_title(f"k-occurrence histogram ({r['n_antihubs']} anti-hubs at O = 0)")
    ax1.legend(fontsize=8)
    top = r["top_hubs"]
    ax2.bar([f"row {h['row']}" for h in top], [h["k_occurrence"] for h in top])
    ax2.set(xlabel="row (from 1)", ylabel="k-occurrence", title=f"top {len(top)} hubs")
    ax2.tick_params(axis="x", labelrotation=45)
    skew = r["measures"]["k_skewness"]
    shown = "undefined" if skew is None or not np.isfinite(skew) else f"{skew:.2f}"
    fig.suptitle(f"{Path(r['path']).name}: k-skewness {shown}")
    fig.tight_layout()
    return fig


def plot(r: dict, path: str, draw=None) -> None:
    """Writes ``draw(r)`` (default :func:`figure`) to ``path``."""
    import matplotlib.pyplot as plt

    fig = (draw or figure)(r)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def json_ready(value):
    """NaN/inf become null (JSON has no NaN; a bare ``NaN`` breaks strict parsers)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


def use_compilation_cache() -> str | None:
    """Keeps compiled programs on disk between runs (JAX's persistent compilation cache), so a
    repeated ``hubjax analyze`` loads its programs instead of compiling them: about 1-3 s saved
    per program on a 2-core CPU.

    The folder is ``$HUBJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/hubjax/jax``, else
    ``~/.cache/hubjax/jax``; ``HUBJAX_CACHE_DIR=off`` turns it off. A cache folder the caller
    configured for JAX already (``JAX_COMPILATION_CACHE_DIR``, ``jax.config``) is kept as it is.
    Library users get the same with one line before their first computation::

        jax.config.update("jax_compilation_cache_dir", "/path/to/cache")

    Returns:
      The folder in use, or None when off.
    """
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return configured
    folder = os.environ.get("HUBJAX_CACHE_DIR")
    if folder is not None and folder.strip().lower() in ("", "off", "0", "false", "no"):
        return None
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "hubjax", "jax")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None  # an unwritable home: compile as before
    jax.config.update("jax_compilation_cache_dir", folder)
    # the search compiles in 0.2-3 s; JAX's default keeps only programs over 1 s
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def run(args, prepared: command.Prepared | None = None) -> int:
    """Runs ``hubjax analyze`` with parsed ``args``; ``prepared``: the result of
    :func:`hubjax._src.command.prepare` where the caller has already checked and loaded.
    Returns the exit status."""
    written, failed = None, False
    try:
        if prepared is None:
            prepared = command.prepare(args)
        use_compilation_cache()
        result = analyze(args, prepared.data)
        written = prepared.plot
        if written is not None:
            written, failed = save_plot(figure, result, written, "analyze")
    except UsageError as err:
        print(f"hubjax analyze: error: {err}", file=sys.stderr)
        return 2
    return report_out(args, result, format_report, written, failed)


def report_out(args, result: dict, formatter, written, failed: bool) -> int:
    """Prints ``result`` (``--json``, or ``formatter``'s text and where the plot went); returns
    the exit status (2 when the plot failed)."""
    if args.json:
        print(json.dumps(json_ready(result), allow_nan=False))
    else:
        print(formatter(result))
        if written is not None:
            print(f"plot written to {written}")
    return 2 if failed else 0


def audit(args, queries: np.ndarray, gallery: np.ndarray) -> dict:
    """``hubjax audit``: :func:`hubjax.retrieval.audit` of the loaded files, as a JSON-ready
    dict."""
    try:
        q = float32.to_float32(queries, args.metric)
        g = float32.to_float32(gallery, args.metric)
    except ValueError as err:
        raise UsageError(str(err)) from None
    with Progress(f"top-{args.k} of {q.shape[0]} queries among {g.shape[0]} items"):
        result = retrieval.audit(
            q, g, k=args.k, metric=args.metric, threshold=args.threshold, hub_size=args.hub_size
        )
        result = jax.block_until_ready(result)
    counts = np.asarray(result.report.k_occurrence)
    z = np.asarray(result.robust_z)
    flagged = np.flatnonzero(np.asarray(result.flagged))
    order = flagged[np.lexsort((flagged, -z[flagged]))]
    return {
        "queries": str(args.queries),
        "gallery": str(args.gallery),
        "n_queries": int(q.shape[0]),
        "n_items": int(g.shape[0]),
        "n_features": int(g.shape[1]),
        "k": args.k,
        "metric": args.metric,
        "threshold": args.threshold,
        "hub_size": args.hub_size,
        "measures": {name: _float32(v) for name, v in result.report.measures().items()},
        "n_flagged": int(flagged.size),
        "top1_flagged_share": _float32(result.top1_flagged_share),
        # index: 0-based, as in the array; row: 1-based, as in the file and every message
        "flagged": [
            {
                "index": int(i),
                "row": int(i) + 1,
                "k_occurrence": int(counts[i]),
                "robust_z": _float32(z[i]),
            }
            for i in order[: max(args.top, 0)]
        ],
        "k_occurrence": counts.tolist(),
        "robust_z": [_float32(v) for v in z],
    }


def format_audit(r: dict) -> str:
    lines = [
        f"{r['gallery']}: {r['n_items']} items x {r['n_features']} features, audited with "
        f"{r['n_queries']} queries from {r['queries']}",
        f"k = {r['k']}, metric {r['metric']}, flag above robust z {r['threshold']:g}",
    ]
    lines += measure_lines(r["measures"])
    lines += [
        f"  flagged items: {r['n_flagged']} of {r['n_items']}; they are the top-1 of "
        f"{r['top1_flagged_share']:.1%} of the queries",
    ]
    for f in r["flagged"]:
        lines.append(
            f"    row {f['row']:>8d}  k-occurrence {f['k_occurrence']:>7d}  z {f['robust_z']:9.2f}"
        )
    if r["n_flagged"] > len(r["flagged"]):
        lines.append(f"    ... {r['n_flagged'] - len(r['flagged'])} more (--top)")
    return "\n".join(lines)


def audit_figure(r: dict):
    """The ``audit --plot`` figure: the items ranked by k-occurrence (log-log, so both the few
    hubs and the long tail show), the flagged ones marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts, z = np.asarray(r["k_occurrence"]), np.asarray(r["robust_z"], dtype=float)
    order = np.lexsort((np.arange(counts.size), -counts))
    rank = np.arange(1, counts.size + 1)
    flagged = z[order] > r["threshold"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(rank[~flagged], counts[order][~flagged], ".", color="C0", label="items")
    ax.plot(
        rank[flagged],
        counts[order][flagged],
        "o",
        color="C3",
        label=f"flagged: robust z > {r['threshold']:g} ({int(flagged.sum())})",
    )
    ax.axhline(
        r["k"] * r["n_queries"] / max(counts.size, 1),
        color="grey",
        linestyle=":",
        label="mean k-occurrence",
    )
    ax.set(xscale="log", yscale="symlog", xlabel="item rank", ylabel=f"k-occurrence (k = {r['k']})")
    ax.set_ylim(bottom=0)
    skew = r["measures"]["k_skewness"]
    shown = "undefined" if skew is None or not np.isfinite(skew) else f"{skew:.2f}"
    ax.set_title(
        f"{Path(r['gallery']).name}: k-skewness {shown}; flagged items are the top-1 of "
        f"{r['top1_flagged_share']:.0%} of queries",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_audit(args, prepared: command.PreparedAudit) -> int:
    """Runs ``hubjax audit`` with parsed ``args`` and the checked files; the exit status."""
    failed = False
    written = prepared.plot
    try:
        use_compilation_cache()
        result = audit(args, prepared.queries, prepared.gallery)
    except UsageError as err:
        print(f"hubjax audit: error: {err}", file=sys.stderr)
        return 2
    if written is not None:
        written, failed = save_plot(audit_figure, result, written, "audit")
    return report_out(args, result, format_audit, written, failed)
