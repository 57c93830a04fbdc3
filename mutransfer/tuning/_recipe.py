"""The staged recipe: tune muP's free constants on the proxy together with the lr.

Three phases in one Optuna study, each a batch of enqueued trials (Optuna's own
``enqueue_trial``), so workers, resume and SIGKILL-safety are the sweep's:

1. ``lr``: the ``[sweep.space] lr`` grid at the config's constants;
2. ``constants``: the remaining trials sample the swept constants with the sampler (TPE),
   the lr fixed at phase 1's best grid point (an lr constant and the lr are otherwise
   redundant);
3. ``lr-again``: the lr grid at the best constants found, so that the transfer's quadratic
   fit of loss against log2 lr has both sides of the optimum at fixed constants.

Why staged rather than joint TPE over (lr, constants): the transfer fits eta* across lr at
fixed constants (:func:`mutransfer.projection._transfer._constants_group`), which joint sampling never
provides; and the constants are width-independent, so their optimum hardly moves with lr
within an octave of eta*.

    >>> cfg = load_config("sweeps/quickstart.toml")   # [sweep] recipe = "staged"
    >>> phase_totals(cfg)
    [8, 20, 28]
"""
from __future__ import annotations

from mutransfer.runs import ExperimentConfig, swept_constants

STAGES = ("lr", "constants", "lr-again")


def phase_totals(cfg: ExperimentConfig) -> list[int]:
    """Cumulative trial counts at the end of each phase: ``[G, trials - G, trials]`` for an lr
    grid of ``G`` points."""
    grid = len(cfg.sweep.space["lr"])
    return [grid, cfg.sweep.trials - grid, cfg.sweep.trials]


def enqueue_phase_(study, cfg: ExperimentConfig, phase: int, constants: dict[str, float]) -> None:
    """Enqueue phase ``phase``'s trials once (a study attribute records it, so a resumed sweep
    does not enqueue them again). ``constants``: every constant's value in the config."""
    flag = f"staged:{STAGES[phase]}"
    if study.user_attrs.get(flag):
        return
    grid, names = cfg.sweep.space["lr"], swept_constants(cfg)
    if phase == 0:
        points = [{"lr": lr, **{k: constants[k] for k in names}} for lr in grid]
    elif phase == 1:
        best = _best(study)
        points = [{"lr": best.params["lr"]}] * (phase_totals(cfg)[1] - len(grid))
    else:
        best = _best(study)
        points = [{"lr": lr, **{k: best.params[k] for k in names}} for lr in grid]
    for params in points:
        study.enqueue_trial(params, user_attrs={"stage": STAGES[phase]})
    study.set_user_attr(flag, True)


def _best(study):
    """Optuna's best trial; an error naming the cause when phase 1 left none."""
    try:
        return study.best_trial
    except ValueError:
        raise ValueError(f"study {study.study_name!r} has no completed trial after the staged "
                         f"recipe's lr phase: every trial failed; see the sweep's table") from None
