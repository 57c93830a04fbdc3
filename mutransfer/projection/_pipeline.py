"""The path in one call: sweep the proxy, transfer to the target, train the target with the plan.

The quickstart, ``mutransfer compare`` (per arm) and the width-and-depth experiment all run it;
the reports (plan.png, train-w<W>/, compare.md) are theirs, drawn by :mod:`mutransfer.validation`.

    >>> res = pipeline("sweeps/quickstart.toml", device="cpu")
    >>> res.plan.lr, res.target.final_loss
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

from mutransfer.projection._target import train_target
from mutransfer.projection._transfer import transfer
from mutransfer.projection._transfer_plan import TransferPlan
from mutransfer.runs import ExperimentConfig, load_config

PROBE_EXTENSIONS = 2  # octaves the depth probe may add beyond its grid's edge, one at a time


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """What :func:`pipeline` ran: the proxy's tuning runs (Optuna studies, or the trials frame it
    was given), the transfer plan, the target's results (one per seed) and where plan.json went.

        >>> res.study.study_name, res.plan.lr, res.target.final_loss
    """
    studies: tuple
    plan: TransferPlan
    targets: tuple
    seeds: tuple[int, ...]
    plan_json: Path | None = None

    @property
    def study(self):
        """The first (usually the only) study."""
        return self.studies[0]

    @property
    def target(self):
        """The target's TrainResult at the first seed."""
        return self.targets[0]

    @property
    def losses(self) -> list[float]:
        """The target's final eval loss per seed."""
        return [float(r.final_loss) for r in self.targets]


def pipeline(config: ExperimentConfig | str | Path, target_width: int | None = None, *,
             target_depth: int | None = None, device: str = "auto",
             reports_dir: str | Path = "reports", seeds: Sequence[int] = (0,),
             study_name: str | None = None, trials=None, workers: int | None = 1,
             show_progress: bool = True, progress: bool = True,
             train_config: ExperimentConfig | None = None, plan_changes: Mapping | None = None,
             write_plan: bool = True) -> PipelineResult:
    """sweep(config) -> transfer(study, target_width) -> train_target(config, plan, seed) per seed.

    The sweep runs (or resumes) the study ``study_name`` (default ``<name>-w<proxy>``) in the
    config's storage; ``trials`` (a study, a list of them or a trials frame) skips it and
    transfers from those runs instead. ``target_width`` defaults to ``[model] width``,
    ``target_depth`` to none (the plan keeps the proxy's depth rules only when given).
    ``plan_changes`` replaces fields of the plan before the target trains (e.g.
    ``{"depth_alpha": 0.0}`` trains width-only muP), with ``train_config`` (default ``config``)
    the config the target trains with. ``write_plan`` writes ``<reports_dir>/<name>/plan.json``.
    ``show_progress`` is the sweep's bar, ``progress`` the target's.

        >>> res = pipeline("sweeps/quickstart.toml", device="cpu", reports_dir="reports")
        >>> res.plan_json, res.target.final_loss
    """
    from mutransfer.tuning import sweep, worker_devices

    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    width = cfg.model.width if target_width is None else target_width
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"target_width must be a positive int, e.g. target_width=256; got {width!r}")
    seeds = tuple(range(seeds)) if isinstance(seeds, int) and not isinstance(seeds, bool) else tuple(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative ints (or a count), e.g. seeds=(0, 1); got {seeds!r}")
    if trials is None:
        trials = sweep(cfg, study_name=study_name, workers=workers, device=device,
                       show_progress=show_progress, reports_dir=reports_dir)
    studies = tuple(trials) if isinstance(trials, (list, tuple)) else (trials,)
    results = list(studies) if isinstance(trials, (list, tuple)) else trials
    deep = cfg.override({"model.depth": target_depth}) if target_depth else cfg
    probe = run_depth_probe(deep, results, reports_dir=reports_dir, device=worker_devices(device, 1)[0],
                            show_progress=show_progress)
    plan = transfer(results, target_width=width, target_depth=target_depth, depth_probe=probe)
    plan_json = None
    if write_plan:
        plan_json = Path(reports_dir) / cfg.name / "plan.json"
        plan_json.parent.mkdir(parents=True, exist_ok=True)
        plan_json.write_text(plan.to_json())
    if plan_changes:
        plan = _changed(plan, plan_changes)
    tcfg = cfg if train_config is None else train_config
    targets = tuple(train_target(tcfg, plan, seed=s, device=device, progress=progress,
                                 checkpoint_dir=_checkpoints(reports_dir, tcfg, width, s))
                    for s in seeds)
    return PipelineResult(studies, plan, targets, seeds, plan_json)


def _changed(plan: TransferPlan, changes: Mapping) -> TransferPlan:
    """The plan with ``changes`` (TransferPlan fields) replaced; an unknown field is an error."""
    fields = {f.name for f in dataclasses.fields(TransferPlan)}
    if not isinstance(changes, Mapping) or set(changes) - fields:
        bad = sorted(set(changes) - fields) if isinstance(changes, Mapping) else changes
        raise ValueError(f"plan_changes must map TransferPlan fields to values, e.g. "
                         f"{{'depth_alpha': 0.0}}; {bad!r} is not one of {sorted(fields)}")
    return dataclasses.replace(plan, **changes)


def _checkpoints(reports_dir, cfg: ExperimentConfig, width: int, seed: int) -> Path:
    """Where ``[train] checkpoint_every`` writes: ``mutransfer train``'s folder for seed 0, a
    folder of its own for every other seed (a seed resumes only its own run)."""
    name = f"train-w{width}" + (f"-s{seed}" if seed else "")
    return Path(reports_dir) / cfg.name / name / "checkpoints"


def run_depth_probe(cfg, studies, *, storage: str | None = None, reports_dir="reports", device: str = "cpu",
                    show_progress: bool = True):
    """The probe for ``cfg``'s proxy sweep (``studies``): the lr and knobs :func:`transfer` hands
    over at the proxy's width, then :func:`mutransfer.tuning.probe_depth` around them (an alpha whose
    best lr is its grid's edge gets an octave more, up to :data:`PROBE_EXTENSIONS` times), then one
    run per alpha at the lr its grid puts the optimum at (:func:`tuned_points`). None when
    the config does not ask for it (depth_alpha a number, or a target no deeper than the proxy).

        >>> run_depth_probe(load_config("sweeps/llama-cpu-depth.toml"), [study])
    """
    from mutransfer.projection._depth_rule import edge_points, tuned_points
    from mutransfer.projection._target import plan_params
    from mutransfer.tuning import probe_depth

    if not cfg.probes_depth():
        return None
    plan = transfer(studies, cfg.sweep.width, scheme=cfg.parametrization.scheme,
                    optimizer=cfg.parametrization.optimizer)
    params = plan_params(plan)
    study = probe_depth(cfg, params, storage=storage, reports_dir=reports_dir, device=device,
                        show_progress=show_progress)
    for _ in range(PROBE_EXTENSIONS):  # an optimum at the grid's edge: one octave further, at most twice
        more = edge_points(study)
        if not more:
            break
        study = probe_depth(cfg, params, storage=storage, reports_dir=reports_dir, device=device, points=more,
                            show_progress=show_progress)
    return probe_depth(cfg, params, storage=storage, reports_dir=reports_dir, device=device,
                       points=tuned_points(study), show_progress=show_progress)
