"""``mutransfer coord-check [CONFIG]``: activation sizes across widths, per scheme, with a verdict."""
from __future__ import annotations

import shlex
import time
from pathlib import Path

from mutransfer.cli.validate import float_list, int_list, str_list

from mutransfer.cli._common import add_command
from mutransfer.core import OPTIMIZER_RULES

# Each optimizer's demo lr, from its record (OptimizerRule.demo_lr).
DEFAULT_LR = {name: rule.demo_lr for name, rule in OPTIMIZER_RULES.items()}
DEFAULT_ADAM_LR = 3e-3  # Muon's AdamW groups (embeddings, readout, vectors)
# Models that read vectors, not bytes: without a CONFIG they get synthetic data.
SYNTHETIC_MODELS = ("mutransfer.zoo:mlp", "mutransfer.zoo:cnn")


def register(subparsers) -> None:
    p = add_command(
        subparsers, "coord-check",
        help="record activation sizes across widths and judge the parametrization",
        description="Build the model at each width for each scheme, train a few steps, record the "
                    "RMS of every module's output, of its change since step 0 and of its own "
                    "update, fit log RMS against log width and judge the slopes (muP: flat). "
                    "Writes coord.csv, coord.png and coord.md to --out and prints the verdict.")
    p.add_argument("config", nargs="?", help="experiment file (sweeps/*.toml) for model, data and "
                                             "batch defaults; without it: --model on pycorpus")
    p.add_argument("--model", help="factory 'module:function' or 'file.py:function' "
                                   "(default: the CONFIG's, else mutransfer.zoo:gpt)")
    p.add_argument("--data", choices=("pycorpus", "synthetic"),
                   help="without CONFIG: synthetic for the zoo mlp/cnn, pycorpus otherwise")
    p.add_argument("--widths", type=int_list, default=[64, 128, 256, 512], help="comma list")
    p.add_argument("--schemes", type=str_list, default=["sp", "mup"], help="comma list")
    p.add_argument("--optimizer", choices=tuple(DEFAULT_LR),
                   help="default: the CONFIG's [parametrization] optimizer, else adamw")
    p.add_argument("--lr", type=float, help=f"base lr (default per optimizer: {DEFAULT_LR})")
    p.add_argument("--adam-lr", type=float, help=f"Muon's AdamW groups (default {DEFAULT_ADAM_LR})")
    p.add_argument("--steps", type=int, default=5, help="training steps")
    p.add_argument("--seeds", type=int, default=3, help="seeds per width (0..N-1)")
    p.add_argument("--batch-size", type=int, help="default: the CONFIG's [train], else 8")
    p.add_argument("--seq-len", type=int, help="default: the CONFIG's [train], else 32")
    p.add_argument("--tol", type=float, default=0.15, help="largest |slope| that passes")
    p.add_argument("--constant", action="append", default=[], metavar="NAME=VALUE",
                   help="one of muP's constants (e.g. init_input=0.025) over the CONFIG's; repeatable")
    p.add_argument("--out", help="output folder (default: reports/<config name or coord-check>)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a non-SP scheme fails")
    p.add_argument("--depths", type=int_list,
                   help="check across depth instead (blocks, comma list) at the first --widths width: "
                        "the residual stream and the branches, into depth-coord.{csv,png,md}")
    p.add_argument("--depth-alphas", type=float_list, default=[0.0, 0.5, 1.0],
                   help="with --depths: branch multipliers m_L^-alpha to compare")
    p.set_defaults(func=run)


def _config(args):
    """The CONFIG (or the defaults for --model) with the command-line overrides applied."""
    from dataclasses import replace

    from mutransfer import runs as config

    if args.config:
        cfg = config.load_config(args.config)
    else:
        factory = args.model or "mutransfer.zoo:gpt"
        source = args.data or ("synthetic" if factory in SYNTHETIC_MODELS else "pycorpus")
        cfg = config.ExperimentConfig(
            "coord-check", config.ModelConfig(factory=factory), config.DataConfig(source=source),
            config.TrainConfig(batch_size=8, seq_len=32), config.ParamConfig(), config.SweepConfig())
    train = {k: v for k, v in (("batch_size", args.batch_size), ("seq_len", args.seq_len)) if v}
    model = {"factory": args.model} if args.model else {}
    return replace(cfg, model=replace(cfg.model, **model), train=replace(cfg.train, **train))


