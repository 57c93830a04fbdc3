"""``mutransfer train CONFIG --plan plan.json``: train the target with the transfer plan.

On many processes: ``torchrun --nproc_per_node=N -m mutransfer train CONFIG`` with ``[train]
parallel = "ddp"`` or ``"fsdp"``; only rank 0 writes the report. ``[train] checkpoint_every = K``
writes checkpoints into ``<out>/checkpoints``; ``--resume`` continues from the newest one.
"""
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
                    "1 when the run diverges. Many processes: `torchrun --nproc_per_node=N -m "
                    "mutransfer train CONFIG` with [train] parallel = \"ddp\" or \"fsdp\"; "
                    "[train] checkpoint_every = K writes checkpoints to <out>/checkpoints.",
        config=True)
    p.add_argument("--plan", help="plan file from `mutransfer transfer` (default: reports/<name>/plan.json)")
    p.add_argument("--width", type=int, help="width to train (default: the plan's target width)")
    p.add_argument("--depth", type=int, help="blocks to train (default: the plan's target depth)")
    p.add_argument("--steps", type=int, help="training steps (default: the plan's steps if it "
                                             "was given --tokens, else [train] steps)")
    add_device(p)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--out", help="output folder (default: reports/<name>/train-w<W>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in <out>/checkpoints (written with "
                        "[train] checkpoint_every = K); refused if the config or plan changed")
    add_reports(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mutransfer.runs import load_config
    from mutransfer.projection import load_plan, train_target
    from mutransfer.training import is_main_process

    cfg = load_config(args.config)
    plan_path = Path(args.plan or Path(args.reports) / cfg.name / "plan.json")
    plan = load_plan(plan_path)
    width = args.width or plan.target_width
    out = Path(args.out or Path(args.reports) / cfg.name / f"train-w{width}")
    res = None
    try:
        res = train_target(cfg, plan, width=width, depth=args.depth, steps=args.steps,
                           device=args.device, seed=args.seed, resume=args.resume,
                           checkpoint_dir=out / "checkpoints", log_dir=out / "tensorboard")
        main = is_main_process()
    finally:
        _end_process_group(wait=res is not None)
    if not main:
        return 1 if res.diverged else 0
    command = command_line(args.config, plan_path, width, out, depth=args.depth, steps=args.steps,
                           seed=args.seed)
    report(cfg, plan, res, width, out, command)
    return 1 if res.diverged else 0


def command_line(config: str | Path, plan: str | Path, width: int, out: str | Path, *,
                 depth: int | None = None, steps: int | None = None, seed: int = 0) -> str:
    """The ``mutransfer train`` command that reruns a target run (for train.md).

        >>> command_line("x.toml", "reports/x/plan.json", 256, "reports/x/train-w256")
        'mutransfer train x.toml --plan reports/x/plan.json --width 256 --out reports/x/train-w256'
    """
    from mutransfer.validation import shell_path

    return " ".join(["mutransfer train", shell_path(config), "--plan", shell_path(plan),
                     f"--width {width}", *([f"--depth {depth}"] if depth else []),
                     *([f"--steps {steps}"] if steps else []),
                     *([f"--seed {seed}"] if seed else []), "--out", shell_path(out)])


def report(cfg, plan, res, width: int, out: str | Path, command: str) -> Path:
    """Write the target run's ``train-w<W>/`` report (history.csv, loss.png, train.md) and
    print its summary rows; returns train.md's path.

        >>> report(cfg, plan, res, 256, "reports/x/train-w256", "mutransfer train x.toml")
    """
    from mutransfer.validation import summary_rows, write_training_report

    path = write_training_report(out, plan, res, width, command, tau=cfg.train.qk_clip)
    for what, value in summary_rows(plan, res, width):
        print(f"  {what:<24}{value}")
    print(f"wrote {path}")
    return path


def _end_process_group(wait: bool) -> None:
    """Leave the process group ``[train] parallel`` started, so torchrun's ranks exit cleanly
    (after the others when ``wait``; a rank that failed leaves at once)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
