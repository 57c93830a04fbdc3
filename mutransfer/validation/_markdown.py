"""Markdown for the reports: GitHub tables from DataFrames, and small pages with their command."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd


def write_markdown(path: str | Path, title: str, command: str, lines: Sequence[str]) -> Path:
    """A small report: ``# title``, the command that regenerates it, then ``lines``.

        >>> write_markdown("reports/x/compare.md", "Compare", "mutransfer compare x.toml", ["text"])
    """
    path = Path(path)
    path.write_text("\n".join([f"# {title}", "", f"Regenerate: `{command}`", "", *lines]) + "\n")
    return path


def markdown_table(df: pd.DataFrame) -> list[str]:
    """A GitHub markdown table of ``df``'s values as strings (no tabulate dependency)."""
    def cell(v) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).replace("|", "\\|")

    head = [str(c) for c in df.columns]
    rows = [[cell(v) for v in r] for r in df.itertuples(index=False)]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
