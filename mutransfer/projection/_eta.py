"""eta* and how it moves, for :func:`mutransfer.projection.transfer` (scaling.md section 6): per
(width, batch) sweep (a quadratic in log2 lr around the best trial), across width (the drift,
log2 eta* ~ s log2 width; muP predicts s = 0), across batch (the eta*(B) law of
:data:`mutransfer.projection.LAWS`, chosen by AIC), at the target's batch, and the risk-aware lr
read from the landscape's two sides. Each takes and returns bootstrap stacks (row 0 the data).

    >>> groups, E, L = sweep_optima(frame, 2.0, 200, np.random.default_rng(0), notes)
    >>> law = fit_batch_law(groups, E, momentum_c(0.9), notes)
"""
from __future__ import annotations

import numpy as np

from mutransfer.projection import _laws as laws
from mutransfer.projection._laws import VAR_FLOOR, exp2_interval, interval

DRIFT_LIMIT = 0.15  # octaves per doubling: more than this and the parametrization is suspect


def sweep_optima(frame, window, n_boot, rng, notes):
    """eta* per (width, batch): the groups' table and (R+1, G) replicates of log2 eta* and loss."""
    import pandas as pd

    rows, E, L, skipped = [], [], [], []
    for (width, batch), sub in frame.groupby(["width", "batch_size"], sort=True):
        where = f"width {width}, batch {batch}"
        stable = sub[~sub["diverged"]]
        try:
            opt = laws.quadratic_optimum(np.log2(stable["lr"].to_numpy(float)), stable["loss"].to_numpy(float),
                                         window=window, n_boot=n_boot, rng=rng)
        except ValueError as e:
            skipped.append(f"{where}: {e}")
            continue
        notes.extend(_edge_notes(opt, sub, where, window))
        lo, hi = exp2_interval(opt.log2_lr)
        rows.append({"width": int(width), "batch_size": int(batch), "lr": float(2 ** opt.log2_lr[0]),
                     "lr_low": lo, "lr_high": hi, "loss": float(opt.loss[0]),
                     "n_trials": int(len(sub)), "n_fit": opt.n_fit})
        E.append(opt.log2_lr)
        L.append(opt.loss)
    if not rows:
        raise ValueError("too few trials near the optimum in every (width, batch) sweep: "
                         + "; ".join(skipped) + ". Sweep at least 3-5 lrs around the optimum")
    notes.extend(f"{s}; this sweep is skipped" for s in skipped)
    return pd.DataFrame(rows), np.stack(E, 1), np.stack(L, 1)


def _edge_notes(opt, sub, where: str, window: float) -> list[str]:
    x = np.log2(sub["lr"].to_numpy(float))
    stable = x[~sub["diverged"].to_numpy(bool)]
    best, out = opt.best_log2_lr, []
    if best >= x.max():
        out.append(f"{where}: the best lr {2 ** best:.3g} is the largest searched; the optimum may lie "
                   f"above it: widen the lr range higher (to ~{2 ** (best + 2):.3g})")
    elif best >= stable.max():
        above = x[x > best].min()
        out.append(f"{where}: the best lr {2 ** best:.3g} is the largest that did not diverge (lr "
                   f"{2 ** above:.3g} diverged): the optimum is at the stability edge; sample lrs between them")
    if best <= x.min():
        out.append(f"{where}: the best lr {2 ** best:.3g} is the smallest searched; the optimum may lie "
                   f"below it: widen the lr range lower (to ~{2 ** (best - 2):.3g})")
    if opt.curvature <= 0:
        side = "higher" if opt.log2_lr[0] > best else "lower"
        out.append(f"{where}: the loss does not curve upward around lr {2 ** best:.3g} (flat or noisy): "
                   f"add lrs around it or widen the lr range {side}")
    if opt.exact and not opt.weak:
        out.append(f"{where}: only 3 lrs within +-{window:g} octaves of the best lr {2 ** best:.3g}: the "
                   f"parabola passes through them, so its interval is the lr grid's resolution, not "
                   f"measured; sample more lrs near the optimum")
    if opt.weak:
        out.append(f"{where}: too few trials near the optimum: under 3 distinct lrs within +-{window:g} "
                   f"octaves of the best lr {2 ** best:.3g}, so the fit used the nearest 3 (weak): "
                   f"sample more lrs near it")
    return out


def fit_drift(groups, E, notes):
    widths = sorted(groups["width"].unique().tolist())
    counts = groups.groupby("batch_size")["width"].nunique()
    shared = counts.index[counts >= 2]
    if len(widths) < 2 or not len(shared):
        notes.append(f"proxy widths {widths} share no batch size at >= 2 widths: no drift fit; assuming "
                     f"muP's width invariance of eta* (sweep a second width, e.g. {2 * widths[-1]}, to test it)")
        return None
    m = groups["batch_size"].isin(shared).to_numpy()
    weights = 1 / np.maximum(E[1:, m].var(0), VAR_FLOOR)
    slope = laws.fit_line(np.log2(groups.loc[m, "width"].to_numpy(float)), E[:, m], weights,
                          groups.loc[m, "batch_size"].to_numpy())[:, 0]
    if abs(slope[0]) > DRIFT_LIMIT:
        lo, hi = interval(slope[1:])
        unsure = " (the interval includes 0: sample more lrs near the optimum to tell)" if lo < 0 < hi else ""
        notes.append(f"eta* drifts {slope[0]:+.2f} octaves per doubling of width (95% CI [{lo:+.2f}, "
                     f"{hi:+.2f}]){unsure}, beyond +-{DRIFT_LIMIT}: the parametrization is suspect; run "
                     f"`mutransfer coord-check`, or pass correct_drift=True to extrapolate the drift")
    return slope


