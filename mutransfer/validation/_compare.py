"""The product's headline measurement: transfer against direct tuning at the target.

Three arms on one config, each tuned with the config's lr grid and judged by the target's
eval loss over ``seeds`` training seeds, with the tuning compute: ``6 x parameters x tokens``
summed over the tuning trials (training FLOPs; deterministic, unlike wall time on a shared
machine, which is reported beside it):

| arm                   | tuned where                          | what the target gets                 |
|-----------------------|--------------------------------------|--------------------------------------|
| ``sp-direct``         | the target width, scheme ``sp``      | the best grid lr                     |
| ``transfer-lr``       | the proxy, the config's constants    | the transferred lr                   |
| ``transfer-constants``| the proxy, the staged recipe         | the transferred lr and the constants |

The transfer arms use the config's scheme (``mup`` or ``spectral``) unless ``scheme`` says
otherwise. The goal (issue 10): ``transfer-constants`` at least level with ``sp-direct`` at
<= 1/8 of its tuning compute.

    >>> table = compare("sweeps/quickstart.toml", seeds=2)
    >>> table[["arm", "loss", "tuning_s", "compute_ratio"]]
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from mutransfer.runs import ExperimentConfig, load_config

ARMS = ("sp-direct", "transfer-lr", "transfer-constants")


def arm_config(cfg: ExperimentConfig, arm: str) -> ExperimentConfig:
    """The config arm ``arm`` sweeps: its lr grid alone (``sp-direct``: scheme sp at the target
    width; ``transfer-lr``: the config's constants), or the config itself (``transfer-constants``).

        >>> arm_config(cfg, "sp-direct").parametrization.scheme
        'sp'
    """
    if arm == "transfer-constants":
        if cfg.sweep.recipe != "staged":
            raise ValueError(f"config {cfg.name!r} has [sweep] recipe = {cfg.sweep.recipe!r}; the "
                             f"transfer-constants arm needs recipe = \"staged\" with constants in [sweep.space]")
        return cfg
    grid = cfg.sweep.space.get("lr")
    if not isinstance(grid, list):
        raise ValueError(f"config {cfg.name!r}: compare needs [sweep.space] lr as a list (the lr grid "
                         f"every arm sweeps); got {grid!r}")
    over = {"sweep.recipe": "single", "sweep.sampler": "grid", "sweep.pruner": "none",
            "sweep.space": {"lr": grid}, "sweep.trials": len(grid)}
    if arm == "sp-direct":
        over.update({"parametrization.scheme": "sp", "parametrization.constants": {},
                     "parametrization.output_mult": 1.0, "sweep.width": cfg.model.width})
    return cfg.override(over)


def compare(config: ExperimentConfig | str | Path, *, seeds: int = 2, scheme: str | None = None,
            workers: int = 1, device: str = "auto", reports_dir: str | Path = "reports",
            show: bool = True, reuse: bool = False) -> pd.DataFrame:
    """Run (or resume) the three arms and return one row per arm: target loss (mean over
    ``seeds``, with each seed's), tuning seconds and their ratio to ``sp-direct``.

    ``compute_ratio = tuning_flops(arm) / tuning_flops(sp-direct)`` (``seconds_ratio``: the
    same with wall seconds); the studies are
    ``<name>-compare-<scheme>-<arm>-w<W>`` in the config's storage (``transfer-constants`` at
    the config's own scheme: its sweep study ``<name>-w<W>``), so a rerun resumes.
    ``reuse=True`` tunes two arms from runs the path has already made instead of new sweeps:
    ``transfer-lr`` from the staged sweep's first phase (the lr grid at the config's constants,
    the same experiment) and ``sp-direct`` from ``mutransfer validate``'s SP landscape at the
    target width over the config's lr grid (an error names the command that completes it).

        >>> table = compare("sweeps/quickstart.toml", seeds=2)
        >>> table.set_index("arm").loc["transfer-constants", "loss"]
    """
    from mutransfer.projection import pipeline

    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    own = cfg.parametrization.scheme
    if scheme is not None and scheme != own:
        cfg = cfg.override({"parametrization.scheme": scheme})
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive int, e.g. --seeds 2; got {seeds!r}")
    runs = dict(workers=workers, device=device, show=show, reports_dir=reports_dir)
    rows = []
    for arm in ARMS:
        acfg = arm_config(cfg, arm)
        trials, name = _arm_trials(cfg, acfg, arm, own, reuse, **runs)
        # sweep (unless reused) -> transfer -> the target at each seed; the plan stays in the table
        run = pipeline(acfg, cfg.model.width, trials=trials, seeds=seeds,
                       study_name=name if trials is None else None,
                       workers=workers, device=device, show_progress=show, progress=False,
                       reports_dir=reports_dir, write_plan=False)
        trials, plan, losses, source = run.study, run.plan, run.losses, name
        n_trials = len(trials) if isinstance(trials, pd.DataFrame) else len(trials.trials)
        rows.append({"arm": arm, "scheme": acfg.parametrization.scheme, "tuned_at": acfg.sweep.width,
                     "target": cfg.model.width, "trials": n_trials, "tuned_from": source, "lr": plan.lr,
                     "constants": plan.constants, "loss": float(np.mean(losses)),
                     "loss_min": float(np.min(losses)), "loss_max": float(np.max(losses)),
                     "seed_losses": [float(v) for v in losses],
                     **_tuning_cost(trials, acfg)})
    table = pd.DataFrame(rows)
    reference = table.loc[table["arm"] == "sp-direct"].iloc[0]
    table["compute_ratio"] = table["tuning_flops"] / reference["tuning_flops"]
    table["seconds_ratio"] = table["tuning_s"] / reference["tuning_s"]
    return table


def _arm_trials(cfg: ExperimentConfig, acfg: ExperimentConfig, arm: str, own: str, reuse: bool, *,
                workers, device, show, reports_dir):
    """(the arm's tuning trials, where they come from): ``(None, study name)`` when the
    pipeline sweeps (or resumes) the arm's own study, or with ``reuse`` the runs the path
    already made (a study of the staged sweep's lr phase, or a frame of validate's SP landscape
    at the target)."""
    from mutransfer.tuning import default_study_name, sweep

    at_own = cfg.parametrization.scheme == own
    if reuse and arm == "sp-direct":
        return _validate_landscape(acfg, cfg.sweep.width, reports_dir), "validate's SP landscape"
    if reuse and arm == "transfer-lr" and at_own:
        staged = sweep(arm_config(cfg, "transfer-constants"), study_name=default_study_name(cfg),
                       workers=workers, device=device, show_progress=show, reports_dir=reports_dir)
        return _stage_study(staged, "lr"), f"{staged.study_name}, lr phase"
    # the staged arm at the config's scheme is its own sweep: `mutransfer sweep CONFIG` shares it
    name = (default_study_name(cfg) if arm == "transfer-constants" and at_own else
            f"{cfg.name}-compare-{acfg.parametrization.scheme}-{arm}-w{acfg.sweep.width}")
    return None, name


def _stage_study(study, stage: str):
    """An in-memory copy of ``study`` holding the finished trials of one staged-recipe phase."""
    import optuna

    copy = optuna.create_study(study_name=f"{study.study_name}:{stage}", direction="minimize")
    copy.add_trials([t for t in study.get_trials(deepcopy=False)
                     if t.user_attrs.get("stage") == stage and t.state.is_finished()])
    if not copy.trials:
        raise ValueError(f"study {study.study_name!r} has no finished trial of the staged recipe's "
                         f"{stage!r} phase; run `mutransfer sweep` on a config with recipe = \"staged\"")
    return copy


def _validate_landscape(acfg: ExperimentConfig, proxy: int, reports_dir) -> pd.DataFrame:
    """sp-direct's trials from the config's validate study: SP at the target width at every lr
    of the grid (all seeds run there), as a trials frame for :func:`mutransfer.transfer`."""
    from mutransfer.tuning import default_storage
    from mutransfer.validation._validate import open_study

    grid, width = acfg.sweep.space["lr"], acfg.sweep.width
    study = open_study(acfg, acfg.sweep.storage or default_storage(acfg, reports_dir),
                       f"{acfg.name}-validate")
    want = {round(math.log2(lr), 6) for lr in grid}
    rows = [{"width": width, "lr": 2.0 ** t.params["log2_lr"], "batch_size": acfg.train.batch_size,
             "loss": t.value, "diverged": bool(t.user_attrs.get("diverged")), "scheme": "sp",
             "optimizer": acfg.parametrization.optimizer, "tokens": t.user_attrs.get("tokens"),
             "seconds": t.user_attrs.get("seconds", 0.0)}
            for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"
            and (t.params.get("scheme"), t.params.get("optimizer"), t.params.get("width")) ==
            ("sp", acfg.parametrization.optimizer, width) and round(t.params["log2_lr"], 6) in want]
    missing = sorted(want - {round(math.log2(r["lr"]), 6) for r in rows})
    if missing:
        lrs = ",".join(f"{v:g}" for v in sorted(want))
        raise ValueError(f"compare reuse: the validate study {acfg.name}-validate lacks SP at width "
                         f"{width} for log2 lr {', '.join(f'{v:g}' for v in missing)}; run `mutransfer "
                         f"validate CONFIG --widths {proxy},{width} --schemes sp --optimizers "
                         f"{acfg.parametrization.optimizer} --lrs={lrs} --seeds 1` first, or compare "
                         f"without reuse")
    return pd.DataFrame(rows)


def _tuning_cost(trials, acfg: ExperimentConfig) -> dict[str, float]:
    """Wall seconds and FLOPs (6 x parameters x tokens) of an arm's finished tuning trials."""
    if isinstance(trials, pd.DataFrame):
        seconds, tokens = trials["seconds"].sum(), trials["tokens"].sum()
    else:
        done = [t for t in trials.trials if t.state.name in ("COMPLETE", "PRUNED")]
        seconds = sum(t.user_attrs.get("seconds", 0.0) for t in done)
        tokens = sum(t.user_attrs.get("tokens", 0) for t in done)
    return {"tuning_s": float(seconds),
            "tuning_flops": 6.0 * n_params(acfg, acfg.sweep.width) * float(tokens)}


def n_params(cfg: ExperimentConfig, width: int) -> int:
    """Parameter count of the config's model at ``width`` (built on the meta device: no memory).

        >>> n_params(cfg, 64)
    """
    import torch

    from mutransfer.models import zoo
    from mutransfer.runs import config_factory

    with torch.device("meta"):
        model = config_factory(cfg, zoo.load_factory(cfg.model.factory))(width=width)
    return int(sum(p.numel() for p in model.parameters()))


def meets_goal(table: pd.DataFrame) -> tuple[bool, bool]:
    """(level, cheap): is ``transfer-constants``'s target loss <= ``sp-direct``'s, and is its
    tuning compute <= 1/8 of ``sp-direct``'s?

        >>> meets_goal(table)
        (True, True)
    """
    t = table.set_index("arm")
    c, a = t.loc["transfer-constants"], t.loc["sp-direct"]
    return bool(c["loss"] <= a["loss"]), bool(c["compute_ratio"] <= 1 / 8)


def compare_verdict(table: pd.DataFrame) -> str:
    """One sentence: how ``transfer-constants`` compares with ``sp-direct`` in loss and compute,
    and which part of the goal (level at <= 1/8 of the compute) it meets."""
    t = table.set_index("arm")
    c, a = t.loc["transfer-constants"], t.loc["sp-direct"]
    level, cheap = meets_goal(table)
    gap = c["loss"] - a["loss"]
    parts = {(True, True): "met", (True, False): "met for the loss, missed for the compute",
             (False, True): "missed for the loss, met for the compute", (False, False): "missed"}
    return (f"transfer-constants ({c['scheme']}): target loss {c['loss']:.4f} against sp-direct's "
            f"{a['loss']:.4f} ({gap:+.4f} nat) at {c['compute_ratio']:.3f}x its tuning compute; "
            f"the goal (<= 0 nat at <= 0.125x) is {parts[level, cheap]}.")


def read_compare(path: str | Path) -> pd.DataFrame:
    """A table written by :func:`write_compare` (``compare.csv``), its list and dict cells parsed.

        >>> read_compare("reports/gpt-cpu-300/compare.csv").loss
    """
    import ast

    table = pd.read_csv(path)
    for col in ("constants", "seed_losses"):
        table[col] = table[col].map(ast.literal_eval)
    return table


def write_compare(table: pd.DataFrame, folder: str | Path, command: str, stem: str = "compare") -> Path:
    """``<stem>.csv``, ``<stem>.png`` and ``<stem>.md`` in ``folder``; returns the markdown's path.

        >>> write_compare(table, "reports/quickstart", "mutransfer compare sweeps/quickstart.toml")
    """
    from mutransfer.validation._fig_compare import plot_compare
    from mutransfer.validation._markdown import markdown_table, write_markdown

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / f"{stem}.csv", index=False)
    plot_compare(table, folder / f"{stem}.png")
    shown = pd.DataFrame({
        "arm": table["arm"], "scheme": table["scheme"], "tuned at width": table["tuned_at"],
        "trials": table["trials"], "tuning runs": table["tuned_from"],
        "lr": table["lr"].map("{:.4g}".format),
        "constants": table["constants"].map(lambda c: ", ".join(f"{k}={v:.3g}" for k, v in c.items()) or "-"),
        "target loss (mean)": table["loss"].map("{:.4f}".format),
        "per seed": table["seed_losses"].map(lambda v: ", ".join(f"{x:.4f}" for x in v)),
        "tuning FLOPs": table["tuning_flops"].map("{:.3g}".format),
        "compute vs sp-direct": table["compute_ratio"].map("{:.3f}x".format),
        "tuning s (wall)": table["tuning_s"].map("{:.1f}".format)})
    text = [*markdown_table(shown), "", compare_verdict(table), "", f"![compare]({stem}.png)", "",
            "Tuning compute is 6 x parameters x training tokens summed over each arm's tuning "
            "trials (the wall seconds beside it depend on what else the machine ran); the target's "
            "training runs are not counted. `sp-direct` tunes the config's lr grid at the target "
            "width; `transfer-lr` tunes it at the proxy with the config's constants; "
            "`transfer-constants` runs the staged recipe at the proxy. `tuning runs` names where "
            "each arm's runs are stored (with --reuse, runs the path had already made)."]
    return write_markdown(folder / f"{stem}.md", "Transfer against direct tuning at the target",
                          command, text)


__all__ = ["ARMS", "arm_config", "compare", "meets_goal", "read_compare", "compare_verdict", "write_compare"]
