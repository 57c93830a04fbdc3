"""The batch-size report at a token budget (reports/gpt-cpu-budget/): the projection from two proxy
widths against a direct batch x lr sweep at the target, and weight decay against the batch.

The sweeps are ordinary ``mutransfer sweep`` runs of ``sweeps/gpt-cpu-budget.toml`` (commands at
its top); this module adds what the CLI does not: the check of the projected compute-optimal batch
and eta* against the target's own measurement, the optimal weight decay at 3 batch sizes (does
lambda* eta* grow like B, as the AdamW timescale tau = B / (eta lambda D) says?), and the report.

    python -m mutransfer.experiments.batch_at_budget decay        # lambda x batch at the proxy width (CSV)
    python -m mutransfer.experiments.batch_at_budget muon-direct  # Muon at the target: 3 batches x the lrs
    python -m mutransfer.experiments.batch_at_budget write        # figures + index.md from studies, plans, CSV

``--config`` (default ``sweeps/gpt-cpu-budget.toml``) and ``--muon-config`` name the sweep files;
the studies are read from ``--reports`` and the CSVs written to ``--out`` (default
``<reports>/<name>``). The page is :func:`mutransfer.validation.write_budget_report`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from mutransfer.experiments._cli import out_folder, parser
from mutransfer.runs import ExperimentConfig, load_config
from mutransfer.validation import load_trials, study_names

CONFIG, MUON_CONFIG = "sweeps/gpt-cpu-budget.toml", "sweeps/gpt-cpu-budget-muon.toml"  # from the cwd
MODULE = "python -m mutransfer.experiments.batch_at_budget"
PROXY_WIDTHS, SEEDS, TARGET_WIDTH = (32, 64), (0, 1000), 256
DECAY_WIDTH, DECAY_BATCHES, DECAY_LOG2_WDS, DECAY_SEEDS = 32, (8, 32, 128), tuple(range(-5, 4)), (0, 1)
MUON_BATCHES = (4, 16, 64)


# ---------------------------------------------------------------------- weight decay x batch
def proxy_eta(frame: pd.DataFrame, width: int, batch: int) -> float:
    """log2 eta* of the budget sweep at (width, batch), seeds pooled (a quadratic fit)."""
    from mutransfer.projection import quadratic_optimum

    sub = frame[(frame.width == width) & (frame.batch_size == batch) & ~frame.diverged]
    if sub.empty:
        raise ValueError(f"no trials at width {width}, batch {batch}; sweep that width first")
    return float(quadratic_optimum(np.log2(sub.lr.to_numpy(float)), sub.loss.to_numpy(float)).log2_lr[0])


def resume(out: Path, keys: tuple[str, ...], todo: list[dict], run, desc: str) -> pd.DataFrame:
    """Run ``run(**item)`` -> row dict for each item of ``todo`` whose ``keys`` are not yet in the
    CSV ``out``; each row is written before the next run starts, so a rerun resumes."""
    from tqdm.auto import tqdm

    rows = pd.read_csv(out).to_dict("records") if out.exists() else []
    have = {tuple(float(r[k]) for k in keys) for r in rows}
    for item in tqdm([i for i in todo if tuple(float(i[k]) for k in keys) not in have], desc=desc, unit="run"):
        rows.append(run(**item))
        pd.DataFrame(rows).to_csv(out, index=False)
    return pd.DataFrame(rows)


def train_once(cfg: ExperimentConfig, width: int, batch_size: int, log2_lr: float, seed: int,
               log2_wd: float | None = None) -> dict:
    """One run at the budget (a trial outside any study): its final eval loss and settings."""
    from mutransfer.runs import run_trial

    params = {"lr": 2.0 ** log2_lr, "batch_size": int(batch_size)}
    if log2_wd is not None:
        params["weight_decay"] = 2.0 ** log2_wd
    res = run_trial(cfg, params, width=width, device="cpu", seed=int(seed))
    return {"width": width, "batch_size": int(batch_size), "log2_lr": float(log2_lr),
            "log2_wd": math.nan if log2_wd is None else float(log2_wd), "seed": int(seed),
            "steps": cfg.steps_for(int(batch_size)), "loss": res.final_loss, "diverged": res.diverged}


def run_decay(cfg: ExperimentConfig, out: Path, reports: Path) -> pd.DataFrame:
    """Final loss for each (batch, weight decay, seed) at the budget, lr = the sweep's eta*(B):
    batches :data:`DECAY_BATCHES`, log2 wd :data:`DECAY_LOG2_WDS`, at :data:`DECAY_WIDTH`."""
    width, batches, log2_wds, seeds = DECAY_WIDTH, DECAY_BATCHES, DECAY_LOG2_WDS, DECAY_SEEDS
    frame = load_trials(cfg, study_names(cfg, [width], SEEDS), reports)
    todo = [{"cfg": cfg, "width": width, "batch_size": b, "log2_lr": proxy_eta(frame, width, b),
             "seed": s, "log2_wd": float(w)} for b in batches for w in log2_wds for s in seeds]
    return resume(out, ("batch_size", "log2_wd", "seed"), todo, train_once, "decay")


def run_direct(cfg: ExperimentConfig, out: Path, seeds=(0,)) -> pd.DataFrame:
    """The direct check at :data:`TARGET_WIDTH`: every lr of ``[sweep.space] lr`` at each batch of
    :data:`MUON_BATCHES`."""
    width, batches = TARGET_WIDTH, MUON_BATCHES
    log2_lrs = [math.log2(v) for v in cfg.sweep.space["lr"]]
    todo = [{"cfg": cfg, "width": width, "batch_size": b, "log2_lr": x, "seed": s}
            for b in batches for x in log2_lrs for s in seeds]
    return resume(out, ("batch_size", "log2_lr", "seed"), todo, train_once, "direct")



def main(argv=None) -> int:
    from mutransfer.validation import write_budget_report

    p = parser(MODULE.removeprefix("python -m "), __doc__, ("decay", "muon-direct", "write"), config=CONFIG)
    p.add_argument("--muon-config", default=MUON_CONFIG, help="the Muon sweep file (default: %(default)s)")
    args = p.parse_args(argv)
    cfg, reports = load_config(args.config), Path(args.reports)
    out = out_folder(args, cfg.name)
    if args.what == "decay":
        run_decay(cfg, out / "decay.csv", reports)
    elif args.what == "muon-direct":
        run_direct(load_config(args.muon_config), out / "muon-direct.csv")
    else:
        print(write_budget_report(out, args.config, muon_config=args.muon_config, reports=reports,
                                  proxy_widths=PROXY_WIDTHS, seeds=SEEDS, target_width=TARGET_WIDTH,
                                  command=MODULE))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
