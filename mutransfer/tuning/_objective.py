"""One trial of a sweep: build the model at a width, parametrize it, train it, score it.

:func:`run_trial` is the single training path shared by the sweeper's objective, ``--rerun``,
validation and ``mutransfer train``; :func:`make_objective` wraps it for Optuna (suggest from
``[sweep.space]``, report evals for pruning, store what a rerun needs in ``user_attrs``).

    >>> res = run_trial(cfg, {"lr": 3e-3, "batch_size": 16}, width=64, device="cpu", seed=0)
    >>> study.optimize(make_objective(cfg, width=64, device="cpu"), n_trials=4)
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import time
from typing import Any, Callable

from mutransfer.core import CONSTANT_NAMES, Constants, Role, parametrize
from mutransfer.models import zoo
from mutransfer.training import data as datasets
from mutransfer.training import train
from mutransfer.tuning._config import INT_SPACE_KEYS, DataConfig, ExperimentConfig, config_constants

DIVERGED_FACTOR = 2.0  # a diverged trial's value: this times the largest finite loss it saw


def run_trial(cfg: ExperimentConfig, params: dict, *, width: int, device: str, seed: int,
              callback: Callable | None = None, progress: bool = False, depth: int | None = None,
              parallel: str = "none", compile: bool = False, checkpoint=None):
    """Train the model of ``cfg`` at ``width`` with the swept ``params`` (one trial, no Optuna).

    ``depth`` (blocks, passed to the factory as ``depth=``) parametrizes against a base of
    ``[model] base_depth`` blocks with the depth rules; None builds the factory's own depth.
    Knobs missing from ``params`` take ``cfg.train``/``cfg.parametrization`` values;
    ``init_scale`` multiplies the init of every input/hidden/output weight after muP's rewrite.
    ``qk_clip`` (tau) turns on :class:`~mutransfer.optim.QKClip` (``[train] log_max_logit``
    records the max logit without clipping), ``decay`` picks the weight-decay kind.
    With a token budget (``[train] tokens`` or a swept ``tokens``) the run takes
    ``cfg.steps_for(batch_size, tokens)`` = tokens / (batch_size * seq_len) steps.
    Every trial is evaluated on the same ``eval_batches`` x ``[train] batch_size`` val examples,
    whatever batch size it trains with, so losses compare across a swept batch size.
    ``parallel`` ("ddp", "fsdp": under torchrun), ``compile`` and ``checkpoint`` (a
    :class:`~mutransfer.training.Checkpoints`) are for the target run (:func:`train_target`);
    a sweep's trials keep the defaults: one process, eager, no checkpoints.

        >>> res = run_trial(cfg, {"lr": 3e-3, "batch_size": 16}, width=64, device="cpu", seed=0)
        >>> res.final_loss
    """
    import torch

    from mutransfer.training import init_parallel, wrap_model

    k = resolve_knobs(cfg, params)
    dev = init_parallel(parallel, device)
    torch.manual_seed(seed)
    factory = config_factory(cfg, zoo.load_factory(cfg.model.factory))
    p = cfg.parametrization
    data = make_dataset(cfg.data)
    seq_len = None if cfg.data.source == "synthetic" else cfg.train.seq_len
    # the roles are traced on a batch of the config's own data (any factory, no example_input needed)
    example = data.batch("train", 2, seq_len, torch.Generator().manual_seed(0))[0]
    depths = {} if depth is None else {"depth": depth, "base_depth": cfg.model.base_depth or depth}
    plan = parametrize(factory, width=width, base_width=cfg.model.base_width, scheme=p.scheme,
                       optimizer=p.optimizer, muon_scale=p.muon_scale, readout=p.readout,
                       constants=trial_constants(k), seed=seed, example=example,
                       depth_alpha=p.depth_alpha, **depths)
    _scale_init_(plan, k["init_scale"])
    t = cfg.train
    # wrapped (FSDP2 shards the parameters) before the optimizer takes them
    model = wrap_model(plan.model.to(dev), parallel, compile=compile)
    opt = plan.optimizer(k["lr"], model=model, weight_decay=k["weight_decay"], betas=t.betas,
                         eps=t.eps, momentum=k["momentum"], adam_lr=k["adam_lr"],
                         wd_policy=t.wd_policy, decay=k["decay"])
    qk_clip = None
    if k["qk_clip"] is not None or t.log_max_logit:
        from mutransfer.optim import QKClip

        qk_clip = QKClip(plan.model, k["qk_clip"])
    steps = cfg.steps_for(k["batch_size"], k["tokens"])
    return train(model, opt, data, steps=steps, batch_size=k["batch_size"], seq_len=seq_len,
                 schedule=t.schedule, warmup=k["warmup"], clip=t.clip, device=dev, dtype=t.dtype,
                 grad_accum=t.grad_accum, eval_every=t.eval_every or max(1, steps // 10),
                 eval_batches=t.eval_batches, eval_batch_size=t.batch_size, seed=seed, callback=callback,
                 measure_noise=t.measure_noise, progress=progress, qk_clip=qk_clip,
                 parallel=parallel, checkpoint=checkpoint)


def resolve_knobs(cfg: ExperimentConfig, params: dict) -> dict[str, Any]:
    """The trial's settings: swept ``params`` over the config's fixed values."""
    t = cfg.train
    fixed = {"lr": t.lr, "batch_size": t.batch_size, "adam_lr": t.adam_lr,
             "weight_decay": t.weight_decay, "warmup": t.warmup, "momentum": t.momentum,
             **config_constants(cfg), "init_scale": 1.0, "qk_clip": t.qk_clip, "decay": t.decay,
             "tokens": t.tokens}
    return {**fixed, **params}


def trial_constants(knobs: dict) -> Constants:
    """The :class:`~mutransfer.Constants` among a trial's resolved knobs."""
    return Constants.coerce({k: knobs[k] for k in CONSTANT_NAMES if k in knobs})


