"""The batch-size report at a token budget (reports/gpt-cpu-budget/): the projection from two proxy
widths against a direct batch x lr sweep at the target, and weight decay against the batch.

The sweeps are ordinary ``mutransfer sweep`` runs of ``sweeps/gpt-cpu-budget.toml`` (commands at
its top); this module adds what the CLI does not: the check of the projected compute-optimal batch
and eta* against the target's own measurement, the optimal weight decay at 3 batch sizes (does
lambda* eta* grow like B, as the AdamW timescale tau = B / (eta lambda D) says?), and the report.

    python -m mutransfer.experiments.batch_at_budget decay        # lambda x batch at the proxy width (CSV)
    python -m mutransfer.experiments.batch_at_budget muon-direct  # Muon at the target: 3 batches x the lrs
    python -m mutransfer.experiments.batch_at_budget write        # figures + index.md from studies, plans, CSV
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from mutransfer.runs import ExperimentConfig, load_config

CONFIG = Path(__file__).resolve().parents[2] / "sweeps" / "gpt-cpu-budget.toml"
MODULE = "python -m mutransfer.experiments.batch_at_budget"
PROXY_WIDTHS, SEEDS, TARGET_WIDTH = (32, 64), (0, 1000), 256
DECAY_WIDTH, DECAY_BATCHES, DECAY_LOG2_WDS, DECAY_SEEDS = 32, (8, 32, 128), tuple(range(-5, 4)), (0, 1)
MUON_CONFIG, MUON_BATCHES = CONFIG.with_name("gpt-cpu-budget-muon.toml"), (4, 16, 64)
LR_GOAL, BATCH_GOAL = 0.25, 2.0  # octaves; factor


def study_names(cfg: ExperimentConfig, widths, seeds=None) -> list[str]:
    """The sweeper's study names: <name>-w<W> for seed [sweep] seed, else <name>-w<W>-s<S>
    (``seeds`` default: :data:`SEEDS`)."""
    seeds = SEEDS if seeds is None else seeds
    return [f"{cfg.name}-w{w}" + ("" if s == cfg.sweep.seed else f"-s{s}") for w in widths for s in seeds]


def load_studies(cfg: ExperimentConfig, names, reports: Path) -> list:
    """The Optuna studies ``names`` of ``cfg``'s storage; a missing one is named with the fix."""
    import optuna

    from mutransfer.tuning import default_storage

    url = cfg.sweep.storage or default_storage(cfg, reports)
    have = {s.study_name for s in optuna.get_all_study_summaries(url)}
    missing = [n for n in names if n not in have]
    if missing:
        raise ValueError(f"studies {missing} are not in {url}; run the sweeps at the top of "
                         f"{CONFIG.name} first")
    return [optuna.load_study(study_name=n, storage=url) for n in names]


def load_frame(cfg: ExperimentConfig, names, reports: Path) -> pd.DataFrame:
    """Every stored trial of the studies ``names`` (diverged ones kept and flagged), with each
    trial's wall seconds in ``frame.attrs["seconds"]`` (a dict: study name -> total seconds)."""
    from mutransfer.tuning import trials_frame

    studies = load_studies(cfg, names, reports)
    frame = trials_frame(studies, keep_diverged=True)
    frame.attrs["seconds"] = {s.study_name: sum(t.duration.total_seconds() for t in s.trials if t.duration)
                              for s in studies}
    return frame


# ---------------------------------------------------------------------- weight decay x batch
def proxy_eta(frame: pd.DataFrame, width: int, batch: int) -> float:
    """log2 eta* of the budget sweep at (width, batch), seeds pooled (a quadratic fit)."""
    from mutransfer.projection import quadratic_optimum

    sub = frame[(frame.width == width) & (frame.batch_size == batch) & ~frame.diverged]
    if sub.empty:
        raise ValueError(f"no trials at width {width}, batch {batch}; sweep that width first")
    return float(quadratic_optimum(np.log2(sub.lr.to_numpy(float)), sub.loss.to_numpy(float)).log2_lr[0])


