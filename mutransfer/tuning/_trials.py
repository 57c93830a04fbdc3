"""Trials: the tidy frame of finished trials (one row per trial) that :mod:`mutransfer.projection._transfer` fits.

Reads Optuna studies as the sweeper writes them (value = final eval loss; width, batch_size,
scheme, optimizer, noise statistics and the resolved config in ``user_attrs``) or DataFrames that
already have the columns :data:`REQUIRED`, and brings both to the columns
``REQUIRED + OPTIONAL``; failed, pruned, running and diverged trials are dropped and counted.

    >>> df = trials_frame([study64, study128])
    >>> df.groupby("width").lr.count(), df.attrs["dropped"]
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from mutransfer.core import OPTIMIZER_RULES

REQUIRED = ("width", "lr", "batch_size", "loss")
OPTIONAL = ("scheme", "optimizer", "muon_scale", "diverged", "b_simple", "noise_loss", "adam_lr",
            "weight_decay", "steps", "tokens", "beta1", "base_width", "study", "budget",
            "wd_policy", "constants", "depth", "base_depth", "depth_alpha", "readout")
# each optimizer's default beta1 (Adam's betas[0]) or momentum (SGD, Muon), from its record
DEFAULT_BETA1 = {name: rule.beta1 for name, rule in OPTIMIZER_RULES.items()}


def trials_frame(results, *, keep_diverged: bool = False):
    """One row per finished trial: width, lr, batch_size, loss and the optional columns
    :data:`OPTIONAL`, from Optuna studies (as the sweeper writes them) or DataFrames.

    FAIL, PRUNED, RUNNING and (unless ``keep_diverged``) diverged trials are dropped and counted
    in ``frame.attrs["dropped"]``.

        >>> df = trials_frame([study64, study128])
        >>> df.groupby("width").lr.count(), df.attrs["dropped"]
    """
    import pandas as pd

    items = list(results) if isinstance(results, (list, tuple)) else [results]
    if not items:
        raise ValueError("results is empty; pass an Optuna study, a list of studies or a DataFrame")
    frames, dropped = [], Counter()
    for item in items:
        if isinstance(item, pd.DataFrame):
            frames.append(_check_frame(item))
        elif hasattr(item, "get_trials"):
            rows, counts = _study_rows(item)
            frames.append(pd.DataFrame(rows, columns=list(REQUIRED + OPTIONAL)))
            dropped.update(counts)
        else:
            raise TypeError(f"results must be Optuna studies or DataFrames with columns "
                            f"{', '.join(REQUIRED)}; got {type(item).__name__}")
    df = pd.concat(frames, ignore_index=True)
    flagged = df["diverged"].astype("boolean").fillna(False).astype(bool)
    df["diverged"] = flagged | ~np.isfinite(df["loss"].astype(float))
    dropped["diverged"] = int(df["diverged"].sum())
    if not keep_diverged:
        df = df[~df["diverged"]].reset_index(drop=True)
    if df.empty or df["diverged"].all():
        counts = ", ".join(f"{n} {k}" for k, n in sorted(dropped.items()) if n) or "none"
        raise ValueError(f"no usable trials (dropped: {counts}); every trial failed, was pruned or "
                         f"diverged: check the sweep's log, lower the lr range, then rerun `mutransfer sweep`")
    df.attrs["dropped"] = dict(dropped)
    return df


def _check_frame(df):
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"the trials DataFrame lacks columns {missing}; it needs {', '.join(REQUIRED)} "
                         f"(one row per trial), e.g. from trials_frame(study)")
    out = df.copy()
    for col in OPTIONAL:
        if col not in out.columns:
            out[col] = None if col in ("scheme", "optimizer", "muon_scale", "study", "wd_policy",
                                       "constants", "depth", "base_depth", "depth_alpha") else np.nan
    for col in ("width", "lr", "batch_size"):
        bad = out.loc[~(out[col].astype(float) > 0), col]
        if len(bad):
            raise ValueError(f"column {col!r} must be > 0 in every row; got {bad.iloc[0]!r}")
    return out[list(REQUIRED + OPTIONAL)]


def _study_rows(study) -> tuple[list[dict], Counter]:
    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise ValueError(f"study {study.study_name!r} has no trials; run `mutransfer sweep CONFIG` "
                         f"first, or check the study name and storage URL")
    counts = Counter("rejected" if t.state.name == "FAIL" and t.user_attrs.get("rejected") else t.state.name
                     for t in trials)
    done = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    return [_trial_row(t, study.study_name) for t in done], Counter(
        {k: n for k, n in counts.items() if k != "COMPLETE"})


def _trial_row(t, study_name: str) -> dict:
    ua, params = t.user_attrs, t.params
    cfg = ua.get("config") or {}
    train = cfg.get("train", {})
    where = f"trial {t.number} of study {study_name!r}"
    if "width" not in ua:
        raise ValueError(f"{where} has no user_attr 'width' (the sweeper writes it); for a study of "
                         f"your own call trial.set_user_attr('width', W), or pass a DataFrame")
    lr = params.get("lr", train.get("lr"))
    batch = ua.get("batch_size", params.get("batch_size", train.get("batch_size")))
    if lr is None or batch is None:
        raise ValueError(f"{where} has no lr/batch_size in params, user_attrs or config; "
                         f"sweep 'lr' and set user_attr 'batch_size'")
    optimizer = ua.get("optimizer")
    return {"width": int(ua["width"]), "lr": float(lr), "batch_size": int(batch),
            "loss": float(t.value), "scheme": ua.get("scheme"), "optimizer": optimizer,
            "muon_scale": ua.get("muon_scale"), "diverged": bool(ua.get("diverged", False)),
            "b_simple": ua.get("b_simple", np.nan), "noise_loss": ua.get("noise_loss", np.nan),
            "adam_lr": params.get("adam_lr", train.get("adam_lr")),
            "weight_decay": params.get("weight_decay", train.get("weight_decay")),
            "steps": ua.get("steps", train.get("steps")), "tokens": ua.get("tokens"),
            "beta1": _beta1(optimizer, params, train),
            "base_width": cfg.get("model", {}).get("base_width"), "study": study_name,
            # the token (or example) budget the trial was given; None when it ran a step count
            "budget": ua.get("budget", params.get("tokens", train.get("tokens"))),
            "wd_policy": train.get("wd_policy"),
            "constants": constants_key(_stored_constants(cfg.get("parametrization", {}), params)),
            # blocks the trial trained (None: the factory's own), its base's, and the branch alpha
            "depth": ua.get("depth"), "base_depth": _base_depth(cfg, ua.get("depth")),
            "depth_alpha": cfg.get("parametrization", {}).get("depth_alpha"),
            "readout": cfg.get("parametrization", {}).get("readout")}


def _base_depth(cfg: dict, depth):
    """The base's blocks of a trial at ``depth`` blocks: ``[model] base_depth``, else its own."""
    return None if depth is None else cfg.get("model", {}).get("base_depth") or depth


def _stored_constants(param_cfg: dict, params: dict) -> dict:
    from mutransfer.core import Constants

    return Constants.of_parametrization(param_cfg, params).as_dict()


def constants_key(values: dict | None) -> str:
    """A canonical JSON text of the constants that differ from their defaults ("{}" for none):
    trials with equal keys share every constant.

        >>> constants_key({"lr_hidden": 0.5, "output_mult": 1.0})
        '{"lr_hidden": 0.5}'
    """
    import json

    from mutransfer.core import Constants

    return json.dumps(Constants.coerce(values or {}).changed(), sort_keys=True)


def _beta1(optimizer, params: dict, train: dict):
    """The trial's beta1: betas[0] or the momentum, as the optimizer's record says; None for an
    optimizer without a record."""
    rule = OPTIMIZER_RULES.get(optimizer) if isinstance(optimizer, str) else None
    if rule is None:
        return None
    if rule.beta1_setting == "betas":
        return float(train.get("betas", (rule.beta1,))[0])
    momentum = params.get("momentum", train.get("momentum"))
    return float(rule.beta1 if momentum is None else momentum)
