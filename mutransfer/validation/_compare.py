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

from pathlib import Path

import numpy as np
import pandas as pd

from mutransfer.tuning import ExperimentConfig, load_config

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
            show: bool = True) -> pd.DataFrame:
    """Run (or resume) the three arms and return one row per arm: target loss (mean over
    ``seeds``, with each seed's), tuning seconds and their ratio to ``sp-direct``.

    ``compute_ratio = tuning_flops(arm) / tuning_flops(sp-direct)`` (``seconds_ratio``: the
    same with wall seconds); the studies are
    ``<name>-compare-<scheme>-<arm>-w<W>`` in the config's storage (``transfer-constants`` at
    the config's own scheme: its sweep study ``<name>-w<W>``), so a rerun resumes.

        >>> table = compare("sweeps/quickstart.toml", seeds=2)
        >>> table.set_index("arm").loc["transfer-constants", "loss"]
    """
    from mutransfer.tuning import default_study_name, sweep
    from mutransfer.projection import train_target
    from mutransfer.projection import transfer

    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    own = cfg.parametrization.scheme
    if scheme is not None and scheme != own:
        cfg = cfg.override({"parametrization.scheme": scheme})
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive int, e.g. --seeds 2; got {seeds!r}")
    rows = []
    for arm in ARMS:
        acfg = arm_config(cfg, arm)
        # the staged arm at the config's scheme is its own sweep: `mutransfer sweep CONFIG` shares it
        own_sweep = arm == "transfer-constants" and cfg.parametrization.scheme == own
        name = (default_study_name(cfg) if own_sweep else
                f"{cfg.name}-compare-{acfg.parametrization.scheme}-{arm}-w{acfg.sweep.width}")
        study = sweep(acfg, study_name=name, workers=workers, device=device, show_progress=show,
                      reports_dir=reports_dir)
        done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
        tuning_s = float(sum(t.user_attrs.get("seconds", 0.0) for t in done))
        tuning_flops = 6.0 * n_params(acfg, acfg.sweep.width) * sum(t.user_attrs.get("tokens", 0) for t in done)
        plan = transfer(study, target_width=cfg.model.width)
        losses = [train_target(acfg, plan, seed=s, device=device, progress=False).final_loss
                  for s in range(seeds)]
        rows.append({"arm": arm, "scheme": acfg.parametrization.scheme, "tuned_at": acfg.sweep.width,
                     "target": cfg.model.width, "trials": len(study.trials), "lr": plan.lr,
                     "constants": plan.constants, "loss": float(np.mean(losses)),
                     "loss_min": float(np.min(losses)), "loss_max": float(np.max(losses)),
                     "seed_losses": [float(v) for v in losses], "tuning_s": tuning_s,
                     "tuning_flops": tuning_flops})
    table = pd.DataFrame(rows)
    reference = table.loc[table["arm"] == "sp-direct"].iloc[0]
    table["compute_ratio"] = table["tuning_flops"] / reference["tuning_flops"]
    table["seconds_ratio"] = table["tuning_s"] / reference["tuning_s"]
    return table


def n_params(cfg: ExperimentConfig, width: int) -> int:
    """Parameter count of the config's model at ``width`` (built on the meta device: no memory).

        >>> n_params(cfg, 64)
    """
    import torch

    from mutransfer.models import zoo
    from mutransfer.tuning._objective import config_factory

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


def verdict(table: pd.DataFrame) -> str:
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
    from mutransfer.validation._plots import plot_compare
    from mutransfer.validation._validate import markdown_table, write_markdown

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / f"{stem}.csv", index=False)
    plot_compare(table, folder / f"{stem}.png")
    shown = pd.DataFrame({
        "arm": table["arm"], "scheme": table["scheme"], "tuned at width": table["tuned_at"],
        "trials": table["trials"],
        "lr": table["lr"].map("{:.4g}".format),
        "constants": table["constants"].map(lambda c: ", ".join(f"{k}={v:.3g}" for k, v in c.items()) or "-"),
        "target loss (mean)": table["loss"].map("{:.4f}".format),
        "per seed": table["seed_losses"].map(lambda v: ", ".join(f"{x:.4f}" for x in v)),
        "tuning FLOPs": table["tuning_flops"].map("{:.3g}".format),
        "compute vs sp-direct": table["compute_ratio"].map("{:.3f}x".format),
        "tuning s (wall)": table["tuning_s"].map("{:.1f}".format)})
    text = [*markdown_table(shown), "", verdict(table), "", f"![compare]({stem}.png)", "",
            "Tuning compute is 6 x parameters x training tokens summed over each arm's tuning "
            "trials (the wall seconds beside it depend on what else the machine ran); the target's "
            "training runs are not counted. `sp-direct` sweeps the "
            "config's lr grid at the target width; `transfer-lr` sweeps it at the proxy with the "
            "config's constants; `transfer-constants` runs the staged recipe at the proxy."]
    return write_markdown(folder / f"{stem}.md", "Transfer against direct tuning at the target",
                          command, text)


__all__ = ["ARMS", "arm_config", "compare", "meets_goal", "read_compare", "verdict", "write_compare"]
