"""The command line's half that needs no JAX: ``analyze``'s options, their checks and the reader
of data files. ``hubjax --help``, a bad option and an unreadable file are answered from here
without importing JAX (about 2 s on a 2-core CPU); :mod:`hubjax.cli` does the computing.

Files: ``.npy``; ``.npz`` (the array named by ``--key``, or its only array); ``.csv`` and other
delimited text (UTF-8 with or without a byte-order mark). In text files the delimiter is
``--delimiter`` or detected among comma, semicolon, tab and spaces; numbers may be quoted; a
first line with text where the next line has numbers is a header naming the columns;
``--columns`` / ``--drop-columns`` keep or drop columns by header name or 1-based number (a
label column, an id); an empty or non-numeric cell is an error naming its line and the
delimiter, never a silently dropped row. Rows and columns are numbered from 1 in every message,
as lines are.
"""

from __future__ import annotations

import argparse
import csv
import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hubjax._src import names

# .npy files larger than this are streamed (hubjax.streaming) instead of loaded
STREAM_ABOVE = 1 << 30
# Delimiters that detection tries, in this order of preference.
_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", " ": "space"}


class UsageError(ValueError):
    """An input problem reported as one line on stderr (exit status 2)."""


def add_parser(sub) -> argparse.ArgumentParser:
    """Adds the ``analyze`` command to the subparsers ``sub``."""
    p = sub.add_parser(
        "analyze",
        help="hubness report of a .npy/.npz/.csv file",
        description="Hubness report of the points (rows) in a .npy, .npz or .csv file.",
    )
    p.add_argument("path", help="data file: rows are points, columns are features")
    p.add_argument("--k", type=int, default=10, help="neighbours per point (default 10)")
    p.add_argument("--metric", default="sqeuclidean", choices=names.METRICS)
    p.add_argument("--reduction", choices=names.REDUCTIONS, help="hubness reduction method")
    p.add_argument("--candidates", type=int, default=50, help="primary neighbours for --reduction")
    p.add_argument("--hub-size", type=float, default=2.0, help="hubs: O >= hub_size * k")
    p.add_argument("--key", help="array name inside a .npz file (needed if it holds several)")
    p.add_argument(
        "--delimiter",
        help="text files: the column delimiter (default: detected among , ; tab space); "
        "'\\t' or 'tab' for tabs, 'space' for runs of spaces",
    )
    p.add_argument(
        "--columns", help="text files: keep only these columns (header names or 1-based numbers)"
    )
    p.add_argument(
        "--drop-columns",
        help="text files: drop these columns, e.g. a label column (names or 1-based numbers)",
    )
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


# What matplotlib writes without extra packages.
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp")


class Prepared(NamedTuple):
    """What :func:`prepare` checked: the loaded points (None when streamed) and where the plot
    goes (None: no plot)."""

    data: np.ndarray | None
    plot: Path | None


def prepare(args) -> Prepared:
    """Everything ``analyze`` can check before computing, without JAX: the options, the plot
    path (an unwritable one fails now, not after the work) and the file itself.

    Raises:
      UsageError: naming the option, the path or the line at fault.
    """
    check_options(args)
    written = checked_plot(args.plot, args.path) if args.plot else None
    data = None if streams(args) else load_data(args)
    return Prepared(data, written)


