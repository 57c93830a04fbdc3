"""``depth_alpha = "auto"`` against the fixed alpha 1/2 at 8x depth (issue 32, item 3;
reports/depth-auto/index.md).

Per family (a config of ``mutransfer validate`` across depth, e.g. sweeps/gpt-cpu-depth.toml, whose
depth.csv holds every rule's lr landscape at the target's depth): the proxy sweep at the base
depth (seeds :data:`SWEEP_SEEDS`), the depth probe at 4x (``mutransfer.projection.run_depth_probe``),
the plan for ``[model] depth``, and the target trained there with seeds :data:`TARGET_SEEDS` twice:
under the rule auto chose, and under alpha 1/2 (the fixed default before the probe) at the lr the proxy
hands over.
Each loss is judged against the best that any rule reaches at that depth with its lr tuned there
(the family's depth.csv, the same seeds).

    python -m mutransfer.experiments.depth_auto run --config sweeps/gpt-cpu-depth.toml
    python -m mutransfer.experiments.depth_auto run --config sweeps/llama-cpu-depth.toml
    python -m mutransfer.experiments.depth_auto write --configs sweeps/gpt-cpu-depth.toml,sweeps/llama-cpu-depth.toml

``run`` writes ``<out>/<name>/``: the studies (study.db), plan.json, plan-default.json and
targets.csv (resumable); ``write`` is :func:`mutransfer.validation.write_depth_auto_report`.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from mutransfer.experiments._cli import family_configs, family_folder, families_parser, out_folder
from mutransfer.runs import DEPTH_AUTO, ExperimentConfig

MODULE = "python -m mutransfer.experiments.depth_auto"
OUT = "reports/depth-auto"
SWEEP_SEEDS, TARGET_SEEDS = (0, 1000), (0, 1)


def auto_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The family's config with depth_alpha "auto", named ``<name>-auto``."""
    return cfg.override({"name": f"{cfg.name}-auto", "parametrization.depth_alpha": DEPTH_AUTO})


def plans(cfg: ExperimentConfig, runs: Path, device: str = "cpu"):
    """(auto's plan, the default's plan): the proxy sweeps, the probe, and transfer to [model] depth."""
    from mutransfer.projection import run_depth_probe, transfer
    from mutransfer.tuning import sweep

    acfg = auto_config(cfg)
    studies = [sweep(acfg, seed=s, device=device, reports_dir=runs) for s in SWEEP_SEEDS]
    probe = run_depth_probe(acfg, studies, reports_dir=runs, device=device)
    auto = transfer(studies, cfg.model.width, target_depth=cfg.model.depth, depth_probe=probe)
    default = dataclasses.replace(auto, lr=auto.depth_rule["lr"], eta_star=auto.depth_rule["lr"], depth_alpha=0.5,
                                  depth_rule={})
    return auto, default


def train_targets(cfg: ExperimentConfig, arms: dict, out: Path) -> pd.DataFrame:
    """Each arm's plan trained at ``[model] depth`` with :data:`TARGET_SEEDS` (targets.csv, resumable:
    keyed by arm, seed, alpha and lr, so a changed plan trains again; rows of an arm's earlier plans
    move to targets-earlier.csv)."""
    from mutransfer.experiments.batch_at_budget import resume
    from mutransfer.projection import train_target

    def once(arm_id: int, seed: int, **_) -> dict:
        arm = list(arms)[arm_id]
        plan = arms[arm]
        tcfg = cfg.override({"parametrization.depth_alpha": plan.depth_alpha})
        res = train_target(tcfg, plan, seed=seed, device="cpu", progress=False)
        return {"arm_id": arm_id, "arm": arm, "seed": seed, "depth": plan.target_depth,
                "depth_alpha": plan.depth_alpha, "log2_lr": math.log2(plan.lr), "loss": res.final_loss,
                "diverged": res.diverged}

    todo = [{"arm_id": i, "seed": s, "depth_alpha": plan.depth_alpha, "log2_lr": math.log2(plan.lr)}
            for i, plan in enumerate(arms.values()) for s in TARGET_SEEDS]
    path = out / "targets.csv"
    _set_aside_earlier(path, {(t["arm_id"], t["depth_alpha"], t["log2_lr"]) for t in todo}, list(arms))
    return resume(path, ("arm_id", "seed", "depth_alpha", "log2_lr"), todo, once, "targets")


def _set_aside_earlier(path: Path, current: set, arms: list[str]) -> None:
    """Move the rows of targets.csv whose (arm, alpha, lr) no current plan has to targets-earlier.csv."""
    if not path.exists():
        return
    rows = pd.read_csv(path).assign(arm_id=lambda d: [arms.index(a) for a in d.arm])
    now = [(int(r.arm_id), float(r.depth_alpha), float(r.log2_lr)) in current for r in rows.itertuples()]
    earlier = path.with_name("targets-earlier.csv")
    if not all(now):
        old = pd.read_csv(earlier) if earlier.exists() else None
        pd.concat([old, rows[[not k for k in now]]], ignore_index=True).to_csv(earlier, index=False)
    rows[now].drop(columns="key", errors="ignore").to_csv(path, index=False)


def main(argv=None) -> int:
    from mutransfer.validation import write_depth_auto_report

    p = families_parser(MODULE.removeprefix("python -m "), __doc__, ("run", "write"), out=OUT,
                        what="depth config ([model] depth and base_depth)")
    args = p.parse_args(argv)
    if args.what == "run":
        cfg, folder = family_folder(p, args)
        auto, default = plans(cfg, folder)
        (folder / "plan.json").write_text(auto.to_json())
        (folder / "plan-default.json").write_text(default.to_json())
        train_targets(cfg, {"auto": auto, "default": default}, folder)
        return 0
    path = write_depth_auto_report(out_folder(args), family_configs(p, args), reports=Path(args.reports), command=MODULE)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
