"""The start lock: workers sharing a study take turns to decide whether to start a trial.

A worker counts the study's trials and, when fewer than the total are done or under way, asks
Optuna for a new one. Without a lock two workers can count at the same moment and both start a
trial past the total. :func:`start_lock` serialises that count-then-create step (a few
milliseconds; the trial itself runs outside the lock) with the lock the storage offers:

- SQLite file: ``flock`` on ``<db>.lock`` beside it (SQLite is single-machine anyway);
- PostgreSQL: a session advisory lock keyed by the study name (``pg_advisory_lock``), so it
  holds across machines; the server drops it if the worker's connection dies;
- anything else (in-memory, MySQL, ...): :class:`NoLock`; the sweep then falls back to failing
  a surplus trial before it trains (``storage._capped``), so no point runs twice either way.

    >>> with start_lock("sqlite:////tmp/study.db", "quickstart-w64") as lock:
    ...     pass  # count trials, create one, lock.release() once it exists
"""
from __future__ import annotations

import hashlib
from pathlib import Path


class NoLock:
    """A lock for storages without one: every method does nothing. The real locks below
    implement ``_lock``/``_unlock``/``_close``; this class keeps their held state, so a second
    ``release`` is harmless and ``close`` releases first."""

    _held = False

    def acquire(self) -> None:
        """Block until no other worker holds the lock."""
        self._lock()
        self._held = True

    def release(self) -> None:
        """Release the lock if held (calling it twice is harmless)."""
        if self._held:
            self._unlock()
            self._held = False

    def close(self) -> None:
        """Release the lock and free what holds it (file, connection)."""
        self.release()
        self._close()

    def _lock(self) -> None:
        pass

    def _unlock(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FileLock(NoLock):
    """An exclusive ``flock`` on ``path``; released by the OS if the process dies.

        >>> lock = FileLock("reports/quickstart/study.db.lock")
        >>> lock.acquire(); lock.release()
    """

    def __init__(self, path: str | Path):
        import fcntl  # POSIX only; start_lock checks before building one

        self._fcntl = fcntl
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a+")  # noqa: SIM115 - held for the worker's lifetime

    def _lock(self) -> None:
        self._fcntl.flock(self._file, self._fcntl.LOCK_EX)

    def _unlock(self) -> None:
        self._fcntl.flock(self._file, self._fcntl.LOCK_UN)

    def _close(self) -> None:
        self._file.close()


class AdvisoryLock(NoLock):
    """A PostgreSQL session advisory lock on a 64-bit key, over its own connection, so it holds
    across machines; the server drops it if the worker's connection dies.

        >>> lock = AdvisoryLock(storage.engine, advisory_key("quickstart-w64"))
        >>> lock.acquire(); lock.release()
    """

    def __init__(self, engine, key: int):
        self._conn = engine.connect()
        self._key = key

    def _call(self, function: str) -> None:
        import sqlalchemy

        self._conn.execute(sqlalchemy.text(f"SELECT {function}(:key)"), {"key": self._key})
        self._conn.commit()  # session locks outlive the transaction; do not sit idle in one

    def _lock(self) -> None:
        self._call("pg_advisory_lock")

    def _unlock(self) -> None:
        self._call("pg_advisory_unlock")

    def _close(self) -> None:
        self._conn.close()


def advisory_key(study_name: str) -> int:
    """A signed 64-bit key, the same in every process: first 8 bytes of sha256("mutransfer:" + name).

        >>> advisory_key("quickstart-w64") == advisory_key("quickstart-w64")
        True
    """
    digest = hashlib.sha256(f"mutransfer:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def start_lock(storage, study_name: str) -> NoLock:
    """The start lock for ``storage`` (an Optuna ``RDBStorage`` or a URL) and ``study_name``.

        >>> lock = start_lock(open_storage(url, heartbeat_interval=30, grace_period=120), "qs-w64")
        >>> type(lock).__name__
        'FileLock'
    """
    url = storage if isinstance(storage, str) else str(getattr(storage, "url", ""))
    if url.startswith("sqlite:///") and url[len("sqlite:///"):] not in ("", ":memory:"):
        try:
            return FileLock(f"{url[len('sqlite:///'):]}.lock")
        except ImportError:  # no fcntl (Windows): the surplus check still guards the total
            return NoLock()
    if url.startswith(("postgresql", "postgres")) and not isinstance(storage, str):
        return AdvisoryLock(storage.engine, advisory_key(study_name))
    return NoLock()
