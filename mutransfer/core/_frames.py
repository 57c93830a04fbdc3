"""Checks shared by the functions that take tidy DataFrames (one row per observation)."""
from __future__ import annotations

from collections.abc import Sequence


def require_columns(df, needed: Sequence[str], what: str, source: str) -> None:
    """Raise unless ``df`` is a DataFrame with every column in ``needed``.

    The message names the function (``what``), the missing columns and where a right frame
    comes from (``source``).

        >>> require_columns(pd.DataFrame({"a": [1]}), ["a"], "f", "g()")
        >>> require_columns(pd.DataFrame(), ["a"], "f", "g()")  # ValueError: f: lacks ['a'] ...
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} needs a DataFrame from {source}; got {type(df).__name__}")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: the DataFrame lacks columns {missing}; pass {source} "
                         f"(columns {list(needed)})")
