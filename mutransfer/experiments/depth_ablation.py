"""Why Llama-style blocks drift in depth (issue 32, item 1; reports/depth-ablation/index.md).

The zoo GPT's block switched toward Llama's one part at a time (``mutransfer.zoo.gpt``'s ``norm``,
``mlp``, ``bias``, ``norm_gains`` and ``positions``), each measured as ``mutransfer validate`` measures depth:
lr landscapes at depths :data:`DEPTHS` against the config's base depth, under the depth rules
:data:`ALPHAS`, :data:`SEEDS` seeds, the lr grid of ``[sweep.space] lr``. A variant whose eta*
rises with depth (drift per doubling) reproduces the Llama's drift; one that does not, rules its
part out.

    python -m mutransfer.experiments.depth_ablation run     # every variant (resumable: one study each)
    python -m mutransfer.experiments.depth_ablation write   # index.md, ablation.png, ablation.csv

``--config`` (default ``sweeps/depth-ablation.toml``); runs are stored under ``<out>/runs/``
(default ``--out reports/depth-ablation``). The page is
:func:`mutransfer.validation.write_depth_ablation_report`.
"""
from __future__ import annotations

import math
from pathlib import Path

from mutransfer.experiments._cli import out_folder, parse
from mutransfer.runs import ExperimentConfig, load_config

CONFIG = "sweeps/depth-ablation.toml"
MODULE = "python -m mutransfer.experiments.depth_ablation"
DEPTHS, ALPHAS, SEEDS = (2, 8), (0.5,), 4
VARIANTS = {  # the zoo GPT's block, then one part of Llama's at a time, then Llama's three together
    "gpt": {}, "rms-norm": {"norm": "rms"}, "swiglu": {"mlp": "swiglu"}, "no-bias": {"bias": False},
    "fixed-norm-gains": {"norm_gains": False}, "llama-like": {"norm": "rms", "mlp": "swiglu", "bias": False},
    "rotary": {"positions": "rotary"}, "normal-init": {"init": "normal"},
    "llama-like-rotary": {"norm": "rms", "mlp": "swiglu", "bias": False, "positions": "rotary"},
    "llama-like-rotary-normal": {"norm": "rms", "mlp": "swiglu", "bias": False, "positions": "rotary",
                                 "init": "normal"},
    # the transformers Llama itself (the same function as llama-like-rotary: logits agree with shared weights)
    "transformers-llama": {"factory": "mutransfer.hf:causal_lm", "model_type": "llama"}}


def variant_config(cfg: ExperimentConfig, variant: str) -> ExperimentConfig:
    """The config of one variant: its block kwargs over the config's, named ``<name>-<variant>``
    (a variant's ``factory`` replaces the config's model factory)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; one of {sorted(VARIANTS)}")
    kwargs = dict(VARIANTS[variant])
    factory = kwargs.pop("factory", cfg.model.factory)
    return cfg.override({"name": f"{cfg.name}-{variant}", "model.factory": factory,
                         "model.kwargs": {**cfg.model.kwargs, **kwargs}})


def run_variant(cfg: ExperimentConfig, variant: str, runs: Path):
    """One variant's depth landscapes (``mutransfer.validation.validate`` across depth)."""
    from mutransfer.validation import validate

    vcfg = variant_config(cfg, variant)
    return validate(vcfg, widths=[cfg.sweep.width], schemes=[cfg.parametrization.scheme],
                    optimizers=[cfg.parametrization.optimizer],
                    log2_lrs=[math.log2(v) for v in cfg.sweep.space["lr"]], seeds=SEEDS, depths=list(DEPTHS),
                    depth_alphas=list(ALPHAS), reports_dir=runs, device="cpu")


def main(argv=None) -> int:
    from mutransfer.validation import write_depth_ablation_report

    args = parse(MODULE.removeprefix("python -m "), __doc__, ("run", "write"), argv, config=CONFIG)
    cfg = load_config(args.config)
    out = out_folder(args, cfg.name)
    if args.what == "run":
        for variant in VARIANTS:
            run_variant(cfg, variant, out / "runs")
    path = write_depth_ablation_report(out, {v: out / "runs" / variant_config(cfg, v).name / "depth.csv"
                                             for v in VARIANTS}, command=MODULE, variants=VARIANTS)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
