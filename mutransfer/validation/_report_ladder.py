"""The budget-ladder report (reports/budget-ladder/index.md): per model family, the ladder's plan
and today's plan (no budget correction) against a direct lr x batch grid at the target, the
batch menu's predicted costs against the measured ones, and the tuning compute of each route.

Read from ``<folder>/<name>/``: plan.json, plan-today.json and direct.csv, as
``python -m mutransfer.experiments.budget_ladder direct`` writes them.

    >>> write_ladder_report("reports/budget-ladder", ["sweeps/gpt-cpu-ladder.toml"])
    PosixPath('reports/budget-ladder/index.md')
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from mutransfer.runs import count_params, load_config, training_flops
from mutransfer.validation._markdown import markdown_table, write_markdown
from mutransfer.validation._report_budgets import direct_table
from mutransfer.validation.style import pyplot, save, style_axes

LADDER_COMMAND = "python -m mutransfer.experiments.budget_ladder"
GOAL_PCT = 1.0  # the projected (lr, batch) within 1% of the best direct cell


def cell_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean loss per (batch_size, log2_lr) over the cells every seed ran without diverging
    (a diverged seed makes the cell inf)."""
    runs = runs.assign(loss=np.where(runs.diverged.astype(bool), np.inf, runs.loss.astype(float)))
    g = runs.groupby(["batch_size", "log2_lr"])
    return g.loss.mean().rename("loss").reset_index().assign(seeds=g.seed.nunique().to_numpy())


def family_result(cfg, folder: Path) -> dict:
    """The regrets, the menu against the measurement and the compute of one family's folder."""
    from mutransfer.projection import TransferPlan

    for name in ("plan.json", "plan-today.json", "direct.csv"):
        if not (folder / name).is_file():
            raise ValueError(f"no {folder / name}: run `{LADDER_COMMAND} direct --config <{cfg.name}'s "
                             f"sweep file>` first")
    plan = TransferPlan.from_json((folder / "plan.json").read_text())
    today = TransferPlan.from_json((folder / "plan-today.json").read_text())
    runs = pd.read_csv(folder / "direct.csv")
    grid_lrs = np.round(np.log2(cfg.sweep.space["lr"]), 6)
    means = cell_means(runs)
    on_grid = means.log2_lr.round(6).isin(grid_lrs)
    grid = means[on_grid]
    best = grid.loc[grid.loss.idxmin()]
    grid_runs = runs[runs.log2_lr.round(6).isin(grid_lrs)]
    out = {"cfg": cfg, "plan": plan, "today": today, "runs": grid_runs, "grid": grid, "best": best,
           "ladder": _regret(means, grid, plan, float(best.loss)), "old": _regret(means, grid, today, float(best.loss)),
           "costs": _costs(plan, grid, float(best.loss))}
    off = means[~on_grid]
    out["cells"] = off.assign(regret_pct=100 * (off.loss - best.loss) / best.loss)
    out["target_run_flops"] = training_flops(count_params(cfg, cfg.model.width, cfg.model.depth), cfg.train.tokens)
    out["direct_flops"] = out["target_run_flops"] * len(grid_runs)
    out["seed_spread"] = _seed_spread(runs)
    return out


def _regret(means: pd.DataFrame, grid: pd.DataFrame, plan, best: float) -> dict:
    """The handed-over cell's loss and regret (%), split into the batch's share (the best grid cell
    at its batch against the best) and the lr's (the cell against that one)."""
    cell = means[(means.batch_size == plan.batch_size) & np.isclose(means.log2_lr, math.log2(plan.lr))]
    loss = float(cell.loss.iloc[0]) if not cell.empty else math.nan
    at_batch = grid[grid.batch_size == plan.batch_size]
    own = float(at_batch.loss.min()) if not at_batch.empty else math.nan
    return {"loss": loss, "regret": 100 * (loss - best) / best, "batch_pct": 100 * (own - best) / best,
            "lr_pct": 100 * (loss - own) / own}


def _costs(plan, grid: pd.DataFrame, best: float) -> pd.DataFrame:
    """Per directly measured batch: the menu's predicted cost (interval) and lr against the grid's
    best-lr loss there (cost in % over the best cell) and its lr."""
    menu = pd.DataFrame(list(plan.batch_menu)).set_index("batch")
    rows = []
    for b, sub in grid.groupby("batch_size"):
        top = sub.loc[sub.loss.idxmin()]
        row = {"batch": int(b), "measured_cost": 100 * (float(top.loss) - best) / best,
               "measured_log2_lr": float(top.log2_lr)}
        if b in menu.index:
            m = menu.loc[b]
            row.update(predicted_cost=float(m.cost_pct), cost_low=float(m.cost_low), cost_high=float(m.cost_high),
                       predicted_log2_lr=float(m.log2_lr))
        rows.append(row)
    return pd.DataFrame(rows)


