"""Benchmarks: ``python -m mutransfer.bench {optim,gpt,coord,sweep,roles,qkclip,muon-sharded,compile} [--repeats N] [--device cpu|cuda]``.

optim: the per-step time of ``plan.optimizer()`` against the plain torch AdamW on the same GPT
(target ratio <= 1.02), and our Muon against ``torch.optim.Muon`` on the same matrices (target
<= 1.0). gpt: training tokens/s of ``mutransfer.zoo.gpt`` across widths. coord: a full coordinate
check's wall time. sweep: the sweep harness's overhead over training. qkclip: the training-step
overhead of QK-Clip and of spectral weight decay. muon-sharded: Muon's step on FSDP2 row shards
(gloo ranks on the CPU), owner-based vs gather-per-matrix vs one process, with bytes sent per
step. compile: a parametrized GPT's training step under ``torch.compile`` against eager. Each
prints a table of
medians; the variants are timed in interleaved rounds so that load from other processes hits all
of them alike. One module per benchmark; add one by adding an entry to ``BENCHMARKS``.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from mutransfer.bench._compile import bench_compile, compile_arguments, compile_step_times
from mutransfer.bench._coord import coord_arguments, bench_coord
from mutransfer.bench._gpt import gpt_arguments, bench_gpt, gpt_tokens_per_second
from mutransfer.bench._optim import (optim_arguments, bench_optim, gpt_hidden_shapes, muon_step_times,
                                    plan_adamw_step_times)
from mutransfer.bench._qkclip import qkclip_arguments, bench_qkclip, muonclip_step_times
from mutransfer.bench._roles import roles_arguments, bench_roles
from mutransfer.bench._sharded import bench_sharded, sharded_arguments, sharded_muon_step_times
from mutransfer.bench._sweep import sweep_arguments, bench_sweep
from mutransfer.bench._timing import interleaved_medians

__all__ = ["BENCHMARKS", "compile_step_times", "gpt_hidden_shapes", "gpt_tokens_per_second",
           "interleaved_medians", "main", "muon_step_times", "muonclip_step_times",
           "plan_adamw_step_times", "sharded_muon_step_times"]


@dataclass(frozen=True)
class Benchmark:
    run: Callable[[argparse.Namespace], pd.DataFrame]
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    default_repeats: int


BENCHMARKS: dict[str, Benchmark] = {
    "optim": Benchmark(bench_optim, "optimizer step time: plan.optimizer() vs torch AdamW, "
                       "our Muon vs torch.optim.Muon", optim_arguments, 30),
    "gpt": Benchmark(bench_gpt, "training tokens/s of mutransfer.zoo.gpt across widths",
                     gpt_arguments, 5),
    "coord": Benchmark(bench_coord, "wall time of a full GPT coordinate check (SP and muP)",
                       coord_arguments, 3),
    "sweep": Benchmark(bench_sweep, "sweep harness overhead vs training time, trials/hour",
                       sweep_arguments, 3),
    "roles": Benchmark(bench_roles, "role inference (usage traced) on a Mixtral from config",
                       roles_arguments, 5),
    "qkclip": Benchmark(bench_qkclip, "training-step overhead of QK-Clip and spectral weight "
                        "decay (MuonClip)", qkclip_arguments, 10),
    "muon-sharded": Benchmark(bench_sharded, "Muon step on FSDP2 row shards: owner-based vs "
                              "gather-per-matrix vs one process, time and bytes sent",
                              sharded_arguments, 10),
    "compile": Benchmark(bench_compile, "training-step time of a parametrized GPT, "
                         "torch.compile against eager", compile_arguments, 20),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mutransfer.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, bench in BENCHMARKS.items():
        p = sub.add_parser(name, help=bench.help, description=bench.help)
        p.add_argument("--repeats", type=int, default=bench.default_repeats,
                       help="timed rounds; the table shows medians "
                            f"(default {bench.default_repeats})")
        p.add_argument("--device", choices=("cpu", "cuda"),
                       default="cuda" if torch.cuda.is_available() else "cpu",
                       help="where to run (default: cuda when available)")
        p.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's own choice)")
        bench.add_arguments(p)
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1; got {args.repeats}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark from the command line and print its table of medians."""
    args = build_parser().parse_args(argv)
    _check_args(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    table = BENCHMARKS[args.benchmark].run(args)
    print(f"# {args.benchmark}: medians of {args.repeats} rounds on {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0
