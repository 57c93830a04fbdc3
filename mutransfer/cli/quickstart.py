"""``mutransfer quickstart``: the whole path on a small GPT, then the report.

1. coordinate check at 4 widths (SP | the default); 2. Optuna sweep of the proxy (the
staged recipe: lr, then muP's free constants, then lr); 3. transfer to the target width (4x the
proxy); 4. the target trained with the plan; 5. lr landscapes at 3 widths over the sweep's lr
grid (SP vs the default); 6. SP tuned at the target against the transfer (``mutransfer compare
--reuse``: SP's landscape at the target is its sp-direct arm and the sweep's lr phase its
transfer-lr arm, so no run is repeated); 7. the report, ``reports/quickstart/index.md``. Every step resumes what is stored, so a rerun only redoes the
coordinate check. ``--smoke`` (or ``MUTRANSFER_SMOKE=1``) shrinks every step to seconds. Steps 2 to 4 are one
call of :func:`mutransfer.pipeline`; every step is a function call, none an argument list.

The experiment is ``sweeps/quickstart.toml`` in a source checkout; an installed package (where
``sweeps/`` is not shipped) uses the copy ``QUICKSTART_TOML`` below, kept equal by a test.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

from mutransfer.cli._common import add_command, add_device

QUICKSTART_TOML = '''\
# A tiny sweep that finishes in a few minutes on a laptop CPU:
#   mutransfer sweep sweeps/quickstart.toml
name = "quickstart"

[model]
factory = "mutransfer.zoo:gpt"
width = 256          # the target the transfer step plans for
base_width = 32      # muP multipliers are 1 at this width
kwargs = { depth = 2 }

[data]
source = "pycorpus"  # the Python stdlib's .py files as bytes: no download

[train]
steps = 80
batch_size = 16
seq_len = 64
schedule = "cosine"
warmup = 0.1
clip = 1.0
weight_decay = 0.0
eval_every = 20
eval_batches = 2

[parametrization]
scheme = "spectral"  # the default, by measurement (README: Which default)
optimizer = "adamw"

[sweep]
width = 64           # the proxy
trials = 28          # 8 lrs, then 12 settings of the constants, then the 8 lrs again
sampler = "tpe"      # samples the constants in the staged recipe's second phase
recipe = "staged"    # lr grid -> constants at the best lr -> lr grid at the best constants
pruner = "none"      # a pruned trial has no final loss for the transfer's quadratic fit
seed = 0

[sweep.space]
# lr = 2^-11 ... 2^-4, wide enough for SP's optimum at the target too (the compare step)
# (batch-size laws need >= 3 batch sizes: see sweeps/gpt-pycorpus.toml)
lr = [0.00048828125, 0.0009765625, 0.001953125, 0.00390625, 0.0078125, 0.015625, 0.03125, 0.0625]
# the free constants, tuned on the proxy and carried unchanged to the target (scaling.md section 8)
init_input = { low = 0.0625, high = 64.0, log = true }
init_output = { low = 0.0625, high = 16.0, log = true }
output_mult = { low = 0.25, high = 16.0, log = true }
lr_output = { low = 0.125, high = 8.0, log = true }
'''

# The smoke size: every step in about a second (a 1-block GPT on 16-byte windows, 6 steps).
SMOKE = {"name": "quickstart-smoke", "model.width": 64, "model.base_width": 16,
         "model.kwargs": {"depth": 1}, "train.steps": 6, "train.batch_size": 4,
         "train.seq_len": 16, "train.eval_every": 3, "train.eval_batches": 1,
         "sweep.width": 16, "sweep.trials": 10, "sweep.pruner": "none",
         "sweep.space": {"lr": [2.0 ** -8, 2.0 ** -6, 2.0 ** -4, 2.0 ** -2],
                         "output_mult": {"low": 0.5, "high": 2.0, "log": True}}}
# Per size: coordinate-check seeds and steps, validation and compare seeds.
SIZES = {"full": {"coord_seeds": 3, "coord_steps": 5, "seeds": 1, "compare_seeds": 2},
         "smoke": {"coord_seeds": 1, "coord_steps": 2, "seeds": 1, "compare_seeds": 1}}


def register(subparsers) -> None:
    p = add_command(
        subparsers, "quickstart",
        help="run the whole path on a small GPT (minutes on a CPU) and write the report",
        description="Coordinate check at 4 widths, an Optuna sweep of the proxy (lr and muP's "
                    "constants), the transfer to 4x its width, the target trained with the plan, lr "
                    "landscapes at 3 widths (SP vs the default), SP tuned at the target against the "
                    "transfer, "
                    "and the report "
                    "<out>/quickstart/index.md, all on the quickstart experiment (a 2-block GPT on "
                    "Python's standard library). About 4 minutes on 2 CPU cores; resumable.")
    p.add_argument("--out", default="reports", help="reports folder")
    p.add_argument("--smoke", action="store_true",
                   help="seconds instead of minutes (also MUTRANSFER_SMOKE=1); for tests")
    add_device(p)
    p.set_defaults(func=run)


def run(args) -> int:
    smoke = args.smoke or os.environ.get("MUTRANSFER_SMOKE", "") not in ("", "0")
    path = quickstart(args.out, smoke=smoke, device=args.device)
    print(f"\nThe report is in {path}")
    return 0


def quickstart_config(smoke: bool = False):
    """The quickstart experiment (``sweeps/quickstart.toml``, else the embedded copy), at the
    smoke size when ``smoke``.

        >>> quickstart_config(smoke=True).train.steps
        6
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    import mutransfer

    from mutransfer.runs import ExperimentConfig, load_config

    shipped = Path(mutransfer.__file__).resolve().parent.parent / "sweeps" / "quickstart.toml"
    if shipped.is_file():
        cfg = load_config(shipped)
    else:
        cfg = ExperimentConfig.from_dict(tomllib.loads(QUICKSTART_TOML), "quickstart (embedded)")
    return cfg.override(SMOKE) if smoke else cfg


