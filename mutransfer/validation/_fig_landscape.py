"""The lr-landscape figures: loss against log2 lr, one curve per width (:func:`plot_lr_landscape`)
or depth (:func:`plot_depth_landscapes`), per role multiplier (:func:`plot_role_landscapes`), and
the best loss per width (:func:`plot_best_loss`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mutransfer.validation.style import (OPTIMIZER_LABELS, SCHEME_LABELS, curve_label, known_first,
                                         log2_width_axis, optimizer_style, pyplot, save, style_axes)


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
    plt = pyplot()
    with plt.style.context("default"):  # Optuna's plots switch the global style to ggplot
        return _plot_lr_landscape(plt, df, path)


def _plot_lr_landscape(plt, df: pd.DataFrame, path) -> Path:
    import numpy as np

    from mutransfer.validation._landscape import curve_means, eta_stars, loss_at, survivors

    means, etas, live = curve_means(df), eta_stars(df), survivors(df)
    schemes, opts = known_first(df["scheme"], SCHEME_LABELS), known_first(df["optimizer"], OPTIMIZER_LABELS)
    widths = sorted(df["width"].unique())
    colours = dict(zip(widths, plt.cm.viridis(np.linspace(0.0, 0.85, len(widths)))))
    fig, axes = plt.subplots(len(opts), len(schemes), squeeze=False, sharex=True,
                             figsize=(3.4 * len(schemes) + 0.4, 2.7 * len(opts) + 0.6),
                             layout="constrained")
    for i, opt in enumerate(opts):
        for j, scheme in enumerate(schemes):
            ax = axes[i][j]
            style_axes(ax)
            ax.set_title(curve_label(scheme, opt), fontsize=9)
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
    return save(fig, path)


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


def plot_role_landscapes(df: pd.DataFrame, path) -> Path:
    """Loss against log2 of each role's constant, one panel per (kind, role), one line per width
    (seed means; one shared y axis, so the roles compare at a glance).

        >>> plot_role_landscapes(runs, "reports/gpt-cpu/exponents.png")
    """
    plt = pyplot()
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
        style_axes(ax)
    axes[0][0].set_ylabel("final eval loss", fontsize=8)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save(fig, path)


def plot_best_loss(df: pd.DataFrame, path) -> Path:
    """The best (seed-mean, over the lr grid) loss against width for every scheme + optimizer,
    all on one shared axis: which parametrization trains the best model at each width, and
    whether width helps it, at a glance.

        >>> plot_best_loss(pd.read_csv("reports/gpt-cpu/validate.csv"), "reports/gpt-cpu/best.png")
    """
    from mutransfer.validation._landscape import curve_means

    means = curve_means(df).dropna(subset=["loss"])
    best = means.groupby(["scheme", "optimizer", "width"])["loss"].min().reset_index()
    plt = pyplot()
    with plt.style.context("default"):
        fig, ax = plt.subplots(figsize=(4.6, 3.2))
        colors = {"sp": "#7f7f7f", "mup": "#1f77b4", "spectral": "#d62728"}
        for (scheme, opt), g in best.groupby(["scheme", "optimizer"]):
            g = g.sort_values("width")
            ax.plot(g["width"], g["loss"], optimizer_style(opt), color=colors.get(scheme, "k"),
                    ms=4, lw=1.2, label=curve_label(scheme, opt))
        log2_width_axis(ax, sorted(best["width"].unique()))
        ax.set_xlabel("width", fontsize=8)
        ax.set_ylabel("best final loss over the lr grid", fontsize=8)
        ax.legend(fontsize=7, frameon=False)
        style_axes(ax)
        fig.tight_layout()
        return save(fig, path)


def plot_depth_landscapes(df: pd.DataFrame, etas: pd.DataFrame, path) -> Path:
    """Validation across depth on shared axes: per depth_alpha a panel of final loss against
    log2 lr, one curve per depth (eta* marked), and a last panel of the best loss against depth,
    one line per alpha. Under a depth-transferring alpha the minima line up across depths.

        >>> plot_depth_landscapes(df, depth_etas(df), "reports/gpt-cpu-depth/depth.png")
    """
    if len(df) == 0:
        raise ValueError("no runs to plot; run mutransfer validate --depths first")
    plt = pyplot()
    with plt.style.context("default"):
        return _plot_depth_landscapes(plt, df, etas, path)


def _plot_depth_landscapes(plt, df: pd.DataFrame, etas: pd.DataFrame, path) -> Path:
    import numpy as np

    from mutransfer.validation._landscape import curve_means, loss_at, survivors

    runs = df.assign(width=df["depth"].astype(int))  # depth_alpha resolved by the caller
    alphas = sorted(runs["depth_alpha"].unique())
    depths = sorted(runs["width"].unique())
    colours = dict(zip(depths, plt.cm.viridis(np.linspace(0.0, 0.85, len(depths)))))
    fig, axes = plt.subplots(1, len(alphas) + 1, squeeze=False, sharey=True,
                             figsize=(3.2 * (len(alphas) + 1) + 0.4, 3.2), layout="constrained")
    for j, alpha in enumerate(alphas):
        ax = axes[0][j]
        style_axes(ax)
        one = runs[runs["depth_alpha"] == alpha]
        e = etas[etas["depth_alpha"] == alpha].drop(columns="width").rename(columns={"depth": "width"})
        _landscape_panel(ax, curve_means(one), survivors(one), e, colours, loss_at)
        ax.set_title(f"depth_alpha {alpha:g}", fontsize=9)
        ax.set_xlabel("log2 lr", fontsize=8)
    axes[0][0].set_ylabel("final eval loss", fontsize=8)
    ax = axes[0][-1]
    style_axes(ax)
    for alpha in alphas:
        g = etas[etas["depth_alpha"] == alpha].sort_values("depth")
        ax.plot(g["depth"], g["best_loss"], "o-", lw=1.3, ms=4, label=f"alpha {alpha:g}")
    log2_width_axis(ax, depths)
    ax.set_xlabel("depth (blocks)", fontsize=8)
    ax.set_title("best loss per depth", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    handles = [plt.Line2D([], [], color=colours[d], lw=2, label=str(d)) for d in depths]
    handles += [plt.Line2D([], [], color="k", marker="v", ls="", label="fitted eta*")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8,
               frameon=False, title="depth", title_fontsize=8)
    return save(fig, path)


def plot_corpora(frames: dict, etas: pd.DataFrame, path) -> Path:
    """Loss against log2 lr, one panel per corpus (its own loss scale), one curve per width, and
    each fitted eta* as a dashed line: where the optimum sits, corpus by corpus.

        >>> plot_corpora({"BPE": bpe_df, "bytes": byte_df}, etas, "reports/tokens-vs-bytes/corpora.png")
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(frames), figsize=(3.6 * len(frames), 3.0), squeeze=False)
    for ax, (label, df) in zip(axes[0], frames.items()):
        means = df.groupby(["width", "log2_lr"], as_index=False)["loss"].mean()
        for i, (width, curve) in enumerate(means.groupby("width")):
            colour = plt.get_cmap("viridis")(i / max(1, means["width"].nunique() - 1))
            ax.plot(curve["log2_lr"], curve["loss"], "o-", ms=3, color=colour, label=f"width {width}")
            eta = etas[(etas.corpus == label) & (etas.width == width)]["log2_eta"]
            if len(eta):
                ax.axvline(float(eta.iloc[0]), color=colour, ls="--", lw=1)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("log2 lr", fontsize=8)
        ax.set_ylabel("final eval loss (nats per token)", fontsize=8)
        style_axes(ax)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save(fig, path)
