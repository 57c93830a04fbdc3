"""A config dict written back as TOML: the resolved experiment a report and its commands read.

    >>> Path("config.toml").write_text(to_toml(cfg.to_dict()))
    >>> load_config("config.toml") == cfg
"""
from __future__ import annotations

import json


def to_toml(data: dict) -> str:
    """A config dict (``ExperimentConfig.to_dict()``) as TOML: scalars and inline tables/arrays;
    None values are left out (they are the defaults).

        >>> to_toml({"name": "x", "train": {"steps": 10, "betas": [0.9, 0.95]}})
        'name = "x"\\n\\n[train]\\nsteps = 10\\nbetas = [0.9, 0.95]\\n'
    """
    top = [f"{k} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict) and v is not None]
    tables = [f"\n[{k}]\n" + "".join(f"{kk} = {_value(vv)}\n" for kk, vv in v.items() if vv is not None)
              for k, v in data.items() if isinstance(v, dict)]
    return "\n".join(top) + "\n" + "".join(tables)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string uses the same escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items() if x is not None) + " }"
    raise TypeError(f"cannot write {v!r} ({type(v).__name__}) as TOML")
