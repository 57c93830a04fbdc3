"""gpt: training tokens/s of the zoo GPT across widths."""
from __future__ import annotations

import argparse

import pandas as pd
import torch

from mutransfer.bench._timing import interleaved_medians


def gpt_tokens_per_second(widths, repeats: int = 5, device="cpu", depth: int = 2,
                          seq_len: int = 128, batch_size: int = 32) -> pd.DataFrame:
    """Training throughput (forward + backward + AdamW step) of ``zoo.gpt`` per width.

    tokens/s = batch_size * seq_len / median step seconds.

        >>> table = gpt_tokens_per_second([32], repeats=2, seq_len=16, batch_size=4)
        >>> bool(table["tokens_per_s"].min() > 0)
        True
    """
    from mutransfer.models import zoo

    device = torch.device(device)
    rows = []
    for width in widths:
        torch.manual_seed(0)
        model = zoo.gpt(width, depth=depth, seq_len=seq_len).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
        ids = torch.randint(0, 256, (batch_size, seq_len + 1), device=device)

        def train_step():
            logits = model(ids[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        seconds = interleaved_medians({"step": train_step}, repeats, device, warmup=2)["step"]
        n_params = sum(p.numel() for p in model.parameters())
        rows.append({"width": width, "params": n_params, "ms_per_step": 1e3 * seconds,
                     "tokens_per_s": batch_size * seq_len / seconds})
    return pd.DataFrame(rows)


def bench_gpt(args: argparse.Namespace) -> pd.DataFrame:
    """The gpt benchmark: tokens/s of zoo.gpt training steps at each of ``--widths``."""
    return gpt_tokens_per_second(args.widths, args.repeats, args.device, depth=args.depth,
                                 seq_len=args.seq_len, batch_size=args.batch_size)


def gpt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024],
                        help="model widths (default 64 128 256 512 1024)")
    parser.add_argument("--depth", type=int, default=2, help="transformer blocks (default 2)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (128)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per step (32)")
