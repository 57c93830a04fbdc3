"""Figures, one function per figure; the shared styling helpers come first.

Every figure function takes the tidy DataFrame its module produces and a path, writes a PNG
and returns the path. matplotlib is imported lazily (Agg backend), so ``import mutransfer``
stays fast and works without a display.

    >>> plot_coord_check(coord_check(make_model, [64, 128, 256, 512], batches, lr=3e-3), "coord.png")
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

DPI = 110
PANEL = (1.7, 1.6)  # inches per small-multiple panel (width, height)
# One colour per role, the same in every figure; judged roles get the strong colours.
ROLE_COLORS = {"hidden": "#d62728", "output": "#1f77b4", "input": "#2ca02c", "vector": "#9467bd",
               "fixed": "#8c564b", "activation": "#9a9a9a"}
SCHEME_LABELS = {"sp": "SP", "mup": "muP", "spectral": "spectral"}
OPTIMIZER_LABELS = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD", "muon": "Muon"}
KIND_LABELS = {"out": "RMS of output", "delta": "RMS of change\nsince step 0",
               "update": "RMS of own\nupdate"}


# ---------------------------------------------------------------- shared styling


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style_axes(ax, *, grid: bool = True) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=7)
    if grid:
        ax.grid(True, which="major", lw=0.4, alpha=0.4)


def _log2_width_axis(ax, widths) -> None:
    """x axis in log2(width) with the widths themselves as tick labels."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(widths))
    ax.set_xticklabels([str(w) for w in widths], fontsize=7)
    ax.minorticks_off()


def _role_legend(fig, roles) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=ROLE_COLORS.get(r, "k"), lw=2, label=r) for r in roles]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False, title="module role (one line per module)", title_fontsize=8)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


def _label(scheme: str, optimizer: str) -> str:
    return f"{SCHEME_LABELS.get(scheme, scheme)} + {OPTIMIZER_LABELS.get(optimizer, optimizer)}"


# ---------------------------------------------------------------- coordinate check


def _scheme_order(df: pd.DataFrame) -> list[str]:
    """SP first (the baseline on the left), then the others in order of appearance."""
    schemes = list(dict.fromkeys(df["scheme"]))
    return sorted(schemes, key=lambda s: s != "sp")


def _coord_panel(ax, rows: pd.DataFrame, widths) -> None:
    mean = rows.groupby(["module", "role", "width"], sort=False)["rms"].mean().reset_index()
    for (module, role), g in mean.groupby(["module", "role"], sort=False):
        judged = role in ("hidden", "output")
        g = g.sort_values("width")
        ax.plot(g["width"], g["rms"].where(g["rms"] > 0), color=ROLE_COLORS.get(role, "k"),
                lw=1.4 if judged else 0.8, alpha=0.9 if judged else 0.55, marker=".", ms=3,
                zorder=3 if judged else 2)
    _log2_width_axis(ax, widths)
    ax.set_yscale("log")


