"""Tune the small proxy with Optuna: samplers, pruners, the study, workers, resume and rerun.

Each trial (:func:`mutransfer.runs.run_trial`) builds the model at the proxy width, parametrizes it as
configured, trains it and returns the final eval loss, reported at every eval for pruning. A
diverged run is not an error: it is COMPLETE with the value ``DIVERGED_PENALTY * (largest finite
loss it saw)`` (at least twice its loss at initialization, so worse than not training at all;
finite, so the sampler learns to avoid the region) and its reason in ``user_attrs``. Storage
and worker plumbing live in :mod:`mutransfer.tuning._storage`; the sweep leaves only its study
(the report of it, trials.csv and figures, is :func:`mutransfer.validation.write_sweep_report`).

    >>> study = mutransfer.sweep("sweeps/quickstart.toml", trials=8)
    >>> study.best_params
"""
from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

from mutransfer.runs import DIVERGED_PENALTY, ExperimentConfig, load_config, run_trial, trial_value
from mutransfer.tuning._locks import start_lock
from mutransfer.tuning._objective import REJECTIONS, make_objective
from mutransfer.tuning._storage import (STORAGE_ENV, counts, default_storage, finished, open_storage,
                                        redact, run_worker, threads_per_worker, worker_devices)



def make_sampler(cfg: ExperimentConfig, seed: int):
    """The configured Optuna sampler, seeded with ``seed``."""
    import optuna

    s = cfg.sweep
    if s.sampler == "grid":
        # One seed for every worker: GridSampler shuffles its grid by the seed and hands grid
        # id = trial number to the first trials, so workers must agree on the order or two of
        # them run the same point (and one point never runs).
        return optuna.samplers.GridSampler(dict(s.space), seed=s.seed)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    # constant_liar: a RUNNING trial counts as a bad result, so workers sampling at the same time
    # (processes here, or machines on one PostgreSQL study) spread out instead of drawing the same
    # point; one worker never samples beside a running trial, so it changes nothing there.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(cfg: ExperimentConfig):
    """Median (after a quarter of the longest run's steps: early losses rank lrs poorly),
    Hyperband over steps up to the longest run's, or none. Under a token budget a run's steps
    are tokens / (batch x seq_len), so they come from the space's batch sizes and budgets, not
    from ``[train] steps``."""
    import optuna

    shortest, longest = run_steps(cfg)
    if cfg.sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=longest // 4)
    if cfg.sweep.pruner == "hyperband":
        eval_every = cfg.train.eval_every or max(1, shortest // 10)
        return optuna.pruners.HyperbandPruner(min_resource=eval_every, max_resource=longest)
    return optuna.pruners.NopPruner()


def run_steps(cfg: ExperimentConfig) -> tuple[int, int]:
    """The fewest and the most optimizer steps a trial of the sweep can take:
    ``steps_for(batch, tokens)`` over the extremes of the swept (or fixed) batch size and budget.

        >>> run_steps(cfg.override({"train.tokens": 65536, "sweep.space.batch_size": [8, 32]}))
        (32, 128)
    """
    def extremes(name: str, fixed):
        spec = cfg.sweep.space.get(name)
        if spec is None:
            return [fixed]
        return list(spec) if isinstance(spec, list) else [spec["low"], spec["high"]]

    steps = [cfg.steps_for(b, t) for b in extremes("batch_size", cfg.train.batch_size)
             for t in extremes("tokens", cfg.train.tokens)]
    return min(steps), max(steps)


def _sampler_seed(cfg: ExperimentConfig, n_existing: int, worker: int) -> int:
    """Distinct per worker and per resume: the same seed would replay the first run's samples."""
    import numpy as np

    return int(np.random.SeedSequence([cfg.sweep.seed, n_existing, worker]).generate_state(1)[0])


def _load_study(cfg, url, study_name, worker: int):
    """The study (created if new, with this worker's sampler) and the storage's start lock."""
    import optuna

    storage = open_storage(url, heartbeat_interval=cfg.sweep.heartbeat_interval,
                           grace_period=cfg.sweep.grace_period)
    study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize",
                                load_if_exists=True, pruner=make_pruner(cfg))
    study.sampler = make_sampler(cfg, _sampler_seed(cfg, len(study.get_trials(deepcopy=False)), worker))
    return study, start_lock(storage, study_name)


