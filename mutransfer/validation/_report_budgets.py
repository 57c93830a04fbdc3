"""The batch-across-budgets report (reports/gpt-cpu-budgets/index.md): B_opt measured on the
proxies at several budgets, the B_opt ~ D^p law projected to the target's budget, and both routes
(the law, the critical batch) against the direct runs stored in direct.csv and direct-proxy.csv."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from mutransfer.runs import load_config
from mutransfer.validation._fig_budget import plot_budgets
from mutransfer.validation._markdown import markdown_table, write_markdown
from mutransfer.validation._report_budget import direct_plan_of, load_trials, study_names

BUDGETS_COMMAND = "python -m mutransfer.experiments.batch_across_budgets"
BUDGETS_GOAL = 2.0  # projected B_opt within this factor of the measured one


def _plan(frame: pd.DataFrame, width: int, tokens: int, batch="auto"):
    from mutransfer.projection import transfer

    return transfer(frame[~frame.diverged.astype(bool)], width, tokens=tokens, target_batch=batch,
                    use_ladder=False)


def per_budget(frame: pd.DataFrame) -> pd.DataFrame:
    """At each proxy budget: the measured B_opt (with interval), the critical batch there (B_noise
    at the proxies' own loss), and the B_opt(D) law fitted on the other budgets, read there."""
    budgets = sorted(frame.budget.astype(float).unique())
    width = int(frame.width.max())
    rows = []
    for b in budgets:
        own = _plan(frame[frame.budget.astype(float) == b], width, int(b))
        others = frame[frame.budget.astype(float) != b]
        loo = _plan(others, width, int(b)) if others.budget.nunique() >= 2 else None
        rows.append({"budget": int(b), "b_opt": own.compute_optimal_batch,
                     "b_opt_low": own.compute_optimal_batch_interval[0],
                     "b_opt_high": own.compute_optimal_batch_interval[1],
                     "critical_batch": own.critical_batch,
                     "law_from_others": loo.compute_optimal_batch if loo else math.nan,
                     "best_loss": float(frame[(frame.budget.astype(float) == b) & ~frame.diverged.astype(bool)].loss.min())})
    df = pd.DataFrame(rows)
    for route in ("critical_batch", "law_from_others"):
        df[f"{route}_ratio"] = df[route] / df["b_opt"]
    return df


def _met(ratio: float) -> bool:
    return bool(np.isfinite(ratio) and 1 / BUDGETS_GOAL <= ratio <= BUDGETS_GOAL)


def target_rows(plan, direct: dict, proxy: dict | None = None) -> list[dict]:
    """Projected against measured at the target's budget: B_opt by the law, by the critical batch,
    and (``proxy``, measured on the proxy at that budget) by B_opt's independence of width."""
    m = direct["compute_optimal_batch"]
    lo, hi = direct["compute_optimal_batch_interval"]
    out = []
    if proxy is not None:
        p, (plo, phi) = proxy["compute_optimal_batch"], proxy["compute_optimal_batch_interval"]
        out.append({"route": f"the proxy (width {proxy['target_width']}) measured at this budget", "projected":
                    f"{p:.1f} [{plo:.1f}, {phi:.1f}]", "measured at the target": f"{m:.1f} [{lo:.1f}, {hi:.1f}]",
                    "off by": f"{p / m:.2f}x", "goal": f"within {BUDGETS_GOAL:g}x", "met": "yes" if _met(p / m) else "**no**"})
    for what, value, ci in (("B_opt ~ D^p, projected from 3 proxy budgets", plan.compute_optimal_batch,
                             plan.compute_optimal_batch_interval),
                            ("critical batch (B_noise at the target's predicted loss)", plan.critical_batch,
                             plan.critical_batch_interval)):
        if value is None:
            continue
        out.append({"route": what, "projected": f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]",
                    "measured at the target": f"{m:.1f} [{lo:.1f}, {hi:.1f}]",
                    "off by": f"{value / m:.2f}x", "goal": f"within {BUDGETS_GOAL:g}x",
                    "met": "yes" if _met(value / m) else "**no**"})
    return out


