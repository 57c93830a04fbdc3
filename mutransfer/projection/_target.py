"""Train the target: the config's model at the plan's width with the transfer plan's settings.

The last step of the path. :func:`train_target` takes a :class:`~mutransfer.TransferPlan`
(or its plan.json) and trains ``[model] factory`` at ``plan.target_width``, parametrized as the
config says, with the plan's base lr (each group gets ``lr * lr_mult``), its adam_lr, batch size
and weight decay, through the same loop as the sweep's trials (:func:`mutransfer.tuning.run_trial`).

    >>> res = train_target("sweeps/quickstart.toml", "reports/quickstart/plan.json")
    >>> res.final_loss
"""
from __future__ import annotations

from pathlib import Path

from mutransfer.runs import DEPTH_AUTO, ExperimentConfig, load_config
from mutransfer.projection._transfer_plan import TransferPlan


def load_plan(plan: TransferPlan | str | Path) -> TransferPlan:
    """A TransferPlan, from itself or from a plan.json path.

        >>> load_plan("reports/quickstart/plan.json").lr
    """
    if isinstance(plan, TransferPlan):
        return plan
    path = Path(plan)
    if not path.is_file():
        raise FileNotFoundError(f"no transfer plan at {path}; write one with "
                                "`mutransfer transfer CONFIG --out PATH`")
    return TransferPlan.from_json(path.read_text())


def plan_params(plan: TransferPlan) -> dict:
    """The trial knobs the plan fixes: lr, batch_size, its constants, and adam_lr / weight_decay
    when it has them.

        >>> plan_params(plan)
        {'lr': 0.0096, 'batch_size': 16}
    """
    params = {"lr": float(plan.lr), "batch_size": int(plan.batch_size), **plan.constants}
    for key in ("adam_lr", "weight_decay"):
        if getattr(plan, key) is not None:
            params[key] = float(getattr(plan, key))
    return params


def check_plan_matches(cfg: ExperimentConfig, plan: TransferPlan) -> None:
    """Refuse a plan fitted for another parametrization than ``cfg`` trains (scheme, optimizer,
    muon_scale, readout, base width and depth, depth_alpha, wd_policy, constants): its lr would
    be for a different model. Each mismatch names both values.

        >>> check_plan_matches(load_config("sweeps/quickstart.toml"), load_plan("reports/quickstart/plan.json"))
    """
    p = cfg.parametrization
    pairs = (("scheme", plan.scheme, p.scheme), ("optimizer", plan.optimizer_name, p.optimizer),
             ("muon_scale", plan.muon_scale if _uses_muon_scale(plan) else None, p.muon_scale),
             ("readout", plan.readout, p.readout), ("wd_policy", plan.wd_policy, cfg.train.wd_policy),
             ("base_width", plan.base_width, cfg.model.base_width),
             ("base_depth", plan.base_depth, cfg.model.base_depth or cfg.model.depth),
             ("depth_alpha", _alpha(plan.depth_alpha), _configured_alpha(p.depth_alpha, plan)))
    for what, planned, configured in pairs:
        if planned is not None and planned != configured:
            raise ValueError(f"the plan's {what} is {planned!r} but the config "
                             f"trains {what} {configured!r}; use the config the plan's sweeps ran "
                             f"with, or rerun `mutransfer transfer` for this one")
    _check_constants(cfg, plan)


def _configured_alpha(alpha, plan: TransferPlan):
    """The alpha a config trains the plan's target with: a number as it is; unset or "auto", the
    rule the plan's depth probe chose (unset and no probe: alpha 1/2, "auto" and no probe: refused)."""
    if alpha not in (None, DEPTH_AUTO):
        return _alpha(alpha)
    if plan.depth_rule or (alpha == DEPTH_AUTO and plan.depth_alpha is None):
        return _alpha(plan.depth_alpha)
    return _alpha(None) if alpha is None else "auto"


def _uses_muon_scale(plan: TransferPlan) -> bool:
    """Whether the plan's optimizer reads muon_scale (a rule with its own update scale: Muon)."""
    from mutransfer.core import optimizer_rule

    return plan.optimizer_name is not None and optimizer_rule(plan.optimizer_name).alpha is not None


def _alpha(value: float | None) -> float:
    from mutransfer.core import DEFAULT_DEPTH_ALPHA

    return DEFAULT_DEPTH_ALPHA if value is None else float(value)


def _check_constants(cfg: ExperimentConfig, plan: TransferPlan) -> None:
    """Refuse a plan whose constants differ from those the config fixes (a constant the config
    sweeps is free: the plan's tuned value is applied)."""
    from mutransfer.runs import config_constants
    from mutransfer.core import Constants

    fixed = {k: v for k, v in config_constants(cfg).items() if k not in cfg.sweep.space}
    planned = Constants.coerce(plan.constants).as_dict()
    wrong = {k: (planned[k], v) for k, v in fixed.items() if planned[k] != v}
    if wrong:
        detail = ", ".join(f"{k}: plan {p:g}, config {c:g}" for k, (p, c) in wrong.items())
        raise ValueError(f"the plan was tuned with other constants than the config fixes ({detail}); "
                         f"use the config the plan's sweeps ran with, sweep those constants in "
                         f"[sweep.space], or rerun `mutransfer transfer` for this config")


