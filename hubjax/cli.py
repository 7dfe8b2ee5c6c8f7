"""``hubjax analyze PATH``: the hubness report of a data file, for people and for scripts.

Reads ``.npy``, ``.npz`` (the array named by ``--key``, or the only/first array) or ``.csv``
(comma-separated numbers, UTF-8 with or without a byte-order mark; a first line holding text is
a header and skipped; an empty cell is an error, never a silently dropped row). float64 data is
centred (Euclidean metrics) and, beyond float32's range, rescaled by a power of two in its own
precision before the float32 cast; neither changes any neighbour. Bad input -- a missing file,
an unreadable or truncated file, non-numeric or non-finite data, k too large, a bad option
value -- is reported as one line on stderr with exit status 2, never a traceback. ``--json``
is strict JSON (undefined measures are ``null``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hubjax import approximate, measures, reduction, streaming
from hubjax._src import float32
from hubjax._src import metric as _metric


class UsageError(ValueError):
    """An input problem reported as one line on stderr (a ValueError for library callers of
    :mod:`hubjax.streaming`, which shares the float32 preparation)."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "analyze",
        help="hubness report of a .npy/.npz/.csv file",
        description="Hubness report of the points (rows) in a .npy, .npz or .csv file.",
    )
    p.add_argument("path", help="data file: rows are points, columns are features")
    p.add_argument("--k", type=int, default=10, help="neighbours per point (default 10)")
    p.add_argument("--metric", default="sqeuclidean", choices=_metric.NAMES)
    p.add_argument("--reduction", choices=reduction.METHODS, help="hubness reduction method")
    p.add_argument("--candidates", type=int, default=50, help="primary neighbours for --reduction")
    p.add_argument("--hub-size", type=float, default=2.0, help="hubs: O >= hub_size * k")
    p.add_argument("--key", help="array name inside a .npz file")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("--plot", metavar="FILE", help="k-occurrence histogram and top hubs (.png)")
    p.add_argument("--top", type=int, default=10, help="number of top hubs to list")
    p.add_argument(
        "--stream",
        action="store_true",
        help=f"read a .npy file in blocks, never whole (automatic above {STREAM_ABOVE >> 30} GiB)",
    )
    p.add_argument(
        "--approximate",
        action="store_true",
        help="inverted-file index search (hubjax.approximate); reports its measured recall",
    )
    p.add_argument("--nlist", type=int, help="lists of the --approximate index")
    p.add_argument(
        "--nprobe", type=int, help="most lists a query probes with --approximate (default 8)"
    )
    p.add_argument(
        "--ratio",
        help="with --approximate: skip lists farther than 1 + RATIO times the nearest "
        "(squared distance to the centroids; default 0.15; 'none': always --nprobe lists)",
    )
    p.add_argument(
        "--min-recall",
        type=float,
        help="with --approximate: warn (stderr, and 'recall_ok': false in --json) below this",
    )
    p.add_argument(
        "--block-mb",
        type=int,
        default=64,
        help="rows held at once with --stream, in MiB of float32 (default 64)",
    )
    return p


# .npy files larger than this are streamed (hubjax.streaming) instead of loaded
STREAM_ABOVE = 1 << 30