def plot_coord_check(df: pd.DataFrame, path, *, verdict=None, title: str | None = None) -> Path:
    """The coordinate-check figure: a row per kind (out, delta, update), a panel per step, and for
    several schemes one block of panels per scheme side by side (SP | muP).

    Each line is one module (mean RMS over seeds), coloured by role; x is width on a log2 axis,
    y is RMS on a log axis shared along the row, so blocks compare at a glance. A flat line is
    width-independent; a rising one blows up with width. The verdict (``coord_verdict(df)``
    unless given) heads each block.

    Args:
        df: :func:`mutransfer.coord_check` records (concatenate two schemes for SP | muP).
        path: the PNG to write. verdict: a precomputed :class:`CoordVerdict`. title: figure title.

        >>> df = pd.concat([coord_check(f, ws, b, scheme=s, lr=3e-3) for s in ("sp", "mup")])
        >>> plot_coord_check(df, "reports/coord/coord.png")
    """
    from mutransfer.validation._coord_check import RECORD_COLUMNS
    from mutransfer.core._checks import require_columns
    from mutransfer.validation._verdict import coord_verdict

    require_columns(df, RECORD_COLUMNS, "plot_coord_check", "coord_check()'s output")
    verdict = verdict if verdict is not None else coord_verdict(df)
    schemes, steps = _scheme_order(df), sorted(df["step"].unique())
    kinds = [k for k in KIND_LABELS if k in set(df["kind"])]
    widths = sorted(df["width"].unique())
    plt = _pyplot()
    ncols = len(schemes) * len(steps)
    fig, axes = plt.subplots(len(kinds), ncols, sharey="row", squeeze=False,
                             figsize=(PANEL[0] * ncols + 0.8, PANEL[1] * len(kinds) + 1.6))
    for b, scheme in enumerate(schemes):
        rows = df[df["scheme"] == scheme]
        for r, kind in enumerate(kinds):
            for c, step in enumerate(steps):
                ax = axes[r, b * len(steps) + c]
                _style_axes(ax)
                panel = rows[(rows["kind"] == kind) & (rows["step"] == step)]
                if panel.empty:  # delta/update start at step 1
                    ax.text(0.5, 0.5, f"no {kind}\nat step {step}", ha="center", va="center",
                            fontsize=7, color="0.5", transform=ax.transAxes)
                    ax.set_xticks([])  # the y axis stays: it labels the row's shared scale
                    ax.spines["bottom"].set_visible(False)
                else:
                    _coord_panel(ax, panel, widths)
                if r == 0:
                    ax.set_title(f"step {step}", fontsize=8)
                if c == 0:
                    ax.set_ylabel(KIND_LABELS[kind], fontsize=8)
                if r == len(kinds) - 1:
                    ax.set_xlabel("width", fontsize=7)
    roles = [r for r in ROLE_COLORS if r in set(df["role"])]
    _role_legend(fig, roles)
    fig.suptitle(title or f"Coordinate check verdict: {'PASS' if verdict.passed else 'FAIL'}   "
                          f"(flat line = width-independent; judged: hidden and output modules at "
                          f"steps >= 1, |slope of log RMS vs log width| <= {verdict.tol:g})", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.89), w_pad=0.2, h_pad=0.5)
    for b, scheme in enumerate(schemes):  # after tight_layout, which moves the axes
        _block_header(fig, axes[0, b * len(steps)], axes[0, (b + 1) * len(steps) - 1], scheme,
                      df[df["scheme"] == scheme], verdict)
    return _save(fig, path)


def _block_header(fig, left_ax, right_ax, scheme: str, rows: pd.DataFrame, verdict) -> None:
    """A scheme's verdict centred over its block of panels."""
    v = verdict.schemes.get(scheme)
    optimizer = rows["optimizer"].iloc[0]
    text = _label(scheme, optimizer)
    if v is not None:
        text += (f": {'PASS' if v.passed else 'FAIL'}, worst slope {v.worst_slope:+.2f} "
                 f"({v.worst_where})")
    x = (left_ax.get_position().x0 + right_ax.get_position().x1) / 2
    fig.text(x, 0.895, text, ha="center", va="bottom", fontsize=10, fontweight="bold",
             color="#2a7a2a" if v is not None and v.passed else "#b22222")


# ---------------------------------------------------------------- lr landscapes (validation)


def plot_lr_landscape(df: pd.DataFrame, path) -> Path:
    """The transfer figure: final loss against log2 lr, one curve per width (seed means; seeds
    as dots; x at the top where a run diverged), each curve's fitted eta* marked with a
    triangle; schemes as columns, optimizers as rows. Under muP the minima line up across
    widths; under SP they slide to smaller lrs as width grows.

        >>> df = mutransfer.validate(cfg, widths=[64, 256], schemes=["sp", "mup"], ...)
        >>> plot_lr_landscape(df, "reports/quickstart/validate.png")
    """
    if len(df) == 0:
        raise ValueError("no runs to plot; run mutransfer validate first")
    plt = _pyplot()
    with plt.style.context("default"):  # Optuna's plots switch the global style to ggplot
        return _plot_lr_landscape(plt, df, path)


