"""``mutransfer sweep CONFIG``: tune the proxy with Optuna (resumable, parallel, any storage)."""
from __future__ import annotations

from pathlib import Path

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
    p.add_argument("--trust-study", action="store_true",
                   help="with --rerun: rerun a trial whose stored model factory differs from CONFIG's "
                        "(it imports that code: only for studies whose writers you trust)")
    add_reports(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mutransfer.tuning import rerun, sweep

    if args.rerun is not None:
        device = "cpu" if args.device == "auto" else args.device
        stored, new = rerun(args.config, args.rerun, storage=args.storage, study_name=args.study,
                            width=args.width, device=device, reports_dir=args.reports, seed=args.seed,
                            trust_study=args.trust_study)
        print(f"trial {args.rerun}: stored loss {stored:.6f}, rerun loss {new:.6f} "
              f"(difference {abs(new - stored):.2e})")
        return 0
    print_ladder_cost(args.config, args.width)
    try:
        study = sweep(args.config, width=args.width, trials=args.trials, storage=args.storage,
                      study_name=args.study, workers=args.workers, device=args.device,
                      timeout=args.timeout, show_progress=True, reports_dir=args.reports, seed=args.seed)
    except Exception:  # a trial raised: its error is in the study; leave the tables behind
        _report(args, stored_study(args))
        raise
    _report(args, study)
    _depth_probe(args)
    return 0 if study.get_trials(deepcopy=False) else 1


def _depth_probe(args) -> None:
    """Under depth_alpha unset or "auto" with a target deeper than the proxy: the depth probe around the
    lr the sweep's studies hand over (mutransfer.tuning.probe_depth), and the rule it picks."""
    from mutransfer.cli.transfer import load_studies
    from mutransfer.projection import choose_depth_rule, run_depth_probe
    from mutransfer.runs import load_config
    from mutransfer.tuning import default_storage, probe_cost, worker_devices

    cfg = load_config(args.config)
    url = args.storage or cfg.sweep.storage or default_storage(cfg, args.reports)
    if not cfg.probes_depth():
        return
    print(probe_cost(cfg, args.width))
    probe = run_depth_probe(cfg, load_studies(cfg, url, None), storage=url, reports_dir=args.reports,
                            device=worker_devices(args.device, 1)[0])
    for note in choose_depth_rule(probe, base_depth=cfg.proxy_depth()).notes():
        print(note)


def print_ladder_cost(config, width: int | None = None) -> None:
    """Before a budget ladder (a space sweeping >= 2 token budgets), its cost in FLOPs (6 N D over
    every run) beside one target run's ([model] width at [train] tokens)."""
    from mutransfer.runs import count_params, load_config, sweep_tokens, training_flops

    cfg = load_config(config)
    budgets = cfg.sweep.space.get("tokens")
    if not isinstance(budgets, list) or len(budgets) < 2:
        return
    width = width or cfg.sweep.width
    flops = training_flops(count_params(cfg, width, cfg.proxy_depth()), sweep_tokens(cfg))
    line = (f"budget ladder at width {width}: budgets {', '.join(str(b) for b in budgets)} tokens; this sweep "
            f"trains {sweep_tokens(cfg):.3g} tokens, {flops:.3g} FLOPs (6 N D)")
    if cfg.train.tokens:
        target = training_flops(count_params(cfg, cfg.model.width, cfg.model.depth), cfg.train.tokens)
        line += (f" = {flops / target:.2g} runs of the target (width {cfg.model.width} at {cfg.train.tokens} "
                 f"tokens: {target:.3g} FLOPs)")
    print(line)


def stored_study(args):
    """The study the command ran (None if it never got created)."""
    import optuna

    from mutransfer.runs import load_config
    from mutransfer.tuning import open_storage, study_location

    cfg = load_config(args.config)
    name, url = study_location(cfg, width=args.width, seed=args.seed, storage=args.storage,
                               study_name=args.study, reports_dir=args.reports)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(
            url, heartbeat_interval=cfg.sweep.heartbeat_interval, grace_period=cfg.sweep.grace_period))
    except KeyError:
        return None


def _report(args, study) -> None:
    """trials.csv, the figures and the best (and failed) trials, in reports/<name>/<study>/."""
    from mutransfer.runs import load_config
    from mutransfer.validation import write_sweep_report

    if study is not None:
        folder = Path(args.reports) / load_config(args.config).name / study.study_name
        write_sweep_report(study, folder, show=True)