def load(path: str, key: str | None = None) -> np.ndarray:
    """Loads a rank-2 float array from ``.npy``, ``.npz`` or ``.csv``; raises UsageError."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"no such file: {path}")
    if p.is_dir():
        raise UsageError(f"{path} is a directory, not a data file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as archive:
                names = list(archive.keys())
                if not names:
                    raise UsageError(f"{path} holds no arrays")
                if key is not None and key not in names:
                    raise UsageError(f"{path} has no array {key!r}; it has {names}")
                data = archive[key or names[0]]
        elif suffix == ".csv":
            data = _load_csv(p)
        else:
            raise UsageError(
                f"unsupported file type {suffix or '(none)'!r}; use .npy, .npz or .csv"
            )
    except UsageError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise UsageError(f"cannot read {path}: {err}".splitlines()[0]) from None
    if data.dtype.kind not in "biuf":
        raise UsageError(f"{path} is not numeric (dtype {data.dtype})")
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise UsageError(f"{path} must hold a 2-D array (points x features), got {data.shape}")
    if data.size == 0:
        raise UsageError(f"{path} holds no data (shape {data.shape})")
    bad = ~np.isfinite(data.astype(np.float64)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise UsageError(
            f"{path} has non-finite values (NaN or inf) in {rows.size} row(s), first row {rows[0]}"
        )
    return data


def _load_csv(p: Path) -> np.ndarray:
    # utf-8-sig: a byte-order mark (as spreadsheet programs write) is not part of the first cell
    lines = [ln for ln in p.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    if not lines:
        raise UsageError(f"{p} is empty")

    def parse(line, number):
        cells = [v.strip() for v in line.split(",")]
        if any(v == "" for v in cells):
            raise UsageError(f"{p}, line {number}: empty value in {line[:60]!r}")
        try:
            return [float(v) for v in cells]
        except ValueError:
            raise UsageError(f"{p}, line {number}: non-numeric value in {line[:60]!r}") from None

    def is_header(line):
        """A header names columns: some cell is text that is not a number."""
        for v in (v.strip() for v in line.split(",")):
            try:
                float(v)
            except ValueError:
                if v:
                    return True
        return False

    start = 1 if is_header(lines[0]) else 0
    rows = [parse(line, i + 1) for i, line in enumerate(lines) if i >= start]
    if not rows:
        raise UsageError(f"{p} has a header but no data")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise UsageError(f"{p}: rows have different numbers of columns {sorted(widths)}")
    return np.asarray(rows)


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


def analyze(args) -> dict:
    """Computes the report of ``args.path``; returns it as a JSON-ready dict."""
    if _streams(args):
        return _analyze_streamed(args)
    try:
        x = float32.to_float32(load(args.path, args.key), args.metric)
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
    settings = _ivf_settings(args)
    with Progress(f"k-NN and hubness of {n} points x {d} features"):
        try:
            # measures.hubness in its two steps, so that the recall check reuses the lists
            idx, num_points = measures.neighbour_lists(
                x,
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
            report = measures.report_of_lists(
                idx,
                num_points=num_points,
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
    if settings is not None:
        result["approximate"] = {
            "nlist": settings.lists(n),
            "nprobe": settings.probes(n),
            "ratio": settings.ratio,
            "recall_sampled": recall,
            "min_recall": args.min_recall,
            "recall_ok": None
            if args.min_recall is None or recall is None
            else bool(recall >= args.min_recall),
        }
        if result["approximate"]["recall_ok"] is False:
            print(
                f"hubjax analyze: warning: measured recall {recall:.3f} is below "
                f"--min-recall {args.min_recall}; raise --nprobe",
                file=sys.stderr,
            )
    return result


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


def _streams(args) -> bool:
    p = Path(args.path)
    big = p.suffix.lower() == ".npy" and p.is_file() and p.stat().st_size > STREAM_ABOVE
    if not (args.stream or big):
        return False
    if p.suffix.lower() != ".npy":
        raise UsageError("--stream reads .npy files only")
    if getattr(args, "approximate", False):
        raise UsageError("--approximate needs the data in memory; it cannot be used with --stream")
    if args.reduction is not None:
        raise UsageError("--reduction needs the data in memory; it cannot be used with --stream")
    return True


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
        "n_points": n,
        "n_features": d,
        "k": args.k,
        "metric": args.metric,
        "reduction": args.reduction,
        "candidates": args.candidates if args.reduction else None,
        "hub_size": args.hub_size,
        "measures": report.measures(),
        "max_k_occurrence": int(counts.max()),
        "n_hubs": int(np.sum(counts >= args.hub_size * args.k)),
        "n_antihubs": int(np.sum(counts == 0)),
        "top_hubs": [{"index": int(i), "k_occurrence": int(counts[i])} for i in top],
        "histogram": hist[: int(counts.max()) + 1].tolist(),
        "k_occurrence": counts.tolist(),
    }


def format_report(r: dict) -> str:
    red = f", reduction {r['reduction']} ({r['candidates']} candidates)" if r["reduction"] else ""
    lines = [
        f"{r['path']}: {r['n_points']} points x {r['n_features']} features",
        f"k = {r['k']}, metric {r['metric']}{red}",
    ]
    if r.get("approximate"):
        a = r["approximate"]
        rec = "n/a" if a["recall_sampled"] is None else f"{a['recall_sampled']:.3f}"
        lines.append(
            f"approximate (IVF, {a['nlist']} lists, up to {a['nprobe']} probed): recall@k {rec} "
            "on 1000 sampled queries"
        )
    lines += [
        "",
    ]
    lines += [f"  {name:<22} {value: .4f}" for name, value in r["measures"].items()]
    lines += [
        "",
        f"  hubs (O >= {r['hub_size'] * r['k']:g}): {r['n_hubs']}    "
        f"anti-hubs (O = 0): {r['n_antihubs']}    max O: {r['max_k_occurrence']}",
    ]
    if r["top_hubs"]:
        shown = ", ".join(f"#{h['index']} ({h['k_occurrence']})" for h in r["top_hubs"])
        lines.append(f"  top hubs: {shown}")
    return "\n".join(lines)


def plot(r: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = np.asarray(r["histogram"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    nonzero = np.flatnonzero(hist)
    ax1.bar(nonzero, hist[nonzero], width=1.0)
    ax1.set(yscale="log", xlabel=f"k-occurrence (k = {r['k']})", ylabel="points (log)")
    ax1.set_title("k-occurrence histogram")
    top = r["top_hubs"]
    ax2.bar([str(h["index"]) for h in top], [h["k_occurrence"] for h in top])
    ax2.set(xlabel="point index", ylabel="k-occurrence", title=f"top {len(top)} hubs")
    fig.suptitle(f"{Path(r['path']).name}: skewness {r['measures']['k_skewness']:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_path(path: str, data_path: str) -> Path:
    """Where ``--plot`` writes: a directory gets ``<data name>_hubness.png`` inside it; a name
    without a suffix gets ``.png``."""
    p = Path(path)
    if p.is_dir():
        return p / f"{Path(data_path).stem}_hubness.png"
    return p if p.suffix else p.with_suffix(".png")


def json_ready(value):
    """NaN/inf become null (JSON has no NaN; a bare ``NaN`` breaks strict parsers)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