def _batches(cfg, data, steps: int) -> list:
    import torch

    g = torch.Generator().manual_seed(0)
    seq_len = None if cfg.data.source == "synthetic" else cfg.train.seq_len
    return [data.batch("train", cfg.train.batch_size, seq_len, g) for _ in range(steps)]


def records(args, cfg):
    """The coord_check records of every scheme in ``args.schemes``, concatenated."""
    import pandas as pd

    from mutransfer.validation import coord_check
    from mutransfer.runs import config_factory, make_dataset
    from mutransfer.models.zoo import load_factory

    optimizer = args.optimizer or cfg.parametrization.optimizer
    lr = args.lr if args.lr is not None else DEFAULT_LR[optimizer]
    opt_kwargs = {"adam_lr": args.adam_lr or DEFAULT_ADAM_LR} if optimizer == "muon" else {}
    p = cfg.parametrization
    data = make_dataset(cfg.data)
    batches = _batches(cfg, data, args.steps)
    factory = config_factory(cfg, load_factory(cfg.model.factory))
    constants = {**p.constants, **_constants(args.constant)}
    frames = [coord_check(factory, args.widths, batches, scheme=s, optimizer=optimizer, lr=lr,
                          steps=args.steps, seeds=range(args.seeds), data=data,
                          muon_scale=p.muon_scale, optimizer_kwargs=opt_kwargs,
                          plan_kwargs={"readout": p.readout, "output_mult": p.output_mult,
                                       **({"constants": constants} if constants and s != "sp" else {})})
              for s in args.schemes]
    return pd.concat(frames, ignore_index=True), lr, opt_kwargs