def checked_plot(option: str, data_path: str, tag: str = "hubness") -> Path:
    """The file ``--plot option`` writes (:func:`plot_path`), checked to be writable now, not
    after the work."""
    written = plot_path(option, data_path, tag)
    if written.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(
            f"--plot {option}: unsupported image type {written.suffix!r}; use one of "
            f"{', '.join(PLOT_SUFFIXES)}"
        )
    folder = written.parent
    if not folder.is_dir():
        raise UsageError(f"--plot {option}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (written.exists() and not os.access(written, os.W_OK)):
        raise UsageError(f"--plot {option}: {written} is not writable")
    return written


def plot_path(path: str, data_path: str, tag: str = "hubness") -> Path:
    """Where ``--plot`` writes: a directory gets ``<data name>_<tag>.png`` inside it; a name
    without a suffix gets ``.png``."""
    p = Path(path)
    if p.is_dir():
        return p / f"{Path(data_path).stem}_{tag}.png"
    return p if p.suffix else p.with_suffix(".png")


def add_audit_parser(sub) -> argparse.ArgumentParser:
    """Adds the ``audit`` command (:func:`hubjax.retrieval.audit`) to the subparsers ``sub``."""
    p = sub.add_parser(
        "audit",
        help="hubs of a retrieval gallery under a set of queries",
        description="Which gallery items are retrieved for far more queries than the others: "
        "the gallery's k-occurrence under the queries' top-k (exact search by similarity), "
        "its hubness measures, and the items whose robust z-score exceeds --threshold.",
    )
    p.add_argument("queries", help="query embeddings (.npy, .npz or text; rows are points)")
    p.add_argument("gallery", help="gallery embeddings, the same number of features")
    p.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    p.add_argument(
        "--metric", default="cosine", choices=names.SIMILARITIES, help="similarity (default cosine)"
    )
    p.add_argument(
        "--threshold", type=float, default=3.5, help="flag items with robust z above (default 3.5)"
    )
    p.add_argument("--hub-size", type=float, default=2.0, help="hubs: O >= hub_size * k")
    p.add_argument("--top", type=int, default=10, help="number of flagged items to list")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("--plot", metavar="FILE", help="k-occurrence and robust z-scores (.png)")
    return p


class PreparedAudit(NamedTuple):
    """What :func:`prepare_audit` checked and loaded."""

    queries: np.ndarray
    gallery: np.ndarray
    plot: Path | None


def prepare_audit(args) -> PreparedAudit:
    """Every check ``audit`` can make without JAX: the options, the plot path, both files.

    Raises:
      UsageError: naming the option, the path or the line at fault.
    """
    for name, least in (("k", 1), ("top", 0)):
        if getattr(args, name) < least:
            raise UsageError(f"--{name} must be at least {least}")
    if not np.isfinite(args.threshold):
        raise UsageError(f"--threshold must be a finite number, got {args.threshold}")
    if not (np.isfinite(args.hub_size) and args.hub_size > 0):
        raise UsageError(f"--hub-size must be a positive finite number, got {args.hub_size}")
    written = checked_plot(args.plot, args.gallery, "audit") if args.plot else None
    queries, gallery = load(args.queries), load(args.gallery)
    if queries.shape[1] != gallery.shape[1]:
        raise UsageError(
            f"{args.queries} has {queries.shape[1]} features and {args.gallery} "
            f"{gallery.shape[1]}; they must match"
        )
    if args.k > gallery.shape[0]:
        raise UsageError(f"--k {args.k} is larger than the gallery's {gallery.shape[0]} items")
    return PreparedAudit(queries, gallery, written)


def check_options(args) -> None:
    """Every option on its own, before any work: one line naming the option and the value."""
    for name in ("k", "candidates", "top", "block_mb"):
        least = 0 if name == "top" else 1
        if getattr(args, name) < least:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {least}")
    if not (np.isfinite(args.hub_size) and args.hub_size > 0):
        raise UsageError(f"--hub-size must be a positive finite number, got {args.hub_size}")
    min_recall = getattr(args, "min_recall", None)
    if min_recall is not None and not 0 <= min_recall <= 1:
        raise UsageError(f"--min-recall must lie in [0, 1], got {min_recall}")
    text = Path(args.path).suffix.lower() not in (".npy", ".npz")
    for name in ("delimiter", "columns", "drop_columns"):
        if getattr(args, name, None) is not None and not text:
            raise UsageError(f"--{name.replace('_', '-')} applies to text files, not {args.path}")
    if getattr(args, "columns", None) and getattr(args, "drop_columns", None):
        raise UsageError("pass --columns or --drop-columns, not both")
    if getattr(args, "key", None) is not None and Path(args.path).suffix.lower() != ".npz":
        raise UsageError(f"--key names an array inside a .npz file, not in {args.path}")


def streams(args) -> bool:
    """Whether ``args.path`` is read in blocks (``--stream``, or a .npy file over
    :data:`STREAM_ABOVE`); refuses options that need the data in memory."""
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


def load_data(args) -> np.ndarray:
    """:func:`load` with the command's options."""
    return load(
        args.path,
        args.key,
        delimiter=args.delimiter,
        columns=args.columns,
        drop_columns=args.drop_columns,
    )


def load(
    path: str,
    key: str | None = None,
    *,
    delimiter: str | None = None,
    columns: str | None = None,
    drop_columns: str | None = None,
) -> np.ndarray:
    """Loads a rank-2 array ``[points, features]`` from ``.npy``, ``.npz`` or delimited text.

    Raises:
      UsageError: a missing or unreadable file, non-numeric or non-finite data, an ``.npz``
        with several arrays and no ``key`` (naming them), a bad delimiter or column choice.
    """
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
                found = list(archive.keys())
                if not found:
                    raise UsageError(f"{path} holds no arrays")
                if key is not None and key not in found:
                    raise UsageError(f"{path} has no array {key!r}; it has {found}")
                if key is None and len(found) > 1:
                    raise UsageError(f"{path} holds several arrays {found}; choose one with --key")
                data = archive[key or found[0]]
        elif suffix in (".csv", ".tsv", ".txt"):
            data = _load_text(p, delimiter, columns, drop_columns)
        else:
            raise UsageError(
                f"unsupported file type {suffix or '(none)'!r}; use .npy, .npz, .csv, .tsv or .txt"
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
        rows = np.flatnonzero(bad) + 1
        shown = ", ".join(map(str, rows[:5])) + (", ..." if rows.size > 5 else "")
        raise UsageError(
            f"{path} has non-finite values (NaN or inf) in {rows.size} row(s): {shown} "
            "(rows numbered from 1)"
        )
    return data


def _delimiter_option(value: str) -> str:
    named = {"tab": "\t", "\\t": "\t", "space": " ", "comma": ",", "semicolon": ";"}
    value = named.get(value.lower(), value)
    if len(value) != 1:
        raise UsageError(f"--delimiter must be one character, 'tab' or 'space', got {value!r}")
    return value


def _detect(lines: list[str]) -> str:
    """The delimiter that splits the first lines into the same number (> 1) of cells; a comma
    when none does (one column)."""
    sample = lines[:20]
    for delimiter in _DELIMITERS:
        widths = {len(_split(line, delimiter)) for line in sample}
        if len(widths) == 1 and widths.pop() > 1:
            return delimiter
    return ","


def _split(line: str, delimiter: str) -> list[str]:
    if delimiter == " ":  # runs of spaces (and tabs) are one delimiter
        return next(csv.reader([" ".join(line.split())], delimiter=" "))
    return [cell.strip() for cell in next(csv.reader([line], delimiter=delimiter))]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_header(cells: list[list[str]]) -> bool:
    """Whether the first row names the columns: it holds text where the next row holds a
    number (a label column is text in every row and decides nothing)."""
    first = cells[0]
    if len(cells) == 1:
        return any(v and not _is_number(v) for v in first)
    second = cells[1]
    return any(
        v and not _is_number(v) and (i >= len(second) or _is_number(second[i]))
        for i, v in enumerate(first)
    )


def _choose(spec: str, header: list[str] | None, width: int, option: str) -> list[int]:
    """0-based column numbers named by ``spec`` (comma-separated names or 1-based numbers)."""
    chosen = []
    for item in (s.strip() for s in spec.split(",")):
        if header is not None and item in header:
            chosen.append(header.index(item))
        elif item.isdigit() and 1 <= int(item) <= width:
            chosen.append(int(item) - 1)
        else:
            have = f"columns {header}" if header is not None else f"{width} columns (no header)"
            raise UsageError(f"{option}: no column {item!r}; the file has {have}")
    return chosen


def _load_text(p: Path, delimiter, columns, drop_columns) -> np.ndarray:
    numbered = [
        (number, line)
        for number, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), 1)
        if line.strip()
    ]
    if not numbered:
        raise UsageError(f"{p} is empty")
    lines = [line for _, line in numbered]
    delimiter = _detect(lines) if delimiter is None else _delimiter_option(delimiter)
    said = f"delimiter {_DELIMITERS.get(delimiter, repr(delimiter))}"
    cells = [_split(line, delimiter) for line in lines]
    header = None
    if _is_header(cells):
        header, cells, numbered = cells[0], cells[1:], numbered[1:]
        if not cells:
            raise UsageError(f"{p} has a header but no data")
    widths = {len(row) for row in cells}
    if len(widths) != 1:
        raise UsageError(
            f"{p}: rows have different numbers of columns {sorted(widths)} with the {said}; "
            "pass --delimiter if that is not the file's"
        )
    width = widths.pop()
    keep = list(range(width))
    if columns:
        keep = _choose(columns, header, width, "--columns")
    elif drop_columns:
        dropped = set(_choose(drop_columns, header, width, "--drop-columns"))
        keep = [c for c in keep if c not in dropped]
        if not keep:
            raise UsageError("--drop-columns leaves no column")
    rows = []
    for (number, _), row in zip(numbered, cells, strict=True):
        values = []
        for c in keep:
            v = row[c]
            if v == "":
                raise UsageError(f"{p}, line {number}, column {c + 1}: empty value ({said})")
            try:
                values.append(float(v))
            except ValueError:
                name = f" ({header[c]!r})" if header is not None else ""
                raise UsageError(
                    f"{p}, line {number}, column {c + 1}{name}: {v[:30]!r} is not a number "
                    f"({said}; drop a label column with --drop-columns {c + 1})"
                ) from None
        rows.append(values)
    return np.asarray(rows)