def _plot_lr_landscape(plt, df: pd.DataFrame, path) -> Path:
    import numpy as np

    from mutransfer.projection._landscape import curve_means, eta_stars, loss_at, survivors

    means, etas, live = curve_means(df), eta_stars(df), survivors(df)
    schemes, opts = _known_first(df["scheme"], SCHEME_LABELS), _known_first(df["optimizer"], OPTIMIZER_LABELS)
    widths = sorted(df["width"].unique())
    colours = dict(zip(widths, plt.cm.viridis(np.linspace(0.0, 0.85, len(widths)))))
    fig, axes = plt.subplots(len(opts), len(schemes), squeeze=False, sharex=True,
                             figsize=(3.4 * len(schemes) + 0.4, 2.7 * len(opts) + 0.6),
                             layout="constrained")
    for i, opt in enumerate(opts):
        for j, scheme in enumerate(schemes):
            ax = axes[i][j]
            _style_axes(ax)
            ax.set_title(_label(scheme, opt), fontsize=9)
            pick = [f[(f["scheme"] == scheme) & (f["optimizer"] == opt)] for f in (means, live, etas)]
            _landscape_panel(ax, *pick, colours, loss_at)
            if i == len(opts) - 1:
                ax.set_xlabel("log2 lr", fontsize=8)
            if j == 0:
                ax.set_ylabel("final eval loss", fontsize=8)
    handles = [plt.Line2D([], [], color=colours[w], lw=2, label=str(w)) for w in widths]
    handles += [plt.Line2D([], [], color="k", marker="v", ls="", label="fitted eta*"),
                plt.Line2D([], [], color="k", marker="x", ls="", label="diverged")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8,
               frameon=False, title="width", title_fontsize=8)
    return _save(fig, path)


def _known_first(values, known) -> list[str]:
    """The distinct ``values``, in ``known``'s order (SP | muP | spectral), unknown ones last."""
    order = list(known)
    return sorted(set(values), key=lambda v: (order.index(v) if v in order else len(order), v))


def _landscape_panel(ax, means, live, etas, colours, loss_at) -> None:
    import numpy as np

    finite = means["loss"].dropna()
    if means.empty or finite.empty:
        what = "not run" if means.empty else "every run diverged"
        ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", fontsize=8)
        return
    # Zoom on the minima: the top of the view is a little above the median loss, so curves
    # leave the panel far from their optimum instead of squashing the region that matters.
    low = float(finite.min())
    top = low + 1.2 * (float(finite.median()) - low) or low + 0.01
    pad = 0.05 * (top - low)
    for w, colour in colours.items():
        c = means[means["width"] == w]
        if c.empty:
            continue
        ax.plot(c["log2_lr"], c["loss"], "-", color=colour, lw=1.3)
        runs = live[live["width"] == w]
        ax.plot(runs["log2_lr"], runs["loss"], ".", color=colour, ms=3, alpha=0.5)
        dead = c[c["n_diverged"] > 0]
        if len(dead):  # an empty unclipped line has no extent and breaks constrained layout
            ax.plot(dead["log2_lr"], np.full(len(dead), top + pad), "x", color=colour, ms=5, clip_on=False)
        e = etas[etas["width"] == w]["log2_eta"]
        x = float(e.iloc[0]) if len(e) else float("nan")
        y = loss_at(c["log2_lr"], c["loss"], x)
        if np.isfinite(y):
            ax.plot([x], [min(y, top + pad)], "v", color=colour, ms=7, mec="black", mew=0.5, zorder=5)
    ax.set_ylim(low - pad, top + pad)


# ---------------------------------------------------------------- target training


