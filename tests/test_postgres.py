"""The multi-machine path: a sweep on a real PostgreSQL server on loopback (Debian's postgresql).

The fixture runs initdb into a temporary folder (as the ``postgres`` OS user when the tests run
as root: the server refuses root), starts the server on a free 127.0.0.1 port with its socket in
that folder, creates a database, and stops the server at the end.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from mutransfer.runs import load_config
from mutransfer.tuning import open_storage
from mutransfer.validation import write_sweep_report
from mutransfer.tuning._sweep import sweep

pytestmark = pytest.mark.postgres
SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
# the shipped MLP sweep shrunk to seconds
TINY = {"sweep.width": 16, "model.base_width": 8, "train.steps": 12, "train.eval_every": 4,
        "train.eval_batches": 1, "model.kwargs": {"depth": 2}}


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL will not run as root: run its tools as the ``postgres`` OS user then."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="session")
def postgres_url():
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found; apt-get install postgresql")
    tmp = Path(tempfile.mkdtemp(prefix="mutransfer-pg-"))  # not under pytest's root-only tmp
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    data, port = tmp / "data", _free_port()
    run = lambda cmd: subprocess.run(_as_owner(cmd), check=True, capture_output=True, text=True)  # noqa: E731
    run([str(bindir / "initdb"), "-D", str(data), "-U", "mutransfer", "--auth=trust", "-E", "UTF8"])
    run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "log"), "-w", "-t", "30", "start",
         "-o", f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"])
    try:
        run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mutransfer", "optuna"])
        yield f"postgresql://mutransfer@127.0.0.1:{port}/optuna"
    finally:
        run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(tmp, ignore_errors=True)


def test_sweep_on_postgres_with_two_workers(postgres_url, tmp_path):
    cfg = load_config(SWEEPS / "mlp-synthetic.toml", TINY)
    study = sweep(cfg, trials=4, storage=postgres_url, workers=2, device="cpu",
                  show_progress=False, reports_dir=tmp_path)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert len({t.params["lr"] for t in trials}) == len(trials)
    assert {t.user_attrs["seed"] for t in trials} == {cfg.sweep.seed + t.number for t in trials}
    write_sweep_report(study, tmp_path / cfg.name / study.study_name)
    assert (tmp_path / cfg.name / study.study_name / "trials.csv").is_file()
    assert all(t.user_attrs["config"]["sweep"]["storage"] is None for t in trials), "no URL stored"


def test_no_worker_shows_the_storage_password_on_its_command_line(postgres_url, tmp_path):
    """Any local user can read /proc/PID/cmdline (ps): the workers get the URL from the
    environment, which only their owner can read. The server trusts any password here."""
    import threading

    secret = "s3cret-PW-4417"
    url = postgres_url.replace("mutransfer@", f"mutransfer:{secret}@")
    cfg = load_config(SWEEPS / "mlp-synthetic.toml", {**TINY, "train.steps": 40})
    done, seen, leaked = threading.Event(), set(), []

    def run():
        try:
            sweep(cfg, trials=4, storage=url, workers=2, device="cpu", show_progress=False,
                  reports_dir=tmp_path, study_name="secret")
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    while not done.is_set():
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:  # gone, or not a process folder
                continue
            if "_worker_main" in cmdline:
                seen.add(proc.name)
                if secret in cmdline:
                    leaked.append(cmdline)
        time.sleep(0.02)
    thread.join()
    assert len(seen) == 2, f"expected to watch both workers, saw {seen}"
    assert leaked == []
    study = optuna.load_study(study_name="secret", storage=open_storage(url, heartbeat_interval=30,
                                                                         grace_period=120))
    assert len(study.trials) == 4
    assert all(t.user_attrs["config"]["sweep"]["storage"] is None for t in study.trials)


def test_resume_on_postgres_continues_the_study(postgres_url, tmp_path):
    cfg = load_config(SWEEPS / "mlp-synthetic.toml", TINY)
    sweep(cfg, trials=2, storage=postgres_url, study_name="resume", device="cpu",
          show_progress=False, reports_dir=tmp_path)
    study = sweep(cfg, trials=4, storage=postgres_url, study_name="resume", device="cpu",
                  show_progress=False, reports_dir=tmp_path)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert len({t.params["lr"] for t in study.trials}) == 4


def test_advisory_lock_excludes_a_second_holder_across_connections(postgres_url):
    from mutransfer.tuning._locks import AdvisoryLock, advisory_key
    from mutransfer.tuning._storage import open_storage
    from racing import holds_off

    storage = open_storage(postgres_url, heartbeat_interval=60, grace_period=120)
    lock = lambda: AdvisoryLock(storage.engine, advisory_key("race"))  # noqa: E731 - two connections
    assert holds_off(lock) == ["first releasing", "second acquired"]


def test_racing_workers_on_postgres_start_exactly_the_total(postgres_url):
    from racing import race

    trials = race(postgres_url, workers=4, total=6, lock=True)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
