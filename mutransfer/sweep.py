"""Tune the small proxy with Optuna: objective, study, workers, pruning, resume and reports.

Each trial builds the model at the proxy width, parametrizes it as configured, trains it with
:func:`mutransfer.train.train` and returns the final eval loss. The eval loss is reported at
every eval for pruning. A diverged run is not an error: it is COMPLETE with the value
``DIVERGED_FACTOR * (largest finite loss it saw)`` (at least twice its loss at initialization, so
worse than not training at all; finite, so the sampler learns to avoid the region) and its
reason in ``user_attrs``. Storage and worker plumbing live in :mod:`mutransfer.storage`.

    >>> study = mutransfer.sweep("sweeps/quickstart.toml", trials=8)
    >>> study.best_params
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import re
import time
from pathlib import Path
from typing import Any, Callable

from .config import INT_SPACE_KEYS, DataConfig, ExperimentConfig, load_config
from .roles import Role
from .locks import start_lock
from .storage import (counts, default_storage, open_storage, run_worker, threads_per_worker,
                      worker_devices)

DIVERGED_FACTOR = 2.0  # a diverged trial's value: this times the largest finite loss it saw
BEST_ROWS = 10  # rows of the best-trials table


def run_trial(cfg: ExperimentConfig, params: dict, *, width: int, device: str, seed: int,
              callback: Callable | None = None, progress: bool = False):
    """Train the model of ``cfg`` at ``width`` with the swept ``params`` (one trial, no Optuna).

    Knobs missing from ``params`` take ``cfg.train``/``cfg.parametrization`` values;
    ``init_scale`` multiplies the init of every input/hidden/output weight after muP's rewrite.

        >>> res = run_trial(cfg, {"lr": 3e-3, "batch_size": 16}, width=64, device="cpu", seed=0)
        >>> res.final_loss
    """
    import torch

    from . import zoo
    from .parametrize import parametrize
    from .train import train

    k = resolve_knobs(cfg, params)
    torch.manual_seed(seed)
    factory = _factory(cfg, zoo.load_factory(cfg.model.factory))
    p = cfg.parametrization
    plan = parametrize(factory, width=width, base_width=cfg.model.base_width, scheme=p.scheme,
                       optimizer=p.optimizer, muon_scale=p.muon_scale, readout=p.readout,
                       output_mult=k["output_mult"], seed=seed)
    _scale_init_(plan, k["init_scale"])
    t = cfg.train
    opt = plan.optimizer(k["lr"], weight_decay=k["weight_decay"], betas=t.betas, eps=t.eps,
                         momentum=k["momentum"], adam_lr=k["adam_lr"], wd_policy=t.wd_policy)
    data = make_dataset(cfg.data)
    return train(plan.model, opt, data, steps=t.steps, batch_size=k["batch_size"],
                 seq_len=None if cfg.data.source == "synthetic" else t.seq_len,
                 schedule=t.schedule, warmup=k["warmup"], clip=t.clip, device=device, dtype=t.dtype,
                 grad_accum=t.grad_accum, eval_every=t.eval_every or max(1, t.steps // 10),
                 eval_batches=t.eval_batches, seed=seed, callback=callback,
                 measure_noise=t.measure_noise, progress=progress)


def resolve_knobs(cfg: ExperimentConfig, params: dict) -> dict[str, Any]:
    """The trial's settings: swept ``params`` over the config's fixed values."""
    t = cfg.train
    fixed = {"lr": t.lr, "batch_size": t.batch_size, "adam_lr": t.adam_lr,
             "weight_decay": t.weight_decay, "warmup": t.warmup, "momentum": t.momentum,
             "output_mult": cfg.parametrization.output_mult, "init_scale": 1.0}
    return {**fixed, **params}


def _factory(cfg: ExperimentConfig, factory: Callable) -> Callable:
    """The factory with the config's kwargs; sizes the data fixes (seq_len, in_dim, out_dim)
    default to the data's so a GPT's context matches ``train.seq_len``."""
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
    from . import data as datasets

    if data.source == "pycorpus":
        return datasets.pycorpus()
    if data.source == "textfile":
        return datasets.textfile(data.path)
    return datasets.synthetic(kind=data.kind, in_dim=data.in_dim, out_dim=data.out_dim, seed=data.seed)


def trial_value(res) -> float:
    """The objective: final eval loss, or ``DIVERGED_FACTOR`` times the largest finite loss the
    run saw when it diverged (train or eval; its first train loss is the loss at init)."""
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
        for key, value in {"width": width, "batch_size": k["batch_size"], "scheme": p.scheme,
                           "optimizer": p.optimizer, "muon_scale": p.muon_scale, "seed": seed,
                           "device": device, "config": stored}.items():
            trial.set_user_attr(key, value)

        def report(step: int, eval_loss: float) -> bool:
            if math.isfinite(eval_loss):
                trial.report(float(eval_loss), step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"eval loss {eval_loss:.4f} at step {step}")
            return False

        start = time.perf_counter()
        res = run_trial(cfg, params, width=width, device=device, seed=seed, callback=report)
        _store_result(trial, res, time.perf_counter() - start)
        return trial_value(res)

    return objective


def _store_result(trial, res, seconds: float) -> None:
    trial.set_user_attr("diverged", bool(res.diverged))
    trial.set_user_attr("reason", res.reason)
    trial.set_user_attr("seconds", seconds)
    trial.set_user_attr("tokens", int(res.tokens))
    if res.noise:
        for key in ("b_simple", "g2", "trace_sigma"):
            trial.set_user_attr(key, float(res.noise[key]))
        # the train loss under the same EMA as the noise terms: the loss b_simple belongs to
        trial.set_user_attr("noise_loss", float(res.noise["loss"]))


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
    return optuna.samplers.TPESampler(seed=seed)  # constant_liar: parallel workers spread out


def make_pruner(cfg: ExperimentConfig):
    """Median (after a quarter of the steps: early losses rank lrs poorly), Hyperband over
    steps, or none."""
    import optuna

    steps = cfg.train.steps
    if cfg.sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=steps // 4)
    if cfg.sweep.pruner == "hyperband":
        eval_every = cfg.train.eval_every or max(1, steps // 10)
        return optuna.pruners.HyperbandPruner(min_resource=eval_every, max_resource=steps)
    return optuna.pruners.NopPruner()


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


def _worker_main(cfg_dict: dict, url: str, study_name: str, width: int, device: str,
                 threads: int, worker: int, deadline: float | None) -> None:
    """Entry point of a spawned worker process."""
    import optuna
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = ExperimentConfig.from_dict(cfg_dict)
    study, lock = _load_study(cfg, url, study_name, worker)
    with lock:
        run_worker(study, make_objective(cfg, width=width, device=device), cfg.sweep.trials,
                   grace_period=cfg.sweep.grace_period, deadline=deadline, catch=_catch(), lock=lock)


def _catch() -> tuple:
    import torch

    return (torch.OutOfMemoryError,)  # one batch size too big must not end a days-long sweep


def sweep(config: ExperimentConfig | str | Path, *, width: int | None = None,
          trials: int | None = None, storage: str | None = None, study_name: str | None = None,
          workers: int | None = 1, device: str = "auto", timeout: float | None = None,
          show_progress: bool = True, reports_dir: str | Path = "reports", seed: int | None = None):
    """Run (or resume) the proxy sweep until ``trials`` trials are COMPLETE or PRUNED.

    ``workers`` processes share the storage (``None``: one per visible GPU, else 1); the study
    ``<name>-w<width>`` (``-s<seed>`` added when ``seed`` overrides ``[sweep] seed``) lives in
    ``storage`` (default SQLite ``reports/<name>/study.db``). At
    the end the best trials are printed (with ``show_progress``) and trials.csv, history.png
    and slice.png are written to ``reports/<name>/<study>/``.

        >>> study = sweep("sweeps/quickstart.toml", trials=8, workers=2)
        >>> study.best_trial.params
    """
    import optuna

    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    name = study_name or default_study_name(cfg, width, seed)
    cfg = cfg.override({k: v for k, v in {"sweep.width": width, "sweep.trials": trials,
                                          "sweep.storage": storage, "sweep.seed": seed}.items()
                        if v is not None})
    url = cfg.sweep.storage or default_storage(cfg, reports_dir)
    devices = worker_devices(device, workers)
    deadline = None if timeout is None else time.time() + timeout
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study, lock = _load_study(cfg, url, name, worker=0)
        with lock, _progress(study, cfg.sweep.trials, show_progress) as progress:
            if len(devices) == 1:
                run_worker(study, make_objective(cfg, width=cfg.sweep.width, device=devices[0]),
                           cfg.sweep.trials, grace_period=cfg.sweep.grace_period,
                           deadline=deadline, progress=progress, catch=_catch(), lock=lock)
            else:
                _spawn(cfg, url, name, devices, deadline, study, progress)
    finally:
        optuna.logging.set_verbosity(verbosity)
    write_reports(study, Path(reports_dir) / cfg.name / name, show=show_progress)
    return study


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


def _spawn(cfg, url, name, devices, deadline, study, progress) -> None:
    """K fresh interpreters (not multiprocessing: its spawn re-runs the caller's unguarded
    ``__main__``), each running :func:`_worker_main`; the parent only draws the progress."""
    import json
    import os
    import subprocess
    import sys

    threads = threads_per_worker(len(devices))
    package_root = str(Path(__file__).resolve().parents[1])  # importable without an install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                                     os.environ.get("PYTHONPATH")]))}
    code = "import json, sys; from mutransfer.sweep import _worker_main; _worker_main(**json.loads(sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, json.dumps(
        {"cfg_dict": cfg.to_dict(), "url": url, "study_name": name, "width": cfg.sweep.width,
         "device": dev, "threads": threads, "worker": i + 1, "deadline": deadline})], env=env)
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
        self.bar = tqdm(total=total, initial=min(total, c["COMPLETE"] + c["PRUNED"]),
                        desc=study.study_name, unit="trial", disable=not show)

    def __enter__(self):
        return self.update

    def update(self, c) -> None:
        self.bar.n = min(self.bar.total, c["COMPLETE"] + c["PRUNED"])
        self.bar.set_postfix(running=c["RUNNING"], failed=c["FAIL"], refresh=False)
        self.bar.refresh()

    def __exit__(self, *exc):
        self.bar.close()


def best_table(study, rows: int = BEST_ROWS):
    """DataFrame of the best COMPLETE trials (value, params, diverged, seconds), best first."""
    import pandas as pd

    from optuna.trial import TrialState

    records = [{"trial": t.number, "loss": t.value, **t.params,
                "diverged": t.user_attrs.get("diverged"), "seconds": t.user_attrs.get("seconds")}
               for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not records:
        return pd.DataFrame(columns=["trial", "loss"])
    return pd.DataFrame(records).sort_values("loss").head(rows).reset_index(drop=True)


def write_reports(study, out_dir: str | Path, *, show: bool = False) -> dict[str, Path]:
    """trials.csv (one row per trial; the config column left out) and Optuna's matplotlib plots:
    history.png (optimization history) and slice.png (loss against lr and batch size).

        >>> write_reports(study, "reports/quickstart/quickstart-w64")
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = study.trials_dataframe()
    df.drop(columns=[c for c in df.columns if c == "user_attrs_config"]).to_csv(out / "trials.csv", index=False)
    files = {"trials": out / "trials.csv", **_plots(study, out)}
    if show:
        table = best_table(study)
        print(f"\nbest trials of {study.study_name} ({len(df)} trials; reports in {out}):")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return files


