"""qkclip: the training-step overhead of QK-Clip and of spectral weight decay (MuonClip)."""
from __future__ import annotations

import argparse
import functools

import pandas as pd
import torch

from mutransfer.bench._timing import interleaved_medians, step_lr
from mutransfer.core import OPTIMIZER_RULES, optimizer_rule

# the optimizers whose record can decay spectrally (AdamW by a hook, Muon natively): the ones timed
SPECTRAL_OPTIMIZERS = tuple(name for name, rule in OPTIMIZER_RULES.items() if rule.spectral_decay)


def muonclip_step_times(repeats: int = 10, device="cpu", width: int = 256, depth: int = 2,
                        batch_size: int = 16, seq_len: int = 64, tau: float = 1e-3,
                        weight_decay: float = 0.1, optimizers=SPECTRAL_OPTIMIZERS) -> pd.DataFrame:
    """Full training-step time (forward, backward, optimizer step and clip) of the zoo GPT with
    QK-Clip and with spectral weight decay, each against the same step without it.

    ``tau`` defaults tiny so that every head is clipped every step (the clip's worst case). Each of
    ``optimizers`` (default: every record with a ``spectral_decay``) runs at :func:`step_lr`.

        >>> bool((muonclip_step_times(repeats=2, width=32, seq_len=16)["ratio"] > 0).all())
        True
    """
    from mutransfer.models import zoo
    from mutransfer.training.data import pycorpus
    from mutransfer.core import parametrize
    from mutransfer.optim import QKClip

    plain = [name for name in optimizers if not optimizer_rule(name).spectral_decay]
    if plain:
        raise ValueError(f"optimizers {plain} have no spectral decay (their OptimizerRule's spectral_decay is "
                         f"None); time those with one: {', '.join(SPECTRAL_OPTIMIZERS)}")
    device = torch.device(device)
    x, y = pycorpus().batch("train", batch_size, seq_len, torch.Generator().manual_seed(0), device)

    def variant(optimizer: str, decay: str = "decoupled", clip: bool = False):
        plan = parametrize(functools.partial(zoo.gpt, depth=depth, seq_len=seq_len), width=width,
                           base_width=64, optimizer=optimizer, seed=0)
        model = plan.model.to(device)
        opt = plan.optimizer(step_lr(optimizer), weight_decay=weight_decay, decay=decay)
        qk = QKClip(model, tau) if clip else None

        def step():
            loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if qk is not None:
                qk.clip_()
        return step

    variants = {}
    for name in optimizers:
        variants.update({(name, "baseline"): variant(name), (name, "QK-Clip"): variant(name, clip=True),
                         (name, "spectral decay"): variant(name, "spectral")})
    medians = interleaved_medians({f"{o}|{v}": fn for (o, v), fn in variants.items()}, repeats,
                                  device)
    rows = []
    for (opt, name), _ in variants.items():
        t, base = medians[f"{opt}|{name}"], medians[f"{opt}|baseline"]
        rows.append({"benchmark": f"train step, gpt w{width} d{depth}, batch {batch_size}x{seq_len}",
                     "optimizer": opt, "variant": name, "ms": 1e3 * t, "ratio": t / base})
    return pd.DataFrame(rows)


def bench_qkclip(args: argparse.Namespace) -> pd.DataFrame:
    """Step-time overhead of QK-Clip and spectral decay (medians, per width)."""
    return pd.concat([muonclip_step_times(args.repeats, args.device, width, args.depth)
                      for width in args.widths], ignore_index=True)


def qkclip_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512],
                        help="model widths (default 128 512)")
    parser.add_argument("--depth", type=int, default=2, help="transformer blocks (default 2)")
