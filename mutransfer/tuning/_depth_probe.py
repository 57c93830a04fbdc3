"""The depth probe: which depth rule transfers on the user's model, measured at the proxy's width.

With ``[parametrization] depth_alpha`` unset (the default) or "auto" and a target deeper than the
proxy, the proxy is also trained at ``factor`` x its depth (default 4x) under each candidate
branch multiplier m_L^-alpha (alpha 0, 1/2, 1: scaling.md section 9), on a short lr grid around
the lr the proxy's sweep hands over: lr x 2^k, k in :data:`PROBE_OFFSETS` (k = 0 is the
handed-over lr itself), then once more per alpha at its grid's fitted optimum.
:func:`mutransfer.projection.choose_depth_rule` then picks the rule and the lr's depth exponent. The trials live in their own
study, ``<name>-w<width>-depth-probe``, beside the sweep's: resumable, every run kept.

    >>> study = probe_depth(cfg, {"lr": 0.01, "batch_size": 16})
    >>> [t.user_attrs["depth_alpha"] for t in study.trials]
"""
from __future__ import annotations

import math

from mutransfer.runs import ExperimentConfig, count_params, sweep_tokens, training_flops
from mutransfer.tuning._objective import REJECTIONS, make_objective
from mutransfer.tuning._storage import default_storage, open_storage

DEPTH_ALPHAS = (0.0, 0.5, 1.0)  # width-only, depth-muP, CompleteP
PROBE_FACTOR = 4  # the probe's depth over the proxy's
PROBE_OFFSETS = (-2, -1, 0, 1, 2)  # octaves around the handed-over lr


def probe_study_name(cfg: ExperimentConfig, width: int | None = None) -> str:
    """``<name>-w<width>-depth-probe`` (the proxy's width by default).

        >>> probe_study_name(cfg)
        'llama-cpu-depth-w64-depth-probe'
    """
    return f"{cfg.name}-w{width or cfg.sweep.width}-depth-probe"


def probe_points(lr: float, alphas=DEPTH_ALPHAS, offsets=PROBE_OFFSETS) -> list[dict]:
    """The probe's runs: each alpha at lr x 2^k for each offset k.

        >>> probe_points(0.01, alphas=(0.5,), offsets=(0,))
        [{'depth_alpha': 0.5, 'offset': 0.0, 'lr': 0.01, 'kind': 'grid'}]
    """
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"the handed-over lr must be a positive number; got {lr!r}")
    return [{"depth_alpha": float(a), "offset": float(k), "lr": float(lr) * 2.0 ** k, "kind": "grid"}
            for a in alphas for k in offsets]


def probe_depth(cfg: ExperimentConfig, params: dict, *, width: int | None = None, storage: str | None = None,
                reports_dir="reports", device: str = "cpu", factor: int = PROBE_FACTOR, alphas=DEPTH_ALPHAS,
                offsets=PROBE_OFFSETS, points: list[dict] | None = None, show_progress: bool = True):
    """Run (or resume) the depth probe and return its study (see the module).

    ``params``: the proxy's handed-over knobs (``lr`` and, optionally, batch_size, constants,
    adam_lr, weight_decay: :func:`mutransfer.projection.plan_params` of its plan). Each run trains
    the proxy (``width``, default ``[sweep] width``) at ``factor`` x the proxy's depth with seed
    ``[sweep] seed``; a point already COMPLETE in the study is not run again. ``points`` (each
    {depth_alpha, lr, offset, kind}) replaces the grid of :func:`probe_points`, e.g. the lrs tuned
    at the probe's depth (kind "tuned"). The study records
    the parameter counts at both depths (``user_attrs``) for the probe's cost in FLOPs.

        >>> probe_depth(cfg, {"lr": 0.01, "batch_size": 16}, device="cpu").trials_dataframe()
    """
    import optuna
    from tqdm.auto import tqdm

    base = cfg.proxy_depth()
    if base is None:
        raise ValueError("the depth probe needs [model] depth (the target's blocks) and a base depth "
                         "([model] base_depth): the proxy's depth is not known")
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ValueError(f"factor must be an int >= 2 (the probe's depth over the proxy's); got {factor!r}")
    if "lr" not in params:
        raise ValueError(f"params must hold the handed-over lr, e.g. {{'lr': 0.01}}; got {params!r}")
    width, deep = width or cfg.sweep.width, factor * base
    url = storage or cfg.sweep.storage or default_storage(cfg, reports_dir)
    study = optuna.create_study(study_name=probe_study_name(cfg, width), direction="minimize", load_if_exists=True,
                                pruner=optuna.pruners.NopPruner(),
                                storage=open_storage(url, heartbeat_interval=cfg.sweep.heartbeat_interval,
                                                     grace_period=cfg.sweep.grace_period))
    study.set_user_attr("params_base", count_params(cfg, width, base))
    study.set_user_attr("params_probe", count_params(cfg, width, deep))
    done = {(t.user_attrs.get("depth_alpha"), round(math.log2(t.user_attrs.get("lr", 1.0)), 6))
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}
    points = probe_points(float(params["lr"]), alphas, offsets) if points is None else points
    todo = [p for p in points if (p["depth_alpha"], round(math.log2(p["lr"]), 6)) not in done]
    for p in tqdm(todo, desc=f"depth probe ({deep} blocks)", unit="run", disable=not show_progress):
        _run_point(study, cfg, {**params, "lr": p["lr"]}, p, width=width, depth=deep, device=device)
    return study