def plot_training(history: pd.DataFrame, path, *, title: str = "",
                  predicted: tuple[float, float, float] | None = None,
                  tau: float | None = None) -> Path:
    """Train and eval loss against tokens (log x), with the lr schedule below; ``predicted`` =
    (loss, low, high) draws the transfer plan's predicted final loss and its interval. A
    ``max_logit`` column (QK-Clip or ``log_max_logit``) adds a panel of the max attention logit,
    with QK-Clip's ``tau`` as a line.

        >>> plot_training(train_target(cfg, plan).history, "reports/x/train-w512/loss.png")
    """
    plt = _pyplot()
    logits = "max_logit" in history and history["max_logit"].notna().any()
    ratios = [3, 1.6, 1] if logits else [3, 1]
    fig, axes = plt.subplots(len(ratios), 1, figsize=(6.4, 4.6 + 1.6 * logits), sharex=True,
                             gridspec_kw={"height_ratios": ratios})
    ax, lr_ax = axes[0], axes[-1]
    tokens = history["tokens"]
    ax.plot(tokens, history["train_loss"], color="#9a9a9a", lw=0.8, label="train loss (batch)")
    ev = history.dropna(subset=["eval_loss"])
    ax.plot(ev["tokens"], ev["eval_loss"], "o-", color="#1f77b4", ms=3, lw=1.4, label="eval loss")
    if predicted is not None and predicted[0] is not None:
        loss, low, high = predicted
        ax.axhline(loss, color="#d62728", lw=1, ls="--", label="predicted by the transfer plan")
        if low is not None and high is not None:
            ax.axhspan(low, high, color="#d62728", alpha=0.08, lw=0)
    ax.set_ylabel("loss (nats)", fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title, fontsize=9)
    if logits:
        _max_logit_panel(axes[1], tokens, history["max_logit"], tau)
    lr_ax.plot(tokens, history["lr"], color="#2ca02c", lw=1)
    lr_ax.set_ylabel("base lr", fontsize=8)
    lr_ax.set_xlabel("tokens seen", fontsize=8)
    lr_ax.set_xscale("log")
    for a in axes:
        _style_axes(a)
    fig.tight_layout()
    return _save(fig, path)


def _max_logit_panel(ax, x, max_logit, tau: float | None) -> None:
    ax.plot(x, max_logit, color="#ff7f0e", lw=1, label="max attention logit (before clip)")
    if tau is not None:
        ax.axhline(tau, color="#d62728", lw=1, ls="--", label=f"QK-Clip tau = {tau:g}")
    ax.set_ylabel("max logit", fontsize=8)
    ax.legend(fontsize=7, frameon=False)


# ---------------------------------------------------------------- transfer plan


def plot_transfer(plan, path) -> Path:
    """The transfer figure: eta* (95% interval bars) against batch size with the fitted eta*(B)
    law, and against width with the drift; the plan's (batch, lr) at the target is a star. With a
    fitted landscape, a third panel: the expected excess loss at the target against log2 lr,
    with the projected eta* and the risk-aware lr (the recommendation) marked.

        >>> plan = mutransfer.transfer([study64, study128], 1024, target_batch="auto")
        >>> plot_transfer(plan, "reports/x/plan.png")
    """
    table = plan.eta_table
    if table.empty:
        raise ValueError("the plan has no eta* per proxy to draw; is it from mutransfer.transfer?")
    plt = _pyplot()
    risk = plan.diagnostics.get("risk")
    with plt.style.context("default"):
        fig, axes = plt.subplots(1, 3 if risk else 2, figsize=(13.6 if risk else 9.2, 3.6),
                                 layout="constrained")
        _eta_vs_batch(plt, axes[0], plan, table)
        _eta_vs_width(plt, axes[1], plan, table)
        if risk:
            _expected_loss(axes[2], plan, risk)
        fig.suptitle(f"transfer to width {plan.target_width}: lr {plan.lr:.3g}, batch {plan.batch_size}",
                     fontsize=10)
        return _save(fig, path)


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
    _style_axes(ax)
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
    _style_axes(ax)
    ax.legend(fontsize=7, frameon=False)


