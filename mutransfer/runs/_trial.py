"""The trial: build the config's model at a width, parametrize it, train it, score it.

:func:`run_trial` is the one training path that the sweep's objective, ``--rerun``, validation,
the coordinate check and the target run share; :func:`resolve_knobs` lays a trial's swept values
over the config's fixed ones, :func:`config_factory` and :func:`make_dataset` build what the
config names, and :func:`trial_value` scores the result.

    >>> res = run_trial(cfg, {"lr": 3e-3, "batch_size": 16}, width=64, device="cpu", seed=0)
    >>> trial_value(res)
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable

from mutransfer.core import CONSTANT_NAMES, Constants, Role, parametrize
from mutransfer.models import zoo
from mutransfer.runs._config import DEPTH_AUTO, DataConfig, ExperimentConfig, config_constants
from mutransfer.training import data as datasets
from mutransfer.training import train

class TrialRejected(ValueError):
    """A trial that can give no loss: its run never produced a finite one (the init overflowed at
    the sampled point, say). The sweep records it as FAIL with this message and goes on."""


DIVERGED_PENALTY = 2.0  # a diverged trial's value: this times the largest finite loss it saw


def run_trial(cfg: ExperimentConfig, params: dict, *, width: int, device: str, seed: int,
              callback: Callable | None = None, progress: bool = False, depth: int | None = None,
              parallel: str = "none", compile: bool = False, checkpoint=None, log=None):
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
    seq_len = None if cfg.data.synthetic else cfg.train.seq_len
    data = make_dataset(cfg.data, seq_len)
    # the roles are traced on a batch of the config's own data (any factory, no example_input needed)
    example = data.batch("train", 2, seq_len, torch.Generator().manual_seed(0))[0]
    depths = {} if depth is None else {"depth": depth, "base_depth": cfg.model.base_depth or depth}
    plan = parametrize(factory, width=width, base_width=cfg.model.base_width, scheme=p.scheme,
                       optimizer=p.optimizer, muon_scale=p.muon_scale, readout=p.readout,
                       constants=trial_constants(k), seed=seed, example=example,
                       depth_alpha=trial_depth_alpha(cfg, depth), **depths)
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
                 parallel=parallel, checkpoint=checkpoint, log=log)


def trial_depth_alpha(cfg: ExperimentConfig, depth: int | None) -> float | None:
    """``[parametrization] depth_alpha`` for a run at ``depth`` blocks. "auto" runs only at the
    base depth (where every rule gives the same model, m_L = 1); deeper runs need the rule the
    depth probe chose, which the plan carries (``mutransfer train`` takes it from there).

        >>> trial_depth_alpha(cfg.override({"parametrization.depth_alpha": 0.5}), 8)
        0.5
    """
    alpha = cfg.parametrization.depth_alpha
    if alpha != DEPTH_AUTO:
        return alpha
    base = cfg.model.base_depth or cfg.model.depth
    if depth is not None and base is not None and depth != base:
        raise ValueError(f"depth_alpha = \"auto\" is chosen by the depth probe, not at {depth} blocks: train "
                         f"the target from its plan (`mutransfer train`, which carries the chosen alpha), or set "
                         f"[parametrization] depth_alpha to a number for this run")
    return None


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
    """The factory with the config's kwargs; sizes the data fixes (seq_len and vocab, or in_dim
    and out_dim) default to the data's so a GPT's context matches ``train.seq_len`` and its
    embedding the token corpus's ``vocab_size`` (passed as ``vocab=``, or ``vocab_size=`` to a
    factory that names it so; 256 for byte corpora).

        >>> make = config_factory(cfg, mutransfer.zoo.gpt)
        >>> model = make(width=128)
    """
    kwargs = dict(cfg.model.kwargs)
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    if cfg.data.synthetic:
        implied = {"in_dim": cfg.data.in_dim, "out_dim": cfg.data.out_dim}
    else:
        implied = {"seq_len": cfg.train.seq_len}
        vocab_key = next((k for k in VOCAB_KEYS if k in accepted), None)
        vocab = _data_vocab(cfg)
        if vocab is not None and vocab_key is not None and not any(k in kwargs for k in VOCAB_KEYS):
            implied[vocab_key] = vocab
    for key, value in implied.items():
        if key in accepted and key not in kwargs:
            kwargs[key] = value
    _check_model_vocab(cfg, kwargs)
    return functools.partial(factory, **kwargs)


VOCAB_KEYS = ("vocab", "vocab_size")  # what a model factory may call its vocabulary


def _data_vocab(cfg: ExperimentConfig) -> int | None:
    """The vocabulary the data implies: 256 for byte corpora, None for synthetic tasks, else the
    dataset's ``vocab`` attribute (token corpora, a factory's dataset that sets one)."""
    if cfg.data.byte_corpus:
        return datasets.VOCAB
    if cfg.data.synthetic:
        return None
    vocab = getattr(make_dataset(cfg.data, cfg.train.seq_len), "vocab", None)
    return vocab if isinstance(vocab, int) and not isinstance(vocab, bool) else None


def _check_model_vocab(cfg: ExperimentConfig, kwargs: dict) -> None:
    """A ``[model] kwargs`` vocabulary smaller than the data's token ids is refused before training."""
    given = next(((k, kwargs[k]) for k in VOCAB_KEYS if k in kwargs), None)
    if given is None or cfg.data.byte_corpus or cfg.data.synthetic:
        return
    corpus = make_dataset(cfg.data, cfg.train.seq_len)
    max_id = getattr(corpus, "max_id", None)
    if isinstance(given[1], int) and isinstance(max_id, int) and given[1] <= max_id:
        raise ValueError(f"[model] kwargs {given[0]} = {given[1]} but the data ({corpus.describe()['name']}) "
                         f"holds token id {max_id}; set {given[0]} >= {max_id + 1} or remove it (the "
                         f"factory then gets the data's vocab_size, {getattr(corpus, 'vocab', max_id + 1)})")


