"""Batch size across token budgets (reports/gpt-cpu-budgets/index.md): the compute-optimal batch
B_opt measured on the proxies at 3 budgets D, 2D, 4D, fitted as a power law B_opt ~ D^p (Power
Lines, arXiv 2505.13738) and projected to the target at 8D, where it is measured directly with
2 seeds. At each proxy budget, the two routes to B_opt are checked against the measurement:
the critical batch (B_noise read at the loss reached) and the B_opt(D) law fitted on the other
two budgets.

The proxy sweeps are ``mutransfer sweep sweeps/gpt-cpu-budgets.toml --seed S`` (S = 0, 1000);
this module adds the direct runs at the target and the report:

    python -m mutransfer.experiments.batch_across_budgets direct   # widths 256 and 32 at 8D: 5 batches x 4+ lrs x 2 seeds
    python -m mutransfer.experiments.batch_across_budgets write    # index.md, budgets.png, budgets.csv

``--config`` (default ``sweeps/gpt-cpu-budgets.toml``) names the sweep file; the studies are read
from ``--reports`` and the runs written to ``--out`` (default ``<reports>/<name>``). The page is
:func:`mutransfer.validation.write_budgets_report`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mutransfer.experiments._cli import out_folder, parse
from mutransfer.experiments.batch_at_budget import resume, train_once
from mutransfer.runs import ExperimentConfig, load_config
from mutransfer.validation import load_trials, study_names

CONFIG = "sweeps/gpt-cpu-budgets.toml"  # resolved against the current directory
MODULE = "python -m mutransfer.experiments.batch_across_budgets"
SEEDS = (0, 1000)  # the proxy studies' sweep seeds
DIRECT_BATCHES, DIRECT_SEEDS, DIRECT_LRS_PER_BATCH = (2, 4, 8, 16, 32), (0, 1), 4


def proxy_frame(cfg: ExperimentConfig, reports: Path) -> pd.DataFrame:
    """Every trial of the proxy studies (width ``[sweep] width``, seeds :data:`SEEDS`)."""
    return load_trials(cfg, study_names(cfg, [cfg.sweep.width], SEEDS), reports)


def direct_lrs(frame: pd.DataFrame, batch: int, grid) -> list[float]:
    """The ``DIRECT_LRS_PER_BATCH`` grid lrs (log2) nearest the proxies' eta* at ``batch`` at their
    largest budget (spectral's eta* does not move with width)."""
    from mutransfer.experiments.batch_at_budget import proxy_eta

    top = frame[frame.budget.astype(float) == frame.budget.astype(float).max()]
    eta = proxy_eta(top, int(top.width.max()), batch)
    grid = np.log2(np.asarray(grid, float))
    return sorted(float(v) for v in grid[np.argsort(np.abs(grid - eta))[:DIRECT_LRS_PER_BATCH]])


def run_direct(cfg: ExperimentConfig, out: Path, reports: Path, width: int | None = None) -> pd.DataFrame:
    """``width`` (default the target's, ``[model] width``) at ``[train] tokens``: each of
    :data:`DIRECT_BATCHES` at the lrs nearest the proxies' eta*, seeds :data:`DIRECT_SEEDS`
    (resumable CSV), then widened one grid lr at a time on any batch whose best seed-mean lr sits at
    the edge of those tried."""
    frame, grid = proxy_frame(cfg, reports), cfg.sweep.space["lr"]
    width = cfg.model.width if width is None else width
    lrs = {b: direct_lrs(frame, b, grid) for b in DIRECT_BATCHES}
    while True:
        todo = [{"cfg": cfg, "width": width, "batch_size": b, "log2_lr": x, "seed": s}
                for b, xs in lrs.items() for x in xs for s in DIRECT_SEEDS]
        runs = resume(out, ("batch_size", "log2_lr", "seed"), todo, train_once, "direct")
        if not widen(runs, lrs, grid):
            return runs


def widen(runs: pd.DataFrame, lrs: dict[int, list[float]], grid) -> bool:
    """Add to ``lrs[b]`` the next grid lr (log2) beyond the best seed-mean lr of batch ``b`` where
    that best is the smallest or largest lr tried; True if any was added.

        >>> widen(runs, {2: [-7.0, -6.0]}, [2**-8, 2**-7, 2**-6])   # best at -7 -> adds -8
    """
    grid = sorted(float(v) for v in np.log2(np.asarray(grid, float)))
    added = False
    for b, xs in lrs.items():
        ok = runs[(runs.batch_size == b) & runs.log2_lr.isin(xs) & ~runs.diverged.astype(bool)]
        if ok.empty:
            continue
        best = float(ok.groupby("log2_lr").loss.mean().idxmin())
        lower = [g for g in grid if g < min(xs)] if best == min(xs) else []
        upper = [g for g in grid if g > max(xs)] if best == max(xs) else []
        for new in ([lower[-1]] if lower else []) + ([upper[0]] if upper else []):
            xs.append(new)
            xs.sort()
            added = True
    return added


def main(argv=None) -> int:
    from mutransfer.validation import write_budgets_report

    args = parse(MODULE.removeprefix("python -m "), __doc__, ("direct", "write"), argv, config=CONFIG)
    cfg, reports = load_config(args.config), Path(args.reports)
    out = out_folder(args, cfg.name)
    if args.what == "direct":
        run_direct(cfg, out / "direct.csv", reports)
        run_direct(cfg, out / "direct-proxy.csv", reports, width=cfg.sweep.width)
    path = write_budgets_report(out, args.config, reports=reports, seeds=SEEDS, direct_seeds=DIRECT_SEEDS,
                                direct_batches=DIRECT_BATCHES, direct_lrs_per_batch=DIRECT_LRS_PER_BATCH,
                                command=MODULE)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