def _eta_vs_batch(plt, ax, plan, table: pd.DataFrame) -> None:
    import numpy as np

    from mutransfer.projection._laws import law_log2_eta, momentum_c

    _eta_series(plt, ax, table, by="width", x="batch_size", cmap="viridis", label="width {}")
    if plan.law is not None:
        batches = np.concatenate([table["batch_size"].to_numpy(float), [plan.batch_size]])
        grid = np.geomspace(batches.min() / 2, batches.max() * 2, 100)
        c = momentum_c(plan.diagnostics.get("beta1", 0.9))
        theta = np.array([[np.log2(plan.eta_max), np.log2(plan.b_noise or 1.0)]])
        ax.plot(grid, 2 ** law_log2_eta(plan.law, np.log2(grid / c), theta)[0], "k-", lw=1,
                label=f"{plan.law} law fit")
    marks = [(plan.critical_batch, "--", "critical batch (B_noise at the target)"),
             (plan.compute_optimal_batch, ":", "compute-optimal batch at the budget")]
    for value, style, label in marks:
        if value is not None:
            ax.axvline(value, color="0.4", ls=style, lw=1, label=f"{label} {value:.3g}")
    ax.set_xscale("log", base=2)
    shown = [*table["batch_size"], plan.batch_size]
    ax.set_xlim(min(shown) / 1.6, max(shown) * 1.6)  # one batch size must not fill the axis
    _eta_axes(ax, (plan.batch_size, plan.lr), title="eta* against batch size", xlabel="batch size (examples)")


def _eta_vs_width(plt, ax, plan, table: pd.DataFrame) -> None:
    _eta_series(plt, ax, table, by="batch_size", x="width", cmap="plasma", label="batch {}")
    _log2_width_axis(ax, sorted(set(table["width"]) | {plan.target_width}))
    drift = "" if plan.drift_slope is None else (
        f": drift {plan.drift_slope:+.2f} [{plan.drift_interval[0]:+.2f}, {plan.drift_interval[1]:+.2f}] oct/doubling")
    _eta_axes(ax, (plan.target_width, plan.lr), title="eta* against width" + drift, xlabel="width")


