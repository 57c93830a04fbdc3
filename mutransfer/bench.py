"""Benchmarks: ``python -m mutransfer.bench {optim,gpt,coord,sweep,qkclip} [--repeats N] [--device cpu|cuda]``.

optim: the per-step time of ``plan.optimizer()`` against the plain torch AdamW on the same GPT
(target ratio <= 1.02), and our Muon against ``torch.optim.Muon`` on the same matrices (target
<= 1.0). gpt: training tokens/s of ``mutransfer.zoo.gpt`` across widths. coord: a full coordinate
check's wall time. sweep: the sweep harness's overhead over training. qkclip: the training-step
overhead of QK-Clip and of spectral weight decay. Each prints a table of
medians; the variants are timed in interleaved rounds so that load from other processes hits all
of them alike. Add a benchmark by adding an entry to ``BENCHMARKS``.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from mutransfer.optim import Muon, default_ns_dtype


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


def muonclip_step_times(repeats: int = 10, device="cpu", width: int = 256, depth: int = 2,
                        batch_size: int = 16, seq_len: int = 64, tau: float = 1e-3,
                        weight_decay: float = 0.1) -> pd.DataFrame:
    """Full training-step time (forward, backward, optimizer step and clip) of the zoo GPT with
    QK-Clip and with spectral weight decay, each against the same step without it.

    ``tau`` defaults tiny so that every head is clipped every step (the clip's worst case).

        >>> bool((muonclip_step_times(repeats=2, width=32, seq_len=16)["ratio"] > 0).all())
        True
    """
    from mutransfer.models import zoo
    from mutransfer.training.data import pycorpus
    from mutransfer.core import parametrize
    from mutransfer.optim import QKClip

    device = torch.device(device)
    x, y = pycorpus().batch("train", batch_size, seq_len, torch.Generator().manual_seed(0), device)

    def variant(optimizer: str, decay: str = "decoupled", clip: bool = False):
        plan = parametrize(functools.partial(zoo.gpt, depth=depth, seq_len=seq_len), width=width,
                           base_width=64, optimizer=optimizer, seed=0)
        model = plan.model.to(device)
        lr = 0.02 if optimizer == "muon" else 1e-3
        opt = plan.optimizer(lr, weight_decay=weight_decay, decay=decay)
        qk = QKClip(model, tau) if clip else None

        def step():
            loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if qk is not None:
                qk.clip_()
        return step

    variants = {("muon", "baseline"): variant("muon"),
                ("muon", "QK-Clip"): variant("muon", clip=True),
                ("muon", "spectral decay"): variant("muon", "spectral"),
                ("adamw", "baseline"): variant("adamw"),
                ("adamw", "QK-Clip"): variant("adamw", clip=True),
                ("adamw", "spectral decay"): variant("adamw", "spectral")}
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


def _qkclip_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512],
                        help="model widths (default 128 512)")
    parser.add_argument("--depth", type=int, default=2, help="transformer blocks (default 2)")


def _optim_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=256, help="GPT width (default 256)")
    parser.add_argument("--base-width", type=int, default=64, help="muP base width (default 64)")


def _gpt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024],
                        help="model widths (default 64 128 256 512 1024)")
    parser.add_argument("--depth", type=int, default=2, help="transformer blocks (default 2)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (128)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per step (32)")


def bench_sweep(args: argparse.Namespace) -> pd.DataFrame:
    """Sweep harness overhead over the training it runs, and trials per hour (medians)."""
    from mutransfer.tuning._sweep import bench_overhead

    from mutransfer.tuning import load_config

    trials = args.trials or load_config(args.config).sweep.trials
    runs = [bench_overhead(args.config, trials) for _ in range(args.repeats)]
    keys = ("overhead", "overhead_vs_bare", "trials_per_hour", "sweep_s", "train_s")
    row = {k: statistics.median(r[k] for r in runs) for k in keys}
    return pd.DataFrame([{"config": args.config, "trials": trials, **row, "target": "overhead <= 0.05"}])


def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="sweeps/quickstart.toml", help="experiment TOML")
    parser.add_argument("--trials", type=int, default=None,
                        help="trials per timed sweep (default: the config's [sweep] trials)")


def bench_coord(args: argparse.Namespace) -> pd.DataFrame:
    """Wall time of a full coordinate check of the zoo GPT (SP and muP), median of repeats."""
    from mutransfer.validation import coord_check
    from mutransfer.training.data import pycorpus
    from mutransfer.models.zoo import gpt

    data = pycorpus()
    gen = torch.Generator().manual_seed(0)
    batches = [data.batch("train", 8, 32, gen, "cpu") for _ in range(args.steps)]
    make = functools.partial(gpt, depth=args.depth, seq_len=32)

    def full_check():
        for scheme in ("sp", "mup"):
            coord_check(make, args.widths, batches, scheme=scheme, lr=3e-3, steps=args.steps,
                        seeds=tuple(range(args.seeds)), data=data)

    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        full_check()
        seconds.append(time.perf_counter() - start)
    return pd.DataFrame([{"widths": ",".join(map(str, args.widths)), "seeds": args.seeds,
                          "steps": args.steps, "schemes": "sp,mup", "median_s": statistics.median(seconds),
                          "target": "well under 60 s"}])


def _coord_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--depth", type=int, default=2)


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


def _roles_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=1024, help="the model's hidden size")
    parser.add_argument("--base-width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, default=8)


@dataclass(frozen=True)
class Benchmark:
    run: Callable[[argparse.Namespace], pd.DataFrame]
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    default_repeats: int


BENCHMARKS: dict[str, Benchmark] = {
    "optim": Benchmark(bench_optim, "optimizer step time: plan.optimizer() vs torch AdamW, "
                       "our Muon vs torch.optim.Muon", _optim_arguments, 30),
    "gpt": Benchmark(bench_gpt, "training tokens/s of mutransfer.zoo.gpt across widths",
                     _gpt_arguments, 5),
    "coord": Benchmark(bench_coord, "wall time of a full GPT coordinate check (SP and muP)",
                       _coord_arguments, 3),
    "sweep": Benchmark(bench_sweep, "sweep harness overhead vs training time, trials/hour",
                       _sweep_arguments, 3),
    "roles": Benchmark(bench_roles, "role inference (usage traced) on a Mixtral from config",
                       _roles_arguments, 5),
    "qkclip": Benchmark(bench_qkclip, "training-step overhead of QK-Clip and spectral weight "
                        "decay (MuonClip)", _qkclip_arguments, 10),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mutransfer.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, bench in BENCHMARKS.items():
        p = sub.add_parser(name, help=bench.help, description=bench.help)
        p.add_argument("--repeats", type=int, default=bench.default_repeats,
                       help="timed rounds; the table shows medians "
                            f"(default {bench.default_repeats})")
        p.add_argument("--device", choices=("cpu", "cuda"),
                       default="cuda" if torch.cuda.is_available() else "cpu",
                       help="where to run (default: cuda when available)")
        p.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's own choice)")
        bench.add_arguments(p)
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1; got {args.repeats}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark from the command line and print its table of medians."""
    args = build_parser().parse_args(argv)
    _check_args(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    table = BENCHMARKS[args.benchmark].run(args)
    print(f"# {args.benchmark}: medians of {args.repeats} rounds on {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