def direct_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The direct runs as batch x log2 lr: the seed-mean final loss ("diverged" where any seed
    diverged, "-" where not run), the best per batch in bold."""
    runs = runs.assign(diverged=runs.diverged.astype(bool))
    mean = runs.groupby(["batch_size", "log2_lr"]).loss.mean().unstack()
    bad = runs.groupby(["batch_size", "log2_lr"]).diverged.any().unstack(fill_value=False)
    best = mean.where(~bad).idxmin(axis=1)
    cells = {f"2^{x:g}": [("diverged" if bad.loc[b, x] else f"**{mean.loc[b, x]:.4f}**" if best[b] == x
                            else f"{mean.loc[b, x]:.4f}") if np.isfinite(mean.loc[b, x]) else "-"
                           for b in mean.index] for x in mean.columns}
    return pd.DataFrame({"batch": mean.index, **cells})


def write_budgets_report(folder: str | Path, config: str | Path, *, reports: str | Path | None = None,
                         seeds=(0, 1000), direct_seeds=(0, 1), direct_batches=(2, 4, 8, 16, 32),
                         direct_lrs_per_batch: int = 4, command: str = BUDGETS_COMMAND) -> Path:
    """``folder/index.md`` (+ budgets.png, budgets.csv) from the proxy studies (``seeds``, in
    ``<reports>/<name>/study.db``; ``reports`` default ``folder``'s parent) and the direct runs
    stored in ``folder/direct.csv`` (the target's width) and ``folder/direct-proxy.csv`` (the
    proxy's, optional). The law fitted on the proxies' budgets, B_opt ~ D^p, is read at the
    target's budget and judged against the direct runs: within 2x.

        >>> write_budgets_report("reports/gpt-cpu-budgets", "sweeps/gpt-cpu-budgets.toml")
        PosixPath('reports/gpt-cpu-budgets/index.md')
    """
    folder = Path(folder)
    reports = folder.parent if reports is None else Path(reports)
    cfg = load_config(config)
    if not (folder / "direct.csv").is_file():
        raise ValueError(f"no {folder / 'direct.csv'}: run `{command} direct` first")
    frame = load_trials(cfg, study_names(cfg, [cfg.sweep.width], seeds), reports)
    tokens = int(cfg.train.tokens)
    plan = _plan(frame, cfg.model.width, tokens)
    budgets = per_budget(frame)
    budgets.to_csv(folder / "budgets.csv", index=False)
    runs = pd.read_csv(folder / "direct.csv")
    direct = direct_plan_of(runs, cfg.model.width)
    at_budget = pd.read_csv(folder / "direct-proxy.csv") if (folder / "direct-proxy.csv").exists() else None
    proxy = None if at_budget is None else direct_plan_of(at_budget, cfg.sweep.width)
    plot_budgets(plan, budgets, direct, tokens, folder / "budgets.png", proxy)
    shown = _budget_rows(budgets)
    lo, hi = plan.budget_exponent_interval
    lines = ["Everything, serially on one machine:", "", "```",
             *[f"mutransfer sweep sweeps/{Path(config).name} --seed {s}" for s in seeds],
             f"{command} direct", f"{command} write", "```", "",
             f"Zoo GPT (depth 2) on pycorpus, spectral + AdamW, every run spends its budget (steps = "
             f"tokens / (batch x {cfg.train.seq_len})). Proxies: width {cfg.sweep.width}, budgets "
             f"{', '.join(str(b) for b in budgets.budget)} tokens, batches {cfg.sweep.space['batch_size']} x "
             f"{len(cfg.sweep.space['lr'])} lrs, 2 seeds. Target: width {cfg.model.width} at {tokens} tokens, "
             f"batches {list(direct_batches)} x the {direct_lrs_per_batch} lrs nearest the proxies' eta* (widened "
             f"a grid step where a batch's best lay at the edge), "
             f"seeds {list(direct_seeds)}. B_opt is the largest batch whose best-lr loss lies within the "
             f"noise of the lowest (bootstrap intervals).", "",
             f"Fitted on the proxies: B_opt ~ D^{plan.budget_exponent:.2f} (95% [{lo:.2f}, {hi:.2f}]).", "",
             "## At the target's budget", "", *markdown_table(pd.DataFrame(target_rows(plan, direct, proxy))), "",
             *([f"The proxy's row is a diagnosis, not a route: it measures width {cfg.sweep.width} at the "
                f"target's budget with the same batches, lrs and seeds as the target, so it separates the "
                f"error of the D-law's extrapolation (law against proxy) from B_opt's dependence on width "
                f"(proxy against target).", ""] if proxy else []),
             "![B_opt against the budget](budgets.png)", "",
             f"The direct runs at the target (seed-mean final loss over {len(direct_seeds)} seeds; "
             "the best lr of each batch in bold):", "", *markdown_table(direct_table(runs)), "",
             *([f"The same at the proxy's width {cfg.sweep.width}, at the target's budget:", "",
                *markdown_table(direct_table(at_budget)), ""] if proxy else []),
             "## At each proxy budget: which route matched", "", *markdown_table(shown), "",
             "The critical batch is B_noise read at the loss the proxies reach at that budget; the law "
             "column fits B_opt ~ D^p on the other two budgets and reads it at this one.", "",
             "## The transfer plan's warnings", "", *[f"- {w}" for w in plan.warnings], ""]
    return write_markdown(folder / "index.md", f"Batch size across token budgets: {cfg.name}",
                          f"{command} write", lines)


def _budget_rows(budgets: pd.DataFrame) -> pd.DataFrame:
    """The per-budget table as shown: B_opt with its interval, and each route's ratio to it."""
    return pd.DataFrame({
        "budget (tokens)": budgets["budget"],
        "B_opt measured": [f"{v:.1f} [{a:.1f}, {b:.1f}]" for v, a, b in zip(budgets.b_opt, budgets.b_opt_low, budgets.b_opt_high)],
        "critical batch": [f"{v:.0f} ({r:.2f}x)" for v, r in zip(budgets.critical_batch, budgets.critical_batch_ratio)],
        "B_opt(D) from the other budgets": [f"{v:.1f} ({r:.2f}x)" if np.isfinite(v) else "-"
                                            for v, r in zip(budgets.law_from_others, budgets.law_from_others_ratio)],
        "matched (within 2x)": [", ".join(n for n, r in (("critical", c), ("law", l)) if _met(r)) or "neither"
                                for c, l in zip(budgets.critical_batch_ratio, budgets.law_from_others_ratio)]})


