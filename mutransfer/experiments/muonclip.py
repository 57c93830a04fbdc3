"""The MuonClip report (reports/muonclip/): QK-Clip and spectral weight decay, measured on CPU.

Zoo GPT (depth 2) on pycorpus with the training setup of ``sweeps/gpt-cpu.toml`` (batch 16 x
seq 64, cosine schedule, muP + Muon, AdamW groups at adam_lr 0.008; ``--config``). Each part
trains, writes a CSV under ``--out`` (default ``reports/muonclip``) and is cheap enough for one
locked CPU command; ``write`` draws the figures and ``index.md`` from the CSVs only
(:func:`mutransfer.validation.write_muonclip_report`).

    python -m mutransfer.experiments.muonclip logits     # max logit with / without QK-Clip
    python -m mutransfer.experiments.muonclip decay      # spectral vs decoupled decay
    python -m mutransfer.experiments.muonclip transfer   # lr landscapes with / without QK-Clip
    python -m mutransfer.experiments.muonclip write      # figures + index.md
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from mutransfer.experiments._cli import out_folder, parser
from mutransfer.runs import ExperimentConfig, load_config

CONFIG, OUT = "sweeps/gpt-cpu.toml", "reports/muonclip"  # resolved against the current directory
MODULE = "python -m mutransfer.experiments.muonclip"
# The defaults each part runs with (the report's commands repeat them).
LOGIT_WIDTHS, LOGIT_LOG2_LRS, TAU = (128, 512), (-2.0, 0.0), 10.0
DECAY_WIDTHS, DECAY_LOG2_LR, DECAY_WD, DECAY_SEEDS = (128, 256), -4.0, 0.5, (0, 1)
TRANSFER_WIDTHS, TRANSFER_LOG2_LRS = (64, 128, 256), (-6.0, -5.0, -4.0, -3.0, -2.0, -1.0)
STEPS = 80


def base_config(steps: int = STEPS, config: str | Path = CONFIG) -> ExperimentConfig:
    """``config`` (gpt-cpu.toml) with muP + Muon, evaluating every 10 steps."""
    return load_config(config, {"parametrization.optimizer": "muon", "parametrization.scheme": "mup",
                                "train.steps": steps, "train.eval_every": 10})


# ---------------------------------------------------------------------- part 1: logits
def run_logits(widths=LOGIT_WIDTHS, log2_lrs=LOGIT_LOG2_LRS, tau: float = TAU,
               steps: int = STEPS, config: str | Path = CONFIG) -> pd.DataFrame:
    """Per-step history (max_logit, losses) of each (width, lr, clip on/off), seed 0."""
    from mutransfer.runs import run_trial

    frames = []
    for width in widths:
        for log2_lr in log2_lrs:
            for clip in (None, tau):
                cfg = base_config(steps, config).override({"train.qk_clip": clip, "train.log_max_logit": True})
                res = run_trial(cfg, {"lr": 2.0 ** log2_lr}, width=width, device="cpu", seed=0)
                h = res.history.assign(width=width, log2_lr=log2_lr, tau=clip or math.nan,
                                       diverged=res.diverged, final_loss=res.final_loss)
                frames.append(h)
                print(f"w{width} lr 2^{log2_lr:g} tau {clip}: final {res.final_loss:.4f}, "
                      f"max logit {h.max_logit.max():.1f}, diverged {res.diverged}", flush=True)
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------- part 2: decay
def run_decay(widths=DECAY_WIDTHS, log2_lr: float = DECAY_LOG2_LR, wd: float = DECAY_WD,
              seeds=DECAY_SEEDS, steps: int = STEPS, config: str | Path = CONFIG) -> pd.DataFrame:
    """sigma1(W_q of block 0) at every eval, final loss and seconds per step, per (width,
    decay, seed), at equal weight decay ``wd`` (fixed_product policy); decay "none" is the
    same run with weight_decay 0, the reference both kinds are compared with."""
    import torch

    from mutransfer.models import zoo
    from mutransfer.runs import config_factory, make_dataset
    from mutransfer.core import parametrize
    from mutransfer.training import train

    cfg = base_config(steps, config)
    t, rows = cfg.train, []
    for width in widths:
        for seed in seeds:
            for decay in ("none", "decoupled", "spectral"):
                torch.manual_seed(seed)
                plan = parametrize(config_factory(cfg, zoo.gpt), width=width,
                                   base_width=cfg.model.base_width, optimizer="muon", seed=seed)
                opt = plan.optimizer(2.0 ** log2_lr, weight_decay=0.0 if decay == "none" else wd,
                                     adam_lr=t.adam_lr, betas=t.betas,
                                     decay="decoupled" if decay == "none" else decay)
                w_q = plan.model.blocks[0].attn.q.weight
                sigmas = [(0, float(torch.linalg.matrix_norm(w_q.detach(), ord=2)))]

                def track(step, loss, w_q=w_q, sigmas=sigmas):
                    sigmas.append((step, float(torch.linalg.matrix_norm(w_q.detach(), ord=2))))

                res = train(plan.model, opt, make_dataset(cfg.data), steps=steps,
                            batch_size=t.batch_size, seq_len=t.seq_len, warmup=t.warmup,
                            device="cpu", eval_every=t.eval_every, eval_batches=t.eval_batches,
                            seed=seed, callback=track)
                per_step = res.seconds / res.steps
                rows += [{"width": width, "seed": seed, "decay": decay, "step": s, "sigma1": v,
                          "final_loss": res.final_loss, "seconds_per_step": per_step}
                         for s, v in sigmas]
                print(f"w{width} seed {seed} {decay}: final {res.final_loss:.4f}, sigma1 "
                      f"{sigmas[0][1]:.2f} -> {sigmas[-1][1]:.2f}, {1e3 * per_step:.0f} ms/step",
                      flush=True)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- part 3: transfer
def run_transfer(widths=TRANSFER_WIDTHS, log2_lrs=TRANSFER_LOG2_LRS, tau: float = TAU,
                 steps: int = STEPS, config: str | Path = CONFIG, out: str | Path = OUT) -> pd.DataFrame:
    """The lr landscape (``mutransfer.validate``) of muP + Muon with and without QK-Clip, its
    studies and reports under ``out/landscapes``."""
    from mutransfer.validation import validate

    frames = []
    for clip in (None, tau):
        name = "muonclip-none" if clip is None else f"muonclip-tau{clip:g}"
        cfg = dataclasses.replace(base_config(steps, config).override({"train.qk_clip": clip}), name=name)
        df = validate(cfg, widths=widths, schemes=["mup"], optimizers=["muon"], log2_lrs=log2_lrs,
                      seeds=1, steps=steps, device="cpu", reports_dir=Path(out) / "landscapes",
                      show_progress=False)
        frames.append(df.assign(qk_clip="off" if clip is None else f"tau = {clip:g}"))
    return pd.concat(frames, ignore_index=True)



def main(argv=None) -> int:
    """``python -m mutransfer.experiments.muonclip {logits,decay,transfer,write}``."""
    from mutransfer.validation import write_muonclip_report

    p = parser(MODULE.removeprefix("python -m "), __doc__, ("logits", "decay", "transfer", "write"),
               config=CONFIG, out=OUT)
    p.add_argument("--steps", type=int, default=STEPS, help=f"steps per run ({STEPS})")
    args = p.parse_args(argv)
    out = out_folder(args)
    if args.what != "write":
        extra = {"out": out} if args.what == "transfer" else {}
        runs = {"logits": run_logits, "decay": run_decay, "transfer": run_transfer}
        runs[args.what](steps=args.steps, config=args.config, **extra).to_csv(out / f"{args.what}.csv", index=False)
        print(f"wrote {out / (args.what + '.csv')}")
    print(f"wrote {write_muonclip_report(out, decay_log2_lr=DECAY_LOG2_LR, decay_wd=DECAY_WD, command=MODULE)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
