"""Where trials live and how workers share them: Optuna's RDB storage, heartbeats, retries.

The default is an SQLite file ``reports/<name>/study.db`` opened through Optuna's
``RDBStorage``, the same code path as PostgreSQL: the file is switched to WAL (readers never
block the writer; commits skip the fsync), and every connection waits up to ``SQLITE_TIMEOUT`` s
for a lock instead of failing with "database is locked". Journal storage was not chosen because Optuna's
``JournalStorage`` has no heartbeats, so a SIGKILLed worker would leave its trial RUNNING forever.
With heartbeats, a RUNNING trial whose worker stopped beating for ``grace_period`` seconds is
marked FAIL by the next worker and re-enqueued once (``RetryHeartbeatStaleTrialCallback``).

    >>> url = default_storage(cfg)             # sqlite:////abs/reports/quickstart/study.db
    >>> storage = open_storage(url, heartbeat_interval=30, grace_period=120)
"""
from __future__ import annotations

import os
import sqlite3
import time
import warnings
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from mutransfer.tuning._locks import NoLock

SQLITE_TIMEOUT = 60.0  # seconds a writer waits on a locked SQLite file before giving up


def default_storage(cfg, reports_dir: str | Path = "reports") -> str:
    """The SQLite URL of ``<reports_dir>/<cfg.name>/study.db`` (absolute), creating the folder.

        >>> default_storage(cfg)
        'sqlite:////home/me/project/reports/quickstart/study.db'
    """
    folder = Path(reports_dir).resolve() / cfg.name
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'study.db'}"


STORAGE_ENV = "MUTRANSFER_STORAGE_URL"  # how a sweep hands its workers the URL: never on a command line


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs.

        >>> redact("postgresql://me:s3cret@db-host/optuna")
        'postgresql://me:***@db-host/optuna'
    """
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: say nothing of its parts
        return url if "@" not in str(url) else "<storage URL>"


def open_storage(url: str, *, heartbeat_interval: int, grace_period: int):
    """An ``optuna.storages.RDBStorage`` for any SQLAlchemy URL, with heartbeats and one retry.

    A trial whose heartbeat is older than ``grace_period`` seconds is failed by the next worker
    that looks, and a copy with the same params is enqueued (``max_retry=1``).

        >>> storage = open_storage("postgresql://me@db-host/optuna", heartbeat_interval=30,
        ...                        grace_period=120)
    """
    import optuna

    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"storage must be an SQLAlchemy URL such as sqlite:///study.db or "
                         f"postgresql://user@host/db; got {redact(url)!r}")
    url = _postgres_driver(url)
    sqlite = url.startswith("sqlite:///")
    if sqlite:
        _sqlite_wal(url[len("sqlite:///"):])
    with warnings.catch_warnings():  # the retry callbacks are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT}} if sqlite else {},
            heartbeat_interval=heartbeat_interval, grace_period=grace_period, **_retry_once())
    if sqlite:
        _sqlite_synchronous_normal(storage.engine)
    return storage


def _retry_once() -> dict:
    """Optuna 4.9 renamed the stale-trial callback; older releases only have the old name."""
    import optuna

    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback":
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}


def _postgres_driver(url: str) -> str:
    """A bare ``postgresql://`` means psycopg 3 to SQLAlchemy 2.1 but psycopg2 to 2.0; use the
    driver that is installed (the ``mutransfer[postgres]`` extra ships psycopg2)."""
    import importlib.util

    if not url.startswith(("postgresql://", "postgres://")):
        return url
    rest = url.split("://", 1)[1]
    for module, dialect in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{dialect}://{rest}"
    raise ImportError("a postgresql:// storage needs a driver: pip install 'mutransfer[postgres]'")


def _sqlite_synchronous_normal(engine) -> None:
    """In WAL mode ``synchronous=NORMAL`` skips the fsync per commit (each trial commits a dozen
    times: 3x less harness time); a killed process still loses nothing, a power cut at most the
    last commits, and the file is never corrupted (https://www.sqlite.org/wal.html)."""
    import sqlalchemy

    def on_connect(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()  # pooled connections opened before the listener reconnect with it


def _sqlite_wal(path: str) -> None:
    """WAL mode is a property of the file, so setting it once here holds for every process.
    Switching needs the file to itself: workers opening a new file at once retry until
    ``SQLITE_TIMEOUT`` (the busy handler does not cover this pragma)."""
    if path in ("", ":memory:"):
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + SQLITE_TIMEOUT
    while True:
        con = sqlite3.connect(path, timeout=SQLITE_TIMEOUT)
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            con.close()


def counts(study) -> Counter:
    """Number of trials per state name: COMPLETE, PRUNED, RUNNING, WAITING, FAIL, and REJECTED
    (those FAIL trials whose point the trial refused: they used up their place in the total)."""
    trials = study.get_trials(deepcopy=False)
    c = Counter(t.state.name for t in trials)
    c["REJECTED"] = sum(map(is_rejected, trials))
    return c


def is_rejected(trial) -> bool:
    """A FAIL trial whose point gave no loss or was refused (``user_attrs["rejected"]``)."""
    return trial.state.name == "FAIL" and bool(trial.user_attrs.get("rejected"))


def finished(c: Counter) -> int:
    """The trials that count toward a sweep's total: COMPLETE, PRUNED and REJECTED."""
    return c["COMPLETE"] + c["PRUNED"] + c["REJECTED"]


class SweepBroken(RuntimeError):
    """The first trials of a sweep all failed: the model or the space is broken, not one point."""


def check_not_broken(study, first: int) -> None:
    """Raise :class:`SweepBroken` when the ``first`` finished trials (by number) all failed as
    rejected, naming their reasons: past that, one bad point never stops a sweep.

        >>> check_not_broken(study, first=5)
    """
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or is_rejected(t)]
    head = sorted(done, key=lambda t: t.number)[:first]
    if first and len(head) == first and all(map(is_rejected, head)):
        reasons = sorted({t.user_attrs.get("error", "unknown") for t in head})
        raise SweepBroken(f"the first {first} trials of {study.study_name!r} all failed, so the model "
                          f"or the space is broken rather than one point: " + "; ".join(reasons)
                          + ". Fix it (the model at lr=0, the [sweep.space] ranges), then rerun; "
                          "[sweep] stop_if_first_fail sets how many failures at the start stop a sweep")


def fail_stale(study, grace_period: float) -> None:
    """Fail RUNNING trials whose worker died: heartbeat older than ``grace_period`` (Optuna's
    check, which also enqueues the retry), or never beat at all (see :func:`_fail_unstarted`)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    _fail_unstarted(study, grace_period)


def _fail_unstarted(study, grace_period: float) -> None:
    """A worker killed between creating a trial and its first heartbeat leaves a RUNNING trial
    that Optuna never fails (there is no heartbeat to age). The objective stores ``config`` in
    its first milliseconds, so a trial without it after twice ``grace_period`` has no live worker
    (one that beat was failed, and retried, by Optuna after one grace period); it never trained,
    and a fresh trial takes its place."""
    from optuna.trial import TrialState

    cutoff = datetime.now() - timedelta(seconds=2 * grace_period)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "config" not in t.user_attrs and t.datetime_start is not None and t.datetime_start < cutoff:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)


class SurplusTrial(Exception):
    """A trial started by a worker that raced past the study's total; it is failed untrained."""


def _capped(objective: Callable, total: int) -> Callable:
    """``objective``, refusing a trial that has ``total`` live trials numbered before it."""
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)

    def run(trial):
        earlier = [t for t in trial.study.get_trials(deepcopy=False)
                   if t.number < trial.number and (t.state in live or is_rejected(t))]
        if len(earlier) >= total:
            trial.set_user_attr("reason", f"surplus: {len(earlier)} trials were already under way "
                                          f"for a total of {total}; nothing was trained")
            raise SurplusTrial(f"trial {trial.number} is past the total of {total}")
        return objective(trial)

    return run


