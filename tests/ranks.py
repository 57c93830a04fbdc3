"""Run a function on several gloo ranks on loopback, as torchrun would, and collect the results.

Tests import it as ``from ranks import run_ranks, start_ranks, cli`` (pytest puts tests/ on
sys.path). The ranks are forked from a forkserver that has imported torch and mutransfer once,
so a rank starts in milliseconds instead of importing torch again, and none inherits pytest's
threads. Each rank gets torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), one torch thread, and an initialised gloo process group.

    >>> results = run_ranks(my_function, world=2, width=32)   # my_function(rank, world, width=32)
    >>> ranks = start_ranks(cli, world=2, init_group=False, argv=["train", "x.toml"]); ranks.kill()
"""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
import tempfile
import time
import traceback
from pathlib import Path

import torch

TIMEOUT = 120  # seconds for all ranks together; a hang fails the test instead of CI


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """torchrun's variables for ``rank`` of ``world`` on loopback, with one CPU thread."""
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1"}


def _context():
    ctx = mp.get_context("forkserver")
    # what every rank imports, once: torch, the package, the report's pandas and matplotlib
    ctx.set_forkserver_preload(["torch", "mutransfer", "mutransfer.cli.train",
                                "mutransfer.validation._target_report", "ranks"])
    return ctx


def _rank_main(fn, rank: int, world: int, port: int, folder: str, init_group: bool, kwargs: dict) -> None:
    import torch.distributed as dist

    os.environ.update(rank_env(rank, world, port))
    torch.set_num_threads(1)
    try:
        if init_group:
            dist.init_process_group("gloo", rank=rank, world_size=world)
        result = {"value": fn(rank, world, **kwargs)}
    except BaseException:  # the parent re-raises it with the rank's traceback
        result = {"error": traceback.format_exc()}
    if dist.is_initialized():
        dist.destroy_process_group()
    torch.save(result, Path(folder) / f"{rank}.pt")


class Ranks:
    """``world`` processes running ``fn`` (see :func:`start_ranks`): :meth:`wait` for their
    results, or :meth:`kill` them (SIGKILL) mid-way."""

    def __init__(self, fn, world: int, init_group: bool, kwargs: dict):
        ctx = _context()
        self._folder = tempfile.TemporaryDirectory()
        self.folder, port = self._folder.name, free_port()
        self.processes = [ctx.Process(target=_rank_main,
                                      args=(fn, r, world, port, self.folder, init_group, kwargs))
                          for r in range(world)]
        for p in self.processes:
            p.start()

    def kill(self) -> list[int]:
        """SIGKILL every rank still running; their exit codes."""
        for p in self.processes:
            if p.is_alive():
                p.kill()
        for p in self.processes:
            p.join()
        self._folder.cleanup()
        return [p.exitcode for p in self.processes]

    def failed(self) -> bool:
        """Whether a rank has already failed."""
        return any(p.exitcode not in (None, 0) for p in self.processes) or _failed(self.folder)

    def wait(self, timeout: float = TIMEOUT) -> list:
        """Each rank's return value; a rank's exception is raised as a RuntimeError holding its
        traceback, and a rank that fails stops the others (they would wait in a collective)."""
        deadline = time.monotonic() + timeout
        while any(p.is_alive() for p in self.processes) and time.monotonic() < deadline:
            if self.failed():
                time.sleep(2)
                break
            time.sleep(0.02)
        hung = [r for r, p in enumerate(self.processes) if p.is_alive()]
        results = []
        for r, p in enumerate(self.processes):
            path = Path(self.folder) / f"{r}.pt"
            results.append(torch.load(path, weights_only=False) if path.is_file()
                           else {"error": f"no result (exit code {p.exitcode}"
                                          f"{', killed: still running' if r in hung else ''})"})
        self.kill()
        errors = [f"rank {r}:\n{res['error']}" for r, res in enumerate(results) if "error" in res]
        if errors:
            raise RuntimeError("\n".join(errors))
        return [res["value"] for res in results]


def start_ranks(fn, world: int = 2, init_group: bool = True, **kwargs) -> Ranks:
    """Start ``fn(rank, world, **kwargs)`` on ``world`` ranks (in a gloo process group unless not
    ``init_group``: then ``fn`` starts one from the environment, or runs without).
    ``fn`` must be importable (a module-level function); its return value must torch.save."""
    return Ranks(fn, world, init_group, kwargs)


def run_ranks(fn, world: int = 2, init_group: bool = True, **kwargs) -> list:
    """:func:`start_ranks` and wait: each rank's return value (tensors, DataFrames, dicts)."""
    return start_ranks(fn, world, init_group, **kwargs).wait()


def cli(rank: int, world: int, argv: list[str], env: dict | None = None) -> int:
    """``mutransfer ARGV`` in a rank (with ``env`` added to its environment); the exit code."""
    from mutransfer.cli import main

    os.environ.update(env or {})
    return main(argv)


def _failed(folder: str) -> bool:
    for path in Path(folder).glob("*.pt"):
        try:
            if "error" in torch.load(path, weights_only=False):
                return True
        except Exception:  # still being written
            pass
    return False
