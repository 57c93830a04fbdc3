"""``mutransfer transfer CONFIG``: fit the proxies' sweeps and write the target's plan (plan.json)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from mutransfer.cli._common import add_command, add_reports


def register(subparsers) -> None:
    p = add_command(
        subparsers, "transfer",
        help="project the proxies' optimal lr (and a batch size) to the target width",
        description="Load the proxy studies of CONFIG (all studies named <name>-w<width>[-s<seed>] in the "
                    "storage unless --studies), fit eta* per width and batch, the drift across "
                    "width and the eta*(B) law, print the plan and write it as JSON with a figure "
                    "beside it (plan.png: eta* against batch size and width).",
        config=True)
    p.add_argument("--storage", help="SQLAlchemy URL of the studies (default: [sweep] storage, "
                                     "else the sqlite file reports/<name>/study.db)")
    p.add_argument("--studies", help="comma-separated study names (default: every <name>-w<W> and "
                                     "<name>-w<W>-s<S> study)")
    p.add_argument("--target-width", type=int, help="width to plan for (default: [model] width)")
    p.add_argument("--target-depth", type=int,
                   help="blocks to plan for (default: [model] depth; needs proxies swept with it)")
    p.add_argument("--target-batch", help="an int, or 'auto' (the compute-optimal batch when the "
                                          "proxies ran a token budget, else B_noise at the target's "
                                          "loss); default: the best proxy trial's batch size")
    p.add_argument("--max-batch", type=int, help="cap for --target-batch auto")
    p.add_argument("--target-tokens", "--tokens", dest="tokens", type=int,
                   help="the target's training tokens: gives steps, scales weight decay and, when "
                        "the proxies ran >= 2 budgets, the compute-optimal batch by B_opt ~ D^p")
    p.add_argument("--eps", type=float, default=0.005,
                   help="with a budget ladder: the batch handed over is the largest whose predicted loss "
                        "at the target's budget is within this fraction of the best batch's (default 0.005)")
    p.add_argument("--wd-policy",
                   help="'timescale' holds tau = B / (lr wd D) when the batch or budget changes "
                        "(default: the trials' [train] wd_policy)")
    p.add_argument("--correct-drift", action="store_true",
                   help="extrapolate the fitted drift of eta* across width instead of assuming none")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out", help="plan file (default: reports/<name>/plan.json)")
    add_reports(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mutransfer.runs import load_config
    from mutransfer.tuning import default_storage
    from mutransfer.validation import plot_transfer
    from mutransfer.projection import transfer

    cfg = load_config(args.config)
    url = args.storage or cfg.sweep.storage or default_storage(cfg, args.reports)
    studies = load_studies(cfg, url, args.studies)
    plan = transfer(studies, args.target_width or cfg.model.width,
                    target_depth=args.target_depth or cfg.model.depth, target_batch=_batch_arg(args.target_batch), tokens=args.tokens,
                    scheme=cfg.parametrization.scheme, optimizer=cfg.parametrization.optimizer,
                    max_batch=args.max_batch, correct_drift=args.correct_drift, seed=args.seed,
                    wd_policy=args.wd_policy, eps=args.eps, depth_probe=_probe(cfg, url), **_params(cfg, args))
    print(plan.summary())
    out = Path(args.out or Path(args.reports) / cfg.name / "plan.json")
    command = regenerate_command(args, [s.study_name for s in studies], out)
    plan = dataclasses.replace(plan, diagnostics={**plan.diagnostics, "command": command})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(plan.to_json())
    figure = plot_transfer(plan, out.with_suffix(".png"))
    print(f"wrote {out}, {figure.name}")
    return 0


def _probe(cfg, url: str):
    """The depth probe's study (depth_alpha unset or "auto"), None when the config does not ask for one or
    none was run (transfer then says what to run)."""
    from mutransfer.runs import DEPTH_AUTO
    from mutransfer.tuning import stored_probe

    return stored_probe(cfg, url) if cfg.parametrization.depth_alpha in (None, DEPTH_AUTO) else None


def _params(cfg, args) -> dict:
    """The proxy's and the target's parameter counts (for the ladder's FLOPs), from the config."""
    from mutransfer.runs import count_params

    return {"proxy_params": count_params(cfg, cfg.sweep.width, cfg.proxy_depth()),
            "target_params": count_params(cfg, args.target_width or cfg.model.width,
                                          args.target_depth or cfg.model.depth)}


def regenerate_command(args, studies: list[str], out: Path) -> str:
    """The command that rewrites this plan: the studies actually used, every option given
    (the storage URL is left out: it may hold a password)."""
    from mutransfer.validation import shell_path

    flags = [("--studies", ",".join(studies)), ("--target-width", args.target_width),
             ("--target-depth", args.target_depth),
             ("--target-batch", args.target_batch), ("--max-batch", args.max_batch),
             ("--target-tokens", args.tokens), ("--wd-policy", args.wd_policy), ("--seed", args.seed or None),
             ("--eps", args.eps if args.eps != 0.005 else None)]
    parts = ["mutransfer transfer", shell_path(args.config)]
    parts += [f"{flag} {value}" for flag, value in flags if value is not None]
    parts += ["--correct-drift"] if args.correct_drift else []
    return " ".join(parts + ["--out", shell_path(out)])


def load_studies(cfg, url: str, names: str | None) -> list:
    """The named studies (comma-separated), or every ``<cfg.name>-w<width>[-s<seed>]`` study in ``url``."""
    import optuna

    from mutransfer.tuning import STUDY_NAME, open_storage, redact

    storage = open_storage(url, heartbeat_interval=cfg.sweep.heartbeat_interval,
                           grace_period=cfg.sweep.grace_period)
    present = sorted(optuna.get_all_study_names(storage=storage))
    prefix = f"{cfg.name}-w"
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else \
        sorted(n for n in present if (m := STUDY_NAME.match(n)) and m["name"] == cfg.name)
    missing = [n for n in wanted if n not in present]
    if not wanted or missing:
        what = f"no study {missing[0]!r}" if missing else f"no study named {prefix}<width>"
        raise ValueError(f"{what} in {redact(url)} (studies there: {present or 'none'}); run "
                         "`mutransfer sweep CONFIG` first, or pass --studies/--storage")
    return [optuna.load_study(study_name=n, storage=storage) for n in wanted]


def _batch_arg(value: str | None):
    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--target-batch must be an int or 'auto'; got {value!r}") from None