def _run_point(study, cfg: ExperimentConfig, params: dict, point: dict, *, width: int, depth: int,
               device: str) -> None:
    """One probe run as one trial of ``study`` (enqueued with its point as user attributes, run by
    ``study.optimize``): FAIL, kept with its reason, when the point is refused."""
    study.enqueue_trial({}, user_attrs={**point, "handed_lr": params["lr"] / 2.0 ** point["offset"]})

    def where(trial):
        alpha, lr = trial.user_attrs["depth_alpha"], trial.user_attrs["lr"]
        return cfg.override({"parametrization.depth_alpha": alpha}), {**params, "lr": lr}, width, cfg.sweep.seed, depth

    study.optimize(make_objective(cfg, device=device, point=where), n_trials=1, catch=REJECTIONS)


def stored_probe(cfg: ExperimentConfig, storage: str):
    """The config's depth probe study in ``storage`` (a URL), None where none was run.

        >>> stored_probe(cfg, "sqlite:///reports/llama-cpu-depth/study.db").study_name
        'llama-cpu-depth-w64-depth-probe'
    """
    import optuna

    opened = open_storage(storage, heartbeat_interval=cfg.sweep.heartbeat_interval, grace_period=cfg.sweep.grace_period)
    name = probe_study_name(cfg)
    return optuna.load_study(study_name=name, storage=opened) if name in optuna.get_all_study_names(opened) else None


def probe_cost(cfg: ExperimentConfig, width: int | None = None) -> str:
    """The probe's cost before it runs, in a sentence: its runs (each alpha's grid plus one tuned
    run), their FLOPs (6 N D at 4x the proxy's depth, each run the sweep's mean tokens) and the
    ratio to the proxy sweep's FLOPs.

        >>> print(probe_cost(load_config("sweeps/llama-cpu-depth.toml")))
        depth probe: the proxy (width 64) at 8 blocks, 18 runs ...
    """
    width, base = width or cfg.sweep.width, cfg.proxy_depth()
    runs, tokens = len(DEPTH_ALPHAS) * (len(PROBE_OFFSETS) + 1), sweep_tokens(cfg)
    probe = training_flops(count_params(cfg, width, PROBE_FACTOR * base), runs * tokens / max(cfg.sweep.trials, 1))
    swept = training_flops(count_params(cfg, width, base), tokens)
    return (f"depth probe: the proxy (width {width}) at {PROBE_FACTOR * base} blocks, {runs} runs (alpha "
            f"{', '.join(f'{a:g}' for a in DEPTH_ALPHAS)} x {len(PROBE_OFFSETS)} lrs, + 1 tuned each): {probe:.3g} "
            f"FLOPs, {probe / swept:.1f}x this sweep's; a number in [parametrization] depth_alpha skips it")