def _worker_main(cfg_dict: dict, study_name: str, width: int, device: str,
                 threads: int, worker: int, deadline: float | None, total: int) -> None:
    """Entry point of a spawned worker process; the storage URL is in ``$MUTRANSFER_STORAGE_URL``."""
    import os

    import optuna
    import torch

    url = os.environ[STORAGE_ENV]

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = ExperimentConfig.from_dict(cfg_dict)
    study, lock = _load_study(cfg, url, study_name, worker)
    with lock:
        run_worker(study, make_objective(cfg, width=width, device=device), total,
                   grace_period=cfg.sweep.grace_period, deadline=deadline, catch=_catch(), lock=lock,
                   stop_if_first_fail=cfg.sweep.stop_if_first_fail)


def _catch() -> tuple:
    """What one trial may raise without ending the sweep: out of memory (one batch size too big)
    and a point the trial refuses or that gives no finite loss (recorded FAIL, with its reason)."""
    import torch

    return (torch.OutOfMemoryError, *REJECTIONS)


def sweep(config: ExperimentConfig | str | Path, *, width: int | None = None,
          trials: int | None = None, storage: str | None = None, study_name: str | None = None,
          workers: int | None = 1, device: str = "auto", timeout: float | None = None,
          show_progress: bool = True, reports_dir: str | Path = "reports", seed: int | None = None):
    """Run (or resume) the proxy sweep until ``trials`` trials are COMPLETE or PRUNED.

    ``workers`` processes share the storage (``None``: one per visible GPU, else 1); the study
    ``<name>-w<width>`` (``-s<seed>`` added when ``seed`` overrides ``[sweep] seed``) lives in
    ``storage`` (default SQLite ``reports/<name>/study.db``). The sweep writes nothing else:
    :func:`mutransfer.validation.write_sweep_report` reads the study into trials.csv, history.png
    and slice.png (``mutransfer sweep`` calls it, into ``reports/<name>/<study>/``).

        >>> study = sweep("sweeps/quickstart.toml", trials=8, workers=2)
        >>> study.best_trial.params
    """
    import optuna

    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    name, url = study_location(cfg, width=width, seed=seed, storage=storage, study_name=study_name,
                               reports_dir=reports_dir)
    cfg = cfg.override({k: v for k, v in {"sweep.width": width, "sweep.trials": trials,
                                          "sweep.storage": storage, "sweep.seed": seed}.items()
                        if v is not None})
    devices = worker_devices(device, workers)
    deadline = None if timeout is None else time.time() + timeout
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study, lock = _load_study(cfg, url, name, worker=0)
        with lock, _progress(study, cfg.sweep.trials, show_progress) as progress:
            for total in _phases(study, cfg):
                if len(devices) == 1:
                    run_worker(study, make_objective(cfg, width=cfg.sweep.width, device=devices[0]),
                               total, grace_period=cfg.sweep.grace_period,
                               deadline=deadline, progress=progress, catch=_catch(), lock=lock,
                               stop_if_first_fail=cfg.sweep.stop_if_first_fail)
                else:
                    _spawn(cfg, url, name, devices, deadline, study, progress, total)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return study


def _phases(study, cfg: ExperimentConfig):
    """The trial total to run to: ``[sweep] trials`` (recipe "single"), or each phase's
    cumulative total of the staged recipe, its trials enqueued just before it runs."""
    if cfg.sweep.recipe != "staged":
        yield cfg.sweep.trials
        return
    from mutransfer.runs import config_constants
    from mutransfer.tuning._recipe import enqueue_phase_, phase_totals

    for phase, total in enumerate(phase_totals(cfg)):
        enqueue_phase_(study, cfg, phase, config_constants(cfg))
        yield total


