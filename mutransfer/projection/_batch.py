"""The target's batch, for :func:`mutransfer.projection.transfer` (scaling.md section 6): the
target's loss (a power law in width), B_noise there (from the trials' noise statistics, else the
eta*(B) law's bend), the compute-optimal batch at the proxies' budget (and across budgets, the
B_opt(D) law of :mod:`mutransfer.projection._budget_laws`), the chosen batch and its steps.
Batches are in examples per optimizer step; arrays are bootstrap stacks (row 0 the data).

    >>> b_opt = compute_optimal(groups, L, budget=4096, tokens=4096, notes=notes)
    >>> batch, interval = choose_batch("auto", ok, groups, None, b_opt, 512, notes)
"""
from __future__ import annotations

import math

import numpy as np

from mutransfer.projection import _laws as laws
from mutransfer.projection._budget_laws import fit_budget_law
from mutransfer.projection._eta import sweep_optima
from mutransfer.projection._laws import exp2_interval

NOISE_MISMATCH = 4.0  # the law's B_noise and the measured B_simple may differ by this factor


def project_loss(groups, L, target_width, notes):
    """log2 loss at the target from log2 L = a - b log2 width at the batch swept at most widths."""
    per_batch = groups.groupby("batch_size")["width"].nunique()
    ref = int(per_batch[per_batch == per_batch.max()].index.max())
    m = (groups["batch_size"] == ref).to_numpy()
    if per_batch.max() < 2:
        return None
    if (L[:, m] <= 0).any():
        notes.append("losses <= 0: no power law of loss against width; the target's loss is not projected")
        return None
    coef = laws.fit_line(np.log2(groups.loc[m, "width"].to_numpy(float)), np.log2(L[:, m]))
    if coef[0, 0] >= 0:
        notes.append(f"the loss does not fall with width across the proxies (batch {ref}): the projected "
                     f"loss, and B_noise read from it, are not reliable")
    return {"log2_loss": coef[:, 1] + coef[:, 0] * np.log2(target_width), "batch": ref,
            "exponent": -coef[:, 0]}


def fit_noise(ok, n_boot, rng, notes):
    """(R+1, 2) replicates of (slope, intercept) of log2 B_simple ~ log2 noise_loss, or None."""
    b, l = ok["b_simple"].to_numpy(float), ok["noise_loss"].to_numpy(float)
    m = np.isfinite(b) & np.isfinite(l) & (b > 0) & (l > 0)
    if m.sum() < 3:
        if m.any():
            notes.append(f"only {int(m.sum())} trial(s) carry noise statistics; need >= 3 to fit B_noise(loss)")
        return None
    x, y = np.log2(l[m]), np.log2(b[m])
    counts = laws.bootstrap_counts(len(x), n_boot, rng)
    if np.ptp(x) < 0.01:  # no spread in loss: only the level of B_noise is known
        notes.append("the noise statistics span too narrow a loss range to fit how B_noise grows as the "
                     "loss falls; B_noise is held at its measured level")
        level = (counts * y).sum(1) / counts.sum(1)
        return np.c_[np.zeros_like(level), level]
    coef = laws.fit_line(x, np.broadcast_to(y, counts.shape), counts)
    coef[np.isnan(coef[:, 0])] = coef[0]
    return coef


