"""The fits behind :func:`mutransfer.transfer` (scaling.md section 6), as pure numpy.

Every fit runs on a stack of bootstrap replicates at once: row 0 is the fit to the trials as
observed, rows 1..R refit resampled trials, and an interval is the percentile range of rows
1..R. Learning rates, batch sizes and widths live in log2 space throughout, so a slope is in
octaves per doubling.

    >>> opt = quadratic_optimum(np.log2(lrs), losses, rng=np.random.default_rng(0))
    >>> 2 ** opt.log2_lr[0], interval(2 ** opt.log2_lr[1:])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_BOOT = 200  # bootstrap resamples: enough for a 95% percentile interval, cheap when vectorised
WINDOW = 2.0  # octaves either side of the best lr that the quadratic fit uses
CI_LEVEL = 0.95
VAR_FLOOR = 0.05 ** 2  # octaves^2: no eta* is trusted to better than 0.05 octaves
LAWS = ("constant", "sgd", "sign", "surge")
N_PARAMS = {"constant": 1, "sgd": 2, "sign": 2, "surge": 2}
B_NOISE_MARGIN = 12.0  # octaves beyond the swept batches where a fitted B_noise is unidentified


def interval(reps) -> tuple[float, float]:
    """The central ``CI_LEVEL`` percentile interval of bootstrap replicates (NaNs ignored).

        >>> interval(np.random.default_rng(0).normal(size=1000))
        (-1.9..., 1.9...)
    """
    q = 100 * (1 - CI_LEVEL) / 2
    return float(np.nanpercentile(reps, q)), float(np.nanpercentile(reps, 100 - q))


def momentum_c(beta1: float) -> float:
    """c = (1 - beta1) / (1 + beta1): momentum averages about 1/c batches, so a batch of B acts
    like B / c in the eta*(B) laws (scaling.md section 6).

        >>> momentum_c(0.9)
        0.0526...
    """
    if isinstance(beta1, bool) or not isinstance(beta1, (int, float)) or not 0 <= beta1 < 1:
        raise ValueError(f"beta1 (momentum) must be a number in [0, 1), e.g. 0.9; got {beta1!r}")
    return (1 - beta1) / (1 + beta1)


def bootstrap_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot + 1, n) multiplicities: row 0 all ones (the data), rows 1.. resampled with replacement."""
    return np.vstack([np.ones((1, n)), rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)])