STUDY_NAME = re.compile(r"^(?P<name>.+)-w(?P<width>\d+)(?:-s(?P<seed>\d+))?$")


def default_study_name(cfg: ExperimentConfig, width: int | None = None, seed: int | None = None) -> str:
    """``<name>-w<width>``, or ``<name>-w<width>-s<seed>`` for a seed other than the config's
    (a second seed of the same grid is its own study; transfer pools them).

        >>> default_study_name(cfg, 64, seed=1)
        'quickstart-w64-s1'
    """
    width = width or cfg.sweep.width
    other = seed is not None and seed != cfg.sweep.seed
    return f"{cfg.name}-w{width}" + (f"-s{seed}" if other else "")


def study_location(cfg: ExperimentConfig, *, width: int | None = None, seed: int | None = None,
                   storage: str | None = None, study_name: str | None = None,
                   reports_dir: str | Path = "reports") -> tuple[str, str]:
    """``(study name, storage URL)`` of the sweep these arguments run, as :func:`sweep` and
    :func:`rerun` find it: ``study_name`` else :func:`default_study_name`; ``storage``, else
    ``[sweep] storage``, else the SQLite file under ``reports_dir``.

        >>> study_location(cfg, width=64, seed=1)
        ('quickstart-w64-s1', 'sqlite:////abs/reports/quickstart/study.db')
    """
    name = study_name or default_study_name(cfg, width, seed)
    return name, storage or cfg.sweep.storage or default_storage(cfg, reports_dir)


def _spawn(cfg, url, name, devices, deadline, study, progress, total: int) -> None:
    """K fresh interpreters (not multiprocessing: its spawn re-runs the caller's unguarded
    ``__main__``), each running :func:`_worker_main`; the parent only draws the progress."""
    import json
    import os
    import subprocess
    import sys

    threads = threads_per_worker(len(devices))
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding mutransfer/: importable without an install
    # The URL (it may hold a password) goes through the environment, which only this user can
    # read (/proc/PID/environ is 0400), never on the command line, which every user can (ps).
    env = {**os.environ, STORAGE_ENV: url,
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    cfg_dict = dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, storage=None)).to_dict()
    code = "import json, sys; from mutransfer.tuning._sweep import _worker_main; _worker_main(**json.loads(sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, json.dumps(
        {"cfg_dict": cfg_dict, "study_name": name, "width": cfg.sweep.width,
         "device": dev, "threads": threads, "worker": i + 1, "deadline": deadline,
         "total": total})], env=env)
        for i, dev in enumerate(devices)]
    try:
        while any(p.poll() is None for p in procs):
            progress(counts(study))
            time.sleep(1.0)
    finally:  # Ctrl-C in the parent: take the workers down with it
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()
    progress(counts(study))
    bad = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if bad:
        raise RuntimeError(f"sweep workers {bad} (index, exit code) failed; see their traceback "
                           f"above. Completed trials are kept: rerun the same command to resume.")


class _progress:
    """A tqdm bar over COMPLETE + PRUNED trials; the context value is ``update(counts)``."""

    def __init__(self, study, total: int, show: bool):
        from tqdm.auto import tqdm

        self.study = study
        c = counts(study)
        self.bar = tqdm(total=total, initial=min(total, finished(c)),
                        desc=study.study_name, unit="trial", disable=not show)

    def __enter__(self):
        return self.update

    def update(self, c) -> None:
        self.bar.n = min(self.bar.total, finished(c))
        self.bar.set_postfix(running=c["RUNNING"], failed=c["FAIL"], refresh=False)
        self.bar.refresh()

    def __exit__(self, *exc):
        self.bar.close()