def _plots(study, out: Path) -> dict[str, Path]:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return {}
    swept = [p for p in ("lr", "batch_size") if any(p in t.params for t in complete)]
    files = {"history": out / "history.png", "slice": out / "slice.png"}
    # style.context restores rcParams on exit: Optuna's plots switch the process to ggplot
    with warnings.catch_warnings(), plt.style.context("default"):
        # the matplotlib backend is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Attempting to set identical")  # one value swept
        for key, plot in (("history", lambda: optuna.visualization.matplotlib.plot_optimization_history(study)),
                          ("slice", lambda: optuna.visualization.matplotlib.plot_slice(study, params=swept))):
            if key == "slice" and not swept:
                files.pop("slice")
                continue
            axes = plot()
            flat = list(axes.flat) if hasattr(axes, "flat") else [axes]
            for ax in flat:  # Optuna labels every minor tick of a log axis: they overlap
                if ax.get_xscale() == "log":
                    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                _short_category_labels(ax)
            fig = flat[0].figure
            fig.savefig(files[key], dpi=120, bbox_inches="tight")
            plt.close(fig)
    return files


def _short_category_labels(ax) -> None:
    """A grid's values are categories to Optuna, labelled in full (0.00048828125): show 3
    significant digits, slanted, so neighbouring labels do not run into each other."""
    labels = [t.get_text() for t in ax.get_xticklabels()]
    try:
        values = [float(v) for v in labels]
    except ValueError:
        return
    if values and any(len(v) > 5 for v in labels):
        ax.set_xticks(ax.get_xticks(), [f"{v:.3g}" for v in values], rotation=45, ha="right", fontsize=8)