def fit_batch_law(groups, En, c, notes):
    batches = sorted(groups["batch_size"].unique().tolist())
    if len(batches) < 3:
        if len(batches) == 2:
            notes.append(f"batch sizes {batches}: too few to fit the eta*(B) law (needs >= 3)")
        return None
    lb = np.log2(groups["batch_size"].to_numpy(float) / c)
    out = laws.fit_laws(lb, En, 1 / np.maximum(En[1:].var(0), VAR_FLOOR))
    share = out["support"][out["law"]]
    if share < 0.6:
        ranked = ", ".join(f"{k} {v:.0%}" for k, v in sorted(out["support"].items(), key=lambda kv: -kv[1]))
        notes.append(f"the eta*(B) law is uncertain: bootstrap picks {ranked}; sweep more batch sizes")
    t1 = out["theta"][0, 1]
    if out["law"] != "constant" and not (lb.min() - 4 < t1 < lb.max() + 4):
        notes.append(f"B_noise ~ {2 ** t1:.3g} lies far outside the swept batches {batches} (after the "
                     f"momentum correction c = {c:.3g}): only a bound is known; sweep batches nearer it")
    if out["law"] == "constant":
        notes.append(f"eta* does not change with batch size over {batches}: B_noise is well below them")
    return out


def lr_at_batch(batch, groups, En, law, c, shift, notes):
    """(R+1,) log2 lr at the target batch, and the proxies' log2 eta* at the nearest swept batch."""
    lb = np.log2(groups["batch_size"].to_numpy(float))
    nearest = lb[np.argmin(np.abs(lb - np.log2(batch)))]
    m = lb == nearest
    w = 1 / np.maximum(En[1:, m].var(0), VAR_FLOOR)
    pooled = (En[:, m] * w).sum(1) / w.sum()
    if law is None:
        if 2 ** nearest != batch:
            notes.append(f"target batch {batch} was not swept and there is no eta*(B) law: eta* at "
                         f"batch {2 ** nearest:.0f} is used unchanged; sweep >= 3 batch sizes to move it")
        return pooled, pooled
    if not lb.min() - 1 <= np.log2(batch) <= lb.max() + 1:
        notes.append(f"batch {batch} extrapolates the {law['law']} law beyond the swept batches "
                     f"{2 ** lb.min():.0f}..{2 ** lb.max():.0f}")
    theta = law["theta"].copy()
    if law["law"] == "constant":
        return theta[:, 0], pooled
    theta[:, 1] += shift
    return laws.law_log2_eta(law["law"], [np.log2(batch / c)], theta)[:, 0], pooled


def recommended_lr(frame, groups, batch, log2_lr, window, notes) -> tuple[float, dict | None]:
    """The recommended log2 lr: the risk-aware one (:mod:`mutransfer.projection._risk`) from the
    asymmetric curve of the sweeps at the batch nearest the target's, or eta* itself when the
    curve's two sides are not identified (said in the notes)."""
    from mutransfer.projection._risk import fit_asymmetric, risk_aware

    lb = np.log2(groups["batch_size"].to_numpy(float))
    near = groups[lb == lb[np.argmin(np.abs(lb - np.log2(batch)))]]
    live = frame[~frame["diverged"]]
    runs = [live[(live["width"] == r.width) & (live["batch_size"] == r.batch_size)] for r in near.itertuples()]
    curve = fit_asymmetric([np.log2(g["lr"].to_numpy(float)) for g in runs],
                           [g["loss"].to_numpy(float) for g in runs], np.log2(near["lr"].to_numpy(float)),
                           window=window)
    if curve is None:
        notes.append("the lr is eta* itself: the landscape's two sides are not identified (fewer than "
                     "2 lrs on a side of the optimum); sweep lrs on both sides for a risk-aware lr")
        return float(log2_lr[0]), None
    x, info = risk_aware(log2_lr, curve)
    if curve.asymmetry == 1.0 and curve.offset == 0.0:  # symmetric: E[X], estimated by eta* itself
        return float(log2_lr[0]), {**info, "symmetric": True}
    if curve.asymmetry > 2 or curve.asymmetry < 0.5:
        side = "above" if curve.asymmetry > 1 else "below"
        notes.append(f"the loss rises {max(curve.asymmetry, 1 / curve.asymmetry):.1f}x faster {side} eta* "
                     f"than on the other side: the risk-aware lr {2 ** x:.4g} ({x - log2_lr[0]:+.2f} octave "
                     f"from eta* {2 ** log2_lr[0]:.4g}) lowers the expected excess loss from "
                     f"{info['eta_excess']:.4f} to {info['safe_excess']:.4f} nats")
    return x, info
