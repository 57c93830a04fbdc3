"""The ``mutransfer`` command: one subcommand per module in ``mutransfer.cli``."""
from __future__ import annotations

import argparse
import importlib
import sys

from mutransfer._version import __version__

# Subcommand modules, in the order `mutransfer --help` lists them.
COMMANDS = ("quickstart", "data", "describe", "coord-check", "sweep", "transfer", "train", "validate", "compare",
            "exponents",
            "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mutransfer",
        description="Hyperparameter transfer (muP): parametrize a model, sweep a small proxy with "
                    "Optuna, transfer the optimum to the target width, and validate it.",
    )
    parser.add_argument("--version", action="version", version=f"mutransfer {__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mutransfer.cli.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"mutransfer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mutransfer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
