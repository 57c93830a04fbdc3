"""The transfer plan's figure: eta* against width and batch with the laws fitted, and the expected
target loss around the recommended lr (:func:`plot_transfer`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mutransfer.validation.style import log2_width_axis, pyplot, save, style_axes


def plot_transfer(plan, path) -> Path:
    """The transfer figure: eta* (95% interval bars) against batch size with the fitted eta*(B)
    law, and against width with the drift; the plan's (batch, lr) at the target is a star. With a
    fitted landscape, a panel of the expected excess loss at the target against log2 lr, with the
    projected eta* and the risk-aware lr (the recommendation) marked; with a budget ladder, the
    batch menu: each batch's predicted loss cost at the target's budget (95% band), eps dotted.

        >>> plan = mutransfer.transfer([study64, study128], 1024, target_batch="auto")
        >>> plot_transfer(plan, "reports/x/plan.png")
    """
    table = plan.eta_table
    if table.empty:
        raise ValueError("the plan has no eta* per proxy to draw; is it from mutransfer.transfer?")
    plt = pyplot()
    risk = plan.diagnostics.get("risk")
    panels = 2 + bool(risk) + bool(plan.batch_menu)
    with plt.style.context("default"):
        fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.6), layout="constrained")
        _eta_vs_batch(plt, axes[0], plan, table)
        _eta_vs_width(plt, axes[1], plan, table)
        if risk:
            _expected_loss(axes[2], plan, risk)
        if plan.batch_menu:
            _batch_menu(axes[-1], plan)
        fig.suptitle(f"transfer to width {plan.target_width}: lr {plan.lr:.3g}, batch {plan.batch_size}",
                     fontsize=10)
        return save(fig, path)


def _batch_menu(ax, plan) -> None:
    """The menu's cost (%) against batch: solid where swept, dashed where extrapolated."""
    menu = pd.DataFrame(list(plan.batch_menu))
    inside = ~menu["extrapolated"].astype(bool)
    ax.fill_between(menu["batch"], menu["cost_low"], menu["cost_high"], color="#1f77b4", alpha=0.18, lw=0)
    ax.plot(menu["batch"][inside], menu["cost_pct"][inside], "o-", color="#1f77b4", ms=4, label="predicted cost")
    if (~inside).any():
        edge = menu[~inside | inside.shift(-1, fill_value=False) | inside.shift(1, fill_value=False)]
        ax.plot(edge["batch"], edge["cost_pct"], "--", color="#1f77b4", lw=1, label="extrapolated")
    ax.axhline(100 * (plan.eps or 0), color="0.4", ls=":", lw=1, label=f"eps {100 * (plan.eps or 0):.2g}%")
    chosen = menu[menu["batch"] == plan.batch_size]
    if not chosen.empty:
        ax.plot(chosen["batch"], chosen["cost_pct"], "*", color="#d62728", ms=12, label=f"batch {plan.batch_size}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (examples)", fontsize=8)
    ax.set_ylabel("loss cost over the best batch (%)", fontsize=8)
    ax.set_title(f"batch menu at {plan.menu_tokens or plan.diagnostics.get('target_tokens', '?')} tokens", fontsize=9)
    style_axes(ax)
    ax.legend(fontsize=7, frameon=False)


def _expected_loss(ax, plan, risk: dict) -> None:
    import numpy as np

    x, r = np.asarray(risk["grid_log2_lr"], float), np.asarray(risk["grid_excess"], float)
    ax.plot(x, r, "k-", lw=1.2, label="expected excess loss")
    eta = plan.eta_star if plan.eta_star is not None else plan.lr
    ax.axvline(np.log2(eta), color="#1f77b4", ls="--", lw=1, label=f"eta* {eta:.3g}")
    ax.axvline(np.log2(plan.lr), color="#d62728", lw=1.5, label=f"lr {plan.lr:.3g} (plan)")
    ax.set_xlabel("log2 lr at the target", fontsize=8)
    ax.set_ylabel("E[loss - best loss] (nats)", fontsize=8)
    ax.set_title(f"landscape: a_right / a_left = {risk['a_right'] / risk['a_left']:.2g}", fontsize=9)
    style_axes(ax)
    ax.legend(fontsize=7, frameon=False)