def resume(out: Path, keys: tuple[str, ...], todo: list[dict], run, desc: str) -> pd.DataFrame:
    """Run ``run(**item)`` -> row dict for each item of ``todo`` whose ``keys`` are not yet in the
    CSV ``out``; each row is written before the next run starts, so a rerun resumes."""
    from tqdm.auto import tqdm

    rows = pd.read_csv(out).to_dict("records") if out.exists() else []
    have = {tuple(float(r[k]) for k in keys) for r in rows}
    for item in tqdm([i for i in todo if tuple(float(i[k]) for k in keys) not in have], desc=desc, unit="run"):
        rows.append(run(**item))
        pd.DataFrame(rows).to_csv(out, index=False)
    return pd.DataFrame(rows)


def train_once(cfg: ExperimentConfig, width: int, batch_size: int, log2_lr: float, seed: int,
               log2_wd: float | None = None) -> dict:
    """One run at the budget (a trial outside any study): its final eval loss and settings."""
    from mutransfer.runs import run_trial

    params = {"lr": 2.0 ** log2_lr, "batch_size": int(batch_size)}
    if log2_wd is not None:
        params["weight_decay"] = 2.0 ** log2_wd
    res = run_trial(cfg, params, width=width, device="cpu", seed=int(seed))
    return {"width": width, "batch_size": int(batch_size), "log2_lr": float(log2_lr),
            "log2_wd": math.nan if log2_wd is None else float(log2_wd), "seed": int(seed),
            "steps": cfg.steps_for(int(batch_size)), "loss": res.final_loss, "diverged": res.diverged}


def run_decay(cfg: ExperimentConfig, out: Path, reports: Path) -> pd.DataFrame:
    """Final loss for each (batch, weight decay, seed) at the budget, lr = the sweep's eta*(B):
    batches :data:`DECAY_BATCHES`, log2 wd :data:`DECAY_LOG2_WDS`, at :data:`DECAY_WIDTH`."""
    width, batches, log2_wds, seeds = DECAY_WIDTH, DECAY_BATCHES, DECAY_LOG2_WDS, DECAY_SEEDS
    frame = load_frame(cfg, study_names(cfg, [width]), reports)
    todo = [{"cfg": cfg, "width": width, "batch_size": b, "log2_lr": proxy_eta(frame, width, b),
             "seed": s, "log2_wd": float(w)} for b in batches for w in log2_wds for s in seeds]
    return resume(out, ("batch_size", "log2_wd", "seed"), todo, train_once, "decay")


def run_direct(cfg: ExperimentConfig, out: Path, seeds=(0,)) -> pd.DataFrame:
    """The direct check at :data:`TARGET_WIDTH`: every lr of ``[sweep.space] lr`` at each batch of
    :data:`MUON_BATCHES`."""
    width, batches = TARGET_WIDTH, MUON_BATCHES
    log2_lrs = [math.log2(v) for v in cfg.sweep.space["lr"]]
    todo = [{"cfg": cfg, "width": width, "batch_size": b, "log2_lr": x, "seed": s}
            for b in batches for x in log2_lrs for s in seeds]
    return resume(out, ("batch_size", "log2_lr", "seed"), todo, train_once, "direct")


def decay_optima(df: pd.DataFrame) -> pd.DataFrame:
    """lambda* per batch (quadratic fit in log2 lambda, bootstrap interval) and log2 (eta* lambda*)."""
    from mutransfer.projection import interval, quadratic_optimum

    rows = []
    for b, sub in df[~df.diverged.astype(bool)].groupby("batch_size"):
        opt = quadratic_optimum(sub.log2_wd.to_numpy(float), sub.loss.to_numpy(float), window=2.0)
        lo, hi = interval(opt.log2_lr[1:])
        eta = float(sub.log2_lr.iloc[0])
        edge = opt.best_log2_lr in (sub.log2_wd.min(), sub.log2_wd.max())
        rows.append({"batch_size": int(b), "log2_lr": eta, "log2_wd*": float(opt.log2_lr[0]),
                     "log2_wd_low": lo, "log2_wd_high": hi, "log2_eta_wd": eta + float(opt.log2_lr[0]),
                     "loss_at_wd*": float(opt.loss[0]),
                     "loss_wd_min": float(sub[sub.log2_wd == sub.log2_wd.min()].loss.mean()),
                     "at_grid_edge": bool(edge)})
    return pd.DataFrame(rows)


