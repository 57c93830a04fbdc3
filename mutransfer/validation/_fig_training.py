"""The training-curve figure of one run: train and eval loss, lr, and the max attention logit
when logged (:func:`plot_training`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mutransfer.validation.style import pyplot, save, style_axes


def plot_training(history: pd.DataFrame, path, *, title: str = "",
                  predicted: tuple[float, float, float] | None = None,
                  tau: float | None = None) -> Path:
    """Train and eval loss against tokens (log x), with the lr schedule below; ``predicted`` =
    (loss, low, high) draws the transfer plan's predicted final loss and its interval. A
    ``max_logit`` column (QK-Clip or ``log_max_logit``) adds a panel of the max attention logit,
    with QK-Clip's ``tau`` as a line.

        >>> plot_training(train_target(cfg, plan).history, "reports/x/train-w512/loss.png")
    """
    plt = pyplot()
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
        style_axes(a)
    fig.tight_layout()
    return save(fig, path)


def _max_logit_panel(ax, x, max_logit, tau: float | None) -> None:
    ax.plot(x, max_logit, color="#ff7f0e", lw=1, label="max attention logit (before clip)")
    if tau is not None:
        ax.axhline(tau, color="#d62728", lw=1, ls="--", label=f"QK-Clip tau = {tau:g}")
    ax.set_ylabel("max logit", fontsize=8)
    ax.legend(fontsize=7, frameon=False)
