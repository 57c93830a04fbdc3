"""The target run's report: ``train-w<W>/{history.csv,loss.png,train.md}`` beside the plan, and
the summary rows ``mutransfer train`` prints."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mutransfer.core import OPTIMIZER_RULES
from mutransfer.projection import TransferPlan
from mutransfer.validation._fig_training import plot_training
from mutransfer.validation._markdown import markdown_table


def summary_rows(plan: TransferPlan, res, width: int) -> list[tuple[str, str]]:
    """(what, value) rows describing a target run: the settings used and the losses; ``adam_lr``
    where the plan's optimizer puts some groups on a side (its record's ``side``, e.g. Muon's AdamW).

        >>> dict(summary_rows(plan, res, 256))["width"]
        '256'
    """
    rule = OPTIMIZER_RULES.get(plan.optimizer_name)
    side = rule.side if rule is not None else None
    loss = "diverged: " + str(res.reason) if res.diverged else f"{res.final_loss:.4f}"
    predicted = "-" if plan.predicted_loss is None else f"{plan.predicted_loss:.4f}"
    if plan.predicted_loss is not None and plan.loss_interval:
        predicted += f" [{plan.loss_interval[0]:.4f}, {plan.loss_interval[1]:.4f}]"
    depth = ([("depth", f"{plan.target_depth} blocks on a base of {plan.base_depth}"
                        + (f", depth_alpha {plan.depth_alpha:g}" if plan.depth_alpha is not None else ""))]
             if plan.target_depth is not None else [])
    return [("width", str(width)), *depth, ("base lr", f"{plan.lr:.4g}"),
            ("adam_lr", f"{plan.adam_lr:.4g}" if plan.adam_lr and side else "-"),
            ("batch size", str(plan.batch_size)),
            ("weight decay", "-" if plan.weight_decay is None else f"{plan.weight_decay:.4g}"),
            ("steps", str(res.steps)), ("tokens", f"{res.tokens:,}"), ("device", res.device),
            ("seconds", f"{res.seconds:.1f}"), ("final eval loss", loss),
            *([("max attention logit", f"{res.history['max_logit'].max():.4g}")]
              if "max_logit" in res.history else []),
            ("predicted by the plan", predicted)]


def write_training_report(folder: str | Path, plan: TransferPlan, res, width: int, command: str,
                          tau: float | None = None) -> Path:
    """Write ``history.csv``, ``loss.png`` and ``train.md`` of a target run into ``folder``;
    ``loss.png`` plots the max attention logit when the history has it (QK-Clip's ``tau``).

        >>> write_training_report("reports/quickstart/train-w256", plan, res, 256, "mutransfer train ...")
        PosixPath('reports/quickstart/train-w256/train.md')
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    res.history.to_csv(folder / "history.csv", index=False)
    predicted = (plan.predicted_loss, *(plan.loss_interval or (None, None)))
    plot_training(res.history, folder / "loss.png", predicted=predicted, tau=tau,
                  title=f"target width {width}: lr {plan.lr:.3g}, batch {plan.batch_size}")
    rows = pd.DataFrame(summary_rows(plan, res, width), columns=["", "value"])
    text = ["# Target training", "", f"Regenerate: `{command}`", "", *markdown_table(rows), "",
            "![loss](loss.png)", "",
            "The plan predicts the loss at the proxies' training length and the reference batch; "
            "when this run's steps or batch differ, the prediction is not the same quantity."]
    path = folder / "train.md"
    path.write_text("\n".join(text) + "\n")
    return path