def decay_slope(opt: pd.DataFrame) -> float:
    """Slope of log2 (eta* lambda*) against log2 B: 1 if the timescale B / (eta lambda D) is held."""
    return float(np.polyfit(np.log2(opt.batch_size.to_numpy(float)), opt["log2_eta_wd"].to_numpy(float), 1)[0])


# ---------------------------------------------------------------------- projection vs direct
def projected_at(proxy: pd.DataFrame, batches, target_width: int, tokens: int) -> pd.DataFrame:
    """The transfer's lr (with interval) at each batch in ``batches`` for ``target_width``."""
    from mutransfer.projection import transfer

    rows = []
    for b in batches:
        plan = transfer(proxy, target_width, target_batch=int(b), tokens=tokens)
        rows.append({"batch_size": int(b), "log2_lr_projected": math.log2(plan.lr),
                     "projected_low": math.log2(plan.lr_interval[0]), "projected_high": math.log2(plan.lr_interval[1])})
    return pd.DataFrame(rows)


def measured_at(direct_plan: dict) -> pd.DataFrame:
    """eta* and the loss there per batch at the target, from the direct sweep's plan."""
    rows = [{"batch_size": int(o["batch_size"]), "log2_lr_measured": math.log2(o["lr"]),
             "measured_low": math.log2(o["lr_low"]), "measured_high": math.log2(o["lr_high"]),
             "loss_at_eta*": o["loss"]} for o in direct_plan["optima"]]
    return pd.DataFrame(rows).sort_values("batch_size")


def best_losses(frame: pd.DataFrame) -> pd.DataFrame:
    """The lowest final loss of any trial per batch (no fit): the plain reading of the measurement."""
    ok = frame[~frame.diverged.astype(bool)]
    return ok.groupby("batch_size").loss.min().rename("best_trial_loss").reset_index().astype({"batch_size": int})


def side_by_side(proxy: pd.DataFrame, batches, tokens: int, direct_plan: dict, runs: pd.DataFrame) -> pd.DataFrame:
    """Per batch: eta* projected from the proxies, measured at the target, the best trial's loss,
    and ``off_octave`` = projected - measured (log2)."""
    table = projected_at(proxy[~proxy.diverged], batches, TARGET_WIDTH, tokens).merge(
        measured_at(direct_plan), on="batch_size", how="outer").merge(best_losses(runs), on="batch_size")
    table["off_octave"] = table.log2_lr_projected - table.log2_lr_measured
    return table


def nearest(values, x: float) -> float:
    """The element of ``values`` nearest ``x`` in log2."""
    values = np.asarray(sorted(values), float)
    return float(values[np.argmin(np.abs(np.log2(values) - math.log2(x)))])


def verdicts(plan: dict, direct: dict, table: pd.DataFrame) -> list[dict]:
    """Projected against measured: the compute-optimal batch (goal within 2x), eta* at it (goal
    within 0.25 octave), and the critical batch B_noise against loss (the other route)."""
    out = []
    p, m = plan.get("compute_optimal_batch"), direct.get("compute_optimal_batch")
    if p and m:
        ratio = p / m
        out.append({"what": "compute-optimal batch (B_opt at the budget)", "projected": _ci(p, plan, "compute_optimal_batch"),
                    "measured": _ci(m, direct, "compute_optimal_batch"), "off by": f"{ratio:.2f}x",
                    "goal": f"within {BATCH_GOAL:g}x", "met": 1 / BATCH_GOAL <= ratio <= BATCH_GOAL})
    c = plan.get("critical_batch")
    if c and m:
        ratio = c / m
        out.append({"what": "critical batch (B_noise at the target's loss) as B_opt", "projected": _ci(c, plan, "critical_batch"),
                    "measured": _ci(m, direct, "compute_optimal_batch"), "off by": f"{ratio:.2f}x",
                    "goal": f"within {BATCH_GOAL:g}x", "met": 1 / BATCH_GOAL <= ratio <= BATCH_GOAL})
    if m:
        b = nearest(table.batch_size, m)
        row = table[table.batch_size == b].iloc[0]
        d = row.log2_lr_projected - row.log2_lr_measured
        out.append({"what": f"eta* at the measured B_opt (batch {b:.0f})",
                    "projected": f"2^{row.log2_lr_projected:.2f} [{row.projected_low:.2f}, {row.projected_high:.2f}]",
                    "measured": f"2^{row.log2_lr_measured:.2f} [{row.measured_low:.2f}, {row.measured_high:.2f}]",
                    "off by": f"{d:+.2f} octave", "goal": f"within {LR_GOAL:g} octave", "met": abs(d) <= LR_GOAL})
    return out


