"""Validate transfer: the lr-loss curves of several widths, per scheme and optimizer.

Every point of the grid (scheme x optimizer x width x log2 lr x seed) is one Optuna trial in the
sweeper's storage, in the study ``<name>-validate``: rerunning the command skips finished
points, a point whose worker died or was interrupted is run again, and several
``mutransfer validate`` processes (or machines, with a PostgreSQL ``--storage``) share the work.
Points are queued with ``study.enqueue_trial`` rather than drawn by ``GridSampler``: the
GridSampler counts a FAILed (e.g. Ctrl-C'd) point as visited and never reruns it, and forgets
every finished point when the grid changes (adding a width would rerun the whole grid).

Outputs in ``reports/<name>/``: validate.csv (one row per run), validate.png (loss against
log2 lr, one curve per width) and validate.md (eta* per width, drift, regret, verdict).

    >>> df = validate("sweeps/quickstart.toml", widths=[64, 128, 256], schemes=["sp", "mup"],
    ...               optimizers=["adamw"], log2_lrs=[-12, -11, -10, -9, -8], seeds=2)
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import random
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from mutransfer.runs import ExperimentConfig, load_config
from mutransfer.core import OPTIMIZERS, SCHEMES
from mutransfer.tuning import (TrialPoint, default_storage, fail_stale, make_objective, open_storage,
                               redact)
from mutransfer.validation._markdown import markdown_table

# one trial per point of their product; depth and depth_alpha are None where the config has no
# depth (studies from before they existed read the same)
AXES = ("scheme", "optimizer", "width", "depth", "depth_alpha", "log2_lr", "seed")
OPTIONAL_AXES = ("depth", "depth_alpha")
NONE_CODE = {"depth": 0, "depth_alpha": -1.0}  # how a trial's params spell None on these axes
COLUMNS = ["scheme", "optimizer", "width", "depth", "depth_alpha", "log2_lr", "lr", "seed", "loss",
           "diverged", "reason", "seconds"]
POLL = 2.0  # seconds between looks at the storage while other workers finish their points


def validate(config: ExperimentConfig | str | Path, *, widths: Sequence[int],
             schemes: Sequence[str], optimizers: Sequence[str], log2_lrs: Sequence[float],
             seeds: int | Sequence[int], steps: int | None = None, storage: str | None = None,
             study_name: str | None = None, device: str = "auto",
             reports_dir: str | Path = "reports", show_progress: bool = True,
             depths: Sequence[int] | None = None,
             depth_alphas: Sequence[float] | None = None) -> pd.DataFrame:
    """Train every (scheme, optimizer, width, lr, seed) point not yet done; write the report.

    Each point is :func:`mutransfer.runs.run_trial` (through the sweep's objective,
    :func:`mutransfer.tuning.make_objective` with :func:`grid_point`) with the config's scheme and optimizer
    replaced and ``lr = 2**log2_lr``. A diverged run is kept with ``loss = NaN``,
    ``diverged = True`` and its reason. ``seeds`` is a count (seeds 0..n-1) or the seeds.
    ``depths`` (>= 2, the config needs ``[model] depth`` and ``base_depth``) and
    ``depth_alphas`` make the landscapes run across depth instead (scaling.md section 9): the
    study ``<name>-depth`` and ``depth.{csv,png,md}`` (:func:`write_depth_outputs`); without
    them every run has the config's proxy depth and alpha.

    Args:
        config: a TOML path or an ExperimentConfig; its training setup is used as is.
        widths, schemes, optimizers, log2_lrs: the grid.
        steps: training steps per run (default: ``[train] steps``).
        storage: SQLAlchemy URL (default: the sweeper's ``reports/<name>/study.db``).
        study_name: default ``<name>-validate``.

    Returns the tidy DataFrame (columns ``COLUMNS``) of the curves the grid asks for (scheme,
    optimizer, width, seed), at every lr the study holds for them, the grid's own included.
    ``<reports_dir>/<name>/validate.csv``, validate.png and validate.md hold every finished
    point of the study (earlier runs with other grids included) and the commands that ran them.

        >>> df = validate(cfg, widths=[64, 256], schemes=["sp", "mup"], optimizers=["adamw"],
        ...               log2_lrs=[-12, -10, -8], seeds=2, steps=50)
    """
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    by_depth = depths is not None
    grid = make_grid(widths, schemes, optimizers, log2_lrs, seeds, *_depth_axes(cfg, depths, depth_alphas))
    if steps is not None:
        cfg = cfg.override({"train.steps": steps, "train.tokens": None})  # explicit steps win
    cfg = cfg.override({"train.eval_every": cfg.train.steps})  # only the final loss counts
    study = open_study(cfg, storage or cfg.sweep.storage or default_storage(cfg, reports_dir),
                       study_name or f"{cfg.name}-{'depth' if by_depth else 'validate'}")
    _run_grid(study, cfg, grid, device, show_progress)
    source = "CONFIG" if isinstance(config, ExperimentConfig) else shell_path(config)
    command = command_line(source, grid, cfg.train.steps, storage, study_name, reports_dir)
    commands = list(study.user_attrs.get("commands", []))
    if command not in commands:
        commands.append(command)
        study.set_user_attr("commands", commands)
    # The outputs show every point of the study (one training setup), so separate runs, e.g.
    # AdamW and Muon over different lr ranges, or an added width, land in one figure.
    everything = results(study)
    if by_depth:
        from mutransfer.validation._depth import write_depth_outputs

        write_depth_outputs(everything, Path(reports_dir) / cfg.name, commands=commands)
    else:
        write_outputs(everything, Path(reports_dir) / cfg.name, commands=commands)
    return curves_of(everything, grid)


def _depth_axes(cfg: ExperimentConfig, depths, alphas) -> tuple[list, list]:
    """The grid's depth and depth_alpha values: the given ones (checked), else the config's."""
    if depths is None:
        if alphas is not None:
            raise ValueError("depth_alphas (--depth-alphas) needs depths (--depths) to compare")
        return [cfg.proxy_depth()], [cfg.parametrization.depth_alpha]
    if cfg.model.depth is None:
        raise ValueError(f"depths need [model] depth and base_depth in {cfg.name!r}'s config (the "
                         f"factory takes depth=; the depth rules are relative to base_depth)")
    bad = [d for d in depths if isinstance(d, bool) or not isinstance(d, int) or d < 1]
    if bad or len(set(depths)) < 2:
        raise ValueError(f"depths must be >= 2 distinct positive ints, e.g. --depths 2,4,8,16; got {list(depths)!r}")
    alphas = [cfg.parametrization.depth_alpha] if alphas is None else list(alphas)
    if any(a is None or not 0 <= a <= 1 for a in alphas if a is not None) or not alphas:
        raise ValueError(f"depth_alphas must lie in [0, 1], e.g. --depth-alphas 0,0.5,1; got {alphas!r}")
    return list(depths), [None if a is None else round(float(a), 6) for a in alphas]


def curves_of(df: pd.DataFrame, grid: list[dict]) -> pd.DataFrame:
    """The rows of ``df`` on the curves (scheme, optimizer, width, seed) that ``grid`` asks for,
    at every lr the study holds: an lr range extended by a later command fits as one curve.

        >>> curves_of(results(study), make_grid([64], ["mup"], ["adamw"], [-4, -3], 1))
    """
    curve = ("scheme", "optimizer", "width", "depth", "depth_alpha", "seed")
    asked = {tuple(p[a] for a in curve) for p in grid}
    values = zip(*(df[a].map(lambda v: None if v is None or v != v else v) for a in curve))
    on_curve = [k in asked for k in values]
    return df[on_curve].reset_index(drop=True)


def command_line(source: str, grid: list[dict], steps: int, storage: str | None = None,
                 study_name: str | None = None, reports_dir: str | Path = "reports") -> str:
    """The ``mutransfer validate`` command that reruns (and, finished, just rewrites) ``grid``.

        >>> command_line("sweeps/quickstart.toml", make_grid([64, 128], ["mup"], ["adamw"], [-9, -8], 1), 80)
        'mutransfer validate sweeps/quickstart.toml --widths 64,128 --schemes mup --optimizers adamw --lrs=-9:-8:1 --seeds 1 --steps 80'
    """
    axes = {a: sorted({p[a] for p in grid}, key=lambda v: (v is not None, v)) for a in AXES}
    lrs = axes["log2_lr"]
    steps_between = {round(b - a, 6) for a, b in zip(lrs, lrs[1:])}
    lr_arg = (f"{lrs[0]:g}:{lrs[-1]:g}:{steps_between.pop():g}" if len(steps_between) == 1
              else ",".join(f"{v:g}" for v in lrs))
    parts = [f"mutransfer validate {source}",
             f"--widths {','.join(map(str, axes['width']))}",
             f"--schemes {','.join(axes['scheme'])}", f"--optimizers {','.join(axes['optimizer'])}",
             f"--lrs={lr_arg}", f"--seeds {len(axes['seed'])}", f"--steps {steps}"]
    if len(axes["depth"]) > 1:
        parts.append(f"--depths {','.join(map(str, axes['depth']))}")
        if axes["depth_alpha"] != [None]:
            parts.append(f"--depth-alphas {','.join(f'{a:g}' for a in axes['depth_alpha'])}")
    parts += [f"--storage {storage}"] if storage else []
    parts += [f"--study {study_name}"] if study_name else []
    parts += [f"--reports {reports_dir}"] if Path(reports_dir) != Path("reports") else []
    return " ".join(parts)


def shell_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it (commands shown in
    reports stay short and portable), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def make_grid(widths, schemes, optimizers, log2_lrs, seeds, depths=(None,),
              depth_alphas=(None,)) -> list[dict]:
    """The grid's points as dicts keyed by ``AXES``, each argument checked.

        >>> len(make_grid([64, 128], ["mup"], ["adamw"], [-10, -9], 2))
        8
    """
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    elif not isinstance(seeds, (list, tuple, range)):
        raise TypeError(f"seeds must be a count (2 means seeds 0 and 1) or a list of ints, got {seeds!r}")
    axes = {"scheme": list(schemes), "optimizer": list(optimizers), "width": list(widths),
            "depth": list(depths), "depth_alpha": list(depth_alphas),
            "log2_lr": [round(float(x), 6) for x in log2_lrs], "seed": list(seeds)}
    for name, values in axes.items():
        if not values:
            raise ValueError(f"{name}s is empty; give at least one, e.g. --{name.replace('log2_', '')}s ...")
    _check_values("scheme", axes["scheme"], SCHEMES)
    _check_values("optimizer", axes["optimizer"], OPTIMIZERS)
    for name in ("width", "seed"):
        low = 1 if name == "width" else 0
        bad = [v for v in axes[name] if isinstance(v, bool) or not isinstance(v, int) or v < low]
        if bad:
            raise ValueError(f"{name}s must be {'positive' if name == 'width' else 'non-negative'} "
                             f"ints, got {bad[0]!r} in {axes[name]!r}")
    if len(axes["width"]) < 2 and len(set(axes["depth"])) < 2:
        raise ValueError(f"validation compares widths (or depths); give two or more, got "
                         f"{axes['width']!r}")
    unique = [list(dict.fromkeys(axes[a])) for a in AXES]  # duplicates dropped, order kept
    return [dict(zip(AXES, p)) for p in itertools.product(*unique)]


def _check_values(name: str, values: list, allowed: Sequence[str]) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"unknown {name} {bad[0]!r}; choose from {', '.join(allowed)}")


def setup_of(cfg: ExperimentConfig) -> dict:
    """What every point of one validation study shares: the config without the grid's axes
    (scheme, optimizer, lr, width), the sweep section and eval_every (the final loss does not
    depend on how often it was evaluated before)."""
    d = cfg.to_dict()
    d.pop("sweep")
    d["model"].pop("width")
    d["model"].pop("depth", None)  # an axis (the proxy depth, or --depths)
    d["parametrization"].pop("depth_alpha", None)
    d["train"].pop("lr")
    d["train"].pop("eval_every")
    for key in ("scheme", "optimizer"):
        d["parametrization"].pop(key)
    return d


def open_study(cfg: ExperimentConfig, url: str, name: str):
    """Create or load the study; refuse one that was run with a different training setup
    (its losses would be mixed with this run's)."""
    import optuna

    storage = open_storage(url, heartbeat_interval=cfg.sweep.heartbeat_interval,
                           grace_period=cfg.sweep.grace_period)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        # no pruner: the objective reports evals, and a pruned point would never be COMPLETE
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize",
                                    load_if_exists=True, pruner=optuna.pruners.NopPruner())
    finally:
        optuna.logging.set_verbosity(verbosity)
    setup = json.loads(json.dumps(setup_of(cfg)))  # JSON round trip: tuples become lists
    stored = study.user_attrs.get("setup")
    if stored is None:
        study.set_user_attr("setup", setup)
    elif (filled := _older_defaults(stored, setup)) != setup:
        diff = ", ".join(_diff(filled, setup)[:4])
        raise ValueError(f"study {name!r} in {redact(url)} holds runs of another training setup ({diff}); "
                         f"pass a new study name (--study {name}-2) or delete the old one: "
                         f"optuna delete-study --study-name {name} --storage {redact(url)}")
    return study


def _older_defaults(stored: dict, setup: dict) -> dict:
    """``stored`` with the keys a later version added to the config filled in where ``setup``
    has them at their default: a new field left at its default changes no run, so a study from
    before it still resumes."""
    import dataclasses

    from mutransfer.runs import SECTIONS

    out = {k: dict(v) if isinstance(v, dict) else v for k, v in stored.items()}
    for section, cls in SECTIONS.items():
        if section not in setup or not isinstance(out.get(section), dict):
            continue
        for f in dataclasses.fields(cls):
            if f.name in setup[section] and f.name not in out[section]:
                default = (f.default if f.default is not dataclasses.MISSING
                           else f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
                if json.loads(json.dumps(default)) == setup[section][f.name]:
                    out[section][f.name] = setup[section][f.name]
    return out


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: was {a!r}, now {b!r}")
    return out


def _key(params: dict) -> tuple:
    def value(a):
        v = params.get(a)
        if a in NONE_CODE and v == NONE_CODE[a]:
            v = None
        return round(float(v), 6) if a in ("log2_lr", "depth_alpha") and v is not None else v

    return tuple(value(a) for a in AXES)


def _states(study, grid_keys: set) -> dict[tuple, set[str]]:
    """Grid point -> the states of its trials (COMPLETE, RUNNING, WAITING, FAIL, ...)."""
    out: dict[tuple, set[str]] = {}
    for t in study.get_trials(deepcopy=False):
        params = t.system_attrs.get("fixed_params", t.params)
        if set(AXES) - set(OPTIONAL_AXES) <= set(params) and _key(params) in grid_keys:
            out.setdefault(_key(params), set()).add(t.state.name)
    return out


def _run_grid(study, cfg: ExperimentConfig, grid: list[dict], device: str, show: bool) -> None:
    """Queue and run points until every point of ``grid`` is COMPLETE (others' included)."""
    import optuna
    from tqdm.auto import tqdm

    keys = {_key(p): p for p in grid}
    order = list(keys)
    random.Random(time.time_ns()).shuffle(order)  # workers sharing a study start apart
    # the sweep's objective (stores loss, diverged, reason, seconds, tokens, config, device)
    objective = make_objective(cfg, device=device, point=functools.partial(grid_point, cfg))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bar = tqdm(total=len(grid), desc=study.study_name, unit="run", disable=not show)
    try:
        while True:
            fail_stale(study, cfg.sweep.grace_period)  # a dead worker's point: FAIL, runnable again
            states = _states(study, set(keys))
            done = sum("COMPLETE" in s for s in states.values())
            bar.n = done
            bar.refresh()
            if done == len(grid):
                return
            todo = [k for k in order if not states.get(k, set()) & {"COMPLETE", "RUNNING", "WAITING"}]
            if todo:
                study.enqueue_trial({a: NONE_CODE[a] if v is None and a in NONE_CODE else v
                                     for a, v in keys[todo[0]].items()})
            elif not any("WAITING" in s for s in states.values()):
                time.sleep(POLL)  # the rest is running on other workers
                continue
            study.optimize(objective, n_trials=1)  # pops the oldest WAITING point, any worker's
    finally:
        bar.close()
        optuna.logging.set_verbosity(verbosity)


def grid_point(cfg: ExperimentConfig, trial) -> TrialPoint:
    """The grid point a trial holds (queued with ``study.enqueue_trial``), as the tuning
    objective's :class:`~mutransfer.tuning.TrialPoint`: the config at the point's scheme,
    optimizer and depth_alpha, ``lr = 2**log2_lr``, its width, seed and depth.

        >>> study.optimize(make_objective(cfg, device="cpu", point=functools.partial(grid_point, cfg)), n_trials=1)
    """
    # Fixed ranges, not the grid's values: a study's distributions may not change when a
    # later run adds widths or lrs (the RDB storage refuses a new categorical space).
    p = {"scheme": trial.suggest_categorical("scheme", SCHEMES),
         "optimizer": trial.suggest_categorical("optimizer", OPTIMIZERS),
         "width": trial.suggest_int("width", 1, 1 << 24),
         "log2_lr": trial.suggest_float("log2_lr", -64.0, 64.0),
         "seed": trial.suggest_int("seed", 0, 1 << 31)}
    depth = trial.suggest_int("depth", 0, 1 << 16) or None  # 0: the factory's own depth
    alpha = trial.suggest_float("depth_alpha", -1.0, 1.0)  # -1: the config's (default) alpha
    point_cfg = cfg.override({"parametrization.scheme": p["scheme"],
                              "parametrization.optimizer": p["optimizer"],
                              "parametrization.depth_alpha": None if alpha == NONE_CODE["depth_alpha"] else alpha})
    return TrialPoint(point_cfg, {"lr": 2.0 ** p["log2_lr"]}, p["width"], p["seed"], depth)


def results(study, grid: list[dict] | None = None) -> pd.DataFrame:
    """The tidy frame of ``grid``'s COMPLETE points, or of all the study's points without a
    grid (the first trial of a point run twice).

        >>> results(study, make_grid([64, 128], ["mup"], ["adamw"], [-10, -9], 2))
    """
    from optuna.trial import TrialState

    keys = None if grid is None else {_key(p) for p in grid}
    rows = {}
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                    key=lambda t: t.number):
        key = _key(t.params) if set(AXES) - set(OPTIONAL_AXES) <= set(t.params) else None
        if key is not None and key not in rows and (keys is None or key in keys):
            rows[key] = _row(key, t.user_attrs)
    df = pd.DataFrame(list(rows.values()), columns=COLUMNS)
    return df.sort_values(["scheme", "optimizer", "width", "log2_lr", "seed"]).reset_index(drop=True)


def _row(key: tuple, attrs: dict) -> dict:
    diverged = bool(attrs.get("diverged", False))
    loss = math.nan if diverged or attrs.get("loss") is None else attrs["loss"]
    return {**dict(zip(AXES, key)), "lr": 2.0 ** key[AXES.index("log2_lr")], "loss": loss,
            "diverged": diverged, "reason": attrs.get("reason"), "seconds": attrs.get("seconds")}


def write_outputs(df: pd.DataFrame, folder: str | Path, *, commands: Sequence[str] = ()) -> dict[str, Path]:
    """validate.csv, validate.png, best.png (best loss against width, every scheme on one axis)
    and validate.md (headed by the ``commands`` that regenerate them) in ``folder``.

        >>> write_outputs(pd.read_csv("reports/quickstart/validate.csv"), "reports/quickstart")
    """
    from mutransfer.validation._fig_landscape import plot_best_loss, plot_lr_landscape

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"csv": folder / "validate.csv", "png": folder / "validate.png", "best": folder / "best.png",
             "md": folder / "validate.md"}
    df.to_csv(files["csv"], index=False)
    plot_lr_landscape(df, files["png"])
    plot_best_loss(df, files["best"])
    head = "".join(f"Regenerate: `{c}`\n\n" for c in commands)
    figure = "![best loss against width, every scheme on one axis](best.png)\n\n"
    files["md"].write_text(head + figure + landscape_markdown(df) + "\n")
    return files


