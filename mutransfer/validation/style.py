"""The style every figure shares: one colour per role, the labels of schemes, optimizers (from
their records, :class:`mutransfer.core.OptimizerRule`) and kinds, panel sizes, and the helpers
that open pyplot (Agg, imported lazily so ``import mutransfer`` stays fast and needs no display),
style an axis and save a PNG. Public, so an experiment's own figures look like the library's.

    >>> plt = pyplot(); fig, ax = plt.subplots(); style_axes(ax)
    >>> save(fig, "reports/x/figure.png")
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mutransfer.core import OPTIMIZER_RULES

DPI = 110
PANEL = (1.7, 1.6)  # inches per small-multiple panel (width, height)
# One colour per role, the same in every figure; judged roles get the strong colours.
ROLE_COLORS = {"hidden": "#d62728", "output": "#1f77b4", "input": "#2ca02c", "vector": "#9467bd",
               "fixed": "#8c564b", "activation": "#9a9a9a"}
SCHEME_LABELS = {"sp": "SP", "mup": "muP", "spectral": "spectral"}
OPTIMIZER_LABELS = {name: rule.label for name, rule in OPTIMIZER_RULES.items()}  # their records
KIND_LABELS = {"out": "RMS of output", "delta": "RMS of change\nsince step 0",
               "update": "RMS of own\nupdate"}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def style_axes(ax, *, grid: bool = True) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=7)
    if grid:
        ax.grid(True, which="major", lw=0.4, alpha=0.4)


def log2_width_axis(ax, widths) -> None:
    """x axis in log2(width) with the widths themselves as tick labels."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(widths))
    ax.set_xticklabels([str(w) for w in widths], fontsize=7)
    ax.minorticks_off()


def role_legend(fig, roles) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=ROLE_COLORS.get(r, "k"), lw=2, label=r) for r in roles]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False, title="module role (one line per module)", title_fontsize=8)


def save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    pyplot().close(fig)
    return path


def optimizer_label(optimizer: str) -> str:
    """An optimizer's name in plots: its record's ``label``; an optimizer without one as given.

        >>> optimizer_label("muon")
        'Muon'
    """
    return OPTIMIZER_RULES[optimizer].label if optimizer in OPTIMIZER_RULES else optimizer


def optimizer_style(optimizer: str) -> str:
    """An optimizer's line and marker (matplotlib's fmt): its record's ``plot_style``; ``"o-"``
    for an optimizer without one.

        >>> optimizer_style("sgd")
        '^-'
    """
    return OPTIMIZER_RULES[optimizer].plot_style if optimizer in OPTIMIZER_RULES else "o-"


def curve_label(scheme: str, optimizer: str) -> str:
    return f"{SCHEME_LABELS.get(scheme, scheme)} + {optimizer_label(optimizer)}"


def scheme_order(df: pd.DataFrame) -> list[str]:
    """SP first (the baseline on the left), then the others in order of appearance."""
    schemes = list(dict.fromkeys(df["scheme"]))
    return sorted(schemes, key=lambda s: s != "sp")


def known_first(values, known) -> list[str]:
    """The distinct ``values``, in ``known``'s order (SP | muP | spectral), unknown ones last."""
    order = list(known)
    return sorted(set(values), key=lambda v: (order.index(v) if v in order else len(order), v))
