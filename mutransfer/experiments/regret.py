"""Regret at 8x (reports/regret/index.md): the default (spectral) with AdamW and with Muon on three
model families, the lr transferred from width 32 to width 256 (and GPT-2 from 64 to 512), trained
there with 2 seeds and judged against the target's own best lr (its landscape's best seed-mean grid
loss, 2 seeds).

Each case reads the proxy's landscape from a committed ``mutransfer validate`` report
(``reports/<name>/validate.csv``, the runs at the case's proxy width), transfers it with
:func:`mutransfer.transfer` (the recommended lr, risk-aware, and the plain eta*), trains the
target at each of those lrs, and takes the target's best from the same report's landscape at the
target width:

    regret = (mean target loss at the transferred lr - best seed-mean loss at the target) / best

    python -m mutransfer.experiments.regret run     # the target runs (resumable CSV)
    python -m mutransfer.experiments.regret write   # regret.csv, then index.md

It reads the cases' sweeps files from ``--config`` (a folder, default ``sweeps``) and their
landscapes from ``--reports`` (default ``reports``), and writes to ``--out`` (default
``reports/regret``); the page is :func:`mutransfer.validation.write_regret_report`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mutransfer.experiments._cli import out_folder, parse

MODULE = "python -m mutransfer.experiments.regret"
SWEEPS, OUT = "sweeps", "reports/regret"  # resolved against the current directory
SEEDS = (0, 1)


@dataclass(frozen=True)
class Case:
    model: str
    optimizer: str
    config: str  # sweeps/<file>; its landscapes are in reports/<name>/validate.csv
    proxy: int = 32
    target: int = 256


CASES = (
    Case("zoo GPT", "adamw", "gpt-cpu-300.toml"),
    Case("zoo GPT", "muon", "gpt-cpu-300-muon-ratio.toml"),
    Case("GPT-2 (tied)", "adamw", "gpt2-cpu-300.toml"),
    Case("GPT-2 (tied)", "muon", "gpt2-cpu-300.toml"),
    Case("Llama", "adamw", "llama-cpu-300.toml"),
    Case("Llama", "muon", "llama-cpu-300.toml"),
    Case("GPT-2 (tied)", "adamw", "gpt2-cpu-300-512.toml", proxy=64, target=512),
)


def landscape(case: Case, reports: Path, sweeps: str | Path = SWEEPS) -> tuple[object, pd.DataFrame]:
    """(the case's config at its optimizer and spectral, the validate report's runs of it); the
    config is ``sweeps/<case.config>`` (an absolute ``case.config`` stays itself)."""
    from mutransfer.runs import load_config

    cfg = load_config(Path(sweeps) / case.config)
    cfg = cfg.override({"parametrization.scheme": "spectral", "parametrization.optimizer": case.optimizer})
    path = Path(reports) / cfg.name / "validate.csv"
    if not path.exists():
        raise ValueError(f"{case.model} + {case.optimizer}: no {path}; run the validate commands at the top "
                         f"of sweeps/{Path(case.config).name} first")
    df = pd.read_csv(path)
    df = df[(df.scheme == "spectral") & (df.optimizer == case.optimizer)]
    if not {case.proxy, case.target} <= set(df.width):
        raise ValueError(f"{case.model} + {case.optimizer}: the study lacks widths {case.proxy} and {case.target}; "
                         f"run the validate command in sweeps/{case.config} with --widths {case.proxy},...,{case.target}")
    return cfg, df


def transferred(cfg, df: pd.DataFrame, case: Case):
    """The TransferPlan from the proxy's landscape (every seed's runs are trials)."""
    from mutransfer.projection import transfer

    proxy = df[df.width == case.proxy]
    trials = pd.DataFrame({"width": case.proxy, "lr": proxy.lr, "batch_size": cfg.train.batch_size,
                           "loss": proxy.loss, "diverged": proxy.diverged, "scheme": "spectral",
                           "optimizer": cfg.parametrization.optimizer})
    return transfer(trials, case.target)


def target_curve(df: pd.DataFrame, target: int) -> pd.Series:
    """The target landscape's seed-mean loss per log2 lr (diverged runs left out)."""
    return df[(df.width == target) & ~df.diverged].groupby("log2_lr").loss.mean()


def target_best(df: pd.DataFrame, target: int) -> tuple[float, float]:
    """(log2 lr, seed-mean loss) of the target landscape's best grid point."""
    curve = target_curve(df, target)
    return float(curve.idxmin()), float(curve.min())


