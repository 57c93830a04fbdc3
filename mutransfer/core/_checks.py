"""Argument checks shared by every stage: a choice among names, and the columns of a tidy
DataFrame (one row per observation). Each raises with the bad value and the fix."""
from __future__ import annotations

from collections.abc import Sequence


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError naming the options."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {choices}; got {value!r}")
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(choices)}")
    return value


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