def _seed_spread(runs: pd.DataFrame) -> float:
    """The median over cells of |seed 0 - seed 1| / mean, in % (the noise a regret is read against)."""
    live = runs[~runs.diverged.astype(bool)]
    g = live.groupby(["batch_size", "log2_lr"]).loss
    spread = (g.max() - g.min()) / g.mean()
    spread = spread[g.count() >= 2]
    return float(100 * spread.median()) if len(spread) else math.nan


def headline_rows(results: list[dict]) -> list[dict]:
    """One row per family: the ladder's and today's handed-over cells and their regret."""
    rows = []
    for r in results:
        cfg, p, t, best = r["cfg"], r["plan"], r["today"], r["best"]
        rows.append({"family": cfg.name, "proxy -> target": f"width {cfg.sweep.width} at {_rungs(p)} -> width "
                     f"{cfg.model.width} at {cfg.train.tokens}",
                     "ladder's plan (lr, batch)": f"2^{math.log2(p.lr):.2f}, {p.batch_size} ({p.batch_source})",
                     "regret": _pct(r["ladder"]["regret"]),
                     "of which batch / lr": f"{_pct(r['ladder']['batch_pct'])} / {_pct(r['ladder']['lr_pct'])}",
                     "today's plan (lr, batch)": f"2^{math.log2(t.lr):.2f}, {t.batch_size}",
                     "today's regret": _pct(r["old"]["regret"]),
                     "best direct cell": f"2^{best.log2_lr:g}, {int(best.batch_size)}: {best.loss:.4f}",
                     "seed spread": f"{r['seed_spread']:.2f}%",
                     "met (<= 1%)": "yes" if r["ladder"]["regret"] <= GOAL_PCT else "**no**"})
    return rows


def _rungs(plan) -> str:
    return "/".join(f"{r['budget'] // 1024}k" for r in plan.ladder)


def _pct(v: float) -> str:
    return f"{v:+.2f}%" if np.isfinite(v) else "-"


def compute_rows(results: list[dict]) -> list[dict]:
    """The tuning compute of each route in FLOPs (6 N D), and in target runs."""
    rows = []
    for r in results:
        c, unit = r["plan"].compute, r["target_run_flops"]
        rows.append({"family": r["cfg"].name, "ladder (all seeds)": f"{c['ladder_flops']:.3g} "
                     f"({c['ladder_flops'] / unit:.2g} target runs)",
                     "direct grid at the target": f"{r['direct_flops']:.3g} ({r['direct_flops'] / unit:.0f} target runs)",
                     "ratio": f"{r['direct_flops'] / c['ladder_flops']:.1f}x"})
    return rows


def cost_rows(result: dict) -> pd.DataFrame:
    """The menu's predicted cost against the measured one, per directly measured batch."""
    c = result["costs"]
    return pd.DataFrame({
        "batch": c.batch, "predicted cost": [f"{v:+.2f}% [{lo:+.2f}, {hi:+.2f}]" for v, lo, hi in
                                             zip(c.predicted_cost, c.cost_low, c.cost_high)],
        "measured cost": c.measured_cost.map("{:+.2f}%".format),
        "predicted eta*": c.predicted_log2_lr.map("2^{:.2f}".format),
        "measured best lr": c.measured_log2_lr.map("2^{:g}".format)})


