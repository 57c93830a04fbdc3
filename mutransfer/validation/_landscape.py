"""Learning-rate landscapes across widths: eta* per curve, its drift per doubling, the regret.

Input is the tidy frame :func:`mutransfer.validate` returns (one row per run: scheme,
optimizer, width, log2_lr, seed, loss, diverged). Diverged runs are dropped before any mean or
fit; a (width, lr) cell where every run diverged is a *diverged cell*.

- **eta*** of a curve is the vertex of the quadratic fit of loss against log2 lr near the
  minimum (:func:`mutransfer.projection._laws.quadratic_optimum`, the same fit the transfer uses), on the
  surviving runs of every seed.
- **drift** is the least-squares slope of log2 eta* against log2 width, in octaves per
  doubling (scaling.md section 7), with a bootstrap interval over the runs. muP's target is ``|drift| <= MUP_MAX_DRIFT``; SP with Adam
  drifts by about -1 (eta* ~ 1/width).
- **regret** at the largest width is ``(L(eta*_smallest) - min_grid L) / min_grid L`` in %. The
  loss at the transferred lr is read off the measured seed-mean curve by linear interpolation
  in log2 lr between the two grid points around it. This beats the alternatives: the parabola
  is only valid near the large width's own minimum (under SP the transferred lr lands far from
  it), and the nearest grid point quantizes to half a grid step. A chord of a convex curve lies
  above it, so this regret is >= 0, and 0 exactly when the transferred lr is the best grid point.

    >>> table = summarize(df)          # one row per (scheme, optimizer)
    >>> table[["scheme", "optimizer", "drift", "regret_pct", "meets_target"]]
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mutransfer.core import require_columns

MUP_MAX_DRIFT = 0.25  # octaves of eta* per doubling of width (issue 7's target)
MUP_MAX_REGRET = 1.0  # percent of the best loss at the largest width
INTERPOLATION_FAR = 0.25  # octaves from the nearest measured lr beyond which regret is flagged
MUP_SCHEMES = ("mup", "spectral")  # the schemes that claim transfer; SP is the reference
CURVE = ["scheme", "optimizer", "width"]
GROUP = ["scheme", "optimizer"]
REQUIRED = ("scheme", "optimizer", "width", "log2_lr", "seed", "loss", "diverged")


def check_runs(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the columns a landscape needs, or a ValueError naming what is missing."""
    require_columns(df, REQUIRED, "landscape", "the frame mutransfer.validate() returns (validate.csv)")
    return df


def survivors(df: pd.DataFrame) -> pd.DataFrame:
    """The runs that count: not diverged and with a finite loss."""
    check_runs(df)
    keep = ~df["diverged"].astype(bool) & np.isfinite(df["loss"].astype(float))
    return df[keep]