def landscape_markdown(df: pd.DataFrame, *, max_drift: float | None = None) -> str:
    """The validation tables in markdown: the verdicts, then eta* per width per landscape.

        >>> print(landscape_markdown(df))
    """
    from mutransfer.validation._landscape import MUP_MAX_DRIFT, MUP_MAX_REGRET, eta_stars, summarize
    from mutransfer.projection import CI_LEVEL

    max_drift = MUP_MAX_DRIFT if max_drift is None else max_drift
    summary = summarize(df, max_drift=max_drift)
    etas = eta_stars(df)
    lines = [f"muP target: |drift| <= {max_drift:g} octave per doubling of width and regret "
             f"<= {MUP_MAX_REGRET:g}% at the largest width (regret: loss at the lr transferred "
             f"from the smallest width, read off the seed-mean curve by linear interpolation, "
             f"against the best grid loss). Intervals: {CI_LEVEL:.0%} bootstrap over the runs.", ""]
    lines += markdown_table(_summary_rows(summary)) + [""]
    missed = summary[summary["meets_target"] == False]  # noqa: E712 (None means SP: no claim)
    for _, r in missed.iterrows():
        lines.append(f"- **{r['scheme']} + {r['optimizer']} misses the muP target**: {r['verdict']}.")
    if len(missed):
        lines.append("")
    for (scheme, opt), g in etas.groupby(["scheme", "optimizer"], sort=True):
        lines += [f"## eta* per width: {scheme} + {opt}", ""]
        lines += markdown_table(_eta_rows(g)) + [""]
    return "\n".join(lines)


