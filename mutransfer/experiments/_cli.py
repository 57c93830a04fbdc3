"""The command line every experiment module shares: ``python -m mutransfer.experiments.X WHAT``.

An experiment reads the paths it is given, never the repository's own folders: its config with
``--config`` and its output folder with ``--out``. The defaults are the repository-relative strings
(``sweeps/<file>.toml``, ``reports/<name>``), resolved against the current directory, so the
commands in reports/ work from a checkout and any other folder works from an installed wheel.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def parser(module: str, doc: str, choices, *, config: str | None = None,
           out: str | None = None) -> argparse.ArgumentParser:
    """``WHAT`` (one of ``choices``), ``--reports``, ``--out`` and, with ``config``, ``--config``.

    ``out`` is the default output folder; None means ``<--reports>/<the config's name>`` (see
    :func:`out_folder`). Add an experiment's own options to the parser it returns.

        >>> p = parser("mutransfer.experiments.regret", __doc__, ("run", "write"), out="reports/regret")
        >>> p.parse_args(["write", "--out", "/tmp/regret"]).out
        '/tmp/regret'
    """
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=choices)
    p.add_argument("--reports", default="reports",
                   help="folder of the reports and studies it reads (default: %(default)s)")
    if config is not None:
        p.add_argument("--config", default=config, help="experiment file (default: %(default)s)")
    p.add_argument("--out", default=out, help="folder it writes to (default: "
                   + (f"{out})" if out is not None else "<--reports>/<the config's name>)"))
    return p


def parse(module: str, doc: str, choices, argv=None, *, config: str | None = None,
          out: str | None = None) -> argparse.Namespace:
    """:func:`parser` with no options of the experiment's own, parsed.

        >>> parse("mutransfer.experiments.regret", __doc__, ("run", "write"), ["write"], out="reports/regret").what
        'write'
    """
    return parser(module, doc, choices, config=config, out=out).parse_args(argv)


def out_folder(args: argparse.Namespace, name: str | None = None) -> Path:
    """``--out``, or ``<--reports>/<name>`` where it was left out; created.

        >>> out_folder(argparse.Namespace(out=None, reports="reports"), "gpt-cpu-budget")
        PosixPath('reports/gpt-cpu-budget')
    """
    if args.out is None and name is None:
        raise ValueError("no output folder: pass --out FOLDER")
    folder = Path(args.out) if args.out is not None else Path(args.reports) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def families_parser(module: str, doc: str, choices: tuple[str, str], *, out: str, what: str) -> argparse.ArgumentParser:
    """:func:`parser` for an experiment over model families: ``choices[0]`` runs one family
    (``--config``), ``choices[1]`` writes the report over several (``--configs``, comma-separated).

        >>> p = families_parser("mutransfer.experiments.depth_auto", __doc__, ("run", "write"), out="reports/x",
        ...                     what="depth config")
    """
    p = parser(module, doc, choices, out=out)
    p.add_argument("--config", help=f"one family's {what} ({choices[0]})")
    p.add_argument("--configs", help=f"comma-separated {what}s, one per family ({choices[1]})")
    return p


def family_folder(p: argparse.ArgumentParser, args: argparse.Namespace):
    """(the --config's ExperimentConfig, ``<out>/<its name>/``, created); a parser error without --config."""
    from mutransfer.runs import load_config

    if not args.config:
        p.error(f"{args.what} needs --config (one family's experiment file)")
    cfg = load_config(args.config)
    folder = out_folder(args) / cfg.name
    folder.mkdir(parents=True, exist_ok=True)
    return cfg, folder


def family_configs(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The --configs paths; a parser error without them."""
    configs = [c.strip() for c in (args.configs or "").split(",") if c.strip()]
    if not configs:
        p.error(f"{args.what} needs --configs (the families' experiment files, comma-separated)")
    return configs
