"""One module per `mutransfer` subcommand; each defines ``register(subparsers)`` and ``run(args)``."""

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it is None or its help already says what it is."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or "default" in text or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


CONFIG_HELP = "experiment file, e.g. sweeps/quickstart.toml"


def add_command(subparsers, name: str, *, help: str, description: str,
                config: bool = False) -> argparse.ArgumentParser:
    """Add subcommand ``name`` with the shared help formatter and, with ``config``, the
    experiment-file positional every config-driven command takes."""
    parser = subparsers.add_parser(name, help=help, description=description,
                                   formatter_class=HelpFormatter)
    if config:
        parser.add_argument("config", help=CONFIG_HELP)
    return parser


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``, as every training command spells it."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def add_reports(parser: argparse.ArgumentParser) -> None:
    """``--reports``: the folder every command reads and writes ``<name>/`` in."""
    parser.add_argument("--reports", default="reports", help="reports folder")
