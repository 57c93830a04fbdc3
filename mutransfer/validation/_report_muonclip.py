"""The MuonClip report (reports/muonclip/index.md): QK-Clip's max logit, spectral against
decoupled weight decay, and lr transfer with and without the clip, drawn from the CSVs the
experiment stored (logits.csv, decay.csv, transfer.csv); a part not stored is said missing."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mutransfer.validation._markdown import markdown_table, write_markdown
from mutransfer.validation.style import pyplot, save, style_axes

MUONCLIP_COMMAND = "python -m mutransfer.experiments.muonclip"
MUONCLIP_PARTS = ("logits", "decay", "transfer")


def plot_logits(df: pd.DataFrame, path: Path) -> Path:
    """Max logit (top) and train loss (bottom) per step, one column per (width, lr)."""
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
    from mutransfer.validation._landscape import eta_stars, summarize

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


def write_muonclip_report(folder: str | Path, *, decay_log2_lr: float = -4.0, decay_wd: float = 0.5,
                          command: str = MUONCLIP_COMMAND) -> Path:
    """``folder/index.md`` and its figures from the parts' CSVs (:data:`MUONCLIP_PARTS`): per run the
    peak max logit, per decay sigma1(W_q) and the time ratio t / t_decoupled, per landscape the
    drift d log2 eta* / d log2 width. ``decay_log2_lr`` and ``decay_wd`` are the settings the decay
    part ran with (its CSV does not hold them).

        >>> write_muonclip_report("reports/muonclip")
        PosixPath('reports/muonclip/index.md')
    """
    out = Path(folder)
    lines = ["Zoo GPT (depth 2, muP attention scale) on pycorpus, batch 16 x seq 64, cosine "
             "schedule with 10% warmup, muP + Muon (spectral alpha), AdamW groups at adam_lr "
             "0.008: `sweeps/gpt-cpu.toml` with `optimizer = \"muon\"`. Machine: the shared "
             "2-core CPU (timings include other engineers' load).", "",
             "Regenerate the parts (each one locked CPU command; `write` reads only the CSVs):", "",
             "```", *[f"{command} {part}" for part in MUONCLIP_PARTS], f"{command} write", "```", ""]
    sections = {"logits": _logits_section, "decay": lambda df, out: _decay_section(df, out, decay_log2_lr, decay_wd),
                "transfer": _transfer_section}
    for name in MUONCLIP_PARTS:
        csv = out / f"{name}.csv"
        if not csv.is_file():
            lines += [f"## {name}", "", f"Not measured: run `{command} {name}`.", ""]
            continue
        lines += sections[name](pd.read_csv(csv), out)
    return write_markdown(out / "index.md", "MuonClip on CPU: QK-Clip and spectral weight decay",
                          f"{command} write", lines)


def _logits_section(df, out) -> list[str]:
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


def _decay_section(df, out, log2_lr: float, wd: float) -> list[str]:
    plot_sigma(df, out / "sigma.png")
    return ["## 2. Spectral against decoupled weight decay at equal lambda", "",
            f"Muon lr 2^{log2_lr:g}, weight_decay = {wd:g} (fixed_product policy) for "
            f"both kinds (\"none\": the same runs with weight_decay 0), {int(df.step.max())} steps, seeds {sorted(int(v) for v in df.seed.unique())}. sigma1 is "
            "the top singular value of block 0's W_q (`torch.linalg.matrix_norm(ord=2)`) at every "
            "eval; the time ratio is seconds per step (train loop, evals included) over decoupled "
            "decay's at the same width (see also `python -m mutransfer.bench qkclip`).", "",
            "![sigma1 of W_q](sigma.png)", "", *markdown_table(decay_table(df)), ""]


def _transfer_section(df, out) -> list[str]:
    from mutransfer.validation._fig_landscape import plot_lr_landscape

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


