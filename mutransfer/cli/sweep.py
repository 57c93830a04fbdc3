"""``mutransfer sweep CONFIG``: tune the proxy with Optuna (resumable, parallel, any storage)."""
from __future__ import annotations

from mutransfer.cli._common import add_command, add_device, add_reports


def register(subparsers) -> None:
    p = add_command(
        subparsers, "sweep",
        help="tune lr / batch size of the small proxy with Optuna",
        description="Run the Optuna sweep CONFIG describes (a TOML file in sweeps/) at the proxy "
                    "width. Rerunning the same command resumes the study up to --trials. "
                    "Several processes or machines can share one study through --storage.",
        config=True)
    p.add_argument("--width", type=int, help="proxy width (default: [sweep] width)")
    p.add_argument("--trials", type=int, help="total trials wanted (default: [sweep] trials)")
    p.add_argument("--storage", help="SQLAlchemy URL, e.g. postgresql://user@host/db "
                                     "(default: sqlite file reports/<name>/study.db)")
    p.add_argument("--study", help="study name (default: <name>-w<width>)")
    p.add_argument("--workers", type=int, help="processes sharing the study (default: one per "
                                               "visible GPU, else 1)")
    add_device(p)
    p.add_argument("--seed", type=int, help="seed of the sampler and of trial i (seed + i); a seed "
                                            "other than [sweep] seed makes its own study "
                                            "<name>-w<width>-s<seed>, which transfer pools with the rest")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--rerun", type=int, metavar="TRIAL",
                   help="train trial TRIAL alone again (stored config/params/seed) and compare losses")
    add_reports(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mutransfer.tuning import rerun, sweep

    if args.rerun is not None:
        device = "cpu" if args.device == "auto" else args.device
        stored, new = rerun(args.config, args.rerun, storage=args.storage, study_name=args.study,
                            width=args.width, device=device, reports_dir=args.reports)
        print(f"trial {args.rerun}: stored loss {stored:.6f}, rerun loss {new:.6f} "
              f"(difference {abs(new - stored):.2e})")
        return 0
    study = sweep(args.config, width=args.width, trials=args.trials, storage=args.storage,
                  study_name=args.study, workers=args.workers, device=args.device,
                  timeout=args.timeout, show_progress=True, reports_dir=args.reports, seed=args.seed)
    return 0 if study.get_trials(deepcopy=False) else 1