def rerun(config: ExperimentConfig | str | Path, trial_number: int, *, storage: str | None = None,
          study_name: str | None = None, width: int | None = None, device: str = "cpu",
          reports_dir: str | Path = "reports") -> tuple[float, float]:
    """Train one stored trial again from its stored config, params and seed (a pruned one up to
    the step it was pruned at).

    Returns ``(stored value, new value)``; on CPU with the same thread count they agree exactly.

        >>> stored, new = rerun("sweeps/quickstart.toml", 3)
    """
    import optuna

    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    width = width or cfg.sweep.width
    url = storage or cfg.sweep.storage or default_storage(cfg, reports_dir)
    name = study_name or f"{cfg.name}-w{width}"
    study = optuna.load_study(study_name=name, storage=url)
    found = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number]
    if not found:
        raise ValueError(f"study {name!r} in {url} has no trial {trial_number}; "
                         f"it has {len(study.trials)} trials numbered from 0")
    t = found[0]
    if t.state.name not in ("COMPLETE", "PRUNED") or "config" not in t.user_attrs:
        raise ValueError(f"trial {trial_number} is {t.state.name}; only COMPLETE or PRUNED trials "
                         f"have a value to compare with")
    stored_cfg = ExperimentConfig.from_dict(t.user_attrs["config"], f"trial {trial_number}")
    # a pruned trial is replayed up to the step it was pruned at, its value's step
    stop = max(t.intermediate_values) if t.state.name == "PRUNED" else None
    res = run_trial(stored_cfg, t.params, width=t.user_attrs["width"], device=device,
                    seed=t.user_attrs["seed"], callback=None if stop is None else lambda s, _: s >= stop)
    return float(t.value), trial_value(res)


def bench_overhead(config_path: str | Path, trials: int, *, width: int | None = None) -> dict:
    """Harness overhead of a sweep (no pruning) over the training it runs.

    ``overhead = (sweep_s - reports_s) / train_s - 1`` with ``train_s`` the summed time inside
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
        write_reports(study, Path(tmp) / "again")
        reports_s = time.perf_counter() - start
        start = time.perf_counter()
        for t in study.trials:
            run_trial(cfg, t.params, width=t.user_attrs["width"], device="cpu", seed=t.user_attrs["seed"])
        bare_s = time.perf_counter() - start
    n, train_s = len(study.trials), sum(t.user_attrs["seconds"] for t in study.trials)
    return {"trials": n, "sweep_s": sweep_s, "reports_s": reports_s, "train_s": train_s,
            "bare_s": bare_s, "overhead": (sweep_s - reports_s) / train_s - 1,
            "overhead_vs_bare": (sweep_s - reports_s) / bare_s - 1,
            "trials_per_hour": 3600 * n / sweep_s}


__all__ = ["sweep", "run_trial", "rerun", "trial_value", "make_objective", "write_reports",
           "best_table", "bench_overhead", "default_storage", "DIVERGED_FACTOR"]
