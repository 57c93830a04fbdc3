"""The command line every experiment module shares: ``python -m mutransfer.experiments.X WHAT``."""
from __future__ import annotations

import argparse
from pathlib import Path


def parse(module: str, doc: str, choices, argv=None, config: Path | None = None) -> argparse.Namespace:
    """``WHAT`` (one of ``choices``), ``--reports`` and, with ``config``, ``--config``.

        >>> parse("mutransfer.experiments.regret", __doc__, ("run", "write"), ["write"]).what
        'write'
    """
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=choices)
    parser.add_argument("--reports", default="reports", help="reports folder")
    if config is not None:
        parser.add_argument("--config", default=str(config), help="experiment file (default: %(default)s)")
    return parser.parse_args(argv)