def check_options(args) -> None:
    """Every numeric option, before any work: one line naming the option and the value."""
    for name in ("k", "candidates", "top", "block_mb"):
        least = 0 if name == "top" else 1
        if getattr(args, name) < least:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {least}")
    if not (np.isfinite(args.hub_size) and args.hub_size > 0):
        raise UsageError(f"--hub-size must be a positive finite number, got {args.hub_size}")
    min_recall = getattr(args, "min_recall", None)
    if min_recall is not None and not 0 <= min_recall <= 1:
        raise UsageError(f"--min-recall must lie in [0, 1], got {min_recall}")


def run(args) -> int:
    written = None
    try:
        check_options(args)
        result = analyze(args)
        if args.plot:
            written = plot_path(args.plot, args.path)
            try:
                plot(result, str(written))
            except ImportError:
                print(
                    "hubjax analyze: --plot needs matplotlib: pip install 'hubjax[plot]' "
                    "(report below, no plot written)",
                    file=sys.stderr,
                )
                written = None
            except (OSError, ValueError) as err:
                raise UsageError(f"cannot write plot {written}: {err}".splitlines()[0]) from None
    except UsageError as err:
        print(f"hubjax analyze: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(json_ready(result), allow_nan=False))
    else:
        print(format_report(result))
        if written is not None:
            print(f"plot written to {written}")
    return 0
