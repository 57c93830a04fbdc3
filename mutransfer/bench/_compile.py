"""compile: the training-step time of a parametrized zoo GPT under ``torch.compile`` against eager."""
from __future__ import annotations

import argparse
import functools
import time

import pandas as pd
import torch

from mutransfer.bench._timing import interleaved_medians, step_lr
from mutransfer.core import OPTIMIZER_RULES


def compile_step_times(repeats: int = 20, device="cpu", width: int = 256, depth: int = 2,
                       batch_size: int = 16, seq_len: int = 128, backend: str = "inductor",
                       optimizer: str = "adamw") -> pd.DataFrame:
    """Median training-step time (forward, backward, the plan's optimizer step) of the zoo GPT,
    parametrized with its readout multiplier and QK-Clip-free, eager against
    ``torch.compile(model, backend=backend)`` on the same init and batch.

    ``ratio = compiled / eager`` (below 1: compiling pays); ``compile_s`` is the first compiled
    step's time (tracing and code generation, once per process). The optimizer runs at
    :func:`step_lr` (AdamW 1e-3, Muon 0.02).

        >>> table = compile_step_times(repeats=2, width=32, seq_len=16, batch_size=2, backend="eager")
        >>> list(table["variant"])
        ['eager', 'compiled (eager)']
    """
    from mutransfer.core import parametrize
    from mutransfer.models import zoo
    from mutransfer.training.data import pycorpus

    device = torch.device(device)
    x, y = pycorpus().batch("train", batch_size, seq_len, torch.Generator().manual_seed(0), device)

    def variant(compiled: bool):
        torch.manual_seed(0)
        plan = parametrize(functools.partial(zoo.gpt, depth=depth, seq_len=seq_len), width=width,
                           base_width=min(64, width), optimizer=optimizer, readout="multiplier")
        model = plan.model.to(device)
        if compiled:
            model = torch.compile(model, backend=backend)
        opt = plan.optimizer(step_lr(optimizer), model=model)

        def step():
            loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    eager, compiled = variant(False), variant(True)
    start = time.perf_counter()
    compiled()  # tracing and code generation happen here
    compile_s = time.perf_counter() - start
    medians = interleaved_medians({"eager": eager, "compiled": compiled}, repeats, device)
    what = f"train step, gpt w{width} d{depth}, batch {batch_size}x{seq_len}, {optimizer}"
    return pd.DataFrame([
        {"benchmark": what, "variant": "eager", "ms": 1e3 * medians["eager"], "ratio": 1.0,
         "compile_s": 0.0},
        {"benchmark": what, "variant": f"compiled ({backend})", "ms": 1e3 * medians["compiled"],
         "ratio": medians["compiled"] / medians["eager"], "compile_s": compile_s}])


def bench_compile(args: argparse.Namespace) -> pd.DataFrame:
    """Compiled against eager step times (medians), per width."""
    return pd.concat([compile_step_times(args.repeats, args.device, width, args.depth,
                                         args.batch_size, args.seq_len, args.backend, args.optimizer)
                      for width in args.widths], ignore_index=True)


def compile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256],
                        help="model widths (default 128 256)")
    parser.add_argument("--depth", type=int, default=2, help="transformer blocks (default 2)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (128)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per step (16)")
    parser.add_argument("--backend", default="inductor",
                        help="torch.compile backend (default inductor; eager and aot_eager check "
                             "the plumbing quickly)")
    parser.add_argument("--optimizer", choices=tuple(OPTIMIZER_RULES), default="adamw",
                        help="the plan's optimizer (default adamw), at its step_lr")
