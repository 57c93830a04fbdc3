"""The batch-noise figure: eta*(B) of the teacher-student regression against the exact noise
scales, and the law's B_noise against the measured B_simple on a model, over
:mod:`mutransfer.validation.style`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mutransfer.validation.style import pyplot, save, style_axes


def plot_noise(teacher: list[dict], gpt: dict, path: str | Path, *, batches=None, dim: int = 32,
               model: str = "gpt-cpu-batch") -> Path:
    """Left, one panel per curvature H: eta*(B) / max of each (steps, momentum) with its fitted
    B_noise, against the exact B_noise and B_simple at init; right: the law's B_noise (effective
    and raw units, 95% intervals) against the measured B_simple of ``model``'s proxies.
    ``batches`` defaults to 1, 2, 4, ... (one per eta*)."""
    plt = pyplot()
    curvatures = list(dict.fromkeys(r["H"] for r in teacher))
    fig, axes = plt.subplots(1, len(curvatures) + 1, figsize=(5 * (len(curvatures) + 1), 4.2), squeeze=False)
    for ax, H in zip(axes[0, :-1], curvatures):
        rows = [r for r in teacher if r["H"] == H]
        for r in rows:
            b = 2.0 ** np.arange(len(r["eta_star"])) if batches is None else np.asarray(batches)
            eta = np.array(r["eta_star"]) / max(r["eta_star"])
            ax.plot(b, eta, "o-", label=f"{r['steps']} step(s), beta={r['momentum']}: "
                                        f"fit B_noise={r['b_noise_sgd']:.3g}")
        ref = rows[0]
        ax.axvline(ref["b_noise_exact_at_init"], color="k", ls="--",
                   label=f"exact B_noise {ref['b_noise_exact_at_init']:.3g}")
        ax.axvline(ref["b_simple_exact_at_init"], color="gray", ls=":",
                   label=f"exact B_simple {ref['b_simple_exact_at_init']:.3g}")
        ax.set(xscale="log", yscale="log", xlabel="batch B (examples)", ylabel="eta*(B) / max",
               title=f"teacher-student, H = {H}, d = {dim}")
        ax.legend(fontsize=7)
        style_axes(ax)
    ax = axes[0, -1]
    names = ["law B_noise\n(effective B/c)", "law c*B_noise\n(raw batch)", "measured\nB_simple"]
    vals = [gpt["b_noise_effective"], gpt["b_noise_raw"], gpt["b_simple"]]
    err = [gpt["interval_effective"], gpt["interval_raw"], [gpt["b_simple"]] * 2]
    ax.bar(names, vals, color=["tab:red", "tab:blue", "tab:green"],
           yerr=np.abs(np.array(err).T - np.array(vals)), capsize=4)
    ax.set(yscale="log", ylabel=f"examples (sequences of {gpt['tokens_per_example']:g} tokens)",
           title=f"{model} proxies: the {gpt['ratio_effective']:.0f}x is the momentum unit")
    style_axes(ax, grid=False)
    fig.tight_layout()
    return save(fig, path)
