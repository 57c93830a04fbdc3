"""The depth_alpha "auto" report (reports/depth-auto/index.md): per family, the rule the depth probe
chose, and the regret at the target's depth of auto's plan and of the fixed alpha 1/2, against the
best loss any rule reaches there with its lr tuned (the family's depth.csv from ``mutransfer
validate``); the probe's compute beside the proxy sweep's."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mutransfer.runs import count_params, load_config, sweep_tokens, training_flops
from mutransfer.validation._markdown import markdown_table, write_markdown

AUTO_COMMAND = "python -m mutransfer.experiments.depth_auto"
GOAL_PCT = 1.0


def best_any_rule(depth_csv: Path, depth: int) -> pd.Series:
    """The lowest seed-mean loss at ``depth`` over every rule and lr of a depth landscape."""
    df = pd.read_csv(depth_csv)
    df = df[(df.depth == depth) & ~df.diverged.astype(bool)]
    mean = df.groupby(["depth_alpha", "log2_lr"]).loss.mean()
    if mean.empty:
        raise ValueError(f"{depth_csv} holds no runs at depth {depth}: run the family's depth validation first")
    alpha, x = mean.idxmin()
    return pd.Series({"loss": float(mean.min()), "depth_alpha": float(alpha), "log2_lr": float(x)})


def family_row(config: str, folder: Path, reports: Path) -> tuple[dict, list[dict]]:
    """(the headline row, the probe's candidates) of one family."""
    from mutransfer.projection import TransferPlan

    cfg = load_config(config)
    sub = folder / cfg.name
    for name in ("plan.json", "targets.csv"):
        if not (sub / name).is_file():
            raise ValueError(f"no {sub / name}: run `{AUTO_COMMAND} run --config {config}` first")
    plan = TransferPlan.from_json((sub / "plan.json").read_text())
    targets = pd.read_csv(sub / "targets.csv")
    best = best_any_rule(reports / cfg.name / "depth.csv", cfg.model.depth)
    loss = targets.groupby("arm").loss.mean()
    rule = plan.depth_rule
    regret = {arm: 100 * (loss[arm] - best.loss) / best.loss for arm in loss.index}
    base = cfg.model.base_depth
    sweep = 2 * training_flops(count_params(cfg, cfg.sweep.width, base), sweep_tokens(cfg))
    chosen = f"alpha {rule['chosen']:g}" + (f", lr x (L/{base})^{rule['lr_depth_exponent']:+.2f}"
                                           if rule["lr_depth_exponent"] else "")
    row = {"family": cfg.name, "proxy -> target": f"{base} -> {cfg.model.depth} blocks (probe at {rule['probe_depth']})",
           "auto chose": chosen, "auto's regret": f"{regret['auto']:+.2f}%",
           "fixed alpha 1/2 regret": f"{regret['default']:+.2f}%",
           "best of any rule": f"{best.loss:.4f} (alpha {best.depth_alpha:g}, 2^{best.log2_lr:g})",
           "probe / proxy sweep (2 seeds) compute": f"{rule['probe_flops'] / sweep:.1f}x",
           "met (<= 1%)": "yes" if regret["auto"] <= GOAL_PCT else "**no**"}
    cands = [{"family": cfg.name, "rule": c["rule"], "lr at the probe": f"{c['lr']:.4g}",
              "loss there": f"{c['loss_at_lr']:.4f}", "regret at the probe": f"{c['regret_pct']:+.2f}%"}
             for c in rule["candidates"]]
    return row, cands, earlier_rows(cfg.name, sub / "targets-earlier.csv", best.loss)


def earlier_rows(family: str, path: Path, best: float) -> list[dict]:
    """The targets of an arm's earlier plans (targets-earlier.csv), each (alpha, lr) with its regret."""
    if not path.is_file():
        return []
    df = pd.read_csv(path)
    return [{"family": family, "arm": arm, "depth_alpha": f"{a:g}", "log2 lr": f"{x:.2f}", "seeds": len(g),
             "regret": f"{100 * (g.loss.mean() - best) / best:+.2f}%"}
            for (arm, a, x), g in df.groupby(["arm", "depth_alpha", "log2_lr"])]


def write_depth_auto_report(folder: str | Path, configs, *, reports: str | Path = "reports",
                            command: str = AUTO_COMMAND) -> Path:
    """``folder/index.md`` from each family's ``folder/<name>/`` and ``<reports>/<name>/depth.csv``."""
    folder, reports = Path(folder), Path(reports)
    rows, cands, earlier = zip(*(family_row(c, folder, reports) for c in configs))
    earlier = [r for rs in earlier for r in rs]
    lines = ["Everything, serially on one machine (a 2-core CPU):", "", "```",
             *[f"{command} run --config {c}" for c in configs], f"{command} write --configs {','.join(configs)}",
             "```", "", "Regret: the seed-mean loss of the target (2 seeds) trained with the plan, over the lowest "
             "seed-mean loss any rule reaches at that depth with its lr tuned there (the family's depth.csv, same "
             "seeds and training). The fixed rule is alpha 1/2 at the lr the proxy hands over (the default "
             "before the probe). Auto (the default now) keeps alpha 1/2 "
             "unless another alpha's rule wins at the probe by more than 1% (one run's seed spread), and moves the "
             "lr by the depth exponent its probe optimum measures (`mutransfer.projection.choose_depth_rule`).", "",
             *markdown_table(pd.DataFrame(list(rows))), "", "## The probe's candidates", "",
             *markdown_table(pd.DataFrame([c for cs in cands for c in cs]))]
    if earlier:
        lines += ["", "## Earlier choices", "", "Targets trained for an earlier rule of auto (the lowest loss at the "
                  "probe, the lr moved only when that beat the handed-over lr by > 0.1%), kept in "
                  "targets-earlier.csv:", "", *markdown_table(pd.DataFrame(earlier))]
    return write_markdown(folder / "index.md", "depth_alpha = \"auto\" against the fixed alpha 1/2 at 8x depth",
                          f"{command} write --configs {','.join(configs)}", lines)
