"""Shared timing: interleaved medians, so load from other processes hits every variant alike."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from mutransfer.core import optimizer_rule

# The lr the step-time benchmarks (compile, qkclip) have always run AdamW at; its record's demo_lr
# (3e-3) is the coordinate check's. Every other optimizer runs at its record's demo_lr (Muon 0.02).
STEP_LRS = {"adamw": 1e-3}


def step_lr(optimizer: str) -> float:
    """The lr a step-time benchmark runs ``optimizer`` at: :data:`STEP_LRS`, else its record's
    ``demo_lr`` (:data:`mutransfer.core.OPTIMIZER_RULES`); a ValueError for an unknown name.

        >>> step_lr("muon"), step_lr("adamw")
        (0.02, 0.001)
    """
    rule = optimizer_rule(optimizer)
    return STEP_LRS.get(rule.name, rule.demo_lr)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, device,
                        warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, timed in ``repeats`` interleaved rounds.

        >>> interleaved_medians({"noop": lambda: None}, repeats=3, device="cpu")["noop"] < 1e-3
        True
    """
    device = torch.device(device)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        names = list(fns)
        names = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in names:
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}