def _summary_rows(summary: pd.DataFrame) -> pd.DataFrame:
    def interval(r):
        return "" if not math.isfinite(r["drift_lo"]) else f"[{r['drift_lo']:+.2f}, {r['drift_hi']:+.2f}]"

    def target(r):
        return "reference" if r["meets_target"] is None else ("met" if r["meets_target"] else "**missed**")

    return pd.DataFrame({
        "scheme": summary["scheme"], "optimizer": summary["optimizer"],
        "drift (octave/doubling)": [f"{v:+.2f}" for v in summary["drift"]],
        "interval": [interval(r) for _, r in summary.iterrows()],
        "log2 lr transferred": [f"{v:.2f}" for v in summary["transferred_log2_lr"]],
        "regret at largest width": [f"{v:.2f}%" if math.isfinite(v) else str(v) for v in summary["regret_pct"]],
        "muP target": [target(r) for _, r in summary.iterrows()],
        "note": summary["regret_note"]})


def _eta_rows(g: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "width": g["width"], "log2 eta*": [f"{v:.2f}" for v in g["log2_eta"]],
        "interval": [f"[{a:.2f}, {b:.2f}]" if math.isfinite(a) else "" for a, b in
                     zip(g["log2_eta_lo"], g["log2_eta_hi"])],
        "eta*": [f"{v:.3g}" for v in g["eta"]], "best grid log2 lr": g["best_log2_lr"],
        "best loss": [f"{v:.4f}" for v in g["best_loss"]], "points": g["n_points"],
        "note": g["note"]})
