"""The MuonClip report (reports/muonclip/): QK-Clip and spectral weight decay, measured on CPU.

Zoo GPT (depth 2) on pycorpus with the training setup of ``sweeps/gpt-cpu.toml`` (batch 16 x
seq 64, cosine schedule, muP + Muon, AdamW groups at adam_lr 0.008). Each part trains, writes a
CSV under ``reports/muonclip/`` and is cheap enough for one locked CPU command; ``write`` draws
the figures and ``index.md`` from the CSVs only.

    python -m mutransfer.experiments.muonclip logits     # max logit with / without QK-Clip
    python -m mutransfer.experiments.muonclip decay      # spectral vs decoupled decay
    python -m mutransfer.experiments.muonclip transfer   # lr landscapes with / without QK-Clip
    python -m mutransfer.experiments.muonclip write      # figures + index.md
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import pandas as pd

from mutransfer.runs import ExperimentConfig, load_config

CONFIG = Path(__file__).resolve().parents[2] / "sweeps" / "gpt-cpu.toml"
OUT = Path("reports/muonclip")
MODULE = "python -m mutransfer.experiments.muonclip"
# The defaults each part runs with (the report's commands repeat them).
LOGIT_WIDTHS, LOGIT_LOG2_LRS, TAU = (128, 512), (-2.0, 0.0), 10.0
DECAY_WIDTHS, DECAY_LOG2_LR, DECAY_WD, DECAY_SEEDS = (128, 256), -4.0, 0.5, (0, 1)
TRANSFER_WIDTHS, TRANSFER_LOG2_LRS = (64, 128, 256), (-6.0, -5.0, -4.0, -3.0, -2.0, -1.0)
STEPS = 80


def base_config(steps: int = STEPS) -> ExperimentConfig:
    """gpt-cpu.toml with muP + Muon, evaluating every 10 steps."""
    return load_config(CONFIG, {"parametrization.optimizer": "muon", "parametrization.scheme": "mup",
                                "train.steps": steps, "train.eval_every": 10})


# ---------------------------------------------------------------------- part 1: logits
def run_logits(widths=LOGIT_WIDTHS, log2_lrs=LOGIT_LOG2_LRS, tau: float = TAU,
               steps: int = STEPS) -> pd.DataFrame:
    """Per-step history (max_logit, losses) of each (width, lr, clip on/off), seed 0."""
    from mutransfer.runs import run_trial

    frames = []
    for width in widths:
        for log2_lr in log2_lrs:
            for clip in (None, tau):
                cfg = base_config(steps).override({"train.qk_clip": clip, "train.log_max_logit": True})
                res = run_trial(cfg, {"lr": 2.0 ** log2_lr}, width=width, device="cpu", seed=0)
                h = res.history.assign(width=width, log2_lr=log2_lr, tau=clip or math.nan,
                                       diverged=res.diverged, final_loss=res.final_loss)
                frames.append(h)
                print(f"w{width} lr 2^{log2_lr:g} tau {clip}: final {res.final_loss:.4f}, "
                      f"max logit {h.max_logit.max():.1f}, diverged {res.diverged}", flush=True)
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------- part 2: decay
def run_decay(widths=DECAY_WIDTHS, log2_lr: float = DECAY_LOG2_LR, wd: float = DECAY_WD,
              seeds=DECAY_SEEDS, steps: int = STEPS) -> pd.DataFrame:
    """sigma1(W_q of block 0) at every eval, final loss and seconds per step, per (width,
    decay, seed), at equal weight decay ``wd`` (fixed_product policy); decay "none" is the
    same run with weight_decay 0, the reference both kinds are compared with."""
    import torch

    from mutransfer.models import zoo
    from mutransfer.runs import config_factory, make_dataset
    from mutransfer.core import parametrize
    from mutransfer.training import train

    cfg = base_config(steps)
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
                 steps: int = STEPS) -> pd.DataFrame:
    """The lr landscape (``mutransfer.validate``) of muP + Muon with and without QK-Clip."""
    from mutransfer.validation import validate

    frames = []
    for clip in (None, tau):
        name = "muonclip-none" if clip is None else f"muonclip-tau{clip:g}"
        cfg = dataclasses.replace(base_config(steps).override({"train.qk_clip": clip}), name=name)
        df = validate(cfg, widths=widths, schemes=["mup"], optimizers=["muon"], log2_lrs=log2_lrs,
                      seeds=1, steps=steps, device="cpu", reports_dir=OUT / "landscapes",
                      show_progress=False)
        frames.append(df.assign(qk_clip="off" if clip is None else f"tau = {clip:g}"))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------- figures and index.md
def plot_logits(df: pd.DataFrame, path: Path) -> Path:
    """Max logit (top) and train loss (bottom) per step, one column per (width, lr)."""
    from mutransfer.validation.style import pyplot, save, style_axes

    plt = pyplot()
    cases = list(df.groupby(["width", "log2_lr"]).groups)
    fig, axes = plt.subplots(2, len(cases), figsize=(3.0 * len(cases), 4.8), squeeze=False)
    for col, (width, log2_lr) in enumerate(cases):
        runs = df[(df.width == width) & (df.log2_lr == log2_lr)]
        for tau, run in runs.groupby(runs.tau.fillna(-1)):
            label = "no clip" if tau < 0 else f"QK-Clip tau={tau:g}"
            color = "#d62728" if tau < 0 else "#1f77b4"
            axes[0, col].plot(run.step, run.max_logit, color=color, lw=1, label=label)
            axes[1, col].plot(run.step, run.train_loss, color=color, lw=0.8, label=label)
            if tau >= 0:
                axes[0, col].axhline(tau, color="#1f77b4", ls=":", lw=0.8)
        axes[0, col].set_title(f"width {width}, lr 2^{log2_lr:g}", fontsize=9)
        axes[0, col].set_yscale("log")
        axes[1, col].set_xlabel("step", fontsize=8)
        for ax in axes[:, col]:
            style_axes(ax)
    axes[0, 0].set_ylabel("max attention logit\n(before the clip)", fontsize=8)
    axes[1, 0].set_ylabel("train loss", fontsize=8)
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save(fig, path)


def plot_sigma(df: pd.DataFrame, path: Path) -> Path:
    """sigma1 of block 0's W_q against step, decoupled vs spectral, one panel per width."""
    from mutransfer.validation.style import pyplot, save, style_axes

    plt = pyplot()
    widths = sorted(df.width.unique())
    fig, axes = plt.subplots(1, len(widths), figsize=(3.4 * len(widths), 2.8), squeeze=False)
    colors = {"none": "#7f7f7f", "decoupled": "#d62728", "spectral": "#1f77b4"}
    for ax, width in zip(axes[0], widths):
        for (decay, seed), run in df[df.width == width].groupby(["decay", "seed"]):
            ax.plot(run.step, run.sigma1, color=colors[decay], lw=1, ls="-" if seed == 0 else "--",
                    label=f"{decay}, seed {seed}")
        ax.set_title(f"width {width}: sigma1(W_q), block 0", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        style_axes(ax)
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save(fig, path)


def logit_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: peak and last max logit, peak train-loss spike, final eval loss."""
    rows = []
    for (width, log2_lr, tau), run in df.groupby(["width", "log2_lr", df.tau.fillna(-1)]):
        rows.append({"width": width, "lr": f"2^{log2_lr:g}",
                     "QK-Clip": "off" if tau < 0 else f"tau={tau:g}",
                     "peak max logit": f"{run.max_logit.max():.1f}",
                     "last max logit": f"{run.max_logit.dropna().iloc[-1]:.1f}",
                     "final eval loss": "diverged" if run.diverged.iloc[0]
                     else f"{run.final_loss.iloc[0]:.4f}"})
    return pd.DataFrame(rows)


def decay_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (width, decay): final loss of each seed and their mean, sigma1 at the start and the
    end (seed means), and the seconds per step relative to decoupled decay."""
    last = df.sort_values(["seed", "step"]).groupby(["width", "decay", "seed"]).tail(1)
    first = df[df.step == 0].groupby(["width", "decay"]).sigma1.mean()
    rows = []
    for (width, decay), g in last.groupby(["width", "decay"]):
        base = last[(last.width == width) & (last.decay == "decoupled")].seconds_per_step.mean()
        losses = ", ".join(f"{v:.4f}" for v in g.final_loss)
        rows.append({"width": width, "decay": decay, "final loss (seeds)": losses,
                     "mean": f"{g.final_loss.mean():.4f}",
                     "sigma1(W_q) start -> end": f"{first[(width, decay)]:.2f} -> "
                                                  f"{g.sigma1.mean():.2f}",
                     "ms/step": f"{1e3 * g.seconds_per_step.mean():.0f}",
                     "time ratio": f"{g.seconds_per_step.mean() / base:.3f}"})
    return pd.DataFrame(rows)


def transfer_table(df: pd.DataFrame) -> pd.DataFrame:
    """Drift, eta* per width and regret of each landscape (``mutransfer.landscape``)."""
    from mutransfer.validation import eta_stars, summarize

    rows = []
    for clip, runs in df.groupby("qk_clip"):
        s = summarize(runs).iloc[0]
        etas = eta_stars(runs).sort_values("width")
        eta = ", ".join(f"{int(w)}: {e:+.2f}" for w, e in zip(etas.width, etas.log2_eta))
        rows.append({"QK-Clip": clip, "log2 eta* by width": eta,
                     "drift (oct/doubling)": f"{s.drift:+.2f} [{s.drift_lo:+.2f}, {s.drift_hi:+.2f}]",
                     "regret": f"{s.regret_pct:.2f}%",
                     f"best loss at width {int(etas.width.max())}": f"{s.best_loss:.4f}",
                     "diverged runs": int(runs.diverged.sum())})
    return pd.DataFrame(rows)


def write(out: Path = OUT) -> Path:
    """Figures and index.md from the CSVs the parts wrote (missing parts are said missing)."""
    from mutransfer.validation import markdown_table

    lines = ["# MuonClip on CPU: QK-Clip and spectral weight decay", "",
             "Zoo GPT (depth 2, muP attention scale) on pycorpus, batch 16 x seq 64, cosine "
             "schedule with 10% warmup, muP + Muon (spectral alpha), AdamW groups at adam_lr "
             "0.008: `sweeps/gpt-cpu.toml` with `optimizer = \"muon\"`. Machine: the shared "
             "2-core CPU (timings include other engineers' load).", "",
             "Regenerate (each part one locked CPU command; `write` reads only the CSVs):", "",
             "```", f"{MODULE} logits", f"{MODULE} decay", f"{MODULE} transfer",
             f"{MODULE} write", "```", ""]
    parts = {"logits": _logits_section, "decay": _decay_section, "transfer": _transfer_section}
    for name, section in parts.items():
        csv = out / f"{name}.csv"
        if not csv.is_file():
            lines += [f"## {name}", "", f"Not measured: run `{MODULE} {name}`.", ""]
            continue
        lines += section(pd.read_csv(csv), out, markdown_table)
    path = out / "index.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _logits_section(df, out, markdown_table) -> list[str]:
    plot_logits(df, out / "logits.png")
    tau = df.tau.dropna().iloc[0]
    return ["## 1. Max attention logit with and without QK-Clip", "",
            f"Muon at lrs above this model's best (muP + Muon eta* is about 2^-3.8 in "
            f"reports/gpt-cpu), {int(df.step.max())} steps, seed 0; QK-Clip at tau = {tau:g} "
            "after every step. The max logit is measured in each step's forward pass, before "
            "that step's clip (so a clipped run reads tau plus one step's growth).", "",
            "![max logit and loss](logits.png)", "", *markdown_table(logit_table(df)), "",
            _divergence_note(df), ""]


def _divergence_note(df: pd.DataFrame) -> str:
    """How many runs diverged, and the largest final-loss gap between no clip and QK-Clip."""
    runs = df.groupby(["width", "log2_lr", df.tau.isna()]).agg(
        final=("final_loss", "first"), diverged=("diverged", "first")).reset_index()
    off, on = (runs[runs.tau == flag].set_index(["width", "log2_lr"]) for flag in (True, False))
    gap = (off.final - on.final).dropna()
    worst = gap.idxmax()
    return (f"Diverged runs (the train loop's test: non-finite, or smoothed loss far above the "
            f"start): {int(off.diverged.sum())} without the clip, {int(on.diverged.sum())} with it. "
            f"The largest final-loss cost of not clipping: {gap.max():+.4f} nats at width "
            f"{int(worst[0])}, lr 2^{worst[1]:g}.")


def _decay_section(df, out, markdown_table) -> list[str]:
    plot_sigma(df, out / "sigma.png")
    return ["## 2. Spectral against decoupled weight decay at equal lambda", "",
            f"Muon lr 2^{DECAY_LOG2_LR:g}, weight_decay = {DECAY_WD:g} (fixed_product policy) for "
            f"both kinds (\"none\": the same runs with weight_decay 0), {int(df.step.max())} steps, seeds {sorted(int(v) for v in df.seed.unique())}. sigma1 is "
            "the top singular value of block 0's W_q (`torch.linalg.matrix_norm(ord=2)`) at every "
            "eval; the time ratio is seconds per step (train loop, evals included) over decoupled "
            "decay's at the same width (see also `python -m mutransfer.bench qkclip`).", "",
            "![sigma1 of W_q](sigma.png)", "", *markdown_table(decay_table(df)), ""]


def _transfer_section(df, out, markdown_table) -> list[str]:
    from mutransfer.validation import plot_lr_landscape

    for clip, runs in df.groupby("qk_clip"):
        slug = "none" if clip == "off" else clip.replace("tau = ", "tau")
        plot_lr_landscape(runs.drop(columns="qk_clip"), out / f"landscape-{slug}.png")
    figures = [f"![landscape, QK-Clip {c}](landscape-{'none' if c == 'off' else c.replace('tau = ', 'tau')}.png)"
               for c in sorted(df.qk_clip.unique())]
    return ["## 3. Does QK-Clip change lr transfer? (muP + Muon)", "",
            f"`mutransfer.validate` landscapes, widths {sorted(int(w) for w in df.width.unique())}, lrs "
            f"2^{df.log2_lr.min():g} .. 2^{df.log2_lr.max():g} (one octave apart), one seed, "
            "same runs otherwise; drift = slope of log2 eta* against log2 width (95% bootstrap "
            "interval), regret at the largest width of the lr transferred from the smallest.", "",
            *markdown_table(transfer_table(df)), "", *figures, ""]


def main(argv=None) -> int:
    """``python -m mutransfer.experiments.muonclip {logits,decay,transfer,write}``."""
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("logits", "decay", "transfer", "write"))
    parser.add_argument("--steps", type=int, default=STEPS, help=f"steps per run ({STEPS})")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    runs = {"logits": run_logits, "decay": run_decay, "transfer": run_transfer}
    if args.part == "write":
        print(f"wrote {write()}")
        return 0
    runs[args.part](steps=args.steps).to_csv(OUT / f"{args.part}.csv", index=False)
    print(f"wrote {OUT / (args.part + '.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
