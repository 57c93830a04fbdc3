"""Run a function on N local gloo ranks (CPU processes) and collect what each returns."""
from __future__ import annotations

import io
import multiprocessing as mp
import queue as queue_module
import socket
import traceback
from collections.abc import Callable
from datetime import timedelta

import torch

# Forked ranks start in ~0.1 s; spawned ones import torch again (~5 s each on a 2-core box).
START_METHOD = "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def free_port() -> int:
    """A TCP port on the loopback that is free now (for the ranks' rendezvous).

        >>> 0 < free_port() < 65536
        True
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, results, threads: int, timeout_s: float,
               fn: Callable, args: tuple) -> None:
    import torch.distributed as dist

    torch.set_num_threads(threads)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=timedelta(seconds=timeout_s))
        out = fn(rank, world, *args)
        buf = io.BytesIO()
        torch.save(out, buf)  # bytes, not tensors: torch's queue pickling shares memory by fd
        results.put((rank, True, buf.getvalue()))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_on_ranks(fn: Callable, world: int, *args, threads: int = 1,
                 timeout_s: float = 120.0) -> list:
    """``fn(rank, world, *args)`` on ``world`` gloo ranks on this machine, ``threads`` torch
    threads each; returns the ranks' return values (plain tensors and Python objects) in rank
    order. A rank's exception is raised here with its traceback; a hang past ``timeout_s`` too.

        >>> run_on_ranks(lambda rank, world: rank * 10, 2)
        [0, 10]
    """
    ctx = mp.get_context(START_METHOD)
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, daemon=True,
                         args=(r, world, port, results, threads, timeout_s, fn, args))
             for r in range(world)]
    for p in procs:
        p.start()
    got: dict[int, object] = {}
    try:
        while len(got) < world:
            try:
                rank, ok, payload = results.get(timeout=timeout_s)
            except queue_module.Empty:
                raise TimeoutError(f"ranks {sorted(set(range(world)) - set(got))} gave no result "
                                   f"within {timeout_s:g} s (a collective that not every rank "
                                   "issued hangs)") from None
            if not ok:
                raise RuntimeError(f"rank {rank} of {world} failed:\n{payload}")
            got[rank] = torch.load(io.BytesIO(payload), weights_only=False)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join()
    return [got[r] for r in range(world)]
