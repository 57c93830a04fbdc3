"""Shared timing: interleaved medians, so load from other processes hits every variant alike."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


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