def _ci(value, plan, key) -> str:
    ci = plan.get(f"{key}_interval")
    return f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else f"{value:.1f}"


def direct_plan_of(df: pd.DataFrame, width: int | None = None) -> dict:
    """eta* per batch (quadratic fit, bootstrap interval) and the compute-optimal batch
    (:func:`mutransfer.projection._laws.flat_optimum` over the bootstrap losses) of a direct check's runs,
    in the fields of a plan (``optima``, ``compute_optimal_batch`` and its interval)."""
    from mutransfer.projection import flat_optimum, interval, quadratic_optimum

    width = TARGET_WIDTH if width is None else width
    optima, losses, batches = [], [], []
    rng = np.random.default_rng(0)
    for b, sub in df[~df.diverged.astype(bool)].groupby("batch_size"):
        opt = quadratic_optimum(sub.log2_lr.to_numpy(float), sub.loss.to_numpy(float), rng=rng)
        lo, hi = interval(opt.log2_lr[1:])
        optima.append({"width": width, "batch_size": int(b), "lr": 2 ** float(opt.log2_lr[0]), "lr_low": 2 ** lo,
                       "lr_high": 2 ** hi, "loss": float(opt.loss[0]), "n_trials": int(len(sub))})
        losses.append(opt.loss)
        batches.append(float(b))
    x, edge = flat_optimum(np.log2(batches), np.stack(losses, axis=1))
    return {"target_width": width, "optima": optima, "compute_optimal_batch": float(2 ** x[0]),
            "compute_optimal_batch_interval": [2 ** v for v in interval(x[1:])], "edge": bool(edge)}


# ---------------------------------------------------------------------- figures
def plot(proxy_plan: dict, direct_plan: dict, table: pd.DataFrame, path: Path) -> Path:
    """Left: loss at eta* against batch per width, with the projected and measured B_opt; right:
    eta* against batch per width, with the projection for the target."""
    from mutransfer.validation.style import pyplot, save, style_axes

    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    optima = pd.DataFrame(list(proxy_plan["optima"]) + list(direct_plan["optima"]))
    cmap = plt.get_cmap("viridis")
    widths = sorted(optima.width.unique())
    for i, (w, sub) in enumerate(optima.groupby("width")):
        sub = sub.sort_values("batch_size")
        colour = cmap(i / max(1, len(widths) - 1))
        label = f"width {w}" + (" (target, measured)" if w == direct_plan["target_width"] else " (proxy)")
        ax.plot(sub.batch_size, sub.loss, "o-", color=colour, label=label)
        bx.errorbar(sub.batch_size, np.log2(sub.lr), yerr=[np.log2(sub.lr / sub.lr_low), np.log2(sub.lr_high / sub.lr)],
                    fmt="o-", color=colour, capsize=3, label=label)
    for plan, style, what in ((proxy_plan, "--", "projected"), (direct_plan, ":", "measured")):
        b = plan.get("compute_optimal_batch")
        if b:
            ax.axvline(b, ls=style, color="k", lw=1, label=f"B_opt {what} {b:.0f}")
            lo, hi = plan["compute_optimal_batch_interval"]
            ax.axvspan(lo, hi, color="k", alpha=0.06 if style == "--" else 0.03)
    bx.plot(table.batch_size, table.log2_lr_projected, "s--", color="crimson", label="projected for 256")
    bx.fill_between(table.batch_size, table.projected_low, table.projected_high, color="crimson", alpha=0.12)
    for a, ylabel, title in ((ax, "eval loss at eta*", "loss at a fixed token budget"),
                             (bx, "log2 eta*", "eta* against batch")):
        a.set_xscale("log", base=2)
        a.set_xlabel("batch size (sequences)")
        a.set_ylabel(ylabel)
        a.set_title(title)
        style_axes(a)
        a.legend(fontsize=7)
    return save(fig, path)