def _eta_series(plt, ax, table: pd.DataFrame, *, by: str, x: str, cmap: str, label: str) -> None:
    """eta* with its 95% interval against column ``x``, one colour per value of column ``by``
    (points of different series nudged apart along x so their bars do not overlap)."""
    import numpy as np

    keys = sorted(table[by].unique())
    colours = plt.get_cmap(cmap)(np.linspace(0.0, 0.85, len(keys)))
    for i, (key, colour) in enumerate(zip(keys, colours)):
        rows = table[table[by] == key].sort_values(x)
        y = rows["lr"].to_numpy(float)
        err = np.abs(np.vstack([y - rows["lr_low"].to_numpy(float), rows["lr_high"].to_numpy(float) - y]))
        nudge = 2 ** (0.06 * (i - len(keys) / 2))
        ax.errorbar(rows[x].to_numpy(float) * nudge, y, yerr=err, fmt="o", ms=4, capsize=2, lw=1,
                    color=colour, label=label.format(key))


def _eta_axes(ax, plan_xy: tuple[float, float], *, title: str, xlabel: str) -> None:
    """The plan's star, log2 eta* axis, labels and legend shared by both transfer panels."""
    ax.plot([plan_xy[0]], [plan_xy[1]], "*", ms=13, color="#d62728", label="plan (target)")
    ax.set_yscale("log", base=2)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("eta* (base lr)", fontsize=8)
    ax.set_title(title, fontsize=9)
    style_axes(ax)
    ax.legend(fontsize=7, frameon=False)


def _eta_vs_batch(plt, ax, plan, table: pd.DataFrame) -> None:
    import numpy as np

    from mutransfer.projection import law_log2_eta, momentum_c

    _eta_series(plt, ax, table, by="width", x="batch_size", cmap="viridis", label="width {}")
    if plan.law is not None:
        batches = np.concatenate([table["batch_size"].to_numpy(float), [plan.batch_size]])
        grid = np.geomspace(batches.min() / 2, batches.max() * 2, 100)
        c = momentum_c(plan.diagnostics.get("beta1", 0.9))
        theta = np.array([[np.log2(plan.eta_max), np.log2(plan.b_noise or 1.0)]])
        ax.plot(grid, 2 ** law_log2_eta(plan.law, np.log2(grid / c), theta)[0], "k-", lw=1,
                label=f"{plan.law} law fit")
    marks = [(plan.critical_batch, "--", "critical batch (B_noise at the target)")]
    if not plan.ladder:  # with a ladder the menu panel says what each batch costs
        marks.append((plan.compute_optimal_batch, ":", "compute-optimal batch at the budget"))
    for value, style, label in marks:
        if value is not None:
            ax.axvline(value, color="0.4", ls=style, lw=1, label=f"{label} {value:.3g}")
    ax.set_xscale("log", base=2)
    shown = [*table["batch_size"], plan.batch_size]
    ax.set_xlim(min(shown) / 1.6, max(shown) * 1.6)  # one batch size must not fill the axis
    title = f"eta* against batch (the rung at {plan.ladder[-1]['budget']} tokens)" if plan.ladder else \
        "eta* against batch size"
    _eta_axes(ax, (plan.batch_size, plan.lr), title=title, xlabel="batch size (examples)")


def _eta_vs_width(plt, ax, plan, table: pd.DataFrame) -> None:
    _eta_series(plt, ax, table, by="batch_size", x="width", cmap="plasma", label="batch {}")
    log2_width_axis(ax, sorted(set(table["width"]) | {plan.target_width}))
    drift = "" if plan.drift_slope is None else (
        f": drift {plan.drift_slope:+.2f} [{plan.drift_interval[0]:+.2f}, {plan.drift_interval[1]:+.2f}] oct/doubling")
    _eta_axes(ax, (plan.target_width, plan.lr), title="eta* against width" + drift, xlabel="width")