def plot_compare(table: pd.DataFrame, path) -> Path:
    """Target loss per arm (each seed a dot, the mean a bar) beside each arm's tuning compute.

        >>> plot_compare(compare_table, "reports/quickstart/compare.png")
    """
    import numpy as np

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    x = np.arange(len(table))
    left.bar(x, table["loss"], color="#bbbbbb", width=0.6)
    for i, losses in enumerate(table["seed_losses"]):
        left.plot([i] * len(losses), losses, "o", color="k", ms=3)
    low = min(min(v) for v in table["seed_losses"])
    high = max(max(v) for v in table["seed_losses"])
    left.set_ylim(low - 0.1 * (high - low + 0.01), high + 0.1 * (high - low + 0.01))
    left.set_ylabel("target eval loss", fontsize=8)
    right.bar(x, table["tuning_flops"], color="#7a9cc6", width=0.6)
    right.set_yscale("log")
    right.set_ylabel("tuning compute (FLOPs, 6 N D)", fontsize=8)
    for ax in (left, right):
        ax.set_xticks(x)
        ax.set_xticklabels(table["arm"], fontsize=7)
        _style_axes(ax)
    fig.suptitle(f"target width {int(table['target'].iloc[0])}: transfer vs direct tuning", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_role_landscapes(df: pd.DataFrame, path) -> Path:
    """Loss against log2 of each role's constant, one panel per (kind, role), one line per width
    (seed means; one shared y axis, so the roles compare at a glance).

        >>> plot_role_landscapes(runs, "reports/gpt-cpu/exponents.png")
    """
    plt = _pyplot()
    panels = list(df.groupby(["kind", "role"], sort=False).groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), sharey=True, squeeze=False)
    widths = sorted(df["width"].astype(int).unique())
    cmap = plt.get_cmap("viridis")
    for ax, (kind, role) in zip(axes[0], panels):
        g = df[(df["kind"] == kind) & (df["role"] == role)]
        means = g.groupby(["width", "log2_mult"])["loss"].mean().reset_index()
        for i, w in enumerate(widths):
            m = means[means["width"] == w].sort_values("log2_mult")
            ax.plot(m["log2_mult"], m["loss"], "o-", ms=3, lw=1,
                    color=cmap(i / max(1, len(widths) - 1)), label=f"width {w}")
        ax.set_title(f"{kind} multiplier of {role}", fontsize=8)
        ax.set_xlabel("log2 c", fontsize=8)
        _style_axes(ax)
    axes[0][0].set_ylabel("final eval loss", fontsize=8)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def plot_best_loss(df: pd.DataFrame, path) -> Path:
    """The best (seed-mean, over the lr grid) loss against width for every scheme + optimizer,
    all on one shared axis: which parametrization trains the best model at each width, and
    whether width helps it, at a glance.

        >>> plot_best_loss(pd.read_csv("reports/gpt-cpu/validate.csv"), "reports/gpt-cpu/best.png")
    """
    from mutransfer.projection._landscape import curve_means

    means = curve_means(df).dropna(subset=["loss"])
    best = means.groupby(["scheme", "optimizer", "width"])["loss"].min().reset_index()
    plt = _pyplot()
    with plt.style.context("default"):
        fig, ax = plt.subplots(figsize=(4.6, 3.2))
        styles = {"adamw": "o-", "adam": "o-", "sgd": "^-", "muon": "s--"}
        colors = {"sp": "#7f7f7f", "mup": "#1f77b4", "spectral": "#d62728"}
        for (scheme, opt), g in best.groupby(["scheme", "optimizer"]):
            g = g.sort_values("width")
            ax.plot(g["width"], g["loss"], styles.get(opt, "o-"), color=colors.get(scheme, "k"),
                    ms=4, lw=1.2, label=_label(scheme, opt))
        _log2_width_axis(ax, sorted(best["width"].unique()))
        ax.set_xlabel("width", fontsize=8)
        ax.set_ylabel("best final loss over the lr grid", fontsize=8)
        ax.legend(fontsize=7, frameon=False)
        _style_axes(ax)
        fig.tight_layout()
        return _save(fig, path)


def plot_depth_landscapes(df: pd.DataFrame, etas: pd.DataFrame, path) -> Path:
    """Validation across depth on shared axes: per depth_alpha a panel of final loss against
    log2 lr, one curve per depth (eta* marked), and a last panel of the best loss against depth,
    one line per alpha. Under a depth-transferring alpha the minima line up across depths.

        >>> plot_depth_landscapes(df, depth_etas(df), "reports/gpt-cpu-depth/depth.png")
    """
    if len(df) == 0:
        raise ValueError("no runs to plot; run mutransfer validate --depths first")
    plt = _pyplot()
    with plt.style.context("default"):
        return _plot_depth_landscapes(plt, df, etas, path)


