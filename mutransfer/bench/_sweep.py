"""sweep: the sweep harness's overhead over the training it runs, and trials per hour."""
from __future__ import annotations

import argparse
import statistics

import pandas as pd


def bench_sweep(args: argparse.Namespace) -> pd.DataFrame:
    """Sweep harness overhead over the training it runs, and trials per hour (medians)."""
    from mutransfer.tuning import bench_overhead

    from mutransfer.runs import load_config

    trials = args.trials or load_config(args.config).sweep.trials
    runs = [bench_overhead(args.config, trials) for _ in range(args.repeats)]
    keys = ("overhead", "overhead_vs_bare", "trials_per_hour", "sweep_s", "train_s")
    row = {k: statistics.median(r[k] for r in runs) for k in keys}
    return pd.DataFrame([{"config": args.config, "trials": trials, **row, "target": "overhead <= 0.05"}])


def sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="sweeps/quickstart.toml", help="experiment TOML")
    parser.add_argument("--trials", type=int, default=None,
                        help="trials per timed sweep (default: the config's [sweep] trials)")
