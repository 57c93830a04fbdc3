"""The regret report (reports/regret/index.md), written from its stored table ``regret.csv``."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from mutransfer.validation._markdown import markdown_table, read_stored, write_markdown

REGRET_GOAL = 1.0  # percent: a transferred lr within 1% of the target's best loss passes
REGRET_COMMAND = "python -m mutransfer.experiments.regret"
REGRET_COLUMNS = ("model", "optimizer", "widths", "lr", "eta_star", "best_log2_lr", "best_loss",
                  "loss_recommended", "regret_recommended", "regret_eta*", "why")


def write_regret_report(folder: str | Path, *, goal: float = REGRET_GOAL,
                        command: str = REGRET_COMMAND) -> Path:
    """``folder/index.md`` from ``folder/regret.csv`` (one row per case, :data:`REGRET_COLUMNS`):

        regret = (mean target loss at the transferred lr - best seed-mean loss at the target) / best

    ``goal`` (percent) marks each case met or not; ``command`` is the experiment named in the
    page's regenerate line.

        >>> write_regret_report("reports/regret")
        PosixPath('reports/regret/index.md')
    """
    folder = Path(folder)
    path = folder / "regret.csv"
    df = read_stored(folder, "regret.csv", f"{command} run")
    missing = [c for c in REGRET_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; rewrite it with `{command} write`")
    shown = pd.DataFrame({
        "model": df.model, "optimizer": df.optimizer, "widths": df.widths,
        "lr (recommended) / eta*": [f"2^{math.log2(a):.2f} / 2^{math.log2(b):.2f}" for a, b in zip(df.lr, df.eta_star)],
        "target's best grid lr": [f"2^{v:g}" for v in df.best_log2_lr],
        "target loss at the lr (2 seeds)": df.loss_recommended.map("{:.4f}".format),
        "target's best": df.best_loss.map("{:.4f}".format),
        "regret": [f"{v:.2f}%" for v in df.regret_recommended],
        f"<= {goal:g}%": ["yes" if v <= goal else "**no**" for v in df.regret_recommended],
        "regret at eta*": [f"{v:.2f}%" for v in df["regret_eta*"]],
        "where the transferred lr sits": df.why})
    lines = [f"then `{command} write`; the landscapes come from the validate commands at the top of each "
             "sweeps file (the widths in the table and between, 2 seeds).", "",
             "Regret = (the target's mean loss over 2 seeds at the lr transferred from the proxy - the "
             "target's best seed-mean grid loss) / that best. Every number is a training run at the "
             "target, none is interpolated. Muon runs with the AdamW groups at the Muon lr "
             "(adam_lr_ratio 1, the default).", "", *markdown_table(shown), ""]
    return write_markdown(folder / "index.md", "Regret at 8x, the default (spectral)", f"{command} run", lines)
