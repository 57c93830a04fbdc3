"""Run a function on several gloo ranks on loopback, as torchrun would, and collect the results.

Tests import it as ``from ranks import run_ranks, free_port, rank_env`` (pytest puts tests/ on
sys.path). The ranks are forked from a forkserver that has imported torch and mutransfer once,
so a rank starts in milliseconds instead of importing torch again, and none inherits pytest's
threads. Each rank gets torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), one torch thread, and an initialised gloo process group.

    >>> results = run_ranks(my_function, world=2, width=32)   # my_function(rank, world, width=32)
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
    ctx.set_forkserver_preload(["torch", "mutransfer", "ranks"])
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


def run_ranks(fn, world: int = 2, init_group: bool = True, **kwargs) -> list:
    """``fn(rank, world, **kwargs)`` on ``world`` ranks (in a gloo process group unless not
    ``init_group``: then ``fn`` starts it from the environment); returns each rank's return value
    (saved with torch.save: tensors, DataFrames, dicts). A rank's exception is raised here as a
    RuntimeError holding its traceback. ``fn`` must be importable (a module-level function)."""
    ctx = _context()
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        procs = [ctx.Process(target=_rank_main, args=(fn, r, world, port, folder, init_group, kwargs))
                 for r in range(world)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + TIMEOUT
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            # a rank that failed leaves the others waiting in a collective: stop them soon
            if any(p.exitcode is not None and p.exitcode != 0 for p in procs) or _failed(folder):
                time.sleep(2)
                break
            time.sleep(0.02)
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
        results = []
        for r in range(world):
            path = Path(folder) / f"{r}.pt"
            results.append(torch.load(path, weights_only=False) if path.is_file()
                           else {"error": f"no result (exit code {procs[r].exitcode}"
                                          f"{', killed: still running' if r in hung else ''})"})
    errors = [f"rank {r}:\n{res['error']}" for r, res in enumerate(results) if "error" in res]
    if errors:
        raise RuntimeError("\n".join(errors))
    return [res["value"] for res in results]


def _failed(folder: str) -> bool:
    for path in Path(folder).glob("*.pt"):
        try:
            if "error" in torch.load(path, weights_only=False):
                return True
        except Exception:  # still being written
            pass
    return False