def run_worker(study, objective: Callable, total: int, *, grace_period: float,
               deadline: float | None = None, poll: float = 1.0, progress: Callable[[Counter], None] | None = None,
               catch: tuple = (), lock: NoLock | None = None, stop_if_first_fail: int = 0) -> None:
    """Run trials one at a time until ``total`` are COMPLETE, PRUNED or REJECTED (or ``deadline``
    passes). A trial that raises one of ``catch`` is recorded FAIL and the worker goes on, unless
    the first ``stop_if_first_fail`` trials all failed so (:func:`check_not_broken`).

    A worker starts a new trial only while ``done + running + waiting < total``; retries
    (WAITING) are always taken. When the rest is in flight on other workers it waits, so a
    trial of a dead worker is still failed and retried before the sweep ends. ``lock``
    (:func:`mutransfer.tuning._locks.start_lock`) is held from that count until the new trial exists,
    so two workers never both start the last trial. Without a real lock the later of two such
    trials finds ``total`` live trials before its own and ends as FAIL ("surplus") untrained.

        >>> run_worker(study, objective, total=20, grace_period=120, lock=start_lock(url, name))
    """
    lock = lock or NoLock()
    objective = _released_first(_capped(objective, total), lock)
    catch = tuple(catch) + (SurplusTrial,)
    while True:
        lock.acquire()
        try:
            c = _fresh_counts(study, grace_period)
            if progress is not None:
                progress(c)
            done = finished(c)
            if done >= total or (deadline is not None and time.time() >= deadline):
                return
            start = c["WAITING"] > 0 or done + c["RUNNING"] < total
            if start:  # the objective releases the lock as soon as Optuna has created the trial
                study.optimize(objective, n_trials=1, catch=catch)
        finally:
            lock.release()
        # only once enough trials could have been rejected to fill the head (this one included)
        if stop_if_first_fail and c["REJECTED"] + 1 >= stop_if_first_fail:
            check_not_broken(study, stop_if_first_fail)
        if not start:
            time.sleep(poll)


def _fresh_counts(study, grace_period: float) -> Counter:
    """Trial counts after failing the RUNNING trials of dead workers."""
    c = counts(study)
    if c["RUNNING"]:  # some may belong to dead workers
        fail_stale(study, grace_period)
        c = counts(study)
    return c


def _released_first(objective: Callable, lock: NoLock) -> Callable:
    """``objective`` that first releases ``lock``: by then Optuna has stored the new trial."""
    def run(trial):
        lock.release()
        return objective(trial)

    return run


def worker_devices(device: str, workers: int | None) -> list[str]:
    """One device per worker: with CUDA and ``device`` auto/cuda, one worker per visible GPU
    (``cuda:i``) by default; otherwise ``workers`` (default 1) copies of ``device``.

        >>> worker_devices("cpu", 2)
        ['cpu', 'cpu']
    """
    import torch

    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int, e.g. --workers 2; got {workers!r}")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {device!r}")
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    if device == "cuda" and gpus == 0:
        raise ValueError("device='cuda' but torch sees no CUDA GPU; use --device cpu")
    if gpus:
        return [f"cuda:{i % gpus}" for i in range(workers or gpus)]
    resolved = "cpu" if device == "auto" else device
    return [resolved] * (workers or 1)


def threads_per_worker(workers: int) -> int:
    """CPU threads each of ``workers`` processes gets so together they do not oversubscribe."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers)