def _plot_depth_landscapes(plt, df: pd.DataFrame, etas: pd.DataFrame, path) -> Path:
    import numpy as np

    from mutransfer.projection._landscape import curve_means, loss_at, survivors

    runs = df.assign(width=df["depth"].astype(int))  # depth_alpha resolved by the caller
    alphas = sorted(runs["depth_alpha"].unique())
    depths = sorted(runs["width"].unique())
    colours = dict(zip(depths, plt.cm.viridis(np.linspace(0.0, 0.85, len(depths)))))
    fig, axes = plt.subplots(1, len(alphas) + 1, squeeze=False, sharey=True,
                             figsize=(3.2 * (len(alphas) + 1) + 0.4, 3.2), layout="constrained")
    for j, alpha in enumerate(alphas):
        ax = axes[0][j]
        _style_axes(ax)
        one = runs[runs["depth_alpha"] == alpha]
        e = etas[etas["depth_alpha"] == alpha].drop(columns="width").rename(columns={"depth": "width"})
        _landscape_panel(ax, curve_means(one), survivors(one), e, colours, loss_at)
        ax.set_title(f"depth_alpha {alpha:g}", fontsize=9)
        ax.set_xlabel("log2 lr", fontsize=8)
    axes[0][0].set_ylabel("final eval loss", fontsize=8)
    ax = axes[0][-1]
    _style_axes(ax)
    for alpha in alphas:
        g = etas[etas["depth_alpha"] == alpha].sort_values("depth")
        ax.plot(g["depth"], g["best_loss"], "o-", lw=1.3, ms=4, label=f"alpha {alpha:g}")
    _log2_width_axis(ax, depths)
    ax.set_xlabel("depth (blocks)", fontsize=8)
    ax.set_title("best loss per depth", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    handles = [plt.Line2D([], [], color=colours[d], lw=2, label=str(d)) for d in depths]
    handles += [plt.Line2D([], [], color="k", marker="v", ls="", label="fitted eta*")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8,
               frameon=False, title="depth", title_fontsize=8)
    return _save(fig, path)


def plot_depth_coord(df: pd.DataFrame, verdict, path) -> Path:
    """The depth coordinate check: log2 RMS against depth for the residual stream and the
    branches (output and change since step 0), one line per step, alphas as columns; where the
    check passes, the stream's panels are flat (or fall) and the branches' change falls no faster
    than m_L^(alpha - 1).

        >>> plot_depth_coord(df, depth_verdict(df), "reports/gpt-cpu-depth/depth-coord.png")
    """
    plt = _pyplot()
    with plt.style.context("default"):
        import numpy as np

        alphas = sorted(df["depth_alpha"].unique())
        panels = [("stream", "out"), ("stream", "delta"), ("branch", "out"), ("branch", "delta")]
        depths = sorted(df["depth"].unique())
        steps = sorted(df["step"].unique())
        colours = dict(zip(steps, plt.cm.plasma(np.linspace(0.0, 0.85, len(steps)))))
        fig, axes = plt.subplots(len(panels), len(alphas), squeeze=False, sharex=True,
                                 figsize=(PANEL[0] * 1.5 * len(alphas) + 0.6, PANEL[1] * len(panels) + 0.6),
                                 layout="constrained")
        mean = df.groupby(["depth_alpha", "module", "kind", "step", "depth"])["rms"].mean().reset_index()
        for j, alpha in enumerate(alphas):
            ok = verdict.alphas.get(float(alpha), True)
            for i, (module, kind) in enumerate(panels):
                ax = axes[i][j]
                _style_axes(ax)
                g = mean[(mean["depth_alpha"] == alpha) & (mean["module"] == module) & (mean["kind"] == kind)]
                for step, s in g.groupby("step"):
                    ax.plot(s["depth"], s["rms"], "o-", color=colours[step], ms=3, lw=1.1)
                ax.set_yscale("log", base=2)
                _log2_width_axis(ax, depths)
                if i == 0:
                    ax.set_title(f"depth_alpha {alpha:g}: {'PASS' if ok else 'FAIL'}", fontsize=9)
                if j == 0:
                    ax.set_ylabel(f"{module}\n{KIND_LABELS[kind]}", fontsize=7)
                if i == len(panels) - 1:
                    ax.set_xlabel("depth (blocks)", fontsize=8)
        handles = [plt.Line2D([], [], color=colours[s], lw=2, label=str(s)) for s in steps]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8,
                   frameon=False, title="step", title_fontsize=8)
        return _save(fig, path)
