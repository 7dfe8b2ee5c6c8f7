"""Command line: ``hubjax demo ...`` (the default) and ``hubjax analyze PATH ...``.

``hubjax`` alone runs the demo; ``hubjax --help`` lists the commands, ``hubjax --version``
prints the version. Bad option values are reported in one line on stderr (exit status 2).
"""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, not a usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from hubjax import __version__, cli

    parser = _Parser(
        prog="hubjax",
        description="Hubness of point sets: k-occurrence, hubness measures and reduction.",
    )
    parser.add_argument("--version", action="version", version=f"hubjax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="hubness as the dimension grows (generated data)")
    demo.add_argument("--n", type=int, default=2000, help="points per set (default 2000)")
    demo.add_argument("--k", type=int, default=10, help="neighbours (default 10)")
    demo.add_argument("--plot", metavar="FILE", help="also draw the histograms to FILE (.png)")
    cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    top_level = {"-h", "--help", "--version"}
    if not argv or (argv[0].startswith("-") and argv[0] not in top_level):
        argv = ["demo", *argv]  # `hubjax --n 500` is the demo with options
    args = build_parser().parse_args(argv)
    if args.command == "analyze":
        from hubjax import cli

        return cli.run(args)
    if args.command == "demo":
        from hubjax import demo as demo_module

        demo_module.run(n=args.n, k=args.k, plot_path=args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
