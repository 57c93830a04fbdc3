"""``mutransfer describe FACTORY --width W --base-width B``: print a model's muP plan."""
from __future__ import annotations

from mutransfer.cli._common import add_command
from mutransfer.core import MUON_SCALES, OPTIMIZER_RULES, READOUTS, SCHEMES


def register(subparsers) -> None:
    p = add_command(
        subparsers, "describe",
        help="print the roles and multipliers parametrize() assigns to a model",
        description="Build FACTORY at --width (on the meta device: no memory) and its base at "
                    "--base-width, and print the plan: one row per parameter.")
    p.add_argument("factory", help="'package.module:function' or 'path/to/file.py:function'; "
                                   "the function takes width= and returns an nn.Module")
    p.add_argument("--width", type=int, required=True, help="the target width")
    p.add_argument("--base-width", type=int, required=True, help="the base (proxy) width")
    p.add_argument("--scheme", default="spectral", choices=SCHEMES)
    p.add_argument("--optimizer", default="adamw", choices=tuple(OPTIMIZER_RULES))
    p.add_argument("--muon-scale", default="spectral", choices=MUON_SCALES)
    p.add_argument("--readout", default="init", choices=READOUTS)
    p.add_argument("--depth", type=int, help="the target's blocks (the factory takes depth=)")
    p.add_argument("--base-depth", type=int, help="the base's blocks (default: --depth)")
    p.add_argument("--depth-alpha", type=float, help="residual branch multiplier m_L^-alpha "
                                                      "(default: the library's, 1)")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.set_defaults(func=run)


def run(args) -> int:
    from mutransfer.core import parametrize
    from mutransfer.models.zoo import load_factory

    plan = parametrize(load_factory(args.factory), width=args.width, base_width=args.base_width,
                       scheme=args.scheme, optimizer=args.optimizer, muon_scale=args.muon_scale,
                       readout=args.readout, device="meta", depth=args.depth,
                       base_depth=args.base_depth, depth_alpha=args.depth_alpha)
    print(plan)
    if args.csv:
        plan.table().to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0
