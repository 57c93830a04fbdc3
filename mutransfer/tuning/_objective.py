"""The Optuna objective around one trial: suggest from ``[sweep.space]``, report evals for
pruning, store what a rerun needs in ``user_attrs`` (the trial itself is :func:`mutransfer.runs.run_trial`).

    >>> study.optimize(make_objective(cfg, width=64, device="cpu"), n_trials=4)
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

from mutransfer.runs import INT_SPACE_KEYS, ExperimentConfig, resolve_knobs, run_trial, trial_value


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


def make_objective(cfg: ExperimentConfig, *, width: int, device: str) -> Callable:
    """The Optuna objective: suggest from ``[sweep.space]``, train, report, return the loss.

        >>> study.optimize(make_objective(cfg, width=64, device="cpu"), n_trials=4)
    """
    import optuna

    # the storage URL may hold a password; a rerun needs only the training settings
    stored = dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, storage=None)).to_dict()

    def objective(trial: optuna.Trial) -> float:
        params = _suggest(trial, cfg.sweep.space)
        seed = cfg.sweep.seed + trial.number
        k = resolve_knobs(cfg, params)
        p = cfg.parametrization
        # Written before training: pruned trials keep them, and a RUNNING trial without
        # "config" tells storage._fail_unstarted that its worker died before starting.
        for key, value in {"width": width, "depth": cfg.proxy_depth(), "batch_size": k["batch_size"], "scheme": p.scheme,
                           "optimizer": p.optimizer, "muon_scale": p.muon_scale, "seed": seed,
                           "device": device, "config": stored, "budget": k["tokens"],
                           "steps": cfg.steps_for(k["batch_size"], k["tokens"])}.items():
            trial.set_user_attr(key, value)

        def report(step: int, eval_loss: float) -> bool:
            if math.isfinite(eval_loss):
                trial.report(float(eval_loss), step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"eval loss {eval_loss:.4f} at step {step}")
            return False

        start = time.perf_counter()
        try:
            res = run_trial(cfg, params, width=width, device=device, seed=seed, callback=report,
                            depth=cfg.proxy_depth())
        except optuna.TrialPruned:
            raise
        except Exception as err:  # Optuna marks the trial FAIL; the reason stays with it
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            raise
        _store_result(trial, res, time.perf_counter() - start)
        return trial_value(res)

    return objective


def _store_result(trial, res, seconds: float) -> None:
    trial.set_user_attr("diverged", bool(res.diverged))
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
