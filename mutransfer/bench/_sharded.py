"""muon-sharded: Muon's step on FSDP2 row shards (gloo ranks on this CPU), owner-based against
gather-per-matrix against one process, with the bytes each sends per step.

Every rank holds each GPT hidden matrix (``gpt_hidden_shapes``) and its gradient as a
``Shard(0)`` DTensor, as ``fully_shard`` leaves them. In each round every variant steps once,
after a barrier, in rotating order; a round's time is the slowest rank's, and the table shows the
median over rounds. "one process" is rank 0 stepping the full matrices alone (the other ranks
wait at the next barrier). Bytes are what mutransfer.optim's collectives sent
(:data:`mutransfer.optim._shards.TRAFFIC`), summed over the ranks.
"""
from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd
import torch

from mutransfer.bench._optim import _groups_by_alpha, _matrices_with_grads, gpt_hidden_shapes
from mutransfer.bench._ranks import run_on_ranks

VARIANTS = ("one process", "owner", "gather")
NS_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}


def _row_sharded(shapes, mesh) -> list[torch.Tensor]:
    """The same seeded matrices and grads as one process's, as Shard(0) DTensors."""
    from torch.distributed.tensor import Shard, distribute_tensor

    params = []
    for p in _matrices_with_grads(shapes, "cpu"):
        d = distribute_tensor(p.detach(), mesh, [Shard(0)]).requires_grad_()
        d.grad = distribute_tensor(p.grad, mesh, [Shard(0)])
        params.append(d)
    return params


def _rank_step_times(rank: int, world: int, shapes, repeats: int, warmup: int,
                     ns_dtype: torch.dtype | None) -> dict:
    """On one rank: each variant's step times (seconds per round) and its traffic per step."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from mutransfer.optim import Muon
    from mutransfer.optim import TRAFFIC

    mesh = init_device_mesh("cpu", (world,))
    steps = {design: Muon(_groups_by_alpha(_row_sharded(shapes, mesh)), ns_dtype=ns_dtype,
                          distributed=design).step for design in ("owner", "gather")}
    alone = Muon(_groups_by_alpha(_matrices_with_grads(shapes, "cpu")), ns_dtype=ns_dtype)
    steps["one process"] = alone.step if rank == 0 else (lambda: None)
    traffic = {}
    for name in VARIANTS:
        dist.barrier()
        TRAFFIC.reset()
        steps[name]()
        traffic[name] = (TRAFFIC.calls, TRAFFIC.bytes_sent)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(warmup + repeats):
        for name in VARIANTS[r % 3:] + VARIANTS[:r % 3]:  # rotate who goes first
            dist.barrier()
            start = time.perf_counter()
            steps[name]()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return {"times": times, "traffic": traffic}


def sharded_muon_step_times(ranks=(2, 4), width: int = 256, depth: int = 2, repeats: int = 10,
                            warmup: int = 2, ns_dtype: torch.dtype | None = None,
                            threads: int = 1) -> pd.DataFrame:
    """Median Muon step time and bytes sent per step, owner vs gather vs one process, for each
    world size in ``ranks`` (gloo on this CPU, ``threads`` torch threads per rank).

        >>> table = sharded_muon_step_times(ranks=(2,), width=32, depth=1, repeats=2)
        >>> list(table.variant)
        ['one process', 'owner', 'gather']
    """
    shapes = gpt_hidden_shapes(width, depth)
    full_mb = sum(r * c for r, c in shapes) * 4 / 2**20
    rows = []
    for world in ranks:
        results = run_on_ranks(_rank_step_times, world, shapes, repeats, warmup, ns_dtype,
                               threads=threads, timeout_s=600.0)
        medians = {}
        for name in VARIANTS:  # each round's slowest rank, then the median over rounds
            rounds = zip(*(res["times"][name] for res in results))
            medians[name] = statistics.median(max(t) for t in rounds)
        for name in VARIANTS:
            calls = results[0]["traffic"][name][0]
            sent = sum(res["traffic"][name][1] for res in results)
            rows.append({"ranks": world, "variant": name, "ms": 1e3 * medians[name],
                         "x_one_process": medians[name] / medians["one process"],
                         "x_gather": medians[name] / medians["gather"],
                         "MB_sent_per_step": sent / 2**20, "collectives": calls})
    table = pd.DataFrame(rows)
    table.attrs["note"] = (f"{len(shapes)} matrices of gpt w{width} d{depth} "
                           f"({full_mb:.1f} MB in fp32)")
    return table


def bench_sharded(args: argparse.Namespace) -> pd.DataFrame:
    """The muon-sharded benchmark: owner vs gather vs one process at each of ``--ranks``."""
    if args.device != "cpu":
        raise SystemExit("muon-sharded measures gloo ranks on the CPU; pass --device cpu")
    ranks = [int(r) for r in args.ranks.split(",")]
    if any(r < 2 for r in ranks):
        raise SystemExit(f"--ranks must list world sizes >= 2, e.g. 2,4; got {args.ranks!r}")
    table = sharded_muon_step_times(ranks, args.width, args.depth, args.repeats,
                                    ns_dtype=NS_DTYPES[args.ns_dtype], threads=args.threads or 1)
    print(f"# {table.attrs['note']}, Newton-Schulz in {args.ns_dtype}, "
          f"{args.threads or 1} torch thread(s) per rank")
    return table


def sharded_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ranks", default="2,4", help="world sizes, comma-separated (2,4)")
    parser.add_argument("--width", type=int, default=256, help="GPT width (default 256)")
    parser.add_argument("--depth", type=int, default=2, help="GPT blocks (default 2)")
    parser.add_argument("--ns-dtype", choices=tuple(NS_DTYPES), default="auto",
                        help="Newton-Schulz dtype (auto: bf16 where the CPU has it natively)")