def config_factory(cfg: ExperimentConfig, factory: Callable) -> Callable:
    """The factory with the config's kwargs; sizes the data fixes (seq_len, in_dim, out_dim)
    default to the data's so a GPT's context matches ``train.seq_len``.

        >>> make = config_factory(cfg, mutransfer.zoo.gpt)
        >>> model = make(width=128)
    """
    kwargs = dict(cfg.model.kwargs)
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    implied = ({"in_dim": cfg.data.in_dim, "out_dim": cfg.data.out_dim}
               if cfg.data.source == "synthetic" else {"seq_len": cfg.train.seq_len})
    for key, value in implied.items():
        if key in accepted and key not in kwargs:
            kwargs[key] = value
    return functools.partial(factory, **kwargs)


def _scale_init_(plan, scale: float) -> None:
    if scale == 1.0:
        return
    import torch

    named = dict(plan.model.named_parameters())
    with torch.no_grad():
        for name, role in plan.roles.items():
            if role in (Role.INPUT, Role.HIDDEN, Role.OUTPUT):
                named[name].mul_(scale)


@functools.lru_cache(maxsize=4)
def make_dataset(data: DataConfig):
    """The dataset ``data`` describes (cached per process: pycorpus reads ~the whole stdlib)."""
    if data.source == "pycorpus":
        return datasets.pycorpus()
    if data.source == "textfile":
        return datasets.textfile(data.path)
    return datasets.synthetic(kind=data.kind, in_dim=data.in_dim, out_dim=data.out_dim, seed=data.seed)


def trial_value(res) -> float:
    """The objective: final eval loss, or ``DIVERGED_FACTOR`` times the largest finite loss the
    run saw when it diverged (train or eval; its first train loss is the loss at init):
    value = loss_final, or DIVERGED_FACTOR x max(finite losses) when diverged.

        >>> res = run_trial(cfg, {"lr": 1e-3})
        >>> trial_value(res)          # res.final_loss unless the run diverged
    """
    if not res.diverged and math.isfinite(res.final_loss):
        return float(res.final_loss)
    import pandas as pd

    h = res.history
    seen = [pd.to_numeric(h[col], errors="coerce") for col in ("train_loss", "eval_loss") if col in h]
    finite = [float(v) for col in seen for v in col if math.isfinite(v)]  # drops NaN/inf/None
    if not finite:
        raise ValueError("the run diverged before producing a single finite loss: the model's "
                         "init is broken (check it at lr=0)")
    return DIVERGED_FACTOR * max(finite)


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
