"""``mutransfer compare CONFIG``: transfer against direct tuning at the target (issue 10's headline)."""
from __future__ import annotations

from pathlib import Path

from mutransfer.cli._common import add_command, add_device, add_reports


def register(subparsers) -> None:
    p = add_command(
        subparsers, "compare",
        help="target loss and tuning compute: SP tuned at the target vs muP transferred",
        description="Run three arms on CONFIG's lr grid: sp-direct (SP swept at the target "
                    "width), transfer-lr (the proxy's lr transferred) and transfer-constants (the "
                    "staged recipe's lr and constants transferred); train the target with each "
                    "over --seeds seeds and write reports/<name>/compare[-<scheme>].{csv,png,md}. "
                    "Resumes from the stored studies. Exits 1 when transfer-constants misses the "
                    "goal (loss <= sp-direct's at <= 1/8 of its tuning compute) and --check is given.",
        config=True)
    p.add_argument("--seeds", type=int, default=2, help="target training seeds per arm")
    p.add_argument("--scheme", choices=("mup", "spectral"),
                   help="the transfer arms' scheme (default: CONFIG's)")
    p.add_argument("--workers", type=int, default=1, help="sweep worker processes")
    p.add_argument("--check", action="store_true", help="exit 1 when the goal is missed")
    p.add_argument("--reuse", action="store_true",
                   help="tune transfer-lr from the staged sweep's lr phase and sp-direct from "
                        "`mutransfer validate`'s SP landscape at the target, instead of new sweeps")
    add_device(p)
    add_reports(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return run_compare(args.config, seeds=args.seeds, scheme=args.scheme, workers=args.workers,
                       device=args.device, reports=args.reports, reuse=args.reuse, check=args.check)


def run_compare(config: str | Path, *, seeds: int = 2, scheme: str | None = None, workers: int = 1,
                device: str = "auto", reports: str | Path = "reports", reuse: bool = False,
                check: bool = False) -> int:
    """``mutransfer compare CONFIG`` as a function: run the arms (:func:`mutransfer.validation.compare`),
    write ``<reports>/<name>/compare[-<scheme>].{csv,png,md}`` with the command that reruns them,
    print the table; returns the exit code (1 when ``check`` and the goal is missed).

        >>> run_compare("sweeps/quickstart.toml", seeds=1, reuse=True)
        0
    """
    from mutransfer.validation import compare, compare_verdict, meets_goal, write_compare
    from mutransfer.runs import load_config
    from mutransfer.validation import shell_path

    cfg = load_config(config)
    table = compare(cfg, seeds=seeds, scheme=scheme, workers=workers,
                    device=device, reports_dir=reports, reuse=reuse)
    command = " ".join(["mutransfer compare", shell_path(config), f"--seeds {seeds}",
                        *([f"--scheme {scheme}"] if scheme else []),
                        *(["--reuse"] if reuse else []),
                        *([f"--reports {reports}"] if Path(reports) != Path("reports") else [])])
    stem = "compare" if scheme in (None, cfg.parametrization.scheme) else f"compare-{scheme}"
    path = write_compare(table, Path(reports) / cfg.name, command, stem=stem)
    shown = table[["arm", "tuned_at", "trials", "lr", "loss", "tuning_flops", "compute_ratio", "tuning_s"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(compare_verdict(table))
    print(f"wrote {path}")
    return 1 if check and not all(meets_goal(table)) else 0
