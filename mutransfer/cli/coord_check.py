"""``mutransfer coord-check [CONFIG]``: activation sizes across widths, per scheme, with a verdict.

Parses the flags and calls :func:`mutransfer.validation.config_coord_check` and
:func:`~mutransfer.validation.write_coord_report` (``--depths``: the depth check).
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Sequence

from mutransfer.cli.validate import float_list, int_list, str_list

from mutransfer.cli._common import add_command
from mutransfer.core import optimizer_rule
# the defaults live with the report (validation); kept here under their old names
from mutransfer.validation import DEFAULT_ADAM_LR, DEFAULT_LR

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


def run(args) -> int:
    from mutransfer.validation import config_coord_check, coord_verdict, write_coord_report

    if args.depths:
        return run_depth(args)
    cfg = _config(args)
    out = Path(args.out or Path("reports") / cfg.name)
    start = time.perf_counter()
    df, settings = config_coord_check(cfg, args.widths, schemes=args.schemes, optimizer=args.optimizer,
                                      lr=args.lr, adam_lr=args.adam_lr, steps=args.steps, seeds=args.seeds,
                                      constants=_constants(args.constant))
    verdict = coord_verdict(df, args.tol)
    seconds = time.perf_counter() - start
    write_coord_report(df, verdict, out, f"mutransfer coord-check {shlex.join(_argv(args))}",
                       settings=settings, seconds=seconds)
    print(verdict)
    print(f"\nwrote {out}/coord.csv, coord.png, coord.md ({seconds:.1f} s)")
    return 1 if args.strict and not verdict.passed else 0


def command_line(config: str | None, *, widths, schemes, steps: int, seeds: int, tol: float = 0.15,
                 strict: bool = False, constants: Sequence[str] = (), **flags) -> str:
    """The ``mutransfer coord-check`` command with these settings (for coord.md); ``flags`` are
    the optional ones by their argument names (model, data, optimizer, lr, adam_lr, batch_size,
    seq_len, out), None where not given.

        >>> command_line("x.toml", widths=[16, 32], schemes=["sp", "mup"], steps=2, seeds=1, out="r/x")
        'mutransfer coord-check x.toml --out r/x --widths 16,32 --schemes sp,mup --steps 2 --seeds 1 --tol 0.15'
    """
    argv = [config] if config else []
    for flag in ("model", "data", "optimizer", "lr", "adam_lr", "batch_size", "seq_len", "out"):
        value = flags.get(flag)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    for pair in constants:
        argv += ["--constant", pair]
    argv += ["--widths", ",".join(map(str, widths)), "--schemes", ",".join(schemes),
             "--steps", str(steps), "--seeds", str(seeds), "--tol", str(tol)]
    return f"mutransfer coord-check {shlex.join(argv + (['--strict'] if strict else []))}"


def _argv(args) -> list[str]:
    """The command-line flags that reproduce ``args`` (for coord.md)."""
    flags = {f: getattr(args, f) for f in ("model", "data", "optimizer", "lr", "adam_lr", "batch_size",
                                           "seq_len", "out")}
    line = command_line(args.config, widths=args.widths, schemes=args.schemes, steps=args.steps,
                        seeds=args.seeds, tol=args.tol, strict=args.strict, constants=args.constant, **flags)
    return shlex.split(line)[2:]


def run_depth(args) -> int:
    """``--depths``: the depth coordinate check at the first width, per ``--depth-alphas``."""
    import functools

    from mutransfer.models.zoo import load_factory
    from mutransfer.runs import config_factory, make_dataset
    from mutransfer.validation import coord_batches, depth_coord_check, depth_verdict, plot_depth_coord

    cfg = _config(args)
    if len(args.depths) < 2 or args.steps < 1 or args.seeds < 1:
        raise ValueError(f"need >= 2 depths, steps >= 1 and seeds >= 1; got depths={args.depths}")
    out = Path(args.out or Path("reports") / cfg.name)
    optimizer = args.optimizer or cfg.parametrization.optimizer
    lr = args.lr if args.lr is not None else DEFAULT_LR[optimizer]
    opt_kwargs = {"adam_lr": args.adam_lr or DEFAULT_ADAM_LR} if optimizer_rule(optimizer).side else {}
    data = make_dataset(cfg.data)
    kwargs = {k: v for k, v in cfg.model.kwargs.items() if k != "depth"}
    factory = config_factory(cfg.override({"model.kwargs": kwargs}), load_factory(cfg.model.factory))
    scheme = args.schemes[-1] if args.schemes != ["sp", "mup"] else cfg.parametrization.scheme
    start = time.perf_counter()
    df = depth_coord_check(functools.partial(factory, width=args.widths[0]), args.depths,
                           coord_batches(cfg, data, args.steps), lr=lr, depth_alphas=args.depth_alphas,
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
