"""optim: the step time of plan.optimizer() against plain torch AdamW, and of our Muon against
torch.optim.Muon, on the same matrices."""
from __future__ import annotations

import argparse
import functools
import sys

import pandas as pd
import torch

from mutransfer.bench._timing import interleaved_medians
from mutransfer.optim import Muon, default_ns_dtype


def gpt_hidden_shapes(width: int, depth: int = 2) -> list[tuple[int, int]]:
    """The (out, in) shapes of a GPT's hidden matrices: q, k, v, o, fc (4x) and proj per block.

        >>> gpt_hidden_shapes(256, depth=1)
        [(256, 256), (256, 256), (256, 256), (256, 256), (1024, 256), (256, 1024)]
    """
    block = [(width, width)] * 4 + [(4 * width, width), (width, 4 * width)]
    return block * depth


def _matrices_with_grads(shapes, device, seed=0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.randn(shape, generator=g).to(device).requires_grad_()
        p.grad = torch.randn(shape, generator=g).to(device)
        params.append(p)
    return params


def _groups_by_alpha(params) -> list[dict]:
    """One param group per keller alpha sqrt(max(1, out/in)), as a Plan groups them."""
    groups: dict[float, list] = {}
    for p in params:
        groups.setdefault(max(1.0, p.shape[0] / p.shape[1]) ** 0.5, []).append(p)
    return [{"params": ps, "alpha": alpha} for alpha, ps in groups.items()]


def muon_step_times(shapes, repeats: int = 20, device="cpu", lr: float = 0.02,
                    weight_decay: float = 0.01) -> pd.DataFrame:
    """Step time of our Muon (auto and fp32 Newton-Schulz) against torch.optim.Muon.

    Both get the keller rule (ours via alpha = sqrt(max(1, out/in))), the same matrices and grads.

        >>> bool(muon_step_times([(32, 32)], repeats=2)["ratio"].notna().all())
        True
    """
    device = torch.device(device)
    theirs = torch.optim.Muon(_matrices_with_grads(shapes, device), lr=lr,
                              weight_decay=weight_decay, adjust_lr_fn="original")
    variants = {"torch.optim.Muon (bf16)": theirs.step}
    auto = default_ns_dtype(device)
    for label, dtype in ((f"mutransfer Muon (auto={str(auto)[6:]})", None),
                         ("mutransfer Muon (fp32)", torch.float32)):
        groups = _groups_by_alpha(_matrices_with_grads(shapes, device))
        variants[label] = Muon(groups, lr=lr, weight_decay=weight_decay, ns_dtype=dtype).step
    medians = interleaved_medians(variants, repeats, device)
    base = medians["torch.optim.Muon (bf16)"]
    rows = [{"benchmark": "muon step", "variant": name, "ms": 1e3 * t, "ratio": t / base,
             "target": "<= 1.0" if name.startswith("mutransfer") else ""}
            for name, t in medians.items()]
    return pd.DataFrame(rows)


def plan_adamw_step_times(repeats: int = 20, device="cpu", width: int = 256,
                          base_width: int = 64, lr: float = 1e-3,
                          weight_decay: float = 0.1) -> pd.DataFrame:
    """Step time of ``plan.optimizer()`` (muP AdamW groups) against one plain torch AdamW group.

    Same GPT (``mutransfer.zoo.gpt``, depth 2), same parameters and gradients, same lr, betas,
    eps and weight decay.

        >>> bool(plan_adamw_step_times(repeats=2, width=64, base_width=32)["ratio"].iloc[-1] > 0)
        True
    """
    from mutransfer.models import zoo
    from mutransfer.core import parametrize

    device = torch.device(device)
    plan = parametrize(functools.partial(zoo.gpt, depth=2), width=width, base_width=base_width,
                       optimizer="adamw")
    model = plan.model.to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    ours = plan.optimizer(lr, weight_decay=weight_decay, betas=(0.9, 0.95), eps=1e-8)
    plain = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                              betas=(0.9, 0.95), eps=1e-8)
    medians = interleaved_medians({"torch.optim.AdamW": plain.step, "plan.optimizer()": ours.step},
                                  repeats, device)
    base = medians["torch.optim.AdamW"]
    label = f"AdamW step, gpt w{width} (base {base_width}), {len(ours.param_groups)} groups"
    return pd.DataFrame([{"benchmark": label, "variant": name, "ms": 1e3 * t, "ratio": t / base,
                          "target": "<= 1.02" if name == "plan.optimizer()" else ""}
                         for name, t in medians.items()])


def bench_optim(args: argparse.Namespace) -> pd.DataFrame:
    """The optim benchmark: plan.optimizer() vs torch AdamW, then our Muon vs torch's on the
    hidden matrices of the depth-2 GPT at the base width and at the width."""
    tables = []
    try:
        tables.append(plan_adamw_step_times(args.repeats, args.device, args.width, args.base_width))
    except ModuleNotFoundError as err:  # the model zoo or parametrize is not installed yet
        print(f"skipped the plan.optimizer() benchmark: {err}", file=sys.stderr)
    for width in sorted({args.base_width, args.width}):  # overhead-bound and compute-bound sizes
        table = muon_step_times(gpt_hidden_shapes(width, depth=2), args.repeats, args.device)
        tables.append(table.assign(benchmark=f"Muon step, gpt w{width} hidden matrices"))
    return pd.concat(tables, ignore_index=True)


def optim_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=256, help="GPT width (default 256)")
    parser.add_argument("--base-width", type=int, default=64, help="muP base width (default 64)")
