"""The Optuna objective around one trial: pick the trial's point (by default: suggest from
``[sweep.space]``), report evals for pruning, store what a rerun needs in ``user_attrs`` (the
trial itself is :func:`mutransfer.runs.run_trial`). The sweep and ``mutransfer validate``'s grid
both run it; the grid passes ``point=`` to fix scheme, optimizer, width, lr and seed per trial.

    >>> study.optimize(make_objective(cfg, width=64, device="cpu"), n_trials=4)
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, NamedTuple

from mutransfer.runs import (INT_SPACE_KEYS, ExperimentConfig, TrialRejected, resolve_knobs, run_trial,
                             trial_value)


class TrialPoint(NamedTuple):
    """What one trial trains: the config, the knobs (``lr`` and those of ``[sweep.space]``), the
    width, the training seed and the depth (None: the factory's own)."""
    config: ExperimentConfig
    params: dict
    width: int
    seed: int
    depth: int | None


def _suggest(trial, space: dict) -> dict:
    params = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            params[name] = trial.suggest_categorical(name, spec)
        elif name in INT_SPACE_KEYS:
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], log=spec.get("log", False))
        else:
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
    return params


def sweep_point(cfg: ExperimentConfig, width: int, trial) -> TrialPoint:
    """The sweep's point: knobs suggested from ``[sweep.space]`` at ``width`` and the proxy depth,
    seed ``[sweep] seed + trial.number``.

        >>> sweep_point(cfg, 64, study.ask()).params
        {'lr': 0.0031}
    """
    return TrialPoint(cfg, _suggest(trial, cfg.sweep.space), width, cfg.sweep.seed + trial.number,
                 cfg.proxy_depth())


def make_objective(cfg: ExperimentConfig, *, width: int | None = None, device: str,
                   point: Callable[[object], TrialPoint | tuple] | None = None) -> Callable:
    """The Optuna objective: pick the point, train, report, store, return the value
    ``trial_value(run_trial(config, params, width, seed, depth))`` (the final eval loss; a
    penalty when diverged).

    ``point(trial)`` returns the trial's :class:`TrialPoint` ``(config, params, width, seed, depth)``;
    without it the trial suggests from ``cfg``'s ``[sweep.space]`` at ``width``
    (:func:`sweep_point`).

        >>> study.optimize(make_objective(cfg, width=64, device="cpu"), n_trials=4)
        >>> study.optimize(make_objective(cfg, device="cpu", point=lambda t: (cfg, {"lr": 1e-3}, 64, 0, None)), n_trials=1)
    """
    import optuna

    if point is None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int (the proxy's, e.g. width=64) when no "
                             f"point= picks it per trial; got {width!r}")
        point = lambda trial: sweep_point(cfg, width, trial)  # noqa: E731
    elif not callable(point):
        raise TypeError(f"point must map a trial to (config, params, width, seed, depth); got {point!r}")

    def objective(trial: optuna.Trial) -> float:
        p = TrialPoint(*point(trial))
        _store_point(trial, p, device)

        def report(step: int, eval_loss: float) -> bool:
            if math.isfinite(eval_loss):
                trial.report(float(eval_loss), step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"eval loss {eval_loss:.4f} at step {step}")
            return False

        start = time.perf_counter()
        try:
            res = run_trial(p.config, p.params, width=p.width, device=device, seed=p.seed, callback=report,
                            depth=p.depth)
        except optuna.TrialPruned:
            raise
        except Exception as err:  # Optuna marks the trial FAIL; the reason stays with it
            _store_error(trial, err)
            raise
        _store_result(trial, res, time.perf_counter() - start)
        try:
            return trial_value(res)
        except TrialRejected as err:
            _store_error(trial, err)
            raise

    return objective


REJECTIONS = (ValueError, TypeError)  # a point the trial refuses (TrialRejected is a ValueError)


def _store_error(trial, err: BaseException) -> None:
    """The reason a trial FAILed; ``rejected`` marks the failures that are the point's (the
    sweep records them and goes on: :data:`REJECTIONS`) apart from those that end it."""
    trial.set_user_attr("error", f"{type(err).__name__}: {err}")
    trial.set_user_attr("rejected", isinstance(err, REJECTIONS))


def _store_point(trial, p: TrialPoint, device: str) -> None:
    """Written before training: pruned trials keep them, and a RUNNING trial without "config"
    tells storage._fail_unstarted that its worker died before starting."""
    cfg, k = p.config, resolve_knobs(p.config, p.params)
    # the storage URL may hold a password; a rerun needs only the training settings
    stored = dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, storage=None)).to_dict()
    par = cfg.parametrization
    for key, value in {"width": p.width, "depth": p.depth, "batch_size": k["batch_size"],
                       "scheme": par.scheme, "optimizer": par.optimizer, "muon_scale": par.muon_scale,
                       "seed": p.seed, "device": device, "config": stored, "budget": k["tokens"],
                       "steps": cfg.steps_for(k["batch_size"], k["tokens"])}.items():
        trial.set_user_attr(key, value)


def _store_result(trial, res, seconds: float) -> None:
    loss = float(res.final_loss)
    # "loss" is the run's own final loss (None when not finite); the trial's value may be the
    # divergence penalty instead. validate's results() reads loss, diverged, reason, seconds.
    trial.set_user_attr("loss", loss if math.isfinite(loss) else None)
    trial.set_user_attr("diverged", bool(res.diverged) or not math.isfinite(loss))
    trial.set_user_attr("reason", res.reason)
    trial.set_user_attr("seconds", seconds)
    trial.set_user_attr("tokens", int(res.tokens))
    if "max_logit" in res.history:
        trial.set_user_attr("max_logit", float(res.history["max_logit"].max()))
    if res.noise:
        for key in ("b_simple", "g2", "trace_sigma"):
            trial.set_user_attr(key, float(res.noise[key]))
        # the train loss under the same EMA as the noise terms: the loss b_simple belongs to
        trial.set_user_attr("noise_loss", float(res.noise["loss"]))
