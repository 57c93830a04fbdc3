"""roles: role inference (traced usage) on a Mixtral from config, and the whole parametrize on meta."""
from __future__ import annotations

import argparse
from collections.abc import Callable

import pandas as pd
import torch

from mutransfer.bench._timing import interleaved_medians


def _moe_factory(layers: int, experts: int) -> Callable[..., torch.nn.Module]:
    """A Mixtral (fused experts, the costliest suite architecture to trace) from config."""
    import transformers

    from mutransfer.models.hf import family

    transformers.logging.set_verbosity_error()
    cfg = transformers.MixtralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                     vocab_size=256, num_local_experts=experts,
                                     num_experts_per_tok=2, max_position_embeddings=128)

    def make(width: int) -> torch.nn.Module:
        return transformers.AutoModelForCausalLM.from_config(family(cfg, width))

    return make


def bench_roles(args: argparse.Namespace) -> pd.DataFrame:
    """Role inference on a Mixtral (the largest suite architecture) at ``--width``: infer_roles
    alone (traced on the real base) and the whole parametrize() on the meta device, medians."""
    from mutransfer.core import default_example
    from mutransfer.core import parametrize
    from mutransfer.core import infer_roles

    make = _moe_factory(args.layers, args.experts)
    with torch.device("meta"):
        model, delta = make(width=args.width), make(width=2 * args.base_width)
    base = make(width=args.base_width)
    example = default_example(base)
    fns = {"infer_roles": lambda: infer_roles(model, base, delta, example=example),
           "parametrize(meta)": lambda: parametrize(make, width=args.width, base_width=args.base_width,
                                                    device="meta")}
    medians = interleaved_medians(fns, args.repeats, torch.device("cpu"))
    n = sum(p.numel() for p in model.parameters())
    return pd.DataFrame([{"what": k, "width": args.width, "layers": args.layers, "experts": args.experts,
                          "params_M": n / 1e6, "median_s": v, "target": "< 2 s"} for k, v in medians.items()])


def roles_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=1024, help="the model's hidden size")
    parser.add_argument("--base-width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, default=8)
