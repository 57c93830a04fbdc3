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
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from mutransfer.experiments.batch_at_budget import direct_plan_of, load_frame, resume, train_once
from mutransfer.experiments._cli import parse
from mutransfer.runs import ExperimentConfig, load_config

CONFIG = Path(__file__).resolve().parents[2] / "sweeps" / "gpt-cpu-budgets.toml"
MODULE = "python -m mutransfer.experiments.batch_across_budgets"
SEEDS = (0, 1000)  # the proxy studies' sweep seeds
DIRECT_BATCHES, DIRECT_SEEDS, DIRECT_LRS_PER_BATCH = (2, 4, 8, 16, 32), (0, 1), 4
GOAL = 2.0  # projected B_opt within this factor of the measured one


def proxy_frame(cfg: ExperimentConfig, reports: Path) -> pd.DataFrame:
    names = [f"{cfg.name}-w{cfg.sweep.width}" + ("" if s == cfg.sweep.seed else f"-s{s}") for s in SEEDS]
    return load_frame(cfg, names, reports)


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


def _plan(frame: pd.DataFrame, width: int, tokens: int, batch="auto"):
    from mutransfer.projection import transfer

    return transfer(frame[~frame.diverged.astype(bool)], width, tokens=tokens, target_batch=batch)


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
    return bool(np.isfinite(ratio) and 1 / GOAL <= ratio <= GOAL)


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
                    "off by": f"{p / m:.2f}x", "goal": f"within {GOAL:g}x", "met": "yes" if _met(p / m) else "**no**"})
    for what, value, ci in (("B_opt ~ D^p, projected from 3 proxy budgets", plan.compute_optimal_batch,
                             plan.compute_optimal_batch_interval),
                            ("critical batch (B_noise at the target's predicted loss)", plan.critical_batch,
                             plan.critical_batch_interval)):
        if value is None:
            continue
        out.append({"route": what, "projected": f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]",
                    "measured at the target": f"{m:.1f} [{lo:.1f}, {hi:.1f}]",
                    "off by": f"{value / m:.2f}x", "goal": f"within {GOAL:g}x",
                    "met": "yes" if _met(value / m) else "**no**"})
    return out


def plot(plan, budgets: pd.DataFrame, direct: dict, tokens: int, path: Path, proxy: dict | None = None) -> Path:
    from mutransfer.validation.style import pyplot, save, style_axes

    plt = pyplot()
    with plt.style.context("default"):
        fig, ax = plt.subplots(figsize=(8.6, 4.0), layout="constrained")
        d = budgets["budget"].to_numpy(float)
        y = budgets["b_opt"].to_numpy(float)
        err = np.vstack([y - budgets["b_opt_low"].to_numpy(float), budgets["b_opt_high"].to_numpy(float) - y])
        ax.errorbar(d, y, yerr=np.abs(err), fmt="o", color="C0", capsize=3, label="B_opt measured (proxies)")
        ax.plot(d, budgets["critical_batch"], "x", color="C2", ms=7, label="critical batch (B_noise at the loss)")
        grid = np.geomspace(d.min() / 1.5, tokens * 1.5, 50)
        b = plan.compute_optimal_batch * (grid / tokens) ** plan.budget_exponent
        ax.plot(grid, b, "-", color="C0", lw=1, label=f"B_opt ~ D^{plan.budget_exponent:.2f}")
        m, (lo, hi) = direct["compute_optimal_batch"], direct["compute_optimal_batch_interval"]
        ax.errorbar([tokens], [m], yerr=[[m - lo], [hi - m]], fmt="s", color="C3", capsize=3, ms=8,
                    label="B_opt measured at the target")
        ax.plot([tokens], [plan.compute_optimal_batch], "*", color="C0", ms=13, label="projected to the target")
        if proxy is not None:
            p, (lo, hi) = proxy["compute_optimal_batch"], proxy["compute_optimal_batch_interval"]
            ax.errorbar([tokens * 1.06], [p], yerr=[[p - lo], [hi - p]], fmt="o", mfc="none", color="C0",
                        capsize=3, label="B_opt measured on the proxy at the target's budget")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("token budget D", fontsize=8)
        ax.set_ylabel("batch (sequences)", fontsize=8)
        style_axes(ax)
        ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
        return save(fig, path)


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