def plot_menus(results: list[dict], path: Path) -> Path:
    """Per family: the menu's predicted cost per batch (line, 95% band) and the measured one (points)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(4.8 * len(results), 3.6), squeeze=False)
    for ax, r in zip(axes[0], results):
        menu = pd.DataFrame(list(r["plan"].batch_menu))
        ax.fill_between(menu.batch, menu.cost_low, menu.cost_high, color="C0", alpha=0.2, lw=0)
        ax.plot(menu.batch, menu.cost_pct, "-", color="C0", label="predicted by the ladder")
        ax.plot(r["costs"].batch, r["costs"].measured_cost, "o", color="C3", label="measured at the target")
        ax.axvline(r["plan"].batch_size, color="0.5", ls=":", label=f"handed over ({r['plan'].batch_size})")
        ax.set_xscale("log", base=2)
        ax.set(title=r["cfg"].name, xlabel="batch size (examples)", ylabel="loss cost over the best (%)")
        style_axes(ax)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def write_ladder_report(folder: str | Path, configs, *, reports: str | Path | None = None, seeds=(0, 1000),
                        command: str = LADDER_COMMAND) -> Path:
    """``folder/index.md`` and menus.png from each family's ``folder/<name>/`` (see the module).

        >>> write_ladder_report("reports/budget-ladder", ["sweeps/gpt-cpu-ladder.toml", "sweeps/llama-cpu-ladder.toml"])
    """
    folder = Path(folder)
    results = [family_result(load_config(c), folder / load_config(c).name) for c in configs]
    plot_menus(results, folder / "menus.png")
    lines = ["Everything, serially on one machine (a 2-core CPU):", "", "```",
             *[f"mutransfer sweep {c} --seed {s}" for c in configs for s in seeds],
             *[f"{command} direct --config {c}" for c in configs],
             f"{command} write --configs {','.join(configs)}", "```", "",
             *_setup(results), "", "## Regret at the target", "", *markdown_table(pd.DataFrame(headline_rows(results))),
             "", _regret_note(), "", *[line for r in results for line in _why(r)],
             "## What each batch costs: the menu against the measurement", "",
             "![predicted against measured batch costs](menus.png)", ""]
    for r in results:
        cells = r["cells"].assign(lr=r["cells"].log2_lr.map("2^{:.2f}".format), loss=r["cells"].loss.map("{:.4f}".format),
                                  regret=r["cells"].regret_pct.map("{:+.2f}%".format))
        at = r["plan"].menu_tokens
        menu_note = (f"The menu's costs are at {at} tokens: the target's budget" if at == r["cfg"].train.tokens else
                     f"The menu's costs are at {at} tokens, the largest rung (the batch law to the target's budget "
                     f"was unresolved, so the plan read its batch there)")
        lines += [f"### {r['cfg'].name}", "", menu_note + ".", "", *markdown_table(cost_rows(r)), "",
                  "Every handed-over cell measured at its exact lr (the plans above, and any earlier plan's):", "",
                  *markdown_table(cells[["batch_size", "lr", "seeds", "loss", "regret"]]), "",
                  "Direct runs at the target (seed-mean final loss; the best lr of each batch in bold):", "",
                  *markdown_table(direct_table(r["runs"])), "", "The plan's warnings:", "",
                  *[f"- {w}" for w in r["plan"].warnings], ""]
    lines += ["## Tuning compute", "", *markdown_table(pd.DataFrame(compute_rows(results))), ""]
    return write_markdown(folder / "index.md", "The budget ladder against direct tuning at the target",
                          f"{command} write --configs {','.join(configs)}", lines)


def _setup(results: list[dict]) -> list[str]:
    out = []
    for r in results:
        cfg, p = r["cfg"], r["plan"]
        out.append(f"- **{cfg.name}** ({cfg.model.factory}, {cfg.model.kwargs}): the proxy at width {cfg.sweep.width} "
                   f"on budgets {', '.join(str(x['budget']) for x in p.ladder)} tokens x batches "
                   f"{cfg.sweep.space['batch_size']} x {len(cfg.sweep.space['lr'])} lrs (octaves), "
                   f"2 seeds; the target at width {cfg.model.width} on {cfg.train.tokens} tokens "
                   f"({cfg.train.tokens / p.ladder[-1]['budget']:.0f}x the largest rung), seq_len "
                   f"{cfg.train.seq_len}, spectral + {cfg.parametrization.optimizer}.")
    return out


def _regret_note() -> str:
    return ("Regret: the seed-mean loss of the handed-over (lr, batch), run at its exact lr, over the lowest "
            "seed-mean loss of the direct grid at the target. Today's plan is `transfer` on the largest rung "
            "alone: the best proxy trial's batch at its eta*, nothing projected along the budget. Of which: the "
            "regret of the best cell at the handed-over batch (the batch's share), then of the handed-over lr "
            "against that cell (the lr's share). Seed spread: "
            "the median |seed 0 - seed 1| / mean over the grid's cells, the noise a regret is read against.")


def _why(result: dict) -> list[str]:
    """Where the handed-over cell misses the goal: which share dominates, and how far its lr is."""
    r, p = result["ladder"], result["plan"]
    if not np.isfinite(r["regret"]) or r["regret"] <= GOAL_PCT:
        return []
    at = result["grid"][result["grid"].batch_size == p.batch_size]
    best_x = float(at.loc[at.loss.idxmin(), "log2_lr"]) if not at.empty else math.nan
    share = "lr" if r["lr_pct"] >= r["batch_pct"] else "batch"
    return [f"Why {result['cfg'].name} misses: {r['regret']:.2f}%, of which the {share}'s share is the larger. The "
            f"handed-over lr 2^{math.log2(p.lr):.2f} lies {math.log2(p.lr) - best_x:+.2f} octave from the target's "
            f"best grid lr at batch {p.batch_size} (2^{best_x:g}); the plan took eta* as invariant in width from one "
            f"proxy width, and said so in its warnings (sweep a second width to measure the drift).", ""]