def plot_decay(df: pd.DataFrame, opt: pd.DataFrame, path: Path) -> Path:
    """Loss against log2 lambda, one line per batch, lambda* marked."""
    from mutransfer.validation.style import pyplot, save, style_axes

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    means = df[~df.diverged.astype(bool)].groupby(["batch_size", "log2_wd"]).loss.mean().reset_index()
    for (b, sub), colour in zip(means.groupby("batch_size"), plt.get_cmap("plasma")(np.linspace(0, 0.8, len(opt)))):
        ax.plot(sub.log2_wd, sub.loss, "o-", color=colour, label=f"batch {b}")
        star = opt[opt.batch_size == b].iloc[0]
        ax.axvline(star["log2_wd*"], color=colour, ls="--", lw=1)
    ax.set_xlabel("log2 weight decay (AdamW lambda)")
    ax.set_ylabel("eval loss (mean over seeds)")
    ax.set_title("weight decay at a fixed budget, lr = eta*(B)")
    style_axes(ax)
    ax.legend(fontsize=8)
    return save(fig, path)


# ---------------------------------------------------------------------- the report
def write(cfg: ExperimentConfig, reports: Path) -> Path:
    """reports/<name>/index.md from the studies, the two plans and decay.csv."""
    from mutransfer.validation import markdown_table

    folder = reports / cfg.name
    proxy_plan = json.loads((folder / "plan.json").read_text())
    direct_plan = json.loads((folder / "plan-direct-w256.json").read_text())
    proxy = load_frame(cfg, study_names(cfg, PROXY_WIDTHS), reports)
    direct = load_frame(cfg, study_names(cfg, [TARGET_WIDTH], (cfg.sweep.seed,)), reports)
    batches = sorted(direct.batch_size.unique())
    table = side_by_side(proxy, batches, cfg.train.tokens, direct_plan, direct)
    table.to_csv(folder / "projection.csv", index=False)
    plot(proxy_plan, direct_plan, table, folder / "budget.png")
    lines = [f"# Batch-size transfer at a token budget: {cfg.name}", "",
             f"Written by `{MODULE} write` from the sweeps, plans and CSVs in this folder.", "",
             "## Commands", "", "```sh", *_commands(), "```", "",
             *_setup(cfg, proxy, direct), "## Projected against measured", ""]
    rows = verdicts(proxy_plan, direct_plan, table)
    lines += markdown_table(pd.DataFrame(rows)) + [""] + _reading(rows, table) + [""]
    lines += ["eta* per batch at the target, projected from the proxies (the fitted law moved to the "
              "target's loss) and measured by the direct sweep (quadratic fit, bootstrap interval):", ""]
    lines += markdown_table(table.round(3)) + ["", "![budget](budget.png)", ""]
    lines += _plan_lines(proxy_plan, direct_plan) + _decay_section(folder) + _muon_section(folder, reports)
    lines += _cost(proxy, direct)
    out = folder / "index.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def _reading(rows: list[dict], table: pd.DataFrame) -> list[str]:
    """Which batch route came closer, and how far eta* was off over all batches."""
    ratios = {r["what"].split(" (")[0]: float(r["off by"].rstrip("x")) for r in rows if r["off by"].endswith("x")}
    out = []
    if len(ratios) == 2:
        closer = min(ratios, key=lambda k: abs(math.log2(ratios[k])))
        out.append(f"- Of the two routes to the target's batch, the **{closer}** came closer to the direct "
                   f"measurement ({ratios[closer]:.2f}x against "
                   f"{max(ratios.values(), key=lambda v: abs(math.log2(v))):.2f}x).")
    best = table.loc[table.best_trial_loss.idxmin()]
    fitted = table.loc[table["loss_at_eta*"].idxmin()]
    out.append(f"- The plain reading (the lowest final loss of any trial) is lowest at batch "
               f"{int(best.batch_size)} ({best.best_trial_loss:.3f}); the fitted loss at eta* at batch "
               f"{int(fitted.batch_size)} ({fitted['loss_at_eta*']:.3f}). B_opt is the largest batch whose "
               f"fitted loss is within 2 bootstrap sd of the lowest, so a poorly determined fit (one seed, a "
               f"1-octave lr grid) widens it toward larger batches.")
    off = table.off_octave.abs()
    out.append(f"- eta* projected against measured over all {len(table)} batches: median |off| "
               f"{off.median():.2f} octave, worst {off.max():.2f} (batch {int(table.batch_size[off.idxmax()])}); "
               f"{int((off <= LR_GOAL).sum())} of {len(table)} within {LR_GOAL:g} octave.")
    return out


