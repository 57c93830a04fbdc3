"""The ``mutransfer`` command: one file per verb (``register(subparsers)`` and ``run(args)``),
the shared option helpers in ``_common``.

May import every package of the library.

    $ mutransfer --help
"""
from mutransfer.cli._main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
