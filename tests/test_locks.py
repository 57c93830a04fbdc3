"""The start lock: no two workers start the same last trial (SQLite file lock here; the
PostgreSQL advisory lock is tested in test_postgres.py against a real server)."""
from __future__ import annotations

import optuna
from racing import holds_off, race

from mutransfer.tuning._locks import FileLock, NoLock, advisory_key, start_lock


def test_file_lock_excludes_a_second_holder(tmp_path):
    events = holds_off(lambda: FileLock(tmp_path / "study.db.lock"))
    assert events == ["first releasing", "second acquired"]


def test_release_is_idempotent(tmp_path):
    lock = FileLock(tmp_path / "x.lock")
    lock.acquire()
    lock.release()
    lock.release()
    lock.acquire()  # would block forever if the double release had left it in a bad state
    lock.close()


def test_start_lock_picks_the_storage_lock(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with start_lock(url, "s") as lock:
        assert isinstance(lock, FileLock) and (tmp_path / "study.db.lock").exists()
    assert type(start_lock("sqlite:///:memory:", "s")) is NoLock
    assert type(start_lock(optuna.storages.InMemoryStorage(), "s")) is NoLock


def test_advisory_key_is_stable_and_signed_64_bit():
    assert advisory_key("quickstart-w64") == advisory_key("quickstart-w64") != advisory_key("quickstart-w128")
    assert -2**63 <= advisory_key("quickstart-w64") < 2**63


def test_racing_workers_start_exactly_the_total(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = race(f"sqlite:///{tmp_path / 'study.db'}", workers=4, total=6, lock=True)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6


def test_without_a_lock_the_surplus_trials_fail_untrained(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = race(f"sqlite:///{tmp_path / 'study.db'}", workers=4, total=6, lock=False)
    assert [t.state.name for t in trials].count("COMPLETE") == 6
    for t in trials:
        if t.state.name != "COMPLETE":
            assert t.state.name == "FAIL" and not t.params and "surplus" in t.user_attrs["reason"]


def test_workers_opening_a_new_sqlite_file_at_once_all_get_wal(tmp_path):
    import sqlite3
    import threading

    from mutransfer.tuning._storage import _sqlite_wal

    path = str(tmp_path / "study.db")
    with sqlite3.connect(path) as con:  # a file in the default rollback-journal mode, as Optuna makes it
        con.execute("CREATE TABLE t (x)")
    con.close()
    barrier, errors = threading.Barrier(8), []

    def switch():
        barrier.wait()
        try:
            _sqlite_wal(path)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=switch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