def why(curve: pd.Series, log2_lr: float) -> str:
    """Where the transferred lr sits against the target's landscape: the octaves to the target's
    best grid lr and how steeply the loss rises one grid step to that side of the best.

        >>> why(pd.Series({-8.0: 2.1, -7.0: 2.0, -6.0: 2.3}), -6.4)
        "the target's best grid lr lies 0.60 octave below; one step above its best the loss is 15.0% higher"
    """
    best = float(curve.idxmin())
    gap = best - log2_lr
    side = curve[curve.index > best] if gap < 0 else curve[curve.index < best]
    if side.empty:
        return f"the target's best grid lr lies {abs(gap):.2f} octave {'below' if gap < 0 else 'above'}, at the grid's edge"
    step = side.index[np.argmin(np.abs(side.index - best))]
    rise = 100 * (side[step] - curve.min()) / curve.min()
    return (f"the target's best grid lr lies {abs(gap):.2f} octave {'below' if gap < 0 else 'above'}; one step "
            f"{'above' if gap < 0 else 'below'} its best the loss is {rise:.1f}% higher")


def run(reports: Path, out: Path, sweeps: str | Path = SWEEPS) -> pd.DataFrame:
    """Train every case's target at the recommended lr and at eta* (each seed), resumably."""
    from mutransfer.experiments.batch_at_budget import resume
    from mutransfer.runs import run_trial

    todo = []
    for i, case in enumerate(CASES):
        try:
            cfg, df = landscape(case, reports, sweeps)
        except ValueError as err:
            print(f"skipped: {err}")
            continue
        plan = transferred(cfg, df, case)
        for which, lr in (("recommended", plan.lr), ("eta*", plan.eta_star)):
            for s in SEEDS:
                todo.append({"case": i, "which": which, "log2_lr": round(math.log2(lr), 6), "seed": s, "cfg": cfg,
                             "width": case.target})

    def one(case, which, log2_lr, seed, cfg, width):
        res = run_trial(cfg, {"lr": 2.0 ** log2_lr}, width=width, device="cpu", seed=seed)
        return {"case": case, "which": which, "log2_lr": log2_lr, "seed": seed, "loss": res.final_loss,
                "diverged": res.diverged}

    return resume(out, ("case", "log2_lr", "seed"), todo, one, "targets")


def table(reports: Path, runs: pd.DataFrame, sweeps: str | Path = SWEEPS) -> pd.DataFrame:
    """One row per case with target runs: the transferred lrs, the target's best, the losses at
    the lrs and the regrets (the columns of ``mutransfer.validation.REGRET_COLUMNS``)."""
    rows = []
    for i, case in enumerate(CASES):
        mine = runs[runs.case == i]
        if mine.empty:
            continue
        cfg, df = landscape(case, reports, sweeps)
        plan = transferred(cfg, df, case)
        best_x, best = target_best(df, case.target)
        row = {"model": case.model, "optimizer": case.optimizer, "widths": f"{case.proxy} -> {case.target}",
               "lr": plan.lr, "eta_star": plan.eta_star, "best_log2_lr": best_x, "best_loss": best,
               "why": why(target_curve(df, case.target), math.log2(plan.lr))}
        for which in ("recommended", "eta*"):
            losses = mine[(mine.which == which) & np.isclose(mine.log2_lr, round(math.log2(plan.lr if which == "recommended" else plan.eta_star), 6))].loss
            row[f"loss_{which}"] = float(losses.mean()) if len(losses) else math.nan
            row[f"regret_{which}"] = 100 * (row[f"loss_{which}"] - best) / best
        rows.append(row)
    return pd.DataFrame(rows)


def store(reports: Path, out: Path, sweeps: str | Path = SWEEPS) -> Path:
    """``out/regret.csv``: :func:`table` of the stored target runs ``out/targets.csv``."""
    targets = out / "targets.csv"
    if not targets.is_file():
        raise ValueError(f"no {targets}: run `{MODULE} run` first")
    path = out / "regret.csv"
    table(reports, pd.read_csv(targets), sweeps).to_csv(path, index=False)
    return path


def main(argv=None) -> int:
    from mutransfer.validation import write_regret_report

    args = parse(MODULE.removeprefix("python -m "), __doc__, ("run", "write"), argv, config=SWEEPS, out=OUT)
    reports, out = Path(args.reports), out_folder(args)
    if args.what == "run":
        run(reports, out / "targets.csv", args.config)
    store(reports, out, args.config)
    print(f"wrote {write_regret_report(out, command=MODULE)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
