"""Width and depth together (reports/gpt-cpu-depth-headline/headline.md): a proxy of width 64 and 2
blocks against a target of 4x the width and 4x the depth, in five arms, each judged by the
target's eval loss over 2 training seeds and by its tuning compute (6 x parameters x tokens over
the tuning trials, as ``mutransfer compare`` counts it):

| arm               | tuned where                         | the target gets                          |
|-------------------|-------------------------------------|------------------------------------------|
| sp-direct         | the target (256 x 8), scheme sp     | its own landscape's lr (risk-aware)      |
| width-only-deep   | width 64 at the target's depth 8    | the lr, width-only muP (depth_alpha 0)   |
| width-only        | width 64 x 2 blocks                 | the lr unchanged (depth_alpha 0)         |
| width-and-depth   | width 64 x 2 blocks                 | the lr with depth_alpha 1/2 (fixed)      |
| depth-auto        | width 64 x 2 blocks + the depth probe | the rule the probe picks (the default) |

Width-only muP needs a proxy at the target's depth (width-only-deep, 4x the tuning compute of a
2-block proxy); taking a 2-block proxy's lr to 8 blocks without a depth rule (width-only) is what
a shallow proxy gives without a depth rule. The three 2-block arms share their tuning trials (at
the base depth every depth rule is 1); depth-auto adds the depth probe at 64 x 8 (its compute
counted with the tuning's).

    python -m mutransfer.experiments.depth run      # tune the arms and train the targets (resumable)
    python -m mutransfer.experiments.depth write    # headline.{csv,png,md} from what run stored
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mutransfer.experiments._cli import parse
from mutransfer.runs import ExperimentConfig, load_config

CONFIG = Path(__file__).resolve().parents[2] / "sweeps" / "gpt-cpu-depth-headline.toml"
MODULE = "python -m mutransfer.experiments.depth"
SEEDS = (0, 1)
ARMS = ("sp-direct", "width-only-deep", "width-only", "width-and-depth", "depth-auto")


def arm_config(cfg: ExperimentConfig, arm: str) -> ExperimentConfig:
    """The config an arm tunes with (its lr grid at its proxy), or that its target trains with."""
    m = cfg.model
    over = {"sp-direct": {"parametrization.scheme": "sp", "sweep.width": m.width, "sweep.depth": m.depth},
            "width-only-deep": {"parametrization.depth_alpha": 0.0, "sweep.depth": m.depth},
            "width-only": {"parametrization.depth_alpha": 0.0},
            "width-and-depth": {"parametrization.depth_alpha": 0.5},
            "depth-auto": {"parametrization.depth_alpha": "auto"}}[arm]
    return cfg.override(over)


def _tuned_by(arm: str) -> str:
    return "width-and-depth" if arm in ("width-only", "depth-auto") else arm  # shallow arms share the proxy


def study_name(cfg: ExperimentConfig, arm: str) -> str:
    """The arm's tuning study: the config's lr grid at the arm's proxy (shared by the 2-block arms)."""
    acfg = arm_config(cfg, _tuned_by(arm))
    return f"{cfg.name}-{_tuned_by(arm)}-w{acfg.sweep.width}-d{acfg.proxy_depth()}"


def run_pipeline(cfg: ExperimentConfig, arm: str, reports: Path, progress: bool = True):
    """The arm through :func:`mutransfer.pipeline`: tune (or resume) at its proxy, transfer to the
    target's width and depth, train the target at each seed (width-only: depth_alpha 0; depth-auto:
    the shared proxy's trials, then the depth probe and the rule it picks)."""
    from mutransfer.projection import pipeline

    acfg = arm_config(cfg, arm)
    changes = {"depth_alpha": acfg.parametrization.depth_alpha} if arm == "width-only" else None
    return pipeline(acfg if arm == "depth-auto" else arm_config(cfg, _tuned_by(arm)), cfg.model.width, target_depth=cfg.model.depth,
                    study_name=study_name(cfg, arm), seeds=SEEDS, device="cpu", reports_dir=reports,
                    progress=progress, train_config=acfg, plan_changes=changes, write_plan=False)


def params(cfg: ExperimentConfig, width: int, depth: int | None) -> int:
    """Parameters of the config's model at ``width`` and ``depth`` (on the meta device)."""
    import torch

    from mutransfer.models import zoo
    from mutransfer.runs import config_factory

    with torch.device("meta"):
        model = config_factory(cfg, zoo.load_factory(cfg.model.factory))(width=width, depth=depth)
    return int(sum(p.numel() for p in model.parameters()))


def run_arm(cfg: ExperimentConfig, arm: str, out: Path, reports: Path, progress: bool = True) -> dict:
    """Tune (or resume), transfer, and train the target at each seed; the arm's row (cached)."""
    path = out / f"headline-{arm}.json"
    if path.is_file():
        return json.loads(path.read_text())
    run = run_pipeline(cfg, arm, reports, progress)
    study, plan, losses = run.study, run.plan, run.losses
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    tcfg = arm_config(cfg, _tuned_by(arm))
    row = {"arm": arm, "tuned_width": tcfg.sweep.width, "tuned_depth": tcfg.proxy_depth(),
           "trials": len(done), "lr": plan.lr, "eta_star": plan.eta_star, "losses": losses,
           "loss": float(np.mean(losses)), "tuning_s": float(sum(t.user_attrs.get("seconds", 0) for t in done)),
           "tuning_flops": 6.0 * params(cfg, tcfg.sweep.width, tcfg.proxy_depth())
           * float(sum(t.user_attrs.get("tokens", 0) for t in done)) + (plan.depth_rule.get("probe_flops") or 0.0),
           "plan_warnings": list(plan.warnings)}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1))
    return row