def curve_means(df: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean loss per (scheme, optimizer, width, log2_lr) over surviving runs.

    Columns: scheme, optimizer, width, log2_lr, loss (NaN in a diverged cell), loss_std,
    n_runs, n_diverged.

        >>> curve_means(df).query("width == 64")
    """
    check_runs(df)
    keys = CURVE + ["log2_lr"]
    live = survivors(df).groupby(keys)["loss"].agg(loss="mean", loss_std="std", n_runs="count")
    total = df.groupby(keys)["loss"].size().rename("n_total")
    out = total.to_frame().join(live, how="left").reset_index()
    out["n_runs"] = out["n_runs"].fillna(0).astype(int)
    out["n_diverged"] = out.pop("n_total") - out["n_runs"]
    return out.sort_values(keys).reset_index(drop=True)


def fit_curve(log2_lr, loss, *, seed: int = 0) -> dict:
    """eta* of one curve from its surviving runs (repeats per lr allowed), with replicates.

    The fit is :func:`mutransfer.projection._laws.quadratic_optimum`, the one the transfer uses (weighted
    parabola around the best lr, runs resampled for the bootstrap). Returns a dict: log2_eta
    (NaN when no fit), log2_eta_lo/hi (its bootstrap interval), reps (the replicates, an array),
    best_log2_lr and best_loss (the grid point of lowest seed-mean loss), n_points and note
    (why eta* is missing or unreliable; "" when fine).

        >>> fit_curve([-10, -9, -8, -7, -6], [3.1, 2.8, 2.7, 2.8, 3.2])["log2_eta"]
        -8.0
    """
    from mutransfer.projection import interval, quadratic_optimum

    x, y = np.asarray(log2_lr, float), np.asarray(loss, float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    out = {"log2_eta": math.nan, "log2_eta_lo": math.nan, "log2_eta_hi": math.nan,
           "reps": np.array([]), "best_log2_lr": math.nan, "best_loss": math.nan,
           "n_points": int(len(np.unique(x))), "note": ""}
    if len(x) == 0:
        return {**out, "note": "every run diverged"}
    xs, inverse = np.unique(x, return_inverse=True)
    means = np.bincount(inverse, weights=y) / np.bincount(inverse)
    out.update(best_log2_lr=float(xs[np.argmin(means)]), best_loss=float(means.min()))
    try:
        opt = quadratic_optimum(x, y, rng=np.random.default_rng(seed))
    except ValueError as exc:  # too few surviving lrs: the table says so instead of failing
        return {**out, "note": str(exc)}
    lo, hi = interval(opt.log2_lr[1:])
    return {**out, "log2_eta": float(opt.log2_lr[0]), "log2_eta_lo": lo, "log2_eta_hi": hi,
            "reps": np.asarray(opt.log2_lr[1:], float), "note": _fit_note(opt, xs)}


def _fit_note(opt, xs: np.ndarray) -> str:
    notes = []
    if opt.best_log2_lr in (xs.min(), xs.max()):
        side = "lower" if opt.best_log2_lr == xs.min() else "higher"
        notes.append(f"best lr at the grid's edge: extend --lrs {side}")
    elif opt.clamped:
        notes.append("parabola's vertex outside the fitted lrs (flat or noisy curve)")
    if opt.weak:
        notes.append("under 3 lrs within 1.5 octaves of the best: refine --lrs")
    return "; ".join(notes)


def _curve_fits(df: pd.DataFrame, seed: int) -> list[tuple[tuple, dict]]:
    live = survivors(df)
    keys = sorted(df.groupby(CURVE).groups)
    fits = []
    for key in keys:
        runs = live[(live[CURVE] == pd.Series(key, index=CURVE)).all(axis=1)]
        fits.append((key, fit_curve(runs["log2_lr"], runs["loss"], seed=seed + int(key[2]))))
    return fits


def eta_stars(df: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """eta* per curve: one row per (scheme, optimizer, width).

    Columns: scheme, optimizer, width, log2_eta, eta, log2_eta_lo, log2_eta_hi, best_log2_lr,
    best_loss, n_points, note.

        >>> eta_stars(df)[["scheme", "width", "log2_eta"]]
    """
    check_runs(df)
    rows = [{**dict(zip(CURVE, key)), **{k: v for k, v in fit.items() if k != "reps"}}
            for key, fit in _curve_fits(df, seed)]
    cols = CURVE + ["log2_eta", "log2_eta_lo", "log2_eta_hi", "best_log2_lr", "best_loss",
                    "n_points", "note"]
    out = pd.DataFrame(rows, columns=cols)
    out.insert(4, "eta", np.exp2(out["log2_eta"].astype(float)))
    return out


def drift_slope(width, log2_eta) -> float:
    """Octaves of eta* per doubling of width: the least-squares slope d in
    ``log2 eta*(w) = a + d log2 w`` over the widths whose eta* is finite (NaN below two).

        >>> drift_slope([64, 128, 256], [-8.0, -9.0, -10.0])
        -1.0
    """
    x, y = np.log2(np.asarray(width, float)), np.asarray(log2_eta, float)
    ok = np.isfinite(y)
    if len(np.unique(x[ok])) < 2:
        return math.nan
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def drift(df: pd.DataFrame, *, seed: int = 0) -> tuple[float, float, float]:
    """(drift, low, high) of one (scheme, optimizer) landscape, in octaves per doubling.

    The interval refits the slope on each bootstrap replicate of the per-width eta* fits
    (:func:`fit_curve`; runs resampled independently per width) and takes the percentile
    interval (``mutransfer.projection._laws.CI_LEVEL``). Widths without an eta* are left out.

        >>> d, lo, hi = drift(df.query("scheme == 'mup' and optimizer == 'adamw'"))
    """
    from mutransfer.projection import fit_line, interval

    fits = [(key[2], fit) for key, fit in _curve_fits(df, seed) if math.isfinite(fit["log2_eta"])]
    d = drift_slope([w for w, _ in fits], [f["log2_eta"] for _, f in fits])
    if not math.isfinite(d):
        return d, math.nan, math.nan
    reps = np.stack([f["reps"] for _, f in fits], axis=1)  # (replicates, widths)
    slopes = fit_line(np.log2([w for w, _ in fits]), reps)[:, 0]
    lo, hi = interval(slopes)
    return d, lo, hi


def loss_at(log2_lr, loss, x: float) -> float:
    """The measured curve read at ``x`` by linear interpolation in log2 lr between its two
    neighbouring grid points (``inf`` if either is a diverged cell, NaN outside the grid).

        >>> loss_at([-9, -8], [2.0, 3.0], -8.5)
        2.5
    """
    xs, ys = np.asarray(log2_lr, float), np.asarray(loss, float)
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    if not math.isfinite(x) or len(xs) == 0 or x < xs[0] or x > xs[-1]:
        return math.nan
    hi = int(np.searchsorted(xs, x))
    lo = hi if xs[hi] == x else hi - 1
    if not (math.isfinite(ys[lo]) and math.isfinite(ys[hi])):
        return math.inf
    if lo == hi:
        return float(ys[lo])
    t = (x - xs[lo]) / (xs[hi] - xs[lo])
    return float(ys[lo] + t * (ys[hi] - ys[lo]))


def regret(means: pd.DataFrame, etas: pd.DataFrame) -> dict:
    """Regret of transferring eta* from the smallest width to the largest, for one landscape.

    ``regret_pct = 100 (L_big(eta*_small) - min L_big) / min L_big`` with ``L_big`` the
    largest width's seed-mean curve (``loss_at``) and ``min L_big`` its best grid point.

        >>> regret(curve_means(one), eta_stars(one))["regret_pct"]
    """
    small, big = etas["width"].min(), etas["width"].max()
    x = float(etas.loc[etas["width"] == small, "log2_eta"].iloc[0])
    curve = means[means["width"] == big]
    best = float(curve["loss"].min())
    out = {"small_width": int(small), "big_width": int(big), "transferred_log2_lr": x,
           "best_loss": best, "loss_at_transferred": math.nan, "regret_pct": math.nan,
           "regret_note": ""}
    if not math.isfinite(x):
        return {**out, "regret_note": f"no eta* at width {small} to transfer"}
    at = loss_at(curve["log2_lr"], curve["loss"], x)
    out["loss_at_transferred"] = at
    if math.isnan(at):
        return {**out, "regret_note": f"log2 lr {x:.2f} lies outside width {big}'s grid"}
    if math.isinf(at):
        return {**out, "regret_pct": math.inf, "regret_note": f"width {big} diverged at log2 lr {x:.2f}"}
    return {**out, "regret_pct": 100 * (at - best) / best, "regret_note": _interpolation_note(curve, x)}


def _interpolation_note(curve: pd.DataFrame, x: float, far: float = INTERPOLATION_FAR) -> str:
    """Say so when the transferred lr lies ``far`` octaves or more from every measured lr: the
    regret is then read off a chord, which lies above a convex curve (an upper bound)."""
    xs = np.sort(curve["log2_lr"].to_numpy(float))
    if len(xs) == 0 or np.min(np.abs(xs - x)) < far:
        return ""
    below, above = xs[xs < x].max(), xs[xs > x].min()
    return (f"interpolated between 2^{below:g} and 2^{above:g} (an upper bound); "
            f"measure it with --lrs={x - 0.5:.1f}:{x + 0.5:.1f}:0.5")


def summarize(df: pd.DataFrame, *, max_drift: float = MUP_MAX_DRIFT,
              max_regret: float = MUP_MAX_REGRET, seed: int = 0) -> pd.DataFrame:
    """One row per (scheme, optimizer): drift with its interval, regret, and the muP verdict.

    Columns: scheme, optimizer, drift, drift_lo, drift_hi, small_width, big_width,
    transferred_log2_lr, best_loss, loss_at_transferred, regret_pct, regret_note, claims
    (True for the muP family), meets_target (``|drift| <= max_drift`` and
    ``regret <= max_regret``; None for SP, which is the reference), verdict (a sentence).

        >>> summarize(df)[["scheme", "optimizer", "drift", "regret_pct", "verdict"]]
    """
    check_runs(df)
    if df.empty:
        raise ValueError("no runs to summarize; run mutransfer validate first")
    rows = []
    for (scheme, opt), runs in df.groupby(GROUP, sort=True):
        d, lo, hi = drift(runs, seed=seed)
        r = regret(curve_means(runs), eta_stars(runs, seed=seed))
        row = {"scheme": scheme, "optimizer": opt, "drift": d, "drift_lo": lo, "drift_hi": hi, **r}
        rows.append({**row, **_verdict(row, max_drift, max_regret)})
    return pd.DataFrame(rows)


def _verdict(row: dict, max_drift: float, max_regret: float) -> dict:
    d, r = row["drift"], row["regret_pct"]
    claims = row["scheme"] in MUP_SCHEMES
    if not math.isfinite(d):
        return {"claims": claims, "meets_target": False if claims else None,
                "verdict": "no drift: fewer than two widths have a fitted eta*"}
    drift_ok, regret_ok = abs(d) <= max_drift, r <= max_regret  # NaN regret is not ok
    said = (f"drift {d:+.2f} octave/doubling ({'within' if drift_ok else 'beyond'} ±{max_drift:g}), "
            + (f"regret {r:.2f}% ({'within' if regret_ok else 'above'} {max_regret:g}%)"
               if math.isfinite(r) else f"regret {'infinite' if r > 0 else 'unknown'} ({row['regret_note']})"))
    if not claims:
        return {"claims": False, "meets_target": None, "verdict": f"reference (SP): {said}"}
    met = drift_ok and regret_ok
    return {"claims": True, "meets_target": met,
            "verdict": ("target met: " if met else "TARGET MISSED: ") + said}
