"""The comparison figure: the target's loss under each arm (SP tuned at the target, muP
transferred) with seeds (:func:`plot_compare`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mutransfer.validation.style import pyplot, save, style_axes


def plot_compare(table: pd.DataFrame, path) -> Path:
    """Target loss per arm (each seed a dot, the mean a bar) beside each arm's tuning compute.

        >>> plot_compare(compare_table, "reports/quickstart/compare.png")
    """
    import numpy as np

    plt = pyplot()
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
        style_axes(ax)
    fig.suptitle(f"target width {int(table['target'].iloc[0])}: transfer vs direct tuning", fontsize=9)
    fig.tight_layout()
    return save(fig, path)
