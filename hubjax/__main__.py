"""Command line: ``hubjax demo ...`` (the default) and ``hubjax analyze PATH ...``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("-"):
        argv = ["demo", *argv]
    parser = argparse.ArgumentParser(prog="hubjax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="hubness as the dimension grows (generated data)")
    demo.add_argument("--n", type=int, default=2000, help="points per set (default 2000)")
    demo.add_argument("--k", type=int, default=10, help="neighbours (default 10)")
    demo.add_argument("--plot", metavar="FILE", help="also draw the histograms to FILE (.png)")
    from hubjax import cli

    cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "analyze":
        return cli.run(args)
    if args.command == "demo":
        from hubjax import demo as demo_module

        demo_module.run(n=args.n, k=args.k, plot_path=args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
