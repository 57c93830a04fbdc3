"""The batch-at-a-budget report (reports/gpt-cpu-budget/index.md): the projection of B_opt and
eta*(B) from the proxies against a direct sweep at the target, weight decay against the batch,
and the same check with Muon, all read from what the sweeps and the experiment stored (the
studies, plan.json, plan-direct-w256.json, decay.csv, muon-direct.csv)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from mutransfer.runs import ExperimentConfig, load_config
from mutransfer.validation._fig_budget import plot_budget, plot_decay
from mutransfer.validation._markdown import markdown_table, write_markdown

BUDGET_COMMAND = "python -m mutransfer.experiments.batch_at_budget"
LR_GOAL, BATCH_GOAL = 0.25, 2.0  # octaves; factor


def study_names(cfg: ExperimentConfig, widths, seeds) -> list[str]:
    """The sweeper's study names: <name>-w<W> for seed [sweep] seed, else <name>-w<W>-s<S>.

        >>> study_names(load_config("sweeps/gpt-cpu-budget.toml"), [32], [0, 1000])
        ['gpt-cpu-budget-w32', 'gpt-cpu-budget-w32-s1000']
    """
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
                         f"{cfg.name}'s sweeps file first (`mutransfer sweep CONFIG --width W --seed S`)")
    return [optuna.load_study(study_name=n, storage=url) for n in names]


def load_trials(cfg: ExperimentConfig, names, reports: str | Path = "reports") -> pd.DataFrame:
    """Every stored trial of the studies ``names`` in ``cfg``'s storage (``[sweep] storage``, else
    ``<reports>/<name>/study.db``), diverged ones kept and flagged, with each study's summed trial
    seconds in ``frame.attrs["seconds"]`` (a dict: study name -> seconds).

        >>> cfg = load_config("sweeps/gpt-cpu-budget.toml")
        >>> load_trials(cfg, study_names(cfg, [32], [0]), "reports").attrs["seconds"]
    """
    from mutransfer.tuning import trials_frame

    studies = load_studies(cfg, names, reports)
    frame = trials_frame(studies, keep_diverged=True)
    frame.attrs["seconds"] = {s.study_name: sum(t.duration.total_seconds() for t in s.trials if t.duration)
                              for s in studies}
    return frame


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
    """Per batch: eta* projected from the proxies to the direct plan's width, measured there, the
    best trial's loss, and ``off_octave`` = projected - measured (log2)."""
    width = int(direct_plan["target_width"])
    table = projected_at(proxy[~proxy.diverged], batches, width, tokens).merge(
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


def direct_plan_of(df: pd.DataFrame, width: int) -> dict:
    """eta* per batch (quadratic fit in log2 lr, bootstrap interval) and the compute-optimal batch
    (:func:`mutransfer.projection.flat_optimum` over the bootstrap losses: the largest batch whose
    loss at eta* is within 2 sd of the lowest) of direct runs (batch_size, log2_lr, loss, diverged)
    at ``width``, in the fields of a plan (``optima``, ``compute_optimal_batch`` and its interval).

        >>> direct_plan_of(pd.read_csv("reports/gpt-cpu-budgets/direct.csv"), 256)["compute_optimal_batch"]
        2.0
    """
    from mutransfer.projection import flat_optimum, interval, quadratic_optimum

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


def write_budget_report(folder: str | Path, config: str | Path, *, muon_config: str | Path | None = None,
                        reports: str | Path | None = None, proxy_widths=(32, 64), seeds=(0, 1000),
                        target_width: int = 256, command: str = BUDGET_COMMAND) -> Path:
    """``folder/index.md`` (+ projection.csv, budget.png, decay.png, muon.png) from what is stored:
    the proxy studies at ``proxy_widths`` x ``seeds`` and the direct study at ``target_width`` (in
    ``<reports>/<name>/study.db``; ``reports`` default ``folder``'s parent), ``folder/plan.json``
    (transferred from the proxies), ``folder/plan-direct-w256.json`` (fitted on the target's
    sweep), and where present ``decay.csv`` and ``muon-direct.csv`` (``muon_config``'s proxies).
    Each verdict compares projected with measured: B_opt within 2x, eta* within 0.25 octave.

        >>> write_budget_report("reports/gpt-cpu-budget", "sweeps/gpt-cpu-budget.toml",
        ...                     muon_config="sweeps/gpt-cpu-budget-muon.toml")
    """
    folder = Path(folder)
    reports = folder.parent if reports is None else Path(reports)
    cfg = load_config(config)
    plans = [folder / "plan.json", folder / "plan-direct-w256.json"]
    for path in plans:
        if not path.is_file():
            raise ValueError(f"no {path}: write it with `mutransfer transfer {config} ...` (the commands "
                             f"at the top of {Path(config).name})")
    proxy_plan, direct_plan = (json.loads(p.read_text()) for p in plans)
    proxy = load_trials(cfg, study_names(cfg, proxy_widths, seeds), reports)
    direct = load_trials(cfg, study_names(cfg, [target_width], (cfg.sweep.seed,)), reports)
    batches = sorted(direct.batch_size.unique())
    table = side_by_side(proxy, batches, cfg.train.tokens, direct_plan, direct)
    table.to_csv(folder / "projection.csv", index=False)
    plot_budget(proxy_plan, direct_plan, table, folder / "budget.png")
    lines = ["## Commands", "", "```sh", *_commands(config, muon_config, command), "```", "",
             *_setup(cfg, proxy, direct, proxy_widths, seeds, target_width),
             "## Projected against measured", ""]
    rows = verdicts(proxy_plan, direct_plan, table)
    lines += markdown_table(pd.DataFrame(rows)) + [""] + _reading(rows, table) + [""]
    lines += ["eta* per batch at the target, projected from the proxies (the fitted law moved to the "
              "target's loss) and measured by the direct sweep (quadratic fit, bootstrap interval):", ""]
    lines += markdown_table(table.round(3)) + ["", "![budget](budget.png)", ""]
    lines += _plan_lines(proxy_plan, direct_plan) + _decay_section(folder, command)
    lines += _muon_section(folder, reports, muon_config, proxy_widths, target_width, command)
    lines += _cost(proxy, direct)
    return write_markdown(folder / "index.md", f"Batch-size transfer at a token budget: {cfg.name}",
                          f"{command} write", lines)


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


def _commands(config, muon_config, command: str) -> list[str]:
    """The command lines at the top of the two sweep files (AdamW, then Muon), the report last."""
    paths = [Path(p) for p in (config, muon_config) if p is not None]
    lines = [line[4:] for path in paths if path.exists()
             for line in path.read_text().splitlines() if line.startswith("#   ")]
    return sorted(lines, key=lambda line: f"{command} write" in line)


def _setup(cfg, proxy, direct, proxy_widths, seeds, target_width: int) -> list[str]:
    t = cfg.train
    b = sorted(int(v) for v in proxy.batch_size.unique())
    kwargs = ", ".join(f"{k}={v}" for k, v in (cfg.model.kwargs or {}).items())
    return [f"`{cfg.model.factory}({kwargs})` on {cfg.data.source}, "
            f"{cfg.parametrization.scheme} + {cfg.parametrization.optimizer}, "
            f"every run trains on {t.tokens} tokens (steps = tokens / (batch x {cfg.tokens_per_example()}): "
            f"{cfg.steps_for(b[0])} steps at batch {b[0]} ... {cfg.steps_for(b[-1])} at batch {b[-1]}), "
            f"{t.schedule} schedule with {t.warmup:g} warmup, and every trial is evaluated on the same "
            f"{t.eval_batches} x {t.batch_size} held-out sequences. Proxies: widths "
            f"{', '.join(map(str, proxy_widths))}, seeds {', '.join(map(str, seeds))} "
            f"({len(proxy)} trials, {int(proxy.diverged.sum())} diverged); the target width "
            f"{target_width} swept directly on the same grid ({len(direct)} trials, "
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


def _decay_section(folder: Path, command: str) -> list[str]:
    path = folder / "decay.csv"
    if not path.exists():
        return ["## Weight decay against batch", "", f"Not run: `{command} decay`.", ""]
    df = pd.read_csv(path)
    wds = sorted(int(v) if float(v).is_integer() else v for v in df.log2_wd.unique())
    seeds = sorted(int(v) for v in df.seed.unique())
    opt = decay_optima(df)
    plot_decay(df, opt, folder / "decay.png")
    slope = decay_slope(opt)
    return ["## Weight decay against batch", "",
            f"Width {int(df.width.iloc[0])}, lr at the sweep's eta*(B), AdamW weight decay 2^{wds[0]} ... "
            f"2^{wds[-1]}, seeds {', '.join(map(str, seeds))}, the same budget. Holding the "
            "timescale tau = B / (eta lambda D) (Power Lines; `wd_policy = \"timescale\"`) predicts that "
            "eta* lambda* grows like B: slope 1 of log2 (eta* lambda*) against log2 B.", "",
            *markdown_table(opt.round(3)), "",
            f"Measured slope of log2 (eta* lambda*) against log2 B: **{slope:+.2f}** (timescale rule: +1; "
            "fixed lambda: the slope of log2 eta* alone).", "", "![decay](decay.png)", ""]


def _muon_section(folder: Path, reports: Path, muon_config, proxy_widths, target_width: int,
                  command: str) -> list[str]:
    if muon_config is None:
        return []
    cfg = load_config(muon_config)
    plan_path, direct_path = reports / cfg.name / "plan.json", folder / "muon-direct.csv"
    if not (plan_path.exists() and direct_path.exists()):
        return ["## Muon", "", f"Not run: the commands at the top of `sweeps/{Path(muon_config).name}`.", ""]
    proxy_plan = json.loads(plan_path.read_text())
    runs = pd.read_csv(direct_path)
    batches = sorted(int(b) for b in runs.batch_size.unique())
    direct = direct_plan_of(runs, target_width)
    proxy = load_trials(cfg, study_names(cfg, proxy_widths, (cfg.sweep.seed,)), reports)
    table = side_by_side(proxy, batches, cfg.train.tokens, direct, runs)
    table.to_csv(folder / "muon-projection.csv", index=False)
    plot_budget(proxy_plan, direct, table, folder / "muon.png")
    rows = verdicts(proxy_plan, direct, table)
    return ["## Muon", "",
            f"`sweeps/{Path(muon_config).name}`: the same budget and grid with {cfg.parametrization.scheme} + Muon "
            f"(the AdamW groups share the lr), proxies at widths {', '.join(map(str, proxy_widths))} "
            f"(one seed), and a smaller direct check at width {target_width}: batches "
            f"{', '.join(map(str, batches))} x the {len(cfg.sweep.space['lr'])} lrs of the sweep, one seed "
            f"(`{command} muon-direct`).", "",
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
    return ["## Cost", "", *markdown_table(rows), "",
            f"Proxies: {proxy_s / 60:.1f} trial-minutes; the direct sweep at the target: {direct_s / 60:.1f} "
            f"trial-minutes ({direct_s / max(proxy_s, 1e-9):.1f}x the proxies'). Each sweep ran 2 workers on "
            "the 2 cores, so wall time is about half the trial time.", ""]