def noise_at_target(noise, loss, law, L, c, notes):
    """(octaves to add to the law's log2 B_noise, log2 B_noise at the target or None), the
    latter in raw examples per step: B_simple's, or the law's c B_noise without noise statistics."""
    zero = np.zeros(len(L))
    if loss is None:
        if law is not None or noise is not None:
            notes.append("one proxy width: the target's loss cannot be projected, so B_noise is the "
                         "proxies' (it grows as the loss falls: larger at the target)")
        target_log2_loss = None
    else:
        target_log2_loss = loss["log2_loss"]
    if noise is None:
        if law is not None and loss is not None:
            notes.append("no noise statistics (set [train] measure_noise = true): B_noise is held at "
                         "the proxies' value although it grows as the loss falls; at batches near or "
                         "above it the lr may be too high")
        raw = law is not None and law["law"] != "constant"
        return zero, (law["theta"][:, 1] + np.log2(c) if raw else None)
    x = target_log2_loss if target_log2_loss is not None else np.full(len(L), np.nan)
    direct = noise[:, 1] + noise[:, 0] * x
    if target_log2_loss is None:
        return zero, noise[:, 1] + noise[:, 0] * np.median(np.log2(np.maximum(L, 1e-12)), 1)
    if law is None or law["law"] == "constant":
        return zero, direct
    ref = np.log2(np.maximum(L, 1e-12)).mean(1)  # the loss level the law was fitted at
    shift = noise[:, 0] * (target_log2_loss - ref)
    measured = noise[0, 1] + noise[0, 0] * ref[0]
    raw = law["theta"][0, 1] + np.log2(c)  # the raw batch where eta*(B) bends
    ratio = 2 ** (raw - measured)
    if not 1 / NOISE_MISMATCH < ratio < NOISE_MISMATCH:
        notes.append(f"the law's B_noise in raw examples (c B_noise = {c:.3g} x "
                     f"{2 ** law['theta'][0, 1]:.3g} = {2 ** raw:.3g}) and the measured B_simple "
                     f"({2 ** measured:.3g}) at the proxies' loss differ {max(ratio, 1 / ratio):.2g}x "
                     f"(the law's is {'smaller' if ratio < 1 else 'larger'}): the batch uses B_simple, "
                     f"the lr uses the law")
    return shift, direct


def proxy_budget(ok):
    """The proxies' token budget, None when they ran a step count; several budgets are an error."""
    values = laws.distinct_values(ok["budget"])
    if len(values) > 1:
        raise ValueError(f"the trials ran at several token budgets {values}: the compute-optimal batch "
                         f"is defined at one budget; pass transfer() the trials of one budget "
                         f"(e.g. frame[frame.budget == {values[0]:.0f}])")
    return int(values[0]) if values else None


def compute_optimal(groups, L, budget, tokens, notes):
    """(R+1,) log2 of the batch whose best-lr loss is lowest at the widest proxy width (where it
    is flat in B within the noise, the largest such batch: :func:`laws.flat_optimum`), or None
    without a budget (at a fixed step count a larger batch always looks better) or < 3 batches."""
    if budget is None:
        return None
    per_width = {}
    for w, sub in groups.groupby("width"):
        if len(sub) >= 3:
            order = np.argsort(sub["batch_size"].to_numpy(float))
            cols = sub.index.to_numpy()[order]  # groups has a RangeIndex: its labels are L's columns
            per_width[int(w)] = laws.flat_optimum(np.log2(sub["batch_size"].to_numpy(float)[order]), L[:, cols])
    if not per_width:
        notes.append("the compute-optimal batch needs >= 3 batch sizes at one width; sweep more")
        return None
    widest = max(per_width)
    opt, edge = per_width[widest]
    _batch_edge_notes(groups[groups["width"] == widest], edge, budget, notes)
    by_width = {w: 2 ** v[0][0] for w, v in per_width.items()}
    if max(by_width.values()) > 2 * min(by_width.values()):
        listed = ", ".join(f"width {w}: {b:.3g}" for w, b in by_width.items())
        notes.append(f"the compute-optimal batch moves with width ({listed}); Power Lines finds it "
                     f"independent of model size: the widest proxy's is used")
    if tokens != budget:
        notes.append(f"the compute-optimal batch was measured at the proxies' budget {budget:.3g}, the "
                     f"target trains on {tokens:.3g}: B_opt grows with the budget (a power of D), "
                     f"sweep the proxies at that budget to measure it there")
    return opt


def _batch_edge_notes(sub, edge: bool, budget, notes) -> None:
    """Say when the widest proxy's compute-optimal batch sits at either end of the swept batches."""
    if edge:
        notes.append(f"the loss at budget {budget:.3g} is still at its lowest at the largest swept batch "
                     f"{sub['batch_size'].max()}: the compute-optimal batch may be larger; sweep larger batches")
        return
    best = sub.loc[sub["loss"].idxmin(), "batch_size"]
    if best == sub["batch_size"].min():
        notes.append(f"the loss at budget {budget:.3g} is lowest at the smallest swept batch {best} "
                     f"(width {sub['width'].iloc[0]}): the compute-optimal batch may be smaller; sweep "
                     f"smaller batches")


