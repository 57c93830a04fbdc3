"""Helpers for the lock tests: a contended lock and workers racing to the study's total."""
from __future__ import annotations

import threading
import time

import optuna

from mutransfer.tuning._locks import NoLock, start_lock
from mutransfer.tuning._storage import open_storage, run_worker


def holds_off(make_lock) -> list[str]:
    """Events in order when a second lock object is asked for while the first is held."""
    first, second, events = make_lock(), make_lock(), []
    first.acquire()

    def contender():
        second.acquire()
        events.append("second acquired")
        second.release()

    thread = threading.Thread(target=contender)
    thread.start()
    time.sleep(0.3)
    events.append("first releasing")
    first.release()
    thread.join(10)
    first.close(), second.close()
    return events


def race(url: str, workers: int, total: int, lock: bool) -> list[optuna.trial.FrozenTrial]:
    """``workers`` threads, each with its own storage connection, race to ``total`` quick trials.
    Each worker dawdles 50 ms between counting the trials and starting one (in ``progress``),
    widening the window a real sweep's workers race through (without the lock: surplus trials)."""
    def worker(i):
        storage = open_storage(url, heartbeat_interval=60, grace_period=120)
        study = optuna.load_study(study_name="race", storage=storage,
                                  sampler=optuna.samplers.RandomSampler(seed=i))
        with (start_lock(storage, "race") if lock else NoLock()) as held:
            run_worker(study, lambda t: time.sleep(0.02) or t.suggest_float("x", 0, 1), total,
                       grace_period=120, poll=0.01, lock=held,
                       progress=lambda counts: time.sleep(0.05))

    optuna.create_study(study_name="race", storage=open_storage(url, heartbeat_interval=60, grace_period=120))
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return optuna.load_study(study_name="race", storage=open_storage(url, heartbeat_interval=60, grace_period=120)).trials