def table(out: Path, cfg: ExperimentConfig | None = None) -> pd.DataFrame:
    """One row per arm from the stored rows, with compute against sp-direct's; with ``cfg``, the
    depth-auto arm's trials and wall seconds count its depth probe's runs too (``out/study.db``)."""
    rows = [json.loads((out / f"headline-{a}.json").read_text()) for a in ARMS
            if (out / f"headline-{a}.json").is_file()]
    if not rows:
        raise ValueError(f"no arm has run yet in {out}; run `{MODULE} run` first")
    df = pd.DataFrame(rows)
    if cfg is not None and "depth-auto" in set(df["arm"]):
        runs, seconds = _probe_runs(arm_config(cfg, "depth-auto"), out)
        at = df["arm"] == "depth-auto"
        df.loc[at, "trials"] = df.loc[at, "trials"] + runs
        df.loc[at, "tuning_s"] = df.loc[at, "tuning_s"] + seconds
    ref = df.loc[df["arm"] == "sp-direct", "tuning_flops"]
    df["compute_ratio"] = df["tuning_flops"] / (float(ref.iloc[0]) if len(ref) else np.nan)
    return df


def _probe_runs(cfg: ExperimentConfig, out: Path) -> tuple[int, float]:
    """(finished runs, their wall seconds) of the config's depth probe study in ``out/study.db``."""
    from optuna.trial import TrialState

    from mutransfer.tuning import stored_probe

    study = stored_probe(cfg, f"sqlite:///{out / 'study.db'}")
    done = [] if study is None else study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return len(done), float(sum(t.user_attrs.get("seconds", 0) for t in done))


def plot(df: pd.DataFrame, path: Path) -> Path:
    from mutransfer.validation.style import pyplot, save, style_axes

    plt = pyplot()
    with plt.style.context("default"):
        fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
        for i, r in df.iterrows():
            ax.plot([r["compute_ratio"]] * len(r["losses"]), r["losses"], "o", color=f"C{i}", alpha=0.5)
            ax.plot([r["compute_ratio"]], [r["loss"]], "s", ms=9, color=f"C{i}", label=r["arm"])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tuning compute vs SP tuned at the target", fontsize=8)
        ax.set_ylabel("target eval loss (seeds; mean as a square)", fontsize=8)
        ax.set_title("width 64 x 2 blocks -> width 256 x 8 blocks", fontsize=9)
        style_axes(ax)
        ax.legend(fontsize=7, frameon=False)
        return save(fig, path)


def write(cfg: ExperimentConfig, out: Path) -> Path:
    """headline.csv, headline.png and headline.md from the stored arms."""
    from mutransfer.validation import markdown_table

    df = table(out, cfg)
    df.drop(columns="plan_warnings").to_csv(out / "headline.csv", index=False)
    plot(df, out / "headline.png")
    shown = pd.DataFrame({
        "arm": df["arm"], "tuned at (width x blocks)": [f"{w} x {d}" for w, d in zip(df["tuned_width"], df["tuned_depth"])],
        "trials (+ probe)": df["trials"], "lr": df["lr"].map("{:.4g}".format),
        "target loss (mean)": df["loss"].map("{:.4f}".format),
        "per seed": df["losses"].map(lambda v: ", ".join(f"{x:.4f}" for x in v)),
        "tuning FLOPs": df["tuning_flops"].map("{:.3g}".format),
        "compute vs sp-direct": df["compute_ratio"].map("{:.3f}x".format),
        "tuning s (wall)": df["tuning_s"].map("{:.0f}".format)})
    best = df.loc[df["loss"].idxmin()]
    lines = [f"# Width and depth together: {cfg.name}", "",
             f"Regenerate: `{MODULE} run` (resumable; its config is `sweeps/{CONFIG.name}`), then "
             f"`{MODULE} write`.", "",
             f"Zoo GPT on pycorpus, {cfg.train.steps} steps of batch {cfg.train.batch_size} x "
             f"{cfg.train.seq_len} bytes; proxy width {cfg.sweep.width} x {cfg.model.base_depth} blocks, "
             f"target width {cfg.model.width} x {cfg.model.depth} blocks; every arm tunes the same lr grid "
             f"({len(cfg.sweep.space['lr'])} points) and its target trains at the transferred lr "
             f"(risk-aware) with seeds {', '.join(map(str, SEEDS))}.", "",
             *markdown_table(shown), "", f"Lowest target loss: {best['arm']} ({best['loss']:.4f}).", "",
             "![target loss against tuning compute](headline.png)", ""]
    warn = [f"- {r['arm']}: {w}" for _, r in df.iterrows() for w in r["plan_warnings"]]
    if warn:
        lines += ["Warnings of the arms' transfer plans:", "", *warn, ""]
    path = out / "headline.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    args = parse(MODULE.removeprefix("python -m "), __doc__, ("run", "write"), argv, config=CONFIG)
    cfg = load_config(args.config)
    out = Path(args.reports) / cfg.name
    if args.what == "run":
        for arm in ARMS:
            print(json.dumps(run_arm(cfg, arm, out, Path(args.reports))), flush=True)
    print(f"wrote {write(cfg, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