def across_budgets(frame, tokens, window, n_boot, rng, notes):
    """With trials at >= 2 token budgets: (the largest budget's trials, the B_opt(D) law
    B_opt = b0 * D^p of :func:`fit_budget_law`, fitted bootstrap replicate by replicate on each
    budget's compute-optimal batch), its notes said at ``tokens`` (default the largest budget).
    With one budget (or none): (frame, None)."""
    budgets = laws.distinct_values(frame["budget"])
    if len(budgets) < 2:
        return frame, None
    per, edges = [], []
    for b in budgets:
        sub = frame[frame["budget"].astype(float) == b]
        quiet: list[str] = []
        groups, _, L = sweep_optima(sub, window, n_boot, rng, quiet)
        opt = compute_optimal(groups, L, int(b), int(b), quiet)
        if opt is None:
            raise ValueError(f"budget {b:.0f}: no compute-optimal batch (>= 3 batch sizes at one width "
                             f"are needed at every budget); sweep more batches there")
        edge = [n for n in quiet if "smallest swept batch" in n or "largest swept batch" in n]
        notes.extend(f"budget {b:.3g}: {n}" for n in edge)
        per.append(opt)
        edges.append(bool(edge))
    law = fit_budget_law(budgets, np.stack(per, 1), at_edge=edges)
    notes.extend(law.notes(tokens))
    return frame[frame["budget"].astype(float) == budgets[-1]], law


def choose_batch(target_batch, ok, groups, bn_target, b_opt, max_batch, notes):
    """(the target's batch, its interval or None): ``target_batch`` as given; None: the widest
    proxy's best trial's; "auto": the compute-optimal batch when there is one, else B_noise at
    the target's loss, rounded (:func:`_round_batch`) and capped at ``max_batch``."""
    if target_batch is None:
        widest = ok[ok["width"] == ok["width"].max()]
        return int(widest.loc[widest["loss"].idxmin(), "batch_size"]), None
    if target_batch != "auto":
        return int(target_batch), None
    if b_opt is not None:
        batch = _capped(_round_batch(2 ** b_opt[0]), "compute-optimal batch", b_opt, max_batch, notes)
        return batch, exp2_interval(b_opt)
    if bn_target is None:
        raise ValueError("target_batch='auto' needs noise statistics ([train] measure_noise = true) or "
                         f"trials at >= 3 batch sizes (got {sorted(groups['batch_size'].unique().tolist())}) "
                         "for the eta*(B) law; or pass target_batch=<int>")
    return _capped(_round_batch(2 ** bn_target[0]), "B_noise", bn_target, max_batch, notes), exp2_interval(bn_target)


def _capped(batch: int, what: str, log2_reps, max_batch, notes) -> int:
    if max_batch is not None and batch > max_batch:
        notes.append(f"the recommended batch {batch} (~{what} {2 ** log2_reps[0]:.3g}) is capped by "
                     f"max_batch={max_batch}")
        return int(max_batch)
    return batch


def _round_batch(b: float) -> int:
    """A multiple of 8 (tensor-core friendly) near ``b``; below 8 the nearest power of two."""
    return int(8 * round(b / 8)) if b >= 8 else int(2 ** max(0, round(math.log2(max(b, 1)))))


def steps_for(ok, tokens, batch, notes):
    t, s = ok["tokens"].to_numpy(float), ok["steps"].to_numpy(float)
    per = t / (s * ok["batch_size"].to_numpy(float))
    tpe = finite_median(per)
    if tokens is None:
        return None, tpe
    proxy = finite_median(t)
    if proxy and not 0.5 <= tokens / proxy <= 2:
        notes.append(f"the proxies trained on ~{proxy:.3g} tokens, the target on {tokens:.3g}: eta* "
                     f"usually falls for longer training; this plan does not correct for it")
    if tpe is None:
        notes.append("tokens given but the trials record no tokens/steps: steps are not computed")
        return None, None
    return max(1, int(round(tokens / (batch * tpe)))), tpe


def finite_median(values):
    """The median of the finite values, None when there are none."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else None