def _commands() -> list[str]:
    """The command lines at the top of the two sweep files (AdamW, then Muon)."""
    lines = [line[4:] for path in (CONFIG, MUON_CONFIG) if path.exists()
             for line in path.read_text().splitlines() if line.startswith("#   ")]
    return sorted(lines, key=lambda line: f"{MODULE} write" in line)  # the report last


def _setup(cfg, proxy, direct) -> list[str]:
    t = cfg.train
    b = sorted(int(v) for v in proxy.batch_size.unique())
    kwargs = ", ".join(f"{k}={v}" for k, v in (cfg.model.kwargs or {}).items())
    return [f"`{cfg.model.factory}({kwargs})` on {cfg.data.source}, "
            f"{cfg.parametrization.scheme} + {cfg.parametrization.optimizer}, "
            f"every run trains on {t.tokens} tokens (steps = tokens / (batch x {cfg.tokens_per_example()}): "
            f"{cfg.steps_for(b[0])} steps at batch {b[0]} ... {cfg.steps_for(b[-1])} at batch {b[-1]}), "
            f"{t.schedule} schedule with {t.warmup:g} warmup, and every trial is evaluated on the same "
            f"{t.eval_batches} x {t.batch_size} held-out sequences. Proxies: widths "
            f"{', '.join(map(str, PROXY_WIDTHS))}, seeds {', '.join(map(str, SEEDS))} "
            f"({len(proxy)} trials, {int(proxy.diverged.sum())} diverged); the target width "
            f"{TARGET_WIDTH} swept directly on the same grid ({len(direct)} trials, "
            f"{int(direct.diverged.sum())} diverged).", ""]


def _plan_lines(proxy_plan: dict, direct_plan: dict | None) -> list[str]:
    lines = ["## The plans", ""] if direct_plan else []
    pairs = [("projected from the proxies (`plan.json`)", proxy_plan),
             ("fitted on the target's own sweep (`plan-direct-w256.json`)", direct_plan)]
    for what, plan in [(w, p) for w, p in pairs if p]:
        d = plan["diagnostics"]
        support = ", ".join(f"{k} {v:.0%}" for k, v in d.get("law_support", {}).items())
        lines += [f"- {what}: lr {plan['lr']:.4g} at batch {plan['batch_size']}, law **{plan.get('law')}** "
                  f"(bootstrap support: {support}), B_noise at the target's loss "
                  f"{plan.get('critical_batch') or float('nan'):.1f}, compute-optimal batch "
                  f"{plan.get('compute_optimal_batch') or float('nan'):.1f}."]
        per_cell = [w for w in plan.get("warnings", []) if w.startswith("width ")]
        lines += [f"  - note: {w}" for w in plan.get("warnings", []) if w not in per_cell]
        if per_cell:
            lines += [f"  - and {len(per_cell)} notes on single (width, batch) lr fits (a grid edge, a flat "
                      f"or weak fit); they are listed in the plan's JSON"]
    return lines + [""]