def quickstart(out: str | Path = "reports", *, smoke: bool = False, device: str = "auto") -> Path:
    """Run the seven steps into ``<out>/<name>/`` and return the report's path.

        >>> quickstart("reports")
        PosixPath('reports/quickstart/index.md')
    """
    from mutransfer.cli import compare, train
    from mutransfer.projection import pipeline
    from mutransfer.runs import to_toml
    from mutransfer.validation import plot_transfer, validate, write_report

    cfg = quickstart_config(smoke)
    size = SIZES["smoke" if smoke else "full"]
    folder = Path(out) / cfg.name
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.toml"  # the resolved experiment every step (and the report) reads
    config.write_text(to_toml(cfg.to_dict()))
    proxy, target = cfg.sweep.width, cfg.model.width
    start = time.perf_counter()

    _step("1", f"coordinate check at widths {[proxy // 2, proxy, 2 * proxy, 4 * proxy]}", start)
    _coord_check(cfg, config, [proxy // 2, proxy, 2 * proxy, 4 * proxy], size, folder)
    _step("2-4", f"proxy sweep at width {proxy}, transfer to width {target}, the target trained "
                 f"with the plan", start)
    run = pipeline(cfg, target, device=device, reports_dir=out)  # writes plan.json
    plot_transfer(run.plan, folder / "plan.png")
    print(run.plan.summary())
    train_out = folder / f"train-w{target}"
    train.report(cfg, run.plan, run.target, target, train_out,
                 train.command_line(config, run.plan_json, target, train_out))
    p = cfg.parametrization
    widths = sorted({proxy, 2 * proxy, target})
    schemes = list(dict.fromkeys(["sp", p.scheme]))
    _step("5", f"lr landscapes at widths {widths}, {' vs '.join(schemes)}", start)
    # the sweep's lr grid: SP's curve at the target is then the compare step's sp-direct arm
    log2_lrs = [math.log2(lr) for lr in cfg.sweep.space["lr"]]
    validate(config, widths=widths, schemes=schemes, optimizers=[p.optimizer], log2_lrs=log2_lrs,
             seeds=size["seeds"], device=device, reports_dir=out)
    _step("6", f"SP tuned at width {target} against the transfer (lr; lr and constants)", start)
    compare.run_compare(config, seeds=size["compare_seeds"], device=device, reports=out, reuse=True)
    _step("7", "report", start)
    return write_report(config, out)


def _step(n: str, what: str, start: float) -> None:
    print(f"\n[{n}/7] {what} ({time.perf_counter() - start:.0f} s so far)", flush=True)


def _coord_check(cfg, config: Path, widths: list[int], size: dict, folder: Path) -> None:
    """Step 1: SP against the config's scheme; coord.csv/png/md with the command that reruns it."""
    from mutransfer.cli.coord_check import command_line
    from mutransfer.validation import config_coord_check, coord_verdict, write_coord_report

    schemes = list(dict.fromkeys(["sp", cfg.parametrization.scheme]))
    begin = time.perf_counter()
    df, settings = config_coord_check(cfg, widths, schemes=schemes, steps=size["coord_steps"],
                                      seeds=size["coord_seeds"])
    verdict = coord_verdict(df)
    command = command_line(str(config), widths=widths, schemes=schemes, steps=size["coord_steps"],
                           seeds=size["coord_seeds"], out=str(folder))
    write_coord_report(df, verdict, folder, command, settings=settings,
                       seconds=time.perf_counter() - begin)
    print(verdict)
