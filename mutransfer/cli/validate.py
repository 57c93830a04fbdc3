"""``mutransfer validate CONFIG``: lr-loss curves across widths; drift, regret and a verdict."""
from __future__ import annotations

import argparse
import re

import numpy as np

from mutransfer.cli._common import add_command, add_device, add_reports
from mutransfer.core import OPTIMIZER_RULES


def register(subparsers) -> None:
    p = add_command(
        subparsers, "validate",
        help="train an lr grid at several widths and check that eta* does not drift",
        description="For every scheme x optimizer x width x log2 lr x seed, train CONFIG's model "
                    "once (resumable: finished points are kept in the sweeper's storage), then "
                    "write reports/<name>/validate.{csv,png,md}: the loss-vs-lr curves, eta* per "
                    "width, its drift per doubling of width and the regret of transfer.",
        config=True)
    p.add_argument("--widths", type=int_list, default=[64, 128, 256, 512], help="comma list")
    p.add_argument("--schemes", type=str_list, default=["sp", "mup", "spectral"], help="comma list")
    p.add_argument("--optimizers", type=optimizer_list, default=["adamw", "muon"],
                   help=f"comma list of {', '.join(OPTIMIZER_RULES)} (default adamw,muon)")
    p.add_argument("--lrs", type=log2_grid, default=log2_grid("-14:-4:0.5"),
                   help="log2 lrs: START:STOP:STEP (STOP included) or a comma list, e.g. -12,-10,-8")
    p.add_argument("--seeds", type=int, default=2, help="seeds per point (0..N-1)")
    p.add_argument("--depths", type=int_list,
                   help="comma list of depths (blocks): landscapes across depth at each width, "
                        "into reports/<name>/depth.{csv,png,md} (needs [model] depth and base_depth)")
    p.add_argument("--depth-alphas", type=float_list,
                   help="with --depths: comma list of branch multipliers m_L^-alpha, e.g. 0,0.5,1 "
                        "(default: [parametrization] depth_alpha)")
    p.add_argument("--steps", type=int, help="training steps per run (default: [train] steps)")
    p.add_argument("--storage", help="SQLAlchemy URL (default: sqlite file reports/<name>/study.db)")
    p.add_argument("--study", help="study name (default: <name>-validate)")
    add_device(p)
    add_reports(p)
    p.add_argument("--check", action="store_true",
                   help="exit 1 when a muP-family scheme (mup, spectral) drifts by more than --max-drift")
    p.add_argument("--max-drift", type=float, default=0.25, help="octaves of eta* per doubling")
    # argparse reads "-14:-4:0.5" as an option (only plain negative numbers are values); let
    # negative ranges and lists through so `--lrs -14:-4:0.5` works, as `--lrs=-14:-4:0.5` does.
    p._negative_number_matcher = re.compile(r"^-\d*\.?\d+([:,]-?\d*\.?\d+)*$")
    p.set_defaults(func=run)


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints like 64,128,256, got {text!r}") from None


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0,0.5,1, got {text!r}") from None


def str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def optimizer_list(text: str) -> list[str]:
    """``"adamw,muon"`` -> ["adamw", "muon"], each a name in :data:`mutransfer.core.OPTIMIZER_RULES`.

        >>> optimizer_list("adamw, muon")
        ['adamw', 'muon']
    """
    names = str_list(text)
    unknown = [n for n in names if n not in OPTIMIZER_RULES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unknown {', '.join(map(repr, unknown)) or 'empty list'}; use a comma list "
            f"of {', '.join(OPTIMIZER_RULES)}, e.g. adamw,muon (or add an OptimizerRule to OPTIMIZER_RULES)")
    return names


def log2_grid(text: str) -> list[float]:
    """``"-14:-4:0.5"`` -> [-14, -13.5, ..., -4] (stop included); ``"-12,-10"`` -> [-12, -10]."""
    try:
        if ":" not in text:
            return [float(v) for v in text.split(",") if v.strip()]
        start, stop, step = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lrs takes log2 values START:STOP:STEP (e.g. -14:-4:0.5) "
                                         f"or a comma list (e.g. -12,-10,-8), got {text!r}") from None
    if step <= 0 or stop < start:
        raise argparse.ArgumentTypeError(f"--lrs {text!r}: need START <= STOP and STEP > 0, e.g. -14:-4:0.5")
    n = int(np.floor((stop - start) / step + 1e-9)) + 1
    return [round(start + i * step, 6) for i in range(n)]


def run(args) -> int:
    from mutransfer.validation import MUP_SCHEMES
    from mutransfer.validation import depth_markdown
    from mutransfer.validation import landscape_markdown, validate

    df = validate(args.config, widths=args.widths, schemes=args.schemes, optimizers=args.optimizers,
                  log2_lrs=args.lrs, seeds=args.seeds, steps=args.steps, storage=args.storage,
                  study_name=args.study, device=args.device, reports_dir=args.reports,
                  depths=args.depths, depth_alphas=args.depth_alphas)
    if args.depths:
        print(depth_markdown(df))
        return 0
    print(landscape_markdown(df, max_drift=args.max_drift))
    if not args.check:
        return 0
    return check(df, args.max_drift, MUP_SCHEMES)


def check(df, max_drift: float, schemes) -> int:
    """0 when every muP-family landscape drifts by at most ``max_drift``; else 1 and why."""
    from mutransfer.validation import drift_slope, eta_stars

    etas = eta_stars(df[df["scheme"].isin(schemes)])
    failed = 0
    for (scheme, opt), g in etas.groupby(["scheme", "optimizer"], sort=True):
        d = drift_slope(g["width"], g["log2_eta"])
        if not abs(d) <= max_drift:  # NaN (no fit) fails too: nothing was shown to transfer
            failed += 1
            print(f"check failed: {scheme} + {opt} drifts {d:+.2f} octave per doubling of width "
                  f"(allowed ±{max_drift:g}); run mutransfer coord-check on it")
    if etas.empty:
        print(f"check failed: no muP-family scheme ({', '.join(schemes)}) in the grid; add --schemes mup")
        return 1
    if not failed:
        print(f"check passed: every muP-family landscape drifts by at most ±{max_drift:g} octave per doubling")
    return 1 if failed else 0
