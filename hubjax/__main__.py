"""Command line: ``hubjax analyze PATH ...``, ``hubjax audit QUERIES GALLERY ...`` and
``hubjax demo ...``.

``hubjax`` alone and ``hubjax --help`` print the usage, ``hubjax --version`` the version. The
parser, the option checks and the data-file reader need no JAX (:mod:`hubjax._src.command`), so
usage, bad options and unreadable files are answered at once; JAX is imported only to compute.
Bad option values are reported in one line on stderr (exit status 2).
"""

from __future__ import annotations

import argparse
import os
import sys

from hubjax import __version__
from hubjax._src import command


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, not a usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hubjax",
        description="Hubness of point sets: k-occurrence, hubness measures and reduction.",
        epilog="Run 'hubjax COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"hubjax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command.add_parser(sub)
    command.add_audit_parser(sub)
    demo = sub.add_parser(
        "demo",
        help="hubness as the dimension grows (generated data, about a minute)",
        description="k-occurrence skewness, largest hub and anti-hubs of Gaussian data as the "
        "dimension grows, averaged over several samples per dimension.",
    )
    demo.add_argument("--n", type=int, default=2000, help="points per set (default 2000)")
    demo.add_argument("--k", type=int, default=10, help="neighbours (default 10)")
    demo.add_argument("--samples", type=int, default=3, help="sets per dimension (default 3)")
    demo.add_argument(
        "--max-dim",
        type=int,
        default=1024,
        help="largest dimension, from 2 doubling (default 1024)",
    )
    demo.add_argument("--plot", metavar="FILE", help="also draw the curves to FILE (.png)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    # the commands that compute: (the checks and file reading without JAX, the runner)
    computing = {"analyze": (command.prepare, "run"), "audit": (command.prepare_audit, "run_audit")}
    if args.command in computing:
        prepare, runner = computing[args.command]
        try:
            prepared = prepare(args)
        except command.UsageError as err:
            print(f"hubjax {args.command}: error: {err}", file=sys.stderr)
            return 2
        # XLA:CPU logs an error line per tuning flag of the host each time it loads a program
        # from the compilation cache, although it was compiled on this very machine
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from hubjax import cli  # JAX is imported here, once the input is known to be good

        return getattr(cli, runner)(args, prepared)
    from hubjax import demo as demo_module

    dims = [d for d in demo_module.DIMENSIONS if d <= args.max_dim]
    if min(args.n, args.k, args.samples) < 1 or args.k >= args.n or not dims:
        print(
            "hubjax demo: error: --n, --k and --samples must be at least 1, --k below --n and "
            "--max-dim at least 2",
            file=sys.stderr,
        )
        return 2
    demo_module.run(n=args.n, k=args.k, plot_path=args.plot, samples=args.samples, dims=dims)
    return 0


if __name__ == "__main__":
    sys.exit(main())