def _scale_init_(plan, scale: float) -> None:
    if scale == 1.0:
        return
    import torch

    named = dict(plan.model.named_parameters())
    with torch.no_grad():
        for name, role in plan.roles.items():
            if role in (Role.INPUT, Role.HIDDEN, Role.OUTPUT):
                named[name].mul_(scale)


def make_dataset(data: DataConfig, seq_len: int | None = None):
    """The dataset ``data`` describes (cached per process: pycorpus reads ~the whole stdlib).
    ``[data] factory`` wins over ``source``; token files given ``seq_len`` are checked at open
    to hold one window of ``seq_len + 1`` ids per split.

        >>> ds = make_dataset(cfg.data, cfg.train.seq_len)
        >>> ds.describe()["name"]
    """
    if data.factory is None and data.source in ("tokens", "hf"):
        return _token_dataset(data, seq_len)
    return _dataset(data)


@functools.lru_cache(maxsize=4)
def _token_dataset(data: DataConfig, seq_len: int | None):
    if data.source == "hf":  # tokenized once into a cached prepared folder, read as tokens
        return datasets.tokens(datasets.hf_tokens(
            data.dataset, data_files=data.data_files, split=data.split, text_field=data.text_field,
            tokenizer=data.tokenizer, val_fraction=data.val_fraction, cache_dir=data.cache_dir),
            seq_len=seq_len)
    return datasets.tokens(data.path, train_file=data.train_file, val_file=data.val_file,
                           dtype=data.dtype, vocab_size=data.vocab_size, seq_len=seq_len)


@functools.lru_cache(maxsize=4)
def _dataset(data: DataConfig):
    if data.factory is not None:
        return datasets.from_factory(data.factory)
    if data.source == "pycorpus":
        return datasets.pycorpus()
    if data.source == "textfile":
        return datasets.textfile(data.path)
    if data.source == "synthetic":
        return datasets.synthetic(kind=data.kind, in_dim=data.in_dim, out_dim=data.out_dim, seed=data.seed)
    raise ValueError(f"[data] source {data.source!r} has no reader here; use one of pycorpus, "
                     f"textfile, synthetic, tokens, hf, or [data] factory")


def trial_value(res) -> float:
    """The objective: final eval loss, or ``DIVERGED_PENALTY`` times the largest finite loss the
    run saw when it diverged (train or eval; its first train loss is the loss at init):
    value = loss_final, or DIVERGED_PENALTY x max(finite losses) when diverged.

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
        raise TrialRejected("the run diverged before producing a single finite loss: the model's "
                            "init is broken at this point (check it at lr=0)")
    return DIVERGED_PENALTY * max(finite)
