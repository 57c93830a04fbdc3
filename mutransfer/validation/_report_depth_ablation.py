"""The depth-ablation report (reports/depth-ablation/index.md): per variant of the zoo GPT's
block, the drift of log2 eta* per doubling of depth and the loss at the deepest model, from the
depth.csv files ``mutransfer validate`` writes (:func:`depth_summary`, :func:`depth_etas`)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mutransfer.validation._depth import depth_etas, depth_summary
from mutransfer.validation._markdown import markdown_table, write_markdown
from mutransfer.validation.style import pyplot, save, style_axes

DRIFT_GOAL = 0.25  # octaves per doubling: a variant beyond it drifts


def ablation_table(files: dict[str, Path]) -> pd.DataFrame:
    """One row per (variant, depth_alpha): eta* per depth, the drift (95% interval), the best loss
    at the deepest depth and the regret there of the shallowest depth's eta*.

        >>> ablation_table({"gpt": Path("reports/depth-ablation/runs/depth-ablation-gpt/depth.csv")})
    """
    rows = []
    for variant, path in files.items():
        if not Path(path).is_file():
            raise ValueError(f"no {path}: run `python -m mutransfer.experiments.depth_ablation run` first")
        df = pd.read_csv(path)
        etas = depth_etas(df)
        for s in depth_summary(df).itertuples():
            e = etas[etas.depth_alpha == s.depth_alpha].set_index("depth")
            rows.append({"variant": variant, "depth_alpha": s.depth_alpha,
                         **{f"log2 eta* at {d}": float(e.loc[d, "log2_eta"]) for d in sorted(e.index)},
                         "drift": s.drift, "drift_lo": s.drift_lo, "drift_hi": s.drift_hi,
                         f"best loss at {s.big_depth}": s.best_loss, "regret_pct": s.regret_pct})
    return pd.DataFrame(rows)


def plot_ablation(table: pd.DataFrame, path: Path) -> Path:
    """The drift per variant with its 95% interval; the goal band shaded."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    y = range(len(table))
    ax.errorbar(table.drift, y, xerr=[table.drift - table.drift_lo, table.drift_hi - table.drift], fmt="o", color="C0")
    ax.axvspan(-DRIFT_GOAL, DRIFT_GOAL, color="0.9", zorder=0, label=f"|drift| <= {DRIFT_GOAL}")
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_yticks(list(y), [f"{v} (alpha {a:g})" for v, a in zip(table.variant, table.depth_alpha)])
    ax.set_xlabel("drift of log2 eta* per doubling of depth (octaves)")
    style_axes(ax)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save(fig, path)


def write_depth_ablation_report(folder: str | Path, files: dict[str, Path], *, command: str, variants: dict) -> Path:
    """``folder/index.md``, ablation.png and ablation.csv from each variant's depth.csv."""
    folder = Path(folder)
    table = ablation_table(files)
    table.to_csv(folder / "ablation.csv", index=False)
    plot_ablation(table, folder / "ablation.png")
    shown = table.assign(
        drift=[f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]" for d, lo, hi in zip(table.drift, table.drift_lo, table.drift_hi)],
        regret_pct=table.regret_pct.map("{:.2f}%".format),
        block=[", ".join(f"{k}={v}" for k, v in variants[v].items()) or "the zoo GPT's" for v in table.variant])
    shown = shown.drop(columns=["drift_lo", "drift_hi"]).round(3)
    lines = ["Everything, serially on one machine (a 2-core CPU):", "", "```", f"{command} run", f"{command} write",
             "```", "", "The drift is the slope of log2 eta* against log2 depth; the regret is the loss at the deepest "
             "model trained at the shallowest model's eta* over the best loss there.", "",
             *markdown_table(shown), "", "![drift per variant](ablation.png)", "",
             "Each variant's landscapes: `runs/<name>-<variant>/depth.md`."]
    return write_markdown(folder / "index.md", "Depth ablation: which part of a Llama block drifts", f"{command} write",
                          lines)
