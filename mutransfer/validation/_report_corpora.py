"""Does the proxy's eta* depend on the data? One page comparing the lr landscapes that
``mutransfer validate`` stored for the same model on several corpora (reports/tokens-vs-bytes).

    >>> write_corpora_report("reports/tokens-vs-bytes", {"BPE 512": "reports/tokens-bpe-300",
    ...                                                   "bytes": "reports/tokens-bytes-300"})
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from mutransfer.validation._fig_landscape import plot_corpora
from mutransfer.validation._landscape import eta_stars
from mutransfer.validation._markdown import markdown_table, read_stored, write_markdown

CORPORA_COMMAND = "python -m mutransfer.experiments.tokens_vs_bytes write"


def write_corpora_report(folder: str | Path, corpora: Mapping[str, str | Path], *,
                         command: str = CORPORA_COMMAND, runs: Mapping[str, str] | None = None) -> Path:
    """``folder/index.md`` and ``corpora.png`` from each corpus's ``validate.csv``: eta* per
    (corpus, width) with its 95% bootstrap interval, and the shift between corpora in octaves,

        shift = log2 eta*(corpus) - log2 eta*(first corpus)    at each width,

    which is "resolved" when the two intervals do not overlap. ``corpora`` maps a label to the
    report folder ``mutransfer validate`` wrote; ``runs`` to the command that fills it.

        >>> write_corpora_report("reports/tokens-vs-bytes", {"BPE": "reports/tokens-bpe-300", "bytes": "reports/tokens-bytes-300"})
        PosixPath('reports/tokens-vs-bytes/index.md')
    """
    if len(corpora) < 2:
        raise ValueError(f"compare at least two corpora; got {list(corpora)}")
    runs = runs or {}
    frames = {label: read_stored(src, "validate.csv", runs.get(label, f"mutransfer validate CONFIG "
                                                                      f"--reports {Path(src).parent}"))
              for label, src in corpora.items()}
    etas = pd.concat([eta_stars(df).assign(corpus=label) for label, df in frames.items()], ignore_index=True)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    plot_corpora(frames, etas, out / "corpora.png")
    first = next(iter(corpora))
    lines = ["The runs are the commands below; this page is written from their validate.csv. Each run "
             "is the zoo GPT at the proxy widths, spectral + AdamW, with the same steps, batch and "
             "sequence length: only the data differs. Losses are per token of each corpus's own "
             "vocabulary, so they do not compare across corpora; eta* does.", "",
             *(f"- {label}: `{runs[label]}`" for label in corpora if label in runs), "",
             *markdown_table(_eta_table(etas, first)), "", "![loss against lr per corpus](corpora.png)", "",
             *_verdict(etas, first), ""]
    return write_markdown(out / "index.md", "Does the proxy's eta* depend on the data?", command, lines)


def _eta_table(etas: pd.DataFrame, first: str) -> pd.DataFrame:
    base = etas[etas.corpus == first].set_index("width")["log2_eta"]
    return pd.DataFrame({
        "corpus": etas.corpus, "width": etas.width,
        "log2 eta* [95%]": [f"{r.log2_eta:.2f} [{r.log2_eta_lo:.2f}, {r.log2_eta_hi:.2f}]" for r in etas.itertuples()],
        f"shift from {first} (octaves)": [f"{r.log2_eta - base.get(r.width, float('nan')):+.2f}"
                                          for r in etas.itertuples()],
        "best grid lr": [f"2^{v:g}" for v in etas.best_log2_lr],
        "best loss": etas.best_loss.map("{:.3f}".format)})


def _verdict(etas: pd.DataFrame, first: str) -> list[str]:
    out = []
    ref = etas[etas.corpus == first].set_index("width")
    for r in etas[etas.corpus != first].itertuples():
        if r.width not in ref.index:
            continue
        a = ref.loc[r.width]
        apart = r.log2_eta_lo > a.log2_eta_hi or r.log2_eta_hi < a.log2_eta_lo
        out.append(f"- width {r.width}: eta* on {r.corpus} is {r.log2_eta - a.log2_eta:+.2f} octaves from "
                   f"{first}'s; the 95% intervals {'do not overlap: the shift is resolved' if apart else 'overlap: not resolved at 2 seeds'}.")
    return out
