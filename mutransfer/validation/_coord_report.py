"""The coordinate check of an experiment config and its report: ``coord.csv``, ``coord.png`` and
``coord.md`` (the verdict, the worst fits and the command that regenerates them). ``mutransfer
coord-check`` and the quickstart both call these.

    >>> df, settings = config_coord_check(cfg, [32, 64, 128], schemes=["sp", "spectral"])
    >>> write_coord_report(df, coord_verdict(df), "reports/quickstart", "mutransfer coord-check ...", settings=settings)
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from mutransfer.core import OPTIMIZER_RULES
from mutransfer.runs import ExperimentConfig
from mutransfer.validation._coord_check import coord_check
from mutransfer.validation._fig_coord import plot_coord_check
from mutransfer.validation._markdown import markdown_table

# Base lrs at which SP visibly blows up within 5 steps while muP stays flat on the zoo models
# (measured: mutransfer coord-check --model mutransfer.zoo:gpt / zoo:mlp --data synthetic).
# Each optimizer's demo lr, from its record (OptimizerRule.demo_lr).
DEFAULT_LR = {name: rule.demo_lr for name, rule in OPTIMIZER_RULES.items()}
DEFAULT_ADAM_LR = 3e-3  # Muon's AdamW groups (embeddings, readout, vectors)


def coord_batches(cfg: ExperimentConfig, data, steps: int) -> list:
    """The ``steps`` training batches every width sees (seeded: the same at every width)."""
    import torch

    g = torch.Generator().manual_seed(0)
    seq_len = None if cfg.data.source == "synthetic" else cfg.train.seq_len
    return [data.batch("train", cfg.train.batch_size, seq_len, g) for _ in range(steps)]


def config_coord_check(cfg: ExperimentConfig, widths: Sequence[int], *,
                       schemes: Sequence[str] = ("sp", "mup"), optimizer: str | None = None,
                       lr: float | None = None, adam_lr: float | None = None, steps: int = 5,
                       seeds: int = 3, constants: Mapping[str, float] | None = None
                       ) -> tuple[pd.DataFrame, str]:
    """(records, settings): :func:`coord_check` of the config's model and data at ``widths``
    for each scheme, concatenated, and one line saying what ran.

    ``optimizer`` defaults to the config's, ``lr`` to :data:`DEFAULT_LR` of it (Muon's AdamW
    groups at ``adam_lr``, default :data:`DEFAULT_ADAM_LR`); ``constants`` go over the config's
    (muP schemes only).

        >>> df, settings = config_coord_check(cfg, [32, 64, 128], schemes=["sp", "spectral"], seeds=1)
        >>> coord_verdict(df).passed
    """
    from mutransfer.models import zoo
    from mutransfer.runs import config_factory, make_dataset

    if len(widths) < 2 or steps < 1 or seeds < 1:
        raise ValueError(f"need >= 2 widths, steps >= 1 and seeds >= 1; got widths={list(widths)}, "
                         f"steps={steps}, seeds={seeds}")
    p = cfg.parametrization
    optimizer = optimizer or p.optimizer
    if optimizer not in DEFAULT_LR:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {', '.join(DEFAULT_LR)}")
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    opt_kwargs = {"adam_lr": adam_lr or DEFAULT_ADAM_LR} if OPTIMIZER_RULES[optimizer].side else {}
    data = make_dataset(cfg.data)
    batches = coord_batches(cfg, data, steps)
    factory = config_factory(cfg, zoo.load_factory(cfg.model.factory))
    constants = {**p.constants, **(constants or {})}
    frames = [coord_check(factory, widths, batches, scheme=s, optimizer=optimizer, lr=lr,
                          steps=steps, seeds=range(seeds), data=data,
                          muon_scale=p.muon_scale, optimizer_kwargs=opt_kwargs,
                          plan_kwargs={"readout": p.readout, "output_mult": p.output_mult,
                                       **({"constants": constants} if constants and s != "sp" else {})})
              for s in schemes]
    settings = (f"Model `{cfg.model.factory}` {dict(cfg.model.kwargs)}, data `{cfg.data.source}`, "
                f"batch {cfg.train.batch_size}, widths {list(widths)}, seeds {seeds}, "
                f"steps {steps}, optimizer {optimizer}, lr {lr:g} {opt_kwargs or ''}")
    return pd.concat(frames, ignore_index=True), settings


def write_coord_report(df: pd.DataFrame, verdict, folder: str | Path, command: str, *,
                       settings: str = "", seconds: float | None = None) -> Path:
    """``coord.csv`` (the records), ``coord.png`` (RMS against width) and ``coord.md`` (PASS or
    FAIL, the verdict's table, the worst fits per scheme, and ``command`` to regenerate) in
    ``folder``; returns coord.md's path.

        >>> write_coord_report(df, coord_verdict(df), "reports/quickstart", "mutransfer coord-check x.toml")
        PosixPath('reports/quickstart/coord.md')
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / "coord.csv", index=False)
    plot_coord_check(df, folder / "coord.png", verdict=verdict)
    worst = verdict.worst.drop(columns=["optimizer", "rms_min", "rms_max"]).round(3)
    took = f" ({seconds:.0f} s)" if seconds is not None else ""
    path = folder / "coord.md"
    path.write_text("\n".join([
        f"# Coordinate check: {'PASS' if verdict.passed else 'FAIL'}", "", settings, "",
        *markdown_table(verdict.table()), "", verdict.explanation, "",
        "![coordinate check](coord.png)", "", "## Worst fits per scheme", "",
        *markdown_table(worst), "", f"Regenerate{took}:", "", "```", command, "```", ""]))
    return path
