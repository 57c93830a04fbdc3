"""Validation across depth (scaling.md section 9): lr landscapes at several depths and a depth
coordinate check, per branch multiplier ``alpha``.

Landscapes: the runs of ``mutransfer validate CONFIG --depths 2,4,8,16 --depth-alphas 0,0.5,1``
at one width, fitted as the width landscapes are (:mod:`mutransfer.projection._landscape`) with
depth in the place of width: eta* per depth, its drift per doubling of depth with a bootstrap
interval, the regret at the deepest model of the lr from the shallowest, and the best loss per
depth. The goal for a depth-transferring alpha: ``|drift| <= 0.25`` octave per doubling,
regret <= 1%, and a best loss at the deepest model at least level with ``alpha = 0``'s.

Coordinate check (:func:`depth_coord_check`): at a fixed width and depths L, a few steps of the
plan's optimizer, recording on a probe batch the RMS of the residual stream (the last block's
output) and of each block's branch F(h) (its last map's output before the multiplier), and of
their change since step 0. Their log-log slopes against L are near 0 when depth transfers: under
width-only muP (alpha 0) the stream's change grows like L.

    >>> df = depth_coord_check(functools.partial(zoo.gpt, width=64), [2, 4, 8, 16], batches, lr=3e-3)
    >>> depth_verdict(df).passed
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

DEPTH_TOL = 0.15  # |slope| of log2 RMS per doubling of depth the coordinate check allows
JUDGED = {("stream", "out"), ("stream", "delta"), ("branch", "delta")}  # what the verdict judges
COORD_COLUMNS = ("scheme", "optimizer", "depth_alpha", "depth", "seed", "step", "module", "kind", "rms")


# ---------------------------------------------------------------- landscapes across depth


def _as_width(runs: pd.DataFrame) -> pd.DataFrame:
    """A depth landscape in the width landscape's columns: depth plays width."""
    return runs.assign(width=runs["depth"].astype(int))


def _alpha(value) -> float:
    from mutransfer.core import DEFAULT_DEPTH_ALPHA

    return DEFAULT_DEPTH_ALPHA if value is None or value != value else float(value)


