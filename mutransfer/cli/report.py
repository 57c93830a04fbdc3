"""``mutransfer report CONFIG``: gather every step's outputs into reports/<name>/index.md."""
from __future__ import annotations

from mutransfer.cli._common import add_command, add_reports


def register(subparsers) -> None:
    p = add_command(
        subparsers, "report",
        help="write reports/<name>/index.md from the steps' outputs",
        description="Collect what coord-check, sweep, transfer and validate wrote into "
                    "reports/<name>/ into one markdown page with its figures (it trains nothing). "
                    "A step not run yet is listed with the command that runs it.",
        config=True)
    add_reports(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mutransfer.validation import write_report

    path = write_report(args.config, args.reports)
    print(f"wrote {path}")
    return 0
