"""``mutransfer exponents CONFIG``: measure each role's exponent against scaling.md's table."""
from __future__ import annotations

import re
from pathlib import Path

from mutransfer.cli._common import add_command, add_device, add_reports
from mutransfer.cli.validate import int_list, log2_grid, str_list


def register(subparsers) -> None:
    p = add_command(
        subparsers, "exponents",
        help="sweep one role's lr (or init) multiplier at a time across widths; fit its exponent",
        description="For each role, train CONFIG's model at each width and each multiplier "
                    "2^x of that role's constant (the others and the lr as CONFIG sets them), fit "
                    "the optimum per width and its slope against width: the measured exponent is "
                    "the table's plus that slope. Writes reports/<name>/exponents-<kind>.csv (the "
                    "runs; a rerun resumes), exponents-<kind>.png and exponents-<kind>.md.",
        config=True)
    p.add_argument("--widths", type=int_list, default=[32, 64, 128], help="comma list (>= 3)")
    p.add_argument("--roles", type=str_list, default=["input", "hidden", "output", "vector"],
                   help="comma list of input, hidden, output, vector")
    p.add_argument("--kind", choices=("lr", "init"), default="lr", help="which multiplier to sweep")
    p.add_argument("--mults", type=log2_grid, default=log2_grid("-2:2:1"),
                   help="log2 of the multiplier: START:STOP:STEP or a comma list")
    p.add_argument("--seeds", type=int, default=1, help="seeds per point")
    p.add_argument("--plan", help="a transfer plan (plan.json) whose lr and constants the other "
                                  "roles are held at (default: CONFIG's [train] lr and constants)")
    p.add_argument("--out", help="output folder (default: reports/<name>)")
    add_device(p)
    add_reports(p)
    p._negative_number_matcher = re.compile(r"^-\d*\.?\d+([:,]-?\d*\.?\d+)*$")
    p.set_defaults(func=run)


def run(args) -> int:
    from mutransfer.runs import load_config
    from mutransfer.validation import exponent_table, role_runs, write_exponents
    from mutransfer.runs import config_constants
    from mutransfer.validation import shell_path

    cfg = load_config(args.config)
    if args.plan:
        cfg = tuned_config(cfg, args.plan)
    out = Path(args.out or Path(args.reports) / cfg.name)
    df = role_runs(cfg, widths=args.widths, roles=args.roles, log2_mults=args.mults, kind=args.kind,
                   seeds=args.seeds, device=args.device, cache=out / f"exponents-{args.kind}.csv")
    p = cfg.parametrization
    table = exponent_table(df, optimizer=p.optimizer, scheme=p.scheme, muon_scale=p.muon_scale,
                           readout_exponent=config_constants(cfg)["readout_exponent"])
    mults = f"{args.mults[0]:g}:{args.mults[-1]:g}:{args.mults[1] - args.mults[0]:g}"
    command = (f"mutransfer exponents {shell_path(args.config)} --widths {','.join(map(str, args.widths))} "
               f"--roles {','.join(args.roles)} --kind {args.kind} --mults={mults} --seeds {args.seeds}"
               + (f" --plan {shell_path(args.plan)}" if args.plan else "")
               + (f" --out {shell_path(out)}" if args.out else ""))
    path = write_exponents(df, table, out, command, stem=f"exponents-{args.kind}")
    print(table.drop(columns=["measured_lo", "measured_hi"]).to_string(index=False, float_format=lambda v: f"{v:+.2f}"))
    print(f"wrote {path}")
    return 0


def tuned_config(cfg, plan_path):
    """``cfg`` with the plan's lr and constants fixed (and no longer swept): the point the
    exponents are measured around.

        >>> tuned_config(load_config("sweeps/gpt-cpu-300.toml"), "reports/gpt-cpu-300/plan.json")
    """
    from mutransfer.projection import load_plan

    plan = load_plan(plan_path)
    constants = {k: v for k, v in plan.constants.items() if k != "output_mult"}
    return cfg.override({"train.lr": plan.lr, "parametrization.constants": constants,
                         "parametrization.output_mult": plan.constants.get("output_mult", 1.0),
                         "sweep.recipe": "single", "sweep.sampler": "grid", "sweep.trials": 1,
                         "sweep.space": {"lr": [plan.lr]}})