def depth_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (scheme, optimizer, width, depth_alpha): drift of log2 eta* per doubling of
    depth with its interval, the regret at the deepest model of the shallowest's eta*, and the
    best loss at the deepest (the width landscape's :func:`summarize`, depth in width's place).

        >>> depth_summary(pd.read_csv("reports/gpt-cpu-depth/depth.csv"))
    """
    from mutransfer.validation._landscape import summarize

    rows = []
    runs = df.assign(depth_alpha=df["depth_alpha"].map(_alpha))
    for (width, alpha), g in runs.groupby(["width", "depth_alpha"], sort=True):
        s = summarize(_as_width(g))
        s = s.rename(columns={"small_width": "small_depth", "big_width": "big_depth"})
        rows.append(s.assign(width=int(width), depth_alpha=float(alpha)))
    return pd.concat(rows, ignore_index=True)


def depth_etas(df: pd.DataFrame) -> pd.DataFrame:
    """eta* and the best loss per (scheme, optimizer, width, depth_alpha, depth)."""
    from mutransfer.validation._landscape import eta_stars

    runs = df.assign(depth_alpha=df["depth_alpha"].map(_alpha))
    parts = [eta_stars(_as_width(g)).rename(columns={"width": "depth"}).assign(width=int(w), depth_alpha=a)
             for (w, a), g in runs.groupby(["width", "depth_alpha"], sort=True)]
    return pd.concat(parts, ignore_index=True)


def write_depth_outputs(df: pd.DataFrame, folder: str | Path, *, commands: Sequence[str] = ()) -> dict[str, Path]:
    """depth.csv, depth.png (every alpha's curves and the best loss per depth on shared axes)
    and depth.md (headed by ``commands``) in ``folder``.

        >>> write_depth_outputs(pd.read_csv("reports/gpt-cpu-depth/depth.csv"), "reports/gpt-cpu-depth")
    """
    from mutransfer.validation._fig_landscape import plot_depth_landscapes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    df = df[df["depth"].notna()]
    files = {"csv": folder / "depth.csv", "png": folder / "depth.png", "md": folder / "depth.md"}
    df.to_csv(files["csv"], index=False)
    etas = depth_etas(df)
    plot_depth_landscapes(df.assign(depth_alpha=df["depth_alpha"].map(_alpha)), etas, files["png"])
    head = "".join(f"Regenerate: `{c}`\n\n" for c in commands)
    files["md"].write_text(head + "![lr landscapes across depth](depth.png)\n\n"
                           + depth_markdown(df, etas) + "\n")
    return files


def depth_markdown(df: pd.DataFrame, etas: pd.DataFrame | None = None) -> str:
    """The depth validation's tables: per alpha the drift, regret and best loss at the deepest
    model against alpha 0's, then eta* per depth."""
    from mutransfer.validation._landscape import MUP_MAX_DRIFT, MUP_MAX_REGRET
    from mutransfer.validation._markdown import markdown_table

    summary = depth_summary(df)
    etas = depth_etas(df) if etas is None else etas
    lines = [f"Goal for a depth-transferring alpha: |drift| <= {MUP_MAX_DRIFT:g} octave of eta* per "
             f"doubling of depth, regret <= {MUP_MAX_REGRET:g}% at the deepest model for the lr of "
             f"the shallowest, and a best loss there at least level with alpha 0's (width-only "
             f"muP). Intervals: 95% bootstrap over the runs.", ""]
    lines += markdown_table(_depth_rows(summary, etas)) + [""]
    for (scheme, opt, width, alpha), g in etas.groupby(["scheme", "optimizer", "width", "depth_alpha"], sort=True):
        lines += [f"## eta* per depth: {scheme} + {opt}, width {width}, depth_alpha {alpha:g}", ""]
        lines += markdown_table(pd.DataFrame({
            "depth": g["depth"], "log2 eta*": [f"{v:.2f}" for v in g["log2_eta"]],
            "interval": [f"[{a:.2f}, {b:.2f}]" if math.isfinite(a) else "" for a, b in
                         zip(g["log2_eta_lo"], g["log2_eta_hi"])],
            "best grid log2 lr": g["best_log2_lr"], "best loss": [f"{v:.4f}" for v in g["best_loss"]],
            "note": g["note"]})) + [""]
    return "\n".join(lines)


def _depth_rows(summary: pd.DataFrame, etas: pd.DataFrame) -> pd.DataFrame:
    deepest = etas.loc[etas.groupby(["scheme", "optimizer", "width", "depth_alpha"])["depth"].idxmax()]
    best = {(r.scheme, r.optimizer, r.width, r.depth_alpha): r.best_loss for r in deepest.itertuples()}
    rows = []
    for r in summary.itertuples():
        base = best.get((r.scheme, r.optimizer, r.width, 0.0), math.nan)
        mine = best[(r.scheme, r.optimizer, r.width, r.depth_alpha)]
        rows.append({"scheme": r.scheme, "optimizer": r.optimizer, "width": r.width,
                     "depth_alpha": f"{r.depth_alpha:g}",
                     "drift (octave/doubling of depth)": f"{r.drift:+.2f}",
                     "interval": "" if not math.isfinite(r.drift_lo) else f"[{r.drift_lo:+.2f}, {r.drift_hi:+.2f}]",
                     f"regret at depth {r.big_depth} (lr of depth {r.small_depth})":
                         f"{r.regret_pct:.2f}%" if math.isfinite(r.regret_pct) else str(r.regret_pct),
                     "best loss at the deepest": f"{mine:.4f}",
                     "vs alpha 0": "" if not math.isfinite(base) or r.depth_alpha == 0 else f"{mine - base:+.4f}",
                     "note": r.regret_note})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- depth coordinate check


def _probe(model: nn.Module, names: Sequence[str], x) -> dict[str, torch.Tensor]:
    """Outputs of ``names`` on one forward; a branch end's before its multiplier (the hook runs
    ahead of the plan's :class:`~mutransfer.core._depth.ResidualScale`)."""
    from mutransfer.core import call_with

    got, handles = {}, []
    modules = dict(model.named_modules())
    for name in names:
        def hook(module, args, output, name=name):
            out = output[0] if isinstance(output, tuple) else output
            got.setdefault(name, out.detach().float())
        handles.append(modules[name].register_forward_hook(hook, prepend=True))
    try:
        with torch.no_grad():
            call_with(model, x)
    finally:
        for h in handles:
            h.remove()
    return got


def _rms(t: torch.Tensor) -> float:
    return float(t.pow(2).mean().sqrt())


def _structure(model: nn.Module, make_model: Callable[..., nn.Module], depth: int, x):
    """(last block of each grown list, branch ends per block) of ``model`` at ``depth`` blocks."""
    from mutransfer.core import Depth, branch_ends, match_depth

    with torch.device("meta"):
        grown = match_depth(make_model(depth=2 * depth), make_model(depth=depth))
    if grown is None:
        raise ValueError("make_model(depth=...) builds the same block lists at every depth; give a "
                         "factory whose depth= sets the number of residual blocks")
    lists = grown.containers
    last = [f"{c}{'.' if c else ''}{depth - 1}" for c in lists]
    ends = branch_ends(model, Depth(lists, depth, depth), x)
    return last, [e for block in ends.values() for e in block]


def depth_coord_check(make_model: Callable[..., nn.Module], depths: Sequence[int], batches: Sequence[tuple], *,
                      lr: float, base_depth: int | None = None, depth_alphas: Sequence[float] = (0.0, 1.0),
                      scheme: str = "spectral", optimizer: str = "adamw", steps: int = 5,
                      seeds: Sequence[int] = (0, 1), step_fn: Callable | None = None, loss_fn=None,
                      optimizer_kwargs: dict | None = None) -> pd.DataFrame:
    """Record the residual stream and the branches across depth: one row per (depth_alpha,
    depth, seed, step, module, kind).

    For each alpha, depth L and seed: ``parametrize(make_model, width=w, base_width=w,
    depth=L, base_depth=base_depth or min(depths), depth_alpha=alpha)`` (``make_model`` takes
    ``width=`` and ``depth=``; pass the width with functools.partial and ``width=`` is read off
    it), then for t = 0..steps a probe forward on ``batches[0][0]`` records module ``stream``
    (the last block's output: the residual stream) and ``branch`` (the mean over blocks of each
    branch's output F before its multiplier) as ``out = RMS`` and, for t >= 1,
    ``delta = RMS(change since t = 0)``; between probes one step ``step_fn(model, opt, batch)``.

        >>> df = depth_coord_check(functools.partial(zoo.gpt, width=64), [2, 4, 8], batches, lr=3e-3)
    """
    from mutransfer.core import parametrize
    from mutransfer.validation._coord_check import _forked_rng, cross_entropy, default_step

    depths = sorted(int(d) for d in depths)
    if len(depths) < 2:
        raise ValueError(f"a depth coordinate check compares depths; give two or more, got {depths!r}")
    width = getattr(make_model, "keywords", {}).get("width")
    if width is None:
        raise ValueError("make_model needs its width fixed: functools.partial(factory, width=64)")
    step_fn = step_fn or default_step(loss_fn or cross_entropy)
    x0 = batches[0][0]
    factory = make_model.func
    fixed = {k: v for k, v in make_model.keywords.items() if k != "width"}
    rows = []
    for alpha in depth_alphas:
        for depth in depths:
            for seed in seeds:
                with _forked_rng(x0):
                    torch.manual_seed(int(seed))
                    plan = parametrize(lambda width, depth: factory(width=width, depth=depth, **fixed),
                                       width=width, base_width=width, depth=depth,
                                       base_depth=base_depth or depths[0], depth_alpha=alpha,
                                       scheme=scheme, optimizer=optimizer)
                    opt = plan.optimizer(lr, **dict(optimizer_kwargs or {}))
                    trace = _depth_trace(plan, opt, make_model, depth, batches, steps, step_fn)
                rows += [(scheme, optimizer, float(alpha), depth, int(seed)) + r for r in trace]
    return pd.DataFrame(rows, columns=list(COORD_COLUMNS))


def _depth_trace(plan, opt, make_model, depth: int, batches, steps: int, step_fn) -> list[tuple]:
    model, x0 = plan.model, batches[0][0]
    last, ends = _structure(model, make_model, depth, x0)
    first, rows = None, []
    for t in range(steps + 1):
        got = _probe(model, last + ends, x0)
        first = first or got
        for module, names in (("stream", last), ("branch", ends)):
            rows.append((t, module, "out", float(np.mean([_rms(got[n]) for n in names]))))
            if t:
                rows.append((t, module, "delta", float(np.mean([_rms(got[n] - first[n]) for n in names]))))
        if t < steps:
            step_fn(model, opt, batches[t % len(batches)])
    return rows


@dataclass
class DepthVerdict:
    """Per alpha: passed, the slopes outside their bounds, and a sentence."""

    slopes: pd.DataFrame
    tol: float
    alphas: dict[float, bool] = field(default_factory=dict)

    def explanation(self) -> str:
        return "; ".join(self._sentence(alpha, ok) for alpha, ok in sorted(self.alphas.items())) + "."

    def _sentence(self, alpha: float, ok: bool) -> str:
        mine = self.slopes[(self.slopes["depth_alpha"] == alpha) & self.slopes["judged"]]
        if not ok:
            bad = mine[~mine["ok"]]
            worst = bad.loc[np.maximum(bad["slope"] - self.tol, bad["low"] - bad["slope"]).idxmax()]
            why = ("the stream's change grows with depth: the blocks' updates add up coherently, so "
                   "eta* shrinks as blocks are added" if worst["module"] == "stream" and worst["slope"] > 0
                   else "the blocks' own change shrinks faster than their lr rule sets"
                   if worst["module"] == "branch" and worst["slope"] < 0 else "activations change size with depth")
            return (f"depth_alpha {alpha:g} fails: {len(bad)} slopes outside their bounds, worst "
                    f"{worst['slope']:+.2f} ({worst['module']} {worst['kind']} step {worst['step']}); {why}")
        shrink = mine[(mine["module"] == "stream") & (mine["slope"] < -self.tol)]
        note = (f" (the stream shrinks with depth, worst {shrink['slope'].min():+.2f}: the branches' sum "
                f"at init is ~ L^(1/2 - alpha), toward the embedding's share; reported, not a failure)"
                if len(shrink) else "")
        branch = mine[mine["module"] == "branch"]["slope"]
        own = (f"each block's own change stays within ±{self.tol:g} (complete feature learning)"
               if branch.abs().max() <= self.tol else
               f"each block's own change shrinks (slopes {branch.min():+.2f} to {branch.max():+.2f}), no faster "
               f"than its lr rule m_L^({alpha:g} - 1) sets: each block learns less as blocks are added "
               f"while the stream's change holds")
        return f"depth_alpha {alpha:g} passes: the stream does not grow and {own}{note}"


def branch_bounds(alpha: float, tol: float = DEPTH_TOL) -> tuple[float, float]:
    """The slopes (log2 RMS per doubling of depth) a block's own change may take: it must not grow,
    and must not shrink faster than its weights' update, which the depth rules scale by
    m_L^(alpha - 1) for Adam, Muon and SGD alike (SGD's lr m_L^(2 alpha - 1) times the gradient's
    m_L^-alpha); at alpha 0 (width-only muP) no rule applies and the bound is 0.

        >>> branch_bounds(0.5)
        (-0.65, 0.15)
    """
    low = alpha - 1.0 if alpha > 0 else 0.0
    return round(low - tol, 12), tol


def depth_slopes(df: pd.DataFrame) -> pd.DataFrame:
    """Slope of log2 RMS (mean over seeds) against log2 depth per (alpha, module, kind, step)."""
    keys = ["depth_alpha", "module", "kind", "step"]
    mean = df.groupby(keys + ["depth"])["rms"].mean().reset_index()
    rows = []
    for key, g in mean.groupby(keys, sort=True):
        x, y = np.log2(g["depth"].to_numpy(float)), np.log2(g["rms"].to_numpy(float))
        rows.append({**dict(zip(keys, key)), "slope": float(np.polyfit(x, y, 1)[0])})
    return pd.DataFrame(rows)


def depth_verdict(df: pd.DataFrame, tol: float = DEPTH_TOL) -> DepthVerdict:
    """Judge at steps >= 1 the residual stream (out, delta) and the blocks' change (delta)
    against depth. The stream must not grow (slope <= ``tol``; it may shrink toward the
    embedding's share, since the branches' sum at init is ~ L^(1/2 - alpha), which is reported,
    not failed, as the width check reports shrinking logits). Each block's own change must not
    grow, nor shrink faster than its lr rule sets (:func:`branch_bounds`: slope >= alpha - 1 - tol):
    at alpha 1 it holds (complete feature learning, scaling.md section 9), at alpha 1/2 it shrinks
    by design while the stream's change holds, and under width-only muP the stream's change grows.

        >>> depth_verdict(df).alphas
        {0.0: False, 0.5: True, 1.0: True}
    """
    slopes = depth_slopes(df)
    judged = [(m, k) in JUDGED and s >= 1 for m, k, s in zip(slopes["module"], slopes["kind"], slopes["step"])]
    low = [branch_bounds(float(a), tol)[0] if m == "branch" else -math.inf
           for a, m in zip(slopes["depth_alpha"], slopes["module"])]
    ok = [not j or lo <= v <= tol for j, lo, v in zip(judged, low, slopes["slope"])]
    slopes = slopes.assign(judged=judged, low=low, ok=ok)
    alphas = {float(a): bool(g["ok"].all()) for a, g in slopes.groupby("depth_alpha")}
    return DepthVerdict(slopes, tol, alphas)