def wls(X: np.ndarray, Y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted least squares for a stack of fits sharing the design ``X`` (n, k).

    Minimises sum_j W[r, j] (Y[r, j] - X[j] @ beta[r])^2 for each row r; ``Y`` and ``W`` are
    (R, n). Returns beta (R, k), NaN where a row's problem is singular.

        >>> wls(np.c_[np.ones(3), [0, 1, 2]], np.array([[1.0, 3, 5]]), np.ones((1, 3)))
        array([[1., 2.]])
    """
    A = np.einsum("rn,ni,nj->rij", W, X, X)
    b = np.einsum("rn,ni,rn->ri", W, X, Y)
    out = np.full(b.shape, np.nan)
    ok = np.linalg.cond(A) < 1e10
    if ok.any():
        out[ok] = np.linalg.solve(A[ok], b[ok][..., None])[..., 0]
    return out


@dataclass(frozen=True)
class Optimum:
    """eta* of one lr sweep: row 0 of each array is the fit, rows 1.. the bootstrap replicates."""

    log2_lr: np.ndarray = field(repr=False)  # argmin of the fitted parabola (within the fitted lrs)
    loss: np.ndarray = field(repr=False)  # fitted loss there
    best_log2_lr: float  # the best trial's lr (lowest mean loss over repeats)
    n_fit: int  # trials in the fit
    n_distinct: int  # distinct lrs in the fit
    curvature: float  # loss per octave^2 of the fit; <= 0 means the curve is not convex there
    weak: bool  # fewer than 3 distinct lrs within the window: the nearest 3 were used
    clamped: bool  # the vertex fell outside the fitted lrs (or the parabola opens downward)
    exact: bool  # 3 distinct lrs: the parabola passes through them and resampling cannot
    # measure its uncertainty, so the replicates spread uniformly over +-half the lr spacing


def quadratic_optimum(log2_lr, loss, *, window: float = WINDOW, n_boot: int = N_BOOT,
                      rng: np.random.Generator | None = None) -> Optimum:
    """eta* from a weighted quadratic fit of loss against log2 lr around the best trial.

    loss ~ a0 + a1 dx + a2 dx^2 with dx = log2 lr - log2 lr_best, on the trials within
    ``window`` octaves of the best (at least the 3 nearest distinct lrs), weighted by
    exp(-dx^2 / (2 window^2)); eta* = the minimiser of the parabola on the fitted lrs,
    i.e. -a1 / (2 a2) when that lies inside. Trials are resampled ``n_boot`` times; with only
    3 distinct lrs the fit is exact and the replicates spread over +-half their spacing instead.

        >>> opt = quadratic_optimum(np.log2([1e-3, 2e-3, 4e-3, 8e-3]), [2.1, 1.9, 2.0, 2.6])
        >>> 2 ** opt.log2_lr[0]
    """
    x, y = np.asarray(log2_lr, float), np.asarray(loss, float)
    xs, inverse = np.unique(x, return_inverse=True)
    if len(xs) < 3:
        raise ValueError(f"too few trials near the optimum: {len(xs)} distinct lr(s) "
                         f"{np.round(2 ** xs, 8).tolist()}; a quadratic fit needs >= 3")
    means = np.bincount(inverse, weights=y) / np.bincount(inverse)
    best = xs[np.argmin(means)]
    dist = np.abs(xs - best)
    keep = xs[dist <= window + 1e-9]
    weak = len(keep) < 3
    if weak:
        keep = xs[np.argsort(dist, kind="stable")[:3]]
    sel = np.isin(x, keep)
    dx, yy = x[sel] - best, y[sel]
    scale = max(window, np.abs(dx).max())
    X = np.c_[np.ones_like(dx), dx, dx ** 2]
    rng = rng or np.random.default_rng(0)
    counts = bootstrap_counts(len(dx), n_boot, rng)
    coef = wls(X, np.broadcast_to(yy, counts.shape), counts * np.exp(-0.5 * (dx / scale) ** 2))
    coef[np.isnan(coef[:, 0])] = coef[0]  # a resample with < 3 distinct lrs: keep the data's fit
    v, fv, outside = _parabola_min(coef, dx.min(), dx.max())
    exact = len(keep) == 3
    if exact:
        half = np.ptp(keep) / 4  # half the mean spacing of the 3 lrs
        v[1:] = v[0] + rng.uniform(-half, half, len(v) - 1)
    return Optimum(best + v, fv, float(best), int(sel.sum()), len(keep), float(coef[0, 2]),
                   weak, bool(outside[0]), exact)


def flat_optimum(x, Y: np.ndarray, *, z: float = 2.0):
    """The largest ``x`` whose value is as low as the lowest within the noise, for each row of
    ``Y`` (R, n; row 0 the data, rows 1.. bootstrap replicates) over sorted ``x`` (n,).

    With j* row 0's argmin, d_j = Y[r, j] - min_k Y[r, k] and tol_j = z * sd_rows(Y[:, j] -
    Y[:, j*]): scanning up from the row's argmin, the first j with d_j > tol_j ends the flat
    bottom, and x_opt interpolates linearly where d - tol crosses 0 before it. A loss that is flat
    in the batch (the linear-scaling regime, B << B_noise) thus gives its largest batch, the one
    that reaches the same loss in the fewest steps; a sharp minimum gives about its argmin.
    Returns (x_opt (R,), edge: row 0's bottom reaches the largest x).

        >>> flat_optimum(np.log2([8, 16, 32, 64]), np.array([[2.0, 2.0, 2.2, 2.6]]))[0]
        array([4.])
    """
    x, Y = np.asarray(x, float), np.atleast_2d(np.asarray(Y, float))
    if len(x) < 2 or np.any(np.diff(x) <= 0):
        raise ValueError(f"x must hold >= 2 increasing values; got {x.tolist()}")
    j0 = int(np.nanargmin(Y[0]))
    tol = z * np.nanstd(Y[1:] - Y[1:, j0:j0 + 1], axis=0) if len(Y) > 1 else np.zeros(len(x))
    f = Y - np.nanmin(Y, axis=1, keepdims=True) - tol
    out, edge = np.empty(len(Y)), False
    for r, row in enumerate(f):
        j = int(np.nanargmin(Y[r]))
        above = np.flatnonzero(row[j:] > 0)
        if not len(above):
            out[r], edge = x[-1], edge or r == 0
            continue
        k = j + above[0]  # the first batch above the flat bottom; k - 1 is still on it
        lo, hi = row[k - 1], row[k]
        out[r] = x[k - 1] + (x[k] - x[k - 1]) * min(1.0, max(0.0, -lo / (hi - lo)))
    return out, edge


def _parabola_min(coef: np.ndarray, lo: float, hi: float):
    """Minimiser and minimum of each row's a0 + a1 v + a2 v^2 on [lo, hi]."""
    a0, a1, a2 = coef.T
    convex = a2 > 0
    vertex = np.where(convex, -a1 / (2 * np.where(convex, a2, 1.0)), lo)
    outside = ~convex | (vertex < lo) | (vertex > hi)
    cand = np.stack([np.full_like(a0, lo), np.full_like(a0, hi), np.clip(vertex, lo, hi)], 1)
    vals = a0[:, None] + a1[:, None] * cand + a2[:, None] * cand ** 2
    i = np.argmin(vals, 1)
    rows = np.arange(len(a0))
    return cand[rows, i], vals[rows, i], outside


def law_log2_eta(law: str, log2_b, theta: np.ndarray) -> np.ndarray:
    """log2 eta*(B) of a batch law for parameters ``theta`` (R, k) at log2 B (n,) -> (R, n).

    theta = (log2 eta_max, log2 B_noise) with B the effective batch (B / c with momentum):
      sgd:   eta_max / (1 + B_noise / B)
      sign:  eta_max / sqrt(1 + B_noise / B)                 (Adam, Muon without surge)
      surge: 2 eta_max / (sqrt(B_noise / B) + sqrt(B / B_noise))  (eta_max = eta_peak at B_noise = B_peak)
      constant: eta_max (no batch dependence over the swept range)

        >>> law_log2_eta("sgd", np.log2([64.0]), np.array([[-10.0, 6.0]]))
        array([[-11.]])
    """
    theta = np.atleast_2d(theta)
    t0 = theta[:, :1]
    if law == "constant":
        return np.broadcast_to(t0, (len(theta), np.size(log2_b))).copy()
    d = theta[:, 1:2] - np.asarray(log2_b, float)[None]
    if law == "sgd":
        return t0 - np.logaddexp2(0, d)
    if law == "sign":
        return t0 - 0.5 * np.logaddexp2(0, d)
    if law == "surge":
        return 1 + t0 - np.logaddexp2(d / 2, -d / 2)
    raise ValueError(f"unknown batch law {law!r}; choose one of {', '.join(LAWS)}")


def _law_dt1(law: str, d: np.ndarray) -> np.ndarray:
    """d log2 eta* / d log2 B_noise, with d = log2 B_noise - log2 B."""
    if law == "sgd":
        return -1 / (1 + 2.0 ** -d)
    if law == "sign":
        return -0.5 / (1 + 2.0 ** -d)
    return -0.5 * np.tanh(d * np.log(2) / 2)


def _law_start(law: str, lb: np.ndarray, Y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """The linearised fits of scaling.md section 6 as starting points (lb centred near 0):
    sgd 1/eta linear in 1/B; sign 1/eta^2 linear in 1/B; surge 1/eta = p B^-1/2 + q B^1/2."""
    fallback = np.c_[Y.max(1), np.full(len(Y), np.median(lb))]
    b = 2.0 ** lb
    if law == "surge":
        coef = wls(np.c_[b ** -0.5, b ** 0.5], 2.0 ** -Y, W)
        p, q = coef[:, 0], coef[:, 1]
        ok = (p > 0) & (q > 0)
        start = np.c_[-np.log2(2 * np.sqrt(np.abs(p * q))), np.log2(np.abs(p / q))]
    else:
        power = 1 if law == "sgd" else 2
        coef = wls(np.c_[np.ones_like(b), 1 / b], 2.0 ** (-power * Y), W)
        a, s = coef[:, 0], coef[:, 1]
        ok = (a > 0) & (s > 0)
        start = np.c_[-np.log2(np.abs(a)) / power, np.log2(np.abs(s / a))]
    return np.where(ok[:, None] & np.isfinite(start), start, fallback)


def fit_law(law: str, log2_b, Y: np.ndarray, weights, iters: int = 60):
    """Fit one batch law to log2 eta* (rows of ``Y``, (R, n)) at effective log2 batches ``log2_b``.

    Weighted least squares in log2 eta (weights ~ 1 / var), Levenberg-Marquardt from the
    linearised start, vectorised over the rows. log2 B_noise is kept within ``B_NOISE_MARGIN``
    octaves of the swept batches. Returns (theta (R, k), chi2 (R,)).

        >>> theta, chi2 = fit_law("sign", np.log2(B / c), log2_eta[None], 1 / var)
    """
    lb = np.asarray(log2_b, float)
    Y = np.atleast_2d(Y)
    W = np.broadcast_to(np.asarray(weights, float), Y.shape)
    centre = float(lb.mean())  # centring keeps the linearised fits well conditioned
    lbc = lb - centre
    if law == "constant":
        t0 = (W * Y).sum(1) / W.sum(1)
        theta = t0[:, None]
        return theta, (W * (Y - t0[:, None]) ** 2).sum(1)
    theta = _law_start(law, lbc, Y, W)
    bounds = (lbc.min() - B_NOISE_MARGIN, lbc.max() + B_NOISE_MARGIN)
    theta[:, 1] = np.clip(theta[:, 1], *bounds)
    chi2 = _chi2(law, lbc, Y, W, theta)
    lam = np.full(len(Y), 1e-2)
    for _ in range(iters):
        r = Y - law_log2_eta(law, lbc, theta)
        J = np.stack([np.ones_like(r), _law_dt1(law, theta[:, 1:2] - lbc[None])], -1)
        A = np.einsum("rn,rni,rnj->rij", W, J, J)
        g = np.einsum("rn,rni,rn->ri", W, J, r)
        damp = lam[:, None, None] * (A * np.eye(2) + 1e-9 * np.eye(2))
        step = np.linalg.solve(A + damp, g[..., None])[..., 0]
        new = theta + step
        new[:, 1] = np.clip(new[:, 1], *bounds)
        chi_new = _chi2(law, lbc, Y, W, new)
        better = chi_new < chi2
        theta = np.where(better[:, None], new, theta)
        chi2 = np.where(better, chi_new, chi2)
        lam = np.where(better, lam / 3, lam * 4)
    theta[:, 1] += centre
    return theta, chi2


def _chi2(law, lb, Y, W, theta) -> np.ndarray:
    return (W * (Y - law_log2_eta(law, lb, theta)) ** 2).sum(1)


def aic(chi2, n: int, k: int):
    """Akaike's criterion for a Gaussian fit of unknown scale: n log(chi2 / n) + 2 k."""
    return n * np.log(np.maximum(chi2, 1e-12) / n) + 2 * k


def fit_laws(log2_b, Y: np.ndarray, weights) -> dict:
    """Fit every law of :data:`LAWS`; choose by AIC on the data row (row 0).

    Returns {"law", "theta" (R, 2; constant -> B_noise NaN), "aic": {law: value},
    "support": {law: fraction of bootstrap rows it wins}, "fits": {law: theta}}.

        >>> out = fit_laws(np.log2(B / c), log2_eta_reps, 1 / var)
        >>> out["law"], 2 ** out["theta"][0]
    """
    Y = np.atleast_2d(Y)
    n = Y.shape[1]
    fits, scores = {}, {}
    for law in LAWS:
        theta, chi2 = fit_law(law, log2_b, Y, weights)
        fits[law] = theta
        scores[law] = aic(chi2, n, N_PARAMS[law])
    table = np.stack([scores[law] for law in LAWS], 1)
    winner = np.argmin(table, 1)
    law = LAWS[winner[0]]
    support = {name: float(np.mean(winner[1:] == i)) if len(Y) > 1 else float(i == winner[0])
               for i, name in enumerate(LAWS)}
    theta = fits[law] if law != "constant" else np.c_[fits[law], np.full(len(Y), np.nan)]
    return {"law": law, "theta": theta, "aic": {k: float(v[0]) for k, v in scores.items()},
            "support": support, "fits": fits}


def fit_line(x, Y: np.ndarray, weights=None, groups=None) -> np.ndarray:
    """Slope and intercept of Y ~ a + s x for each row of ``Y`` (R, n), with optional per-group
    intercepts (``groups``: n labels). Returns (R, 2): (s, a of the first group).

        >>> fit_line(np.log2([64, 128]), np.array([[-10.0, -10.2]]))
        array([[ -0.2, ...]])
    """
    x = np.asarray(x, float)
    Y = np.atleast_2d(Y)
    labels = np.zeros(len(x), int) if groups is None else np.unique(groups, return_inverse=True)[1]
    X = np.c_[x, np.eye(labels.max() + 1)[labels]]
    W = np.broadcast_to(np.ones(len(x)) if weights is None else np.asarray(weights, float), Y.shape)
    return wls(X, Y, W)[:, :2]
