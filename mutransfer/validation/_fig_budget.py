"""The figures of the batch-size reports: loss and eta* against batch per width (a budget), weight
decay against batch, and B_opt against the token budget, over :mod:`mutransfer.validation.style`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mutransfer.validation.style import pyplot, save, style_axes


def plot_budget(proxy_plan: dict, direct_plan: dict, table: pd.DataFrame, path: Path) -> Path:
    """Left: loss at eta* against batch per width, with the projected and measured B_opt; right:
    eta* against batch per width, with the projection for the target."""
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    optima = pd.DataFrame(list(proxy_plan["optima"]) + list(direct_plan["optima"]))
    cmap = plt.get_cmap("viridis")
    widths = sorted(optima.width.unique())
    for i, (w, sub) in enumerate(optima.groupby("width")):
        sub = sub.sort_values("batch_size")
        colour = cmap(i / max(1, len(widths) - 1))
        label = f"width {w}" + (" (target, measured)" if w == direct_plan["target_width"] else " (proxy)")
        ax.plot(sub.batch_size, sub.loss, "o-", color=colour, label=label)
        bx.errorbar(sub.batch_size, np.log2(sub.lr), yerr=[np.log2(sub.lr / sub.lr_low), np.log2(sub.lr_high / sub.lr)],
                    fmt="o-", color=colour, capsize=3, label=label)
    for plan, style, what in ((proxy_plan, "--", "projected"), (direct_plan, ":", "measured")):
        b = plan.get("compute_optimal_batch")
        if b:
            ax.axvline(b, ls=style, color="k", lw=1, label=f"B_opt {what} {b:.0f}")
            lo, hi = plan["compute_optimal_batch_interval"]
            ax.axvspan(lo, hi, color="k", alpha=0.06 if style == "--" else 0.03)
    bx.plot(table.batch_size, table.log2_lr_projected, "s--", color="crimson",
            label=f"projected for {direct_plan['target_width']}")
    bx.fill_between(table.batch_size, table.projected_low, table.projected_high, color="crimson", alpha=0.12)
    for a, ylabel, title in ((ax, "eval loss at eta*", "loss at a fixed token budget"),
                             (bx, "log2 eta*", "eta* against batch")):
        a.set_xscale("log", base=2)
        a.set_xlabel("batch size (sequences)")
        a.set_ylabel(ylabel)
        a.set_title(title)
        style_axes(a)
        a.legend(fontsize=7)
    return save(fig, path)


def plot_decay(df: pd.DataFrame, opt: pd.DataFrame, path: Path) -> Path:
    """Loss against log2 lambda, one line per batch, lambda* marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    means = df[~df.diverged.astype(bool)].groupby(["batch_size", "log2_wd"]).loss.mean().reset_index()
    for (b, sub), colour in zip(means.groupby("batch_size"), plt.get_cmap("plasma")(np.linspace(0, 0.8, len(opt)))):
        ax.plot(sub.log2_wd, sub.loss, "o-", color=colour, label=f"batch {b}")
        star = opt[opt.batch_size == b].iloc[0]
        ax.axvline(star["log2_wd*"], color=colour, ls="--", lw=1)
    ax.set_xlabel("log2 weight decay (AdamW lambda)")
    ax.set_ylabel("eval loss (mean over seeds)")
    ax.set_title("weight decay at a fixed budget, lr = eta*(B)")
    style_axes(ax)
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_budgets(plan, budgets: pd.DataFrame, direct: dict, tokens: int, path: Path, proxy: dict | None = None) -> Path:
    """B_opt against the token budget: measured on the proxies (with intervals), the critical batch,
    the fitted B_opt ~ D^p projected to ``tokens``, and B_opt measured at the target there."""
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