def _constants(pairs: list[str]) -> dict[str, float]:
    """``["init_input=0.025"]`` -> ``{"init_input": 0.025}`` (names are checked by Constants)."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--constant takes NAME=VALUE, e.g. --constant init_input=0.025; got {pair!r}")
    return out


def _markdown(verdict, command: str, settings: str, seconds: float) -> str:
    from mutransfer.validation import markdown_table

    worst = verdict.worst.drop(columns=["optimizer", "rms_min", "rms_max"]).round(3)
    return "\n".join([
        f"# Coordinate check: {'PASS' if verdict.passed else 'FAIL'}", "", settings, "",
        *markdown_table(verdict.table()), "", verdict.explanation, "",
        "![coordinate check](coord.png)", "", "## Worst fits per scheme", "",
        *markdown_table(worst), "", f"Regenerate ({seconds:.0f} s):", "", "```", command, "```", ""])


def run(args) -> int:
    from mutransfer.validation import coord_verdict
    from mutransfer.validation import plot_coord_check

    if args.depths:
        return run_depth(args)
    if len(args.widths) < 2 or args.steps < 1 or args.seeds < 1:
        raise ValueError(f"need >= 2 widths, steps >= 1 and seeds >= 1; got widths={args.widths}, "
                         f"steps={args.steps}, seeds={args.seeds}")
    cfg = _config(args)
    out = Path(args.out or Path("reports") / cfg.name)
    start = time.perf_counter()
    df, lr, opt_kwargs = records(args, cfg)
    verdict = coord_verdict(df, args.tol)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "coord.csv", index=False)
    plot_coord_check(df, out / "coord.png", verdict=verdict)
    settings = (f"Model `{cfg.model.factory}` {dict(cfg.model.kwargs)}, data `{cfg.data.source}`, "
                f"batch {cfg.train.batch_size}, widths {args.widths}, seeds {args.seeds}, "
                f"steps {args.steps}, optimizer {df['optimizer'].iloc[0]}, lr {lr:g} {opt_kwargs or ''}")
    command = f"mutransfer coord-check {shlex.join(_argv(args))}"
    (out / "coord.md").write_text(_markdown(verdict, command, settings, seconds))
    print(verdict)
    print(f"\nwrote {out}/coord.csv, coord.png, coord.md ({seconds:.1f} s)")
    return 1 if args.strict and not verdict.passed else 0


def _argv(args) -> list[str]:
    """The command-line flags that reproduce ``args`` (for coord.md)."""
    argv = [args.config] if args.config else []
    for flag in ("model", "data", "optimizer", "lr", "adam_lr", "batch_size", "seq_len", "out"):
        value = getattr(args, flag)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    for pair in args.constant:
        argv += ["--constant", pair]
    argv += ["--widths", ",".join(map(str, args.widths)), "--schemes", ",".join(args.schemes),
             "--steps", str(args.steps), "--seeds", str(args.seeds), "--tol", str(args.tol)]
    return argv + (["--strict"] if args.strict else [])


def run_depth(args) -> int:
    """``--depths``: the depth coordinate check at the first width, per ``--depth-alphas``."""
    import functools

    from mutransfer.models.zoo import load_factory
    from mutransfer.runs import config_factory, make_dataset
    from mutransfer.validation import depth_coord_check, depth_verdict
    from mutransfer.validation import plot_depth_coord

    cfg = _config(args)
    if len(args.depths) < 2 or args.steps < 1 or args.seeds < 1:
        raise ValueError(f"need >= 2 depths, steps >= 1 and seeds >= 1; got depths={args.depths}")
    out = Path(args.out or Path("reports") / cfg.name)
    optimizer = args.optimizer or cfg.parametrization.optimizer
    lr = args.lr if args.lr is not None else DEFAULT_LR[optimizer]
    opt_kwargs = {"adam_lr": args.adam_lr or DEFAULT_ADAM_LR} if optimizer == "muon" else {}
    data = make_dataset(cfg.data)
    kwargs = {k: v for k, v in cfg.model.kwargs.items() if k != "depth"}
    factory = config_factory(cfg.override({"model.kwargs": kwargs}), load_factory(cfg.model.factory))
    scheme = args.schemes[-1] if args.schemes != ["sp", "mup"] else cfg.parametrization.scheme
    start = time.perf_counter()
    df = depth_coord_check(functools.partial(factory, width=args.widths[0]), args.depths,
                           _batches(cfg, data, args.steps), lr=lr, depth_alphas=args.depth_alphas,
                           base_depth=cfg.model.base_depth or min(args.depths), scheme=scheme,
                           optimizer=optimizer, steps=args.steps, seeds=range(args.seeds),
                           loss_fn=data.loss, optimizer_kwargs=opt_kwargs)
    verdict = depth_verdict(df, args.tol)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "depth-coord.csv", index=False)
    plot_depth_coord(df, verdict, out / "depth-coord.png")
    command = f"mutransfer coord-check {shlex.join(_argv(args) + _depth_argv(args))}"
    (out / "depth-coord.md").write_text(_depth_markdown(verdict, cfg, args, scheme, optimizer, lr, command, seconds))
    print(verdict.explanation())
    print(f"\nwrote {out}/depth-coord.csv, depth-coord.png, depth-coord.md ({seconds:.1f} s)")
    return 1 if args.strict and not all(ok for a, ok in verdict.alphas.items() if a > 0) else 0


def _depth_argv(args) -> list[str]:
    return ["--depths", ",".join(map(str, args.depths)),
            "--depth-alphas", ",".join(f"{a:g}" for a in args.depth_alphas)]


def _depth_markdown(verdict, cfg, args, scheme, optimizer, lr, command: str, seconds: float) -> str:
    from mutransfer.validation import markdown_table

    judged = verdict.slopes[verdict.slopes["judged"]]
    table = judged.pivot_table(index=["module", "kind", "step"], columns="depth_alpha", values="slope")
    table.columns = [f"slope, alpha {a:g}" for a in table.columns]
    table = table.round(3).reset_index()
    result = ", ".join(f"alpha {a:g} {'PASS' if ok else 'FAIL'}" for a, ok in sorted(verdict.alphas.items()))
    return "\n".join([
        f"# Depth coordinate check: {result}", "",
        f"Model `{cfg.model.factory}` {dict(cfg.model.kwargs)} at width {args.widths[0]}, depths "
        f"{args.depths} against a base of {cfg.model.base_depth or min(args.depths)} blocks, {scheme} + "
        f"{optimizer} at lr {lr:g}, {args.seeds} seeds, {args.steps} steps. Judged: the residual "
        f"stream (the last block's output) and its change since step 0, and each block's branch F "
        f"(its last map's output before the multiplier m_L^-alpha) change, as log-log slopes against "
        f"depth. The stream passes at slope <= {args.tol:g} (shrinking is reported); a block's change "
        f"at slope within [alpha - 1 - {args.tol:g}, {args.tol:g}] (it may shrink as its lr rule "
        f"m_L^(alpha - 1) sets, not faster; at alpha 0, width-only muP, no rule: ±{args.tol:g}).", "",
        *markdown_table(table), "", verdict.explanation(), "", "![depth coordinate check](depth-coord.png)",
        "", f"Regenerate ({seconds:.0f} s):", "", "```", command, "```", ""])
