"""Measured exponents, per role: is each role's scaling in scaling.md's table what the data want?

For one role at a time, sweep that role's constant ``c`` (its lr multiplier, or its init
multiplier) over a grid of ``log2 c`` at >= 3 widths, the base lr and every other constant held
at the config's (tuned) values. If the table's exponent for the role is right, the best
``c*`` does not move with width; if the data want exponent ``e_table + s``, then
``log2 c*(w) = a + s log2 w``. So the measured exponent is ``e_table + s``, with ``s`` the
slope of the per-width optima fitted exactly as the lr drift is
(:func:`mutransfer.projection.drift`: quadratic optimum per width, bootstrap interval).

    >>> df = role_runs(cfg, widths=[32, 64, 128], roles=["hidden"], log2_mults=[-2, -1, 0, 1, 2])
    >>> exponent_table(df, optimizer="adamw")
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from mutransfer.runs import ExperimentConfig, load_config
from mutransfer.core import Role

KINDS = ("lr", "init")
ROLES = ("input", "hidden", "output", "vector")
COLUMNS = ("kind", "role", "width", "log2_mult", "seed", "loss", "diverged")


def table_exponent(kind: str, role: str, optimizer: str, readout_exponent: float = -1.0,
                   scheme: str = "mup", *, muon_scale: str = "spectral", dense_input: bool = False) -> float:
    """scaling.md section 3's exponent of ``m`` for ``role``'s lr or init; 0 under sp.

    lr: ``rule.lr_exponent[role] + rule.scale_lr_exponent[muon_scale]`` of the record that
    updates the role (:func:`mutransfer.core.optimizer_rule`; for Muon its matrices, the rest on
    its AdamW side), as :func:`mutransfer.core.multipliers` does: Muon's hidden matrices keep the
    base lr, times ``m^-1/2`` under the moonlight rule for a hidden matrix and ``m^0`` for a dense
    input one (its step must grow like sqrt(fan_out/fan_in); ``m_max`` grows like ``m``). The input
    role is an embedding (AdamW's under Muon) unless ``dense_input``. init: ``INIT_EXPONENT``,
    the readout's ``readout_exponent``.

        >>> table_exponent("lr", "hidden", "adamw")
        -1.0
        >>> table_exponent("lr", "hidden", "muon", muon_scale="moonlight")
        -0.5
    """
    from mutransfer.core import INIT_EXPONENT, optimizer_rule

    r = Role(role)
    if scheme == "sp":
        return 0.0
    if kind == "init":
        return readout_exponent if r is Role.OUTPUT else INIT_EXPONENT[r]
    rule = optimizer_rule(optimizer)
    is_embedding = r is Role.INPUT and not dense_input
    ndim = 1 if r is Role.VECTOR else 2
    update = rule if rule.takes(r, ndim, is_embedding) else optimizer_rule(rule.side)
    return update.lr_exponent[r] + sum(update.scale_lr_exponents(r, muon_scale))  # m_max ~ m


def role_runs(config: ExperimentConfig | str | Path, *, widths: Sequence[int], roles: Sequence[str],
              log2_mults: Sequence[float], kind: str = "lr", seeds: int = 1, device: str = "auto",
              cache: str | Path | None = None, show: bool = True) -> pd.DataFrame:
    """Train every (role, width, log2 c, seed) point not yet in ``cache`` (a CSV appended to
    after each run, so an interrupted sweep resumes); return the rows the grid asks for.

    Each run is :func:`mutransfer.tuning.run_trial` with ``<kind>_<role> = c x`` the
    config's value of that constant and ``lr = [train] lr``. A diverged run has loss NaN.

        >>> df = role_runs("sweeps/gpt-cpu.toml", widths=[32, 64, 128], roles=["output"], log2_mults=[-2, 0, 2])
    """
    from tqdm.auto import tqdm

    from mutransfer.runs import config_constants
    from mutransfer.runs import run_trial

    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    _check(kind, roles, widths, log2_mults, seeds)
    cfg = cfg.override({"train.eval_every": cfg.train.steps})
    done = pd.read_csv(cache) if cache is not None and Path(cache).is_file() else pd.DataFrame(columns=COLUMNS)
    have = {_key(r) for r in done.to_dict("records")}
    base = config_constants(cfg)
    points = [(kind, r, int(w), float(x), s) for r in roles for w in widths for x in log2_mults
              for s in range(seeds)]
    todo = [p for p in points if _key(dict(zip(COLUMNS, p))) not in have]
    for k, role, width, x, seed in tqdm(todo, desc=f"{kind} exponents", unit="run", disable=not show):
        name = f"{k}_{role}"
        res = run_trial(cfg, {name: base[name] * 2.0 ** x}, width=width, device=device, seed=seed)
        loss = float(res.final_loss) if not res.diverged and math.isfinite(res.final_loss) else math.nan
        row = pd.DataFrame([dict(zip(COLUMNS, (k, role, width, x, seed, loss, bool(res.diverged))))])
        done = pd.concat([done, row], ignore_index=True) if len(done) else row
        if cache is not None:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            done.to_csv(cache, index=False)
    wanted = {_key(dict(zip(COLUMNS, p))) for p in points}
    return done[[(_key(r) in wanted) for r in done.to_dict("records")]].reset_index(drop=True)


def _key(row: dict) -> tuple:
    return (row["kind"], row["role"], int(row["width"]), round(float(row["log2_mult"]), 6), int(row["seed"]))


def _check(kind, roles, widths, log2_mults, seeds) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise ValueError(f"roles must be among {', '.join(ROLES)}; got {list(roles)!r}")
    if len(set(widths)) < 3:
        raise ValueError(f"an exponent needs >= 3 widths (a slope with an interval); got {list(widths)!r}")
    if len(set(log2_mults)) < 3:
        raise ValueError(f"each optimum needs >= 3 multipliers around it; got {list(log2_mults)!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive int; got {seeds!r}")


def exponent_table(df: pd.DataFrame, *, optimizer: str, readout_exponent: float = -1.0,
                   scheme: str = "mup", seed: int = 0, muon_scale: str = "spectral") -> pd.DataFrame:
    """One row per (kind, role): the table's exponent, the slope of ``log2 c*`` against
    ``log2 width`` with its 95% bootstrap interval, the measured exponent
    ``e_table + slope`` and whether the interval holds 0 (the table agrees with the data);
    ``e_table`` from :func:`table_exponent` (``muon_scale`` picks Muon's rule).

        >>> exponent_table(df, optimizer="adamw")[["role", "table", "measured", "agrees"]]
    """
    from mutransfer.validation._landscape import drift, eta_stars

    rows = []
    for (kind, role), g in df.groupby(["kind", "role"], sort=False):
        frame = _as_landscape(g)
        slope, lo, hi = drift(frame, seed=seed)
        etas = eta_stars(frame, seed=seed)
        e = table_exponent(kind, role, optimizer, readout_exponent, scheme, muon_scale=muon_scale)
        rows.append({"kind": kind, "role": role, "table": e, "slope": slope, "slope_lo": lo,
                     "slope_hi": hi, "measured": e + slope, "measured_lo": e + lo, "measured_hi": e + hi,
                     "agrees": bool(lo <= 0.0 <= hi) if math.isfinite(lo) else False,
                     "optima": ", ".join(f"{int(w)}: {v:+.2f}" for w, v in zip(etas["width"], etas["log2_eta"]))})
    return pd.DataFrame(rows)


def _as_landscape(g: pd.DataFrame) -> pd.DataFrame:
    """The runs in the columns :mod:`mutransfer.projection._landscape` fits (log2 c in the log2_lr slot)."""
    return pd.DataFrame({"scheme": g["role"], "optimizer": g["kind"], "width": g["width"].astype(int),
                         "log2_lr": g["log2_mult"].astype(float), "seed": g["seed"].astype(int),
                         "loss": g["loss"].astype(float), "diverged": g["diverged"].astype(bool)})


def write_exponents(df: pd.DataFrame, table: pd.DataFrame, folder: str | Path, command: str,
                    stem: str = "exponents") -> Path:
    """``<stem>.png`` (loss against log2 c per role, one line per width) and
    ``<stem>.md`` (the table and the command) in ``folder``.

        >>> write_exponents(df, exponent_table(df, optimizer="adamw"), "reports/x", "mutransfer exponents ...")
    """
    from mutransfer.validation._fig_landscape import plot_role_landscapes
    from mutransfer.validation._markdown import markdown_table, write_markdown

    folder = Path(folder)
    plot_role_landscapes(df, folder / f"{stem}.png")
    shown = pd.DataFrame({
        "kind": table["kind"], "role": table["role"], "table exponent": table["table"].map("{:+.2f}".format),
        "slope of log2 c* per doubling [95% CI]": [f"{s:+.2f} [{lo:+.2f}, {hi:+.2f}]" for s, lo, hi in
                                                 zip(table["slope"], table["slope_lo"], table["slope_hi"])],
        "measured exponent": table["measured"].map("{:+.2f}".format),
        "table agrees": table["agrees"].map({True: "yes", False: "no"}),
        "log2 c* per width": table["optima"]})
    text = [*markdown_table(shown), "", f"![exponents]({stem}.png)", "",
            "Each row sweeps one role's constant c (lr or init multiplier, relative to the config's) "
            "with everything else fixed; the slope of the optimum log2 c* against log2 width is what "
            "the table's exponent is off by. 'table agrees' means the 95% interval of the slope holds 0."]
    return write_markdown(folder / f"{stem}.md", "Measured exponents per role", command, text)


__all__ = ["KINDS", "ROLES", "exponent_table", "role_runs", "table_exponent", "write_exponents"]
