"""The coordinate-check figures: RMS of each module's output, change and update across widths
(:func:`plot_coord_check`) and across depths (:func:`plot_depth_coord`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mutransfer.validation.style import (KIND_LABELS, PANEL, ROLE_COLORS, curve_label,
                                         log2_width_axis, pyplot, role_legend, save, scheme_order,
                                         style_axes)


def _coord_panel(ax, rows: pd.DataFrame, widths) -> None:
    mean = rows.groupby(["module", "role", "width"], sort=False)["rms"].mean().reset_index()
    for (module, role), g in mean.groupby(["module", "role"], sort=False):
        judged = role in ("hidden", "output")
        g = g.sort_values("width")
        ax.plot(g["width"], g["rms"].where(g["rms"] > 0), color=ROLE_COLORS.get(role, "k"),
                lw=1.4 if judged else 0.8, alpha=0.9 if judged else 0.55, marker=".", ms=3,
                zorder=3 if judged else 2)
    log2_width_axis(ax, widths)
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
    from mutransfer.core import require_columns
    from mutransfer.validation._verdict import coord_verdict

    require_columns(df, RECORD_COLUMNS, "plot_coord_check", "coord_check()'s output")
    verdict = verdict if verdict is not None else coord_verdict(df)
    schemes, steps = scheme_order(df), sorted(df["step"].unique())
    kinds = [k for k in KIND_LABELS if k in set(df["kind"])]
    widths = sorted(df["width"].unique())
    plt = pyplot()
    ncols = len(schemes) * len(steps)
    fig, axes = plt.subplots(len(kinds), ncols, sharey="row", squeeze=False,
                             figsize=(PANEL[0] * ncols + 0.8, PANEL[1] * len(kinds) + 1.6))
    for b, scheme in enumerate(schemes):
        rows = df[df["scheme"] == scheme]
        for r, kind in enumerate(kinds):
            for c, step in enumerate(steps):
                ax = axes[r, b * len(steps) + c]
                style_axes(ax)
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
    role_legend(fig, roles)
    fig.suptitle(title or f"Coordinate check verdict: {'PASS' if verdict.passed else 'FAIL'}   "
                          f"(flat line = width-independent; judged: hidden and output modules at "
                          f"steps >= 1, |slope of log RMS vs log width| <= {verdict.tol:g})", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.89), w_pad=0.2, h_pad=0.5)
    for b, scheme in enumerate(schemes):  # after tight_layout, which moves the axes
        _block_header(fig, axes[0, b * len(steps)], axes[0, (b + 1) * len(steps) - 1], scheme,
                      df[df["scheme"] == scheme], verdict)
    return save(fig, path)


def _block_header(fig, left_ax, right_ax, scheme: str, rows: pd.DataFrame, verdict) -> None:
    """A scheme's verdict centred over its block of panels."""
    v = verdict.schemes.get(scheme)
    optimizer = rows["optimizer"].iloc[0]
    text = curve_label(scheme, optimizer)
    if v is not None:
        text += (f": {'PASS' if v.passed else 'FAIL'}, worst slope {v.worst_slope:+.2f} "
                 f"({v.worst_where})")
    x = (left_ax.get_position().x0 + right_ax.get_position().x1) / 2
    fig.text(x, 0.895, text, ha="center", va="bottom", fontsize=10, fontweight="bold",
             color="#2a7a2a" if v is not None and v.passed else "#b22222")


def plot_depth_coord(df: pd.DataFrame, verdict, path) -> Path:
    """The depth coordinate check: log2 RMS against depth for the residual stream and the
    branches (output and change since step 0), one line per step, alphas as columns; where the
    check passes, the stream's panels are flat (or fall) and the branches' change falls no faster
    than m_L^(alpha - 1).

        >>> plot_depth_coord(df, depth_verdict(df), "reports/gpt-cpu-depth/depth-coord.png")
    """
    plt = pyplot()
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
                style_axes(ax)
                g = mean[(mean["depth_alpha"] == alpha) & (mean["module"] == module) & (mean["kind"] == kind)]
                for step, s in g.groupby("step"):
                    ax.plot(s["depth"], s["rms"], "o-", color=colours[step], ms=3, lw=1.1)
                ax.set_yscale("log", base=2)
                log2_width_axis(ax, depths)
                if i == 0:
                    ax.set_title(f"depth_alpha {alpha:g}: {'PASS' if ok else 'FAIL'}", fontsize=9)
                if j == 0:
                    ax.set_ylabel(f"{module}\n{KIND_LABELS[kind]}", fontsize=7)
                if i == len(panels) - 1:
                    ax.set_xlabel("depth (blocks)", fontsize=8)
        handles = [plt.Line2D([], [], color=colours[s], lw=2, label=str(s)) for s in steps]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8,
                   frameon=False, title="step", title_fontsize=8)
        return save(fig, path)
