"""Markdown for the reports: GitHub tables from DataFrames, and small pages with their command."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd


def write_markdown(path: str | Path, title: str, command: str, lines: Sequence[str], *,
                   cost: str | None = None) -> Path:
    """A small report: ``# title``, the command that regenerates it (with what it ``cost``, e.g.
    ``"40 s on 2 cores"``, when given), then ``lines``.

        >>> write_markdown("reports/x/compare.md", "Compare", "mutransfer compare x.toml", ["text"])
    """
    path = Path(path)
    again = f"Regenerate ({cost}): `{command}`" if cost else f"Regenerate: `{command}`"
    path.write_text("\n".join([f"# {title}", "", again, "", *lines]) + "\n")
    return path


def markdown_table(df: pd.DataFrame) -> list[str]:
    """A GitHub markdown table of ``df``'s values as strings (no tabulate dependency)."""
    def cell(v) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).replace("|", "\\|")

    head = [str(c) for c in df.columns]
    rows = [[cell(v) for v in r] for r in df.itertuples(index=False)]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def read_stored(folder: str | Path, name: str, run: str):
    """The results an experiment stored in ``folder/name`` (JSON as a dict, CSV as a DataFrame),
    or a ValueError that names the file and ``run``, the command that stores them.

        >>> done = read_stored("reports/bare-table", "results.json", "python -m mutransfer.experiments.bare_table run")
    """
    import json

    path = Path(folder) / name
    if not path.is_file():
        raise ValueError(f"no {path}: run `{run}` first")
    return json.loads(path.read_text()) if path.suffix == ".json" else pd.read_csv(path)
