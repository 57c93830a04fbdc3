"""coord: the wall time of a full coordinate check of the zoo GPT (SP and muP)."""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import pandas as pd
import torch


def bench_coord(args: argparse.Namespace) -> pd.DataFrame:
    """Wall time of a full coordinate check of the zoo GPT (SP and muP), median of repeats."""
    from mutransfer.validation import coord_check
    from mutransfer.training.data import pycorpus
    from mutransfer.models.zoo import gpt

    data = pycorpus()
    gen = torch.Generator().manual_seed(0)
    batches = [data.batch("train", 8, 32, gen, "cpu") for _ in range(args.steps)]
    make = functools.partial(gpt, depth=args.depth, seq_len=32)

    def full_check():
        for scheme in ("sp", "mup"):
            coord_check(make, args.widths, batches, scheme=scheme, lr=3e-3, steps=args.steps,
                        seeds=tuple(range(args.seeds)), data=data)

    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        full_check()
        seconds.append(time.perf_counter() - start)
    return pd.DataFrame([{"widths": ",".join(map(str, args.widths)), "seeds": args.seeds,
                          "steps": args.steps, "schemes": "sp,mup", "median_s": statistics.median(seconds),
                          "target": "well under 60 s"}])


def coord_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--depth", type=int, default=2)