def write(cfg: ExperimentConfig, out: Path, reports: Path) -> Path:
    """index.md (+ budgets.png, budgets.csv) from the proxy studies and the direct runs."""
    from mutransfer.validation import markdown_table

    frame = proxy_frame(cfg, reports)
    tokens = int(cfg.train.tokens)
    plan = _plan(frame, cfg.model.width, tokens)
    budgets = per_budget(frame)
    budgets.to_csv(out / "budgets.csv", index=False)
    runs = pd.read_csv(out / "direct.csv")
    direct = direct_plan_of(runs, cfg.model.width)
    at_budget = pd.read_csv(out / "direct-proxy.csv") if (out / "direct-proxy.csv").exists() else None
    proxy = None if at_budget is None else direct_plan_of(at_budget, cfg.sweep.width)
    plot(plan, budgets, direct, tokens, out / "budgets.png", proxy)
    shown = pd.DataFrame({
        "budget (tokens)": budgets["budget"],
        "B_opt measured": [f"{v:.1f} [{a:.1f}, {b:.1f}]" for v, a, b in zip(budgets.b_opt, budgets.b_opt_low, budgets.b_opt_high)],
        "critical batch": [f"{v:.0f} ({r:.2f}x)" for v, r in zip(budgets.critical_batch, budgets.critical_batch_ratio)],
        "B_opt(D) from the other budgets": [f"{v:.1f} ({r:.2f}x)" if np.isfinite(v) else "-"
                                            for v, r in zip(budgets.law_from_others, budgets.law_from_others_ratio)],
        "matched (within 2x)": [", ".join(n for n, r in (("critical", c), ("law", l)) if _met(r)) or "neither"
                                for c, l in zip(budgets.critical_batch_ratio, budgets.law_from_others_ratio)]})
    lo, hi = plan.budget_exponent_interval
    lines = [f"# Batch size across token budgets: {cfg.name}", "",
             "Regenerate (serially, on one machine):", "", "```",
             *[f"mutransfer sweep sweeps/{CONFIG.name} --seed {s}" for s in SEEDS],
             f"{MODULE} direct", f"{MODULE} write", "```", "",
             f"Zoo GPT (depth 2) on pycorpus, spectral + AdamW, every run spends its budget (steps = "
             f"tokens / (batch x {cfg.train.seq_len})). Proxies: width {cfg.sweep.width}, budgets "
             f"{', '.join(str(b) for b in budgets.budget)} tokens, batches {cfg.sweep.space['batch_size']} x "
             f"{len(cfg.sweep.space['lr'])} lrs, 2 seeds. Target: width {cfg.model.width} at {tokens} tokens, "
             f"batches {list(DIRECT_BATCHES)} x the {DIRECT_LRS_PER_BATCH} lrs nearest the proxies' eta* (widened "
             f"a grid step where a batch's best lay at the edge), "
             f"seeds {list(DIRECT_SEEDS)}. B_opt is the largest batch whose best-lr loss lies within the "
             f"noise of the lowest (bootstrap intervals).", "",
             f"Fitted on the proxies: B_opt ~ D^{plan.budget_exponent:.2f} (95% [{lo:.2f}, {hi:.2f}]).", "",
             "## At the target's budget", "", *markdown_table(pd.DataFrame(target_rows(plan, direct, proxy))), "",
             *([f"The proxy's row is a diagnosis, not a route: it measures width {cfg.sweep.width} at the "
                f"target's budget with the same batches, lrs and seeds as the target, so it separates the "
                f"error of the D-law's extrapolation (law against proxy) from B_opt's dependence on width "
                f"(proxy against target).", ""] if proxy else []),
             "![B_opt against the budget](budgets.png)", "",
             f"The direct runs at the target (seed-mean final loss over {len(DIRECT_SEEDS)} seeds; "
             "the best lr of each batch in bold):", "", *markdown_table(direct_table(runs)), "",
             *([f"The same at the proxy's width {cfg.sweep.width}, at the target's budget:", "",
                *markdown_table(direct_table(at_budget)), ""] if proxy else []),
             "## At each proxy budget: which route matched", "", *markdown_table(shown), "",
             "The critical batch is B_noise read at the loss the proxies reach at that budget; the law "
             "column fits B_opt ~ D^p on the other two budgets and reads it at this one.", "",
             "## The transfer plan's warnings", "", *[f"- {w}" for w in plan.warnings], ""]
    path = out / "index.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    args = parse(MODULE.removeprefix("python -m "), __doc__, ("direct", "write"), argv, config=CONFIG)
    cfg, reports = load_config(args.config), Path(args.reports)
    out = reports / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    if args.what == "direct":
        run_direct(cfg, out / "direct.csv", reports)
        run_direct(cfg, out / "direct-proxy.csv", reports, width=cfg.sweep.width)
    print(f"wrote {write(cfg, out, reports)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
