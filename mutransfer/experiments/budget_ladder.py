"""The budget ladder against direct tuning at the target (issue 28, reports/budget-ladder/index.md).

The proxy sweeps a ladder of token budgets (``[sweep] budgets``; ``mutransfer sweep CONFIG --seed
S`` for S in :data:`SEEDS`); the target ([model] width at [train] tokens, >= 4x the proxy's width
and the ladder's largest budget) is then tuned directly on an lr x batch grid around the
projection, 2 seeds, beside two handed-over cells at their exact lr:

- ``projected``: the ladder's plan (:func:`mutransfer.transfer` on every rung, ``--target-tokens``);
- ``today``: the plan without the budget correction (the largest rung only: the best proxy
  trial's batch at its eta*, no lr or batch projection along the budget).

    python -m mutransfer.experiments.budget_ladder direct --config sweeps/gpt-cpu-ladder.toml
    python -m mutransfer.experiments.budget_ladder direct --config sweeps/llama-cpu-ladder.toml
    python -m mutransfer.experiments.budget_ladder write --configs sweeps/gpt-cpu-ladder.toml,sweeps/llama-cpu-ladder.toml

``direct`` writes ``<out>/<name>/`` (default ``--out reports/budget-ladder``): plan.json,
plan-today.json and direct.csv (resumable: a rerun skips the runs it holds). ``write`` is
:func:`mutransfer.validation.write_ladder_report`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from mutransfer.experiments._cli import family_configs, family_folder, families_parser, out_folder
from mutransfer.experiments.batch_across_budgets import widen
from mutransfer.experiments.batch_at_budget import resume, train_once
from mutransfer.runs import ExperimentConfig, count_params
from mutransfer.validation import load_trials, study_names

MODULE = "python -m mutransfer.experiments.budget_ladder"
OUT = "reports/budget-ladder"
SEEDS = (0, 1000)  # the proxy studies' sweep seeds
DIRECT_BATCHES, DIRECT_SEEDS, DIRECT_LRS = (2, 4, 8, 16), (0, 1), 3  # the grid at the target


def proxy_frame(cfg: ExperimentConfig, reports: Path) -> pd.DataFrame:
    """Every trial of the ladder's studies (width ``[sweep] width``, seeds :data:`SEEDS`)."""
    return load_trials(cfg, study_names(cfg, [cfg.sweep.width], SEEDS), reports)


def plans(cfg: ExperimentConfig, frame: pd.DataFrame):
    """(the ladder's plan, today's plan) at the target's width and budget."""
    from mutransfer.projection import transfer

    live = frame[~frame.diverged.astype(bool)]
    params = {"proxy_params": count_params(cfg, cfg.sweep.width, cfg.proxy_depth()),
              "target_params": count_params(cfg, cfg.model.width, cfg.model.depth)}
    ladder = transfer(live, cfg.model.width, tokens=cfg.train.tokens, **params)
    top = live[live.budget.astype(float) == live.budget.astype(float).max()]
    today = transfer(top, cfg.model.width, tokens=cfg.train.tokens)
    return ladder, today


def grid_lrs(plan, batch: int, grid) -> list[float]:
    """The :data:`DIRECT_LRS` grid lrs (log2) nearest the plan's eta* at ``batch`` (its menu)."""
    menu = pd.DataFrame(list(plan.batch_menu))
    row = menu[menu.batch == batch]
    centre = float(row.log2_lr.iloc[0]) if not row.empty else math.log2(plan.lr)
    grid = np.log2(np.asarray(grid, float))
    return sorted(float(v) for v in grid[np.argsort(np.abs(grid - centre), kind="stable")[:DIRECT_LRS]])


def run_direct(cfg: ExperimentConfig, out: Path, reports: Path) -> pd.DataFrame:
    """The plans (JSON) and the direct runs at the target (direct.csv), widened where a batch's
    best lr sits at the edge of those tried."""
    ladder, today = plans(cfg, proxy_frame(cfg, reports))
    (out / "plan.json").write_text(ladder.to_json())
    (out / "plan-today.json").write_text(today.to_json())
    width, grid = cfg.model.width, cfg.sweep.space["lr"]
    cells = [{"cfg": cfg, "width": width, "batch_size": p.batch_size, "log2_lr": math.log2(p.lr), "seed": s}
             for p in (ladder, today) for s in DIRECT_SEEDS]
    resume(out / "direct.csv", ("batch_size", "log2_lr", "seed"), cells, train_once, "handed-over cells")
    lrs = {b: grid_lrs(ladder, b, grid) for b in sorted(set(DIRECT_BATCHES) | {ladder.batch_size, today.batch_size})}
    while True:
        todo = [{"cfg": cfg, "width": width, "batch_size": b, "log2_lr": x, "seed": s}
                for b, xs in lrs.items() for x in xs for s in DIRECT_SEEDS]
        runs = resume(out / "direct.csv", ("batch_size", "log2_lr", "seed"), todo, train_once, "direct grid")
        if not widen(runs, lrs, grid):
            return runs


def main(argv=None) -> int:
    from mutransfer.validation import write_ladder_report

    p = families_parser(MODULE.removeprefix("python -m "), __doc__, ("direct", "write"), out=OUT,
                        what="sweep file with [sweep] budgets")
    args = p.parse_args(argv)
    if args.what == "direct":
        cfg, folder = family_folder(p, args)
        run_direct(cfg, folder, Path(args.reports))
        return 0
    path = write_ladder_report(out_folder(args), family_configs(p, args), reports=Path(args.reports), seeds=SEEDS,
                               command=MODULE)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