def rerun(config: ExperimentConfig | str | Path, trial_number: int, *, storage: str | None = None,
          study_name: str | None = None, width: int | None = None, device: str = "cpu",
          reports_dir: str | Path = "reports", seed: int | None = None,
          trust_study: bool = False) -> tuple[float, float]:
    """Train one stored trial again: the same config (every field as the trial stored it), params,
    width, depth and seed (a pruned one up to the step it was pruned at).

    The study is ``study_name``, else ``<name>-w<width>`` with ``-s<seed>`` for a ``seed`` other
    than the config's (as :func:`sweep` named it). Rerunning imports the trial's model factory: a
    study someone else can write to could name any code, so a factory other than the local
    config's is refused unless ``trust_study``.
    Returns ``(stored value, new value)``; on CPU with the same thread count they agree exactly.

        >>> stored, new = rerun("sweeps/quickstart.toml", 3)
        >>> stored, new = rerun("sweeps/quickstart.toml", 3, seed=1000)   # the study ...-w64-s1000
    """
    import optuna

    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    name, url = study_location(cfg, width=width, seed=seed, storage=storage, study_name=study_name,
                               reports_dir=reports_dir)
    study = optuna.load_study(study_name=name, storage=url)
    found = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number]
    if not found:
        raise ValueError(f"study {name!r} in {redact(url)} has no trial {trial_number}; "
                         f"it has {len(study.trials)} trials numbered from 0")
    t = found[0]
    if t.state.name not in ("COMPLETE", "PRUNED") or "config" not in t.user_attrs:
        raise ValueError(f"trial {trial_number} is {t.state.name}; only COMPLETE or PRUNED trials "
                         f"have a value to compare with")
    stored_cfg = ExperimentConfig.from_dict(t.user_attrs["config"], f"trial {trial_number}")
    if stored_cfg.model.factory != cfg.model.factory and not trust_study:
        raise ValueError(f"trial {trial_number} of {name!r} builds its model with factory "
                         f"{stored_cfg.model.factory!r}, not this config's {cfg.model.factory!r}; "
                         f"rerunning it would import that code. Pass trust_study=True "
                         f"(--trust-study) if you trust everyone who can write to {redact(url)}")
    # a pruned trial is replayed up to the step it was pruned at, its value's step
    stop = max(t.intermediate_values) if t.state.name == "PRUNED" else None
    res = run_trial(stored_cfg, t.params, width=t.user_attrs["width"], device=device,
                    seed=t.user_attrs["seed"], depth=t.user_attrs.get("depth"),
                    callback=None if stop is None else lambda s, _: s >= stop)
    return float(t.value), trial_value(res)


def bench_overhead(config_path: str | Path, trials: int, *, width: int | None = None) -> dict:
    """Harness overhead of a sweep (no pruning) over the training it runs.

    ``overhead = sweep_s / train_s - 1`` with ``train_s`` the summed time inside
    :func:`run_trial` (immune to load changes between runs); ``overhead_vs_bare`` compares with
    a second, bare pass over the same trials (noisier on a shared machine).

        >>> bench_overhead("sweeps/quickstart.toml", 10)["overhead"]
        0.02
    """
    import tempfile

    cfg = load_config(config_path, {"sweep.pruner": "none"})
    # one untimed trial first: imports and the dataset then cost neither side anything
    run_trial(cfg, {}, width=width or cfg.sweep.width, device="cpu", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        study = sweep(cfg, width=width, trials=trials, storage=f"sqlite:///{tmp}/bench.db",
                      workers=1, device="cpu", show_progress=False, reports_dir=tmp)
        sweep_s = time.perf_counter() - start
        start = time.perf_counter()
        for t in study.trials:
            run_trial(cfg, t.params, width=t.user_attrs["width"], device="cpu", seed=t.user_attrs["seed"])
        bare_s = time.perf_counter() - start
    n, train_s = len(study.trials), sum(t.user_attrs["seconds"] for t in study.trials)
    return {"trials": n, "sweep_s": sweep_s, "train_s": train_s,
            "bare_s": bare_s, "overhead": sweep_s / train_s - 1,
            "overhead_vs_bare": sweep_s / bare_s - 1,
            "trials_per_hour": 3600 * n / sweep_s}


__all__ = ["sweep", "rerun", "make_objective", "bench_overhead", "default_storage"]