# [train] keys that say how the target runs, not what it computes: a checkpoint written under
# one of them resumes under another (DCP reshards; every rank reads the same global batches)
HOW_IT_RUNS = ("parallel", "compile", "checkpoint_every", "log")


def run_fingerprint(cfg: ExperimentConfig, plan: TransferPlan, *, width: int, depth: int | None,
                    steps: int, seed: int) -> dict:
    """The settings a target run's numbers depend on, as a flat dict stored with each of its
    checkpoints (a resume with other settings is refused, naming them): the config's
    ``[model]``, ``[data]``, ``[train]`` (but :data:`HOW_IT_RUNS`) and ``[parametrization]``,
    the plan's settings (:func:`plan_params`, scheme, optimizer, base width and depth), and
    the run's width, depth, steps and seed.

        >>> run_fingerprint(cfg, plan, width=256, depth=None, steps=100, seed=0)["plan.lr"]
        0.0096
    """
    from mutransfer.training import flat_settings

    settings = cfg.to_dict()
    settings.pop("name")
    settings.pop("sweep")  # the plan's values below are what the sweep chose
    for key in HOW_IT_RUNS:
        settings["train"].pop(key)
    planned = {**plan_params(plan), "scheme": plan.scheme, "optimizer": plan.optimizer_name,
               "muon_scale": plan.muon_scale, "readout": plan.readout, "wd_policy": plan.wd_policy,
               "base_width": plan.base_width, "base_depth": plan.base_depth,
               "depth_alpha": plan.depth_alpha}
    return flat_settings({"config": settings, "plan": planned,
                          "run": {"width": width, "depth": depth, "steps": steps, "seed": seed}})


def train_target(config: ExperimentConfig | str | Path, plan: TransferPlan | str | Path, *,
                 width: int | None = None, depth: int | None = None, steps: int | None = None,
                 device: str = "auto", seed: int = 0, progress: bool = True, resume: bool = False,
                 checkpoint_dir: str | Path | None = None, log_dir: str | Path | None = None):
    """Train the config's model at ``width`` (default ``plan.target_width``) and ``depth``
    (default ``plan.target_depth``) with the plan.

    Each parameter group trains at ``plan.lr * lr_mult`` (Muon's AdamW groups at
    ``plan.adam_lr * lr_mult``) with ``plan.batch_size``; ``steps`` defaults to ``plan.steps``
    (set when the plan was given ``tokens``), else ``[train] steps``. Returns the
    :class:`~mutransfer.TrainResult`; divergence is a result (``res.diverged``).

    ``[train] parallel`` ("ddp", "fsdp": launch under torchrun), ``compile`` and
    ``checkpoint_every`` apply here. Checkpoints go to ``checkpoint_dir`` (default
    ``reports/<name>/train-w<W>/checkpoints``, where ``mutransfer train`` puts them) with the
    run's :func:`run_fingerprint`; ``resume`` continues from the newest one there. With
    ``[train] log = "tensorboard"`` each step's scalars go to ``log_dir`` (default
    ``reports/<name>/train-w<W>/tensorboard``) while it trains.

        >>> res = train_target("sweeps/quickstart.toml", "reports/quickstart/plan.json")
        >>> res.final_loss, res.history.tail()
    """
    from mutransfer.training import Checkpoints
    from mutransfer.runs import run_trial

    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    plan = load_plan(plan)
    check_plan_matches(cfg, plan)
    if cfg.parametrization.depth_alpha in (None, DEPTH_AUTO) and plan.depth_rule:  # the rule the probe chose
        cfg = cfg.override({"parametrization.depth_alpha": plan.depth_alpha})
    width = plan.target_width if width is None else width
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, e.g. --width 512; got {width!r}")
    depth = plan.target_depth if depth is None else depth
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"depth must be a positive int, e.g. --depth 8; got {depth!r}")
    steps = steps if steps is not None else plan.steps
    if steps is not None:
        cfg = cfg.override({"train.steps": steps, "train.tokens": None})  # explicit steps win
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be True or False; got {resume!r}")
    t, checkpoint = cfg.train, None
    if t.checkpoint_every is not None or resume:
        folder = checkpoint_dir or Path("reports") / cfg.name / f"train-w{width}" / "checkpoints"
        fingerprint = run_fingerprint(cfg, plan, width=width, depth=depth, seed=seed,
                                      steps=cfg.steps_for(int(plan.batch_size)))
        checkpoint = Checkpoints(folder, every=t.checkpoint_every, resume=resume,
                                 fingerprint=fingerprint)
    log = None
    if t.log == "tensorboard":
        from mutransfer.training import TensorBoardLog, is_main_process

        if is_main_process():
            log = TensorBoardLog(log_dir or Path("reports") / cfg.name / f"train-w{width}" / "tensorboard")
    try:
        return run_trial(cfg, plan_params(plan), width=width, device=device, seed=seed,
                         progress=progress, depth=depth, parallel=t.parallel, compile=t.compile,
                         checkpoint=checkpoint, log=log)
    finally:
        if log is not None:
            log.close()
