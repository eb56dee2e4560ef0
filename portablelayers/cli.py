"""The `portablelayers` command (also `python -m portablelayers`)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portablelayers",
        description="Neural-network layers with explicit backward passes on any Array API "
                    "backend.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "demo",
        help="run the chapter-5 shopping examples (apples; apples and oranges)",
        description="Run the book's chapter-5 examples on MulLayer and AddLayer and print "
                    "their prices and gradients, exactly as the book's plain Python does.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main

        demo_main()
        return 0
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
