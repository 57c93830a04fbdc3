"""``mutransfer train CONFIG --plan plan.json``: train the target with the transfer plan."""
from __future__ import annotations

from pathlib import Path

from mutransfer.cli._common import add_command, add_device, add_reports


def register(subparsers) -> None:
    p = add_command(
        subparsers, "train",
        help="train the target model with a transfer plan (lr, batch size, weight decay)",
        description="Build CONFIG's model at the plan's target width (or --width), parametrize "
                    "it as CONFIG says, train it with the plan's lr, batch size and weight decay, "
                    "and write reports/<name>/train-w<W>/{history.csv,loss.png,train.md}. Exits "
                    "1 when the run diverges.",
        config=True)
    p.add_argument("--plan", help="plan file from `mutransfer transfer` (default: reports/<name>/plan.json)")
    p.add_argument("--width", type=int, help="width to train (default: the plan's target width)")
    p.add_argument("--depth", type=int, help="blocks to train (default: the plan's target depth)")
    p.add_argument("--steps", type=int, help="training steps (default: the plan's steps if it "
                                             "was given --tokens, else [train] steps)")
    add_device(p)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--out", help="output folder (default: reports/<name>/train-w<W>)")
    add_reports(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mutransfer.tuning import load_config
    from mutransfer.projection import load_plan, train_target
    from mutransfer.validation._target_report import summary_rows, write_training_report
    from mutransfer.validation._validate import shell_path

    cfg = load_config(args.config)
    plan_path = Path(args.plan or Path(args.reports) / cfg.name / "plan.json")
    plan = load_plan(plan_path)
    width = args.width or plan.target_width
    res = train_target(cfg, plan, width=width, depth=args.depth, steps=args.steps, device=args.device,
                       seed=args.seed)
    out = Path(args.out or Path(args.reports) / cfg.name / f"train-w{width}")
    command = " ".join(["mutransfer train", shell_path(args.config), "--plan", shell_path(plan_path),
                        f"--width {width}", *([f"--depth {args.depth}"] if args.depth else []),
                        *([f"--steps {args.steps}"] if args.steps else []),
                        *([f"--seed {args.seed}"] if args.seed else []), "--out", shell_path(out)])
    path = write_training_report(out, plan, res, width, command, tau=cfg.train.qk_clip)
    for what, value in summary_rows(plan, res, width):
        print(f"  {what:<24}{value}")
    print(f"wrote {path}")
    return 1 if res.diverged else 0