def _decay_section(folder: Path) -> list[str]:
    from mutransfer.validation import markdown_table

    path = folder / "decay.csv"
    if not path.exists():
        return ["## Weight decay against batch", "", f"Not run: `{MODULE} decay`.", ""]
    df = pd.read_csv(path)
    opt = decay_optima(df)
    plot_decay(df, opt, folder / "decay.png")
    slope = decay_slope(opt)
    return ["## Weight decay against batch", "",
            f"Width {DECAY_WIDTH}, lr at the sweep's eta*(B), AdamW weight decay 2^{min(DECAY_LOG2_WDS)} ... "
            f"2^{max(DECAY_LOG2_WDS)}, seeds {', '.join(map(str, DECAY_SEEDS))}, the same budget. Holding the "
            "timescale tau = B / (eta lambda D) (Power Lines; `wd_policy = \"timescale\"`) predicts that "
            "eta* lambda* grows like B: slope 1 of log2 (eta* lambda*) against log2 B.", "",
            *markdown_table(opt.round(3)), "",
            f"Measured slope of log2 (eta* lambda*) against log2 B: **{slope:+.2f}** (timescale rule: +1; "
            "fixed lambda: the slope of log2 eta* alone).", "", "![decay](decay.png)", ""]


def _muon_section(folder: Path, reports: Path) -> list[str]:
    from mutransfer.validation import markdown_table

    cfg = load_config(MUON_CONFIG)
    plan_path, direct_path = reports / cfg.name / "plan.json", folder / "muon-direct.csv"
    if not (plan_path.exists() and direct_path.exists()):
        return ["## Muon", "", f"Not run: the commands at the top of `sweeps/{MUON_CONFIG.name}`.", ""]
    proxy_plan = json.loads(plan_path.read_text())
    runs = pd.read_csv(direct_path)
    direct = direct_plan_of(runs)
    proxy = load_frame(cfg, study_names(cfg, PROXY_WIDTHS, (cfg.sweep.seed,)), reports)
    table = side_by_side(proxy, MUON_BATCHES, cfg.train.tokens, direct, runs)
    table.to_csv(folder / "muon-projection.csv", index=False)
    plot(proxy_plan, direct, table, folder / "muon.png")
    rows = verdicts(proxy_plan, direct, table)
    return ["## Muon", "",
            f"`sweeps/{MUON_CONFIG.name}`: the same budget and grid with {cfg.parametrization.scheme} + Muon "
            f"(the AdamW groups share the lr), proxies at widths {', '.join(map(str, PROXY_WIDTHS))} "
            f"(one seed), and a smaller direct check at width {TARGET_WIDTH}: batches "
            f"{', '.join(map(str, MUON_BATCHES))} x the {len(cfg.sweep.space['lr'])} lrs of the sweep, one seed "
            f"(`{MODULE} muon-direct`).", "",
            *markdown_table(pd.DataFrame(rows)), "",
            *_reading(rows, table), "",
            *markdown_table(table.round(3)), "", "![muon](muon.png)", "",
            *_plan_lines(proxy_plan, None)]


def _cost(proxy: pd.DataFrame, direct: pd.DataFrame) -> list[str]:
    """Trial-seconds per study (each trial's own wall time; the sweeps ran 2 workers at once)."""
    seconds = {**proxy.attrs.get("seconds", {}), **direct.attrs.get("seconds", {})}
    rows = pd.DataFrame({"study": list(seconds), "trial-seconds": [round(v) for v in seconds.values()]})
    proxy_s = sum(proxy.attrs.get("seconds", {}).values())
    direct_s = sum(direct.attrs.get("seconds", {}).values())
    from mutransfer.validation import markdown_table

    return ["## Cost", "", *markdown_table(rows), "",
            f"Proxies: {proxy_s / 60:.1f} trial-minutes; the direct sweep at the target: {direct_s / 60:.1f} "
            f"trial-minutes ({direct_s / max(proxy_s, 1e-9):.1f}x the proxies'). Each sweep ran 2 workers on "
            "the 2 cores, so wall time is about half the trial time.", ""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["decay", "muon-direct", "write"])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--reports", default="reports")
    args = parser.parse_args(argv)
    cfg, reports = load_config(args.config), Path(args.reports)
    if args.part == "decay":
        run_decay(cfg, reports / cfg.name / "decay.csv", reports)
    elif args.part == "muon-direct":
        run_direct(load_config(MUON_CONFIG), reports / cfg.name / "muon-direct.csv")
    else:
        print(write(cfg, reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
