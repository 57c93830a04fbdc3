"""The fits behind :func:`mutransfer.transfer` (scaling.md section 6), as pure numpy.

The eta*(B) laws are one :class:`Law` record each (formula, log2 eta*, start, Jacobian,
parameter count) in the registry :data:`LAWS`; the B_opt(D) law of the token budget is in
:mod:`mutransfer.projection._budget_laws`.

Every fit runs on a stack of bootstrap replicates at once: row 0 is the fit to the trials as
observed, rows 1..R refit resampled trials, and an interval is the percentile range of rows
1..R. Learning rates, batch sizes and widths live in log2 space throughout, so a slope is in
octaves per doubling.

    >>> opt = quadratic_optimum(np.log2(lrs), losses, rng=np.random.default_rng(0))
    >>> 2 ** opt.log2_lr[0], interval(2 ** opt.log2_lr[1:])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

N_BOOT = 200  # bootstrap resamples: enough for a 95% percentile interval, cheap when vectorised
WINDOW = 2.0  # octaves either side of the best lr that the quadratic fit uses
CI_LEVEL = 0.95
VAR_FLOOR = 0.05 ** 2  # octaves^2: no eta* is trusted to better than 0.05 octaves
B_NOISE_MARGIN = 12.0  # octaves beyond the swept batches where a fitted B_noise is unidentified


def interval(reps) -> tuple[float, float]:
    """The central ``CI_LEVEL`` percentile interval of bootstrap replicates (NaNs ignored).

        >>> interval(np.random.default_rng(0).normal(size=1000))
        (-1.9..., 1.9...)
    """
    q = 100 * (1 - CI_LEVEL) / 2
    return float(np.nanpercentile(reps, q)), float(np.nanpercentile(reps, 100 - q))


def replicate_interval(draws) -> tuple[float, float]:
    """The :func:`interval` of a bootstrap stack's replicates (row 0, the fit to the data, left out);
    a stack without replicates gives (row 0, row 0).

        >>> replicate_interval(np.array([1.0]))
        (1.0, 1.0)
    """
    draws = np.asarray(draws, float)
    return interval(draws[1:]) if len(draws) > 1 else (float(draws[0]), float(draws[0]))


def distinct_values(column) -> list[float]:
    """The sorted distinct finite values of a column (None and NaN left out), e.g. a frame's budgets.

        >>> distinct_values([4096.0, None, 1024.0, 4096.0])
        [1024.0, 4096.0]
    """
    return sorted({float(v) for v in column if v is not None and np.isfinite(float(v))})


def exp2_interval(log2_reps) -> tuple[float, float]:
    """2 ** the :func:`interval` of log2 replicates 1.. (row 0, the fit to the data, is left out).

        >>> exp2_interval(np.log2([100.0, 90.0, 110.0]))
        (90.4..., 109.4...)
    """
    lo, hi = interval(np.asarray(log2_reps)[1:])
    return float(2 ** lo), float(2 ** hi)


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


# ----- the eta*(B) laws: one record per law -----

def _bend(log2_b, theta) -> tuple[np.ndarray, np.ndarray]:
    """(log2 eta_max (R, 1), d = log2 B_noise - log2 B (R, n)) of the two-parameter laws."""
    return theta[:, :1], theta[:, 1:2] - np.asarray(log2_b, float)[None]


def _bend_jacobian(dt1: Callable[[np.ndarray], np.ndarray]):
    """The (R, n, 2) Jacobian of a two-parameter law: 1 for log2 eta_max, ``dt1(d)`` for log2 B_noise."""
    def jacobian(log2_b, theta):
        dt = dt1(_bend(log2_b, theta)[1])
        return np.stack([np.ones_like(dt), dt], -1)
    return jacobian


def _bend_fallback(lb, Y) -> np.ndarray:
    """Where a linearised fit fails: eta_max at the largest eta*, B_noise mid-range."""
    return np.c_[Y.max(1), np.full(len(Y), np.median(lb))]


def _start_inverse_power(power: int):
    """sgd (power 1) and sign (power 2) linearised: eta^-power = a + s / B, so
    log2 eta_max = -log2(a) / power and B_noise = s / a (scaling.md section 6)."""
    def start(lb, Y, W):
        b = 2.0 ** lb
        coef = wls(np.c_[np.ones_like(b), 1 / b], 2.0 ** (-power * Y), W)
        a, s = coef[:, 0], coef[:, 1]
        ok = (a > 0) & (s > 0)
        guess = np.c_[-np.log2(np.abs(a)) / power, np.log2(np.abs(s / a))]
        return np.where(ok[:, None] & np.isfinite(guess), guess, _bend_fallback(lb, Y))
    return start


def _start_surge(lb, Y, W) -> np.ndarray:
    """surge linearised: 1 / eta = p B^-1/2 + q B^1/2, so eta_max = 1 / (2 sqrt(p q)), B_noise = p / q."""
    b = 2.0 ** lb
    coef = wls(np.c_[b ** -0.5, b ** 0.5], 2.0 ** -Y, W)
    p, q = coef[:, 0], coef[:, 1]
    ok = (p > 0) & (q > 0)
    guess = np.c_[-np.log2(2 * np.sqrt(np.abs(p * q))), np.log2(np.abs(p / q))]
    return np.where(ok[:, None] & np.isfinite(guess), guess, _bend_fallback(lb, Y))


def _start_constant(lb, Y, W) -> np.ndarray:
    """The weighted mean of log2 eta*: already the constant law's least-squares fit."""
    return ((W * Y).sum(1) / W.sum(1))[:, None]


def _log2_eta_constant(log2_b, theta):
    t0 = theta[:, :1]
    return np.broadcast_to(t0, (len(theta), np.size(log2_b))).copy()


def _log2_eta_sgd(log2_b, theta):
    t0, d = _bend(log2_b, theta)
    return t0 - np.logaddexp2(0, d)


def _log2_eta_sign(log2_b, theta):
    t0, d = _bend(log2_b, theta)
    return t0 - 0.5 * np.logaddexp2(0, d)


def _log2_eta_surge(log2_b, theta):
    t0, d = _bend(log2_b, theta)
    return 1 + t0 - np.logaddexp2(d / 2, -d / 2)


@dataclass(frozen=True)
class Law:
    """One eta*(B) law: everything :func:`fit_law`, :func:`fit_laws` and the plots need.

    theta = (log2 eta_max, log2 B_noise, ...) with B the effective batch (B / c with momentum).
    :func:`fit_law` hands the law log2 batches centred on their mean (for conditioning):

    - ``log2_eta(log2_b (n,), theta (R, k)) -> (R, n)``: the law;
    - ``start(lb, Y, W) -> (R, k)``: a starting point, e.g. from a linearised fit;
    - ``jacobian(log2_b, theta) -> (R, n, k)``: d log2_eta / d theta, or None when ``start`` is
      already the exact weighted least-squares fit (a law linear in theta);
    - ``batch_params``: the indices of theta in log2 batch units, kept within ``B_NOISE_MARGIN``
      octaves of the batches and shifted back by the centre after the fit;
    - ``uncentre(theta, centre) -> theta``: only for a law whose other parameters depend on the
      origin of log2 B (default: shift ``batch_params`` by the centre).

    To add a law, write these and register the record; every fit, AIC choice and plot then
    knows it. A power law eta* = eta_1 B^s (linear in theta, so no Jacobian):

        >>> LAWS["power"] = Law("power", "eta_1 * B^s", lambda lb, t: t[:, :1] + t[:, 1:2] * lb[None],
        ...     start=lambda lb, Y, W: wls(np.c_[np.ones_like(lb), lb], Y, W), jacobian=None, n_params=2,
        ...     batch_params=(), uncentre=lambda t, c: np.c_[t[:, 0] - t[:, 1] * c, t[:, 1]])
    """

    name: str
    formula: str  # eta*(B) as text, for docs, summaries and plot labels
    log2_eta: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(repr=False)
    start: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] = field(repr=False)
    jacobian: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = field(repr=False)
    n_params: int
    batch_params: tuple[int, ...] = (1,)
    uncentre: Callable[[np.ndarray, float], np.ndarray] | None = field(default=None, repr=False)


LAWS: dict[str, Law] = {law.name: law for law in (
    Law("constant", "eta_max (no batch dependence over the swept range)", _log2_eta_constant,
        _start_constant, None, 1, ()),
    Law("sgd", "eta_max / (1 + B_noise / B)", _log2_eta_sgd, _start_inverse_power(1),
        _bend_jacobian(lambda d: -1 / (1 + 2.0 ** -d)), 2),
    Law("sign", "eta_max / sqrt(1 + B_noise / B)  (Adam, Muon without surge)", _log2_eta_sign,
        _start_inverse_power(2), _bend_jacobian(lambda d: -0.5 / (1 + 2.0 ** -d)), 2),
    Law("surge", "2 eta_max / (sqrt(B_noise / B) + sqrt(B / B_noise))  (eta_max = eta_peak at B = B_noise)",
        _log2_eta_surge, _start_surge, _bend_jacobian(lambda d: -0.5 * np.tanh(d * np.log(2) / 2)), 2),
)}


def get_law(law: str | Law) -> Law:
    """The :class:`Law` record named ``law`` (a record passes through); an unknown name is an error.

        >>> get_law("sign").formula
        'eta_max / sqrt(1 + B_noise / B)  (Adam, Muon without surge)'
    """
    if isinstance(law, Law):
        return law
    if isinstance(law, str) and law in LAWS:
        return LAWS[law]
    raise ValueError(f"unknown batch law {law!r}; the known laws are {', '.join(LAWS)} "
                     f"(a new one is a Law record added to mutransfer.projection.LAWS)")


def law_log2_eta(law: str | Law, log2_b, theta: np.ndarray) -> np.ndarray:
    """log2 eta*(B) of a batch law for parameters ``theta`` (R, k) at log2 B (n,) -> (R, n).

    theta = (log2 eta_max, log2 B_noise) with B the effective batch (B / c with momentum);
    the formulas are the records' in :data:`LAWS`:
      sgd:   eta_max / (1 + B_noise / B)
      sign:  eta_max / sqrt(1 + B_noise / B)                 (Adam, Muon without surge)
      surge: 2 eta_max / (sqrt(B_noise / B) + sqrt(B / B_noise))  (eta_max = eta_peak at B_noise = B_peak)
      constant: eta_max (no batch dependence over the swept range)

        >>> law_log2_eta("sgd", np.log2([64.0]), np.array([[-10.0, 6.0]]))
        array([[-11.]])
    """
    return get_law(law).log2_eta(log2_b, np.atleast_2d(theta))


def fit_law(law: str | Law, log2_b, Y: np.ndarray, weights, iters: int = 60):
    """Fit one batch law to log2 eta* (rows of ``Y``, (R, n)) at effective log2 batches ``log2_b``.

    Minimises chi2 = sum_j W_j (Y_j - log2 eta*(B_j; theta))^2 (weights ~ 1 / var) by
    Levenberg-Marquardt from the law's linearised start, vectorised over the rows. log2 B_noise
    is kept within ``B_NOISE_MARGIN`` octaves of the swept batches. Returns (theta (R, k), chi2 (R,)).

        >>> theta, chi2 = fit_law("sign", np.log2(B / c), log2_eta[None], 1 / var)
        >>> 2 ** theta[0]  # eta_max, B_noise
    """
    rec = get_law(law)
    lb = np.asarray(log2_b, float)
    Y = np.atleast_2d(Y)
    W = np.broadcast_to(np.asarray(weights, float), Y.shape)
    centre = float(lb.mean())  # centring keeps the linearised fits well conditioned
    lbc = lb - centre
    theta = rec.start(lbc, Y, W)
    bp = list(rec.batch_params)
    bounds = (lbc.min() - B_NOISE_MARGIN, lbc.max() + B_NOISE_MARGIN)
    theta[:, bp] = np.clip(theta[:, bp], *bounds)
    chi2 = _chi2(rec, lbc, Y, W, theta)
    if rec.jacobian is not None:
        theta, chi2 = _levenberg_marquardt(rec, lbc, Y, W, theta, chi2, bounds, iters)
    if rec.uncentre is not None:
        return rec.uncentre(theta, centre), chi2
    theta[:, bp] += centre
    return theta, chi2


def _levenberg_marquardt(rec: Law, lb, Y, W, theta, chi2, bounds, iters: int):
    """Damped Gauss-Newton steps per row, each kept only where it lowers that row's chi2."""
    bp, eye = list(rec.batch_params), np.eye(rec.n_params)
    lam = np.full(len(Y), 1e-2)
    for _ in range(iters):
        r = Y - rec.log2_eta(lb, theta)
        J = rec.jacobian(lb, theta)
        A = np.einsum("rn,rni,rnj->rij", W, J, J)
        g = np.einsum("rn,rni,rn->ri", W, J, r)
        damp = lam[:, None, None] * (A * eye + 1e-9 * eye)
        step = np.linalg.solve(A + damp, g[..., None])[..., 0]
        new = theta + step
        new[:, bp] = np.clip(new[:, bp], *bounds)
        chi_new = _chi2(rec, lb, Y, W, new)
        better = chi_new < chi2
        theta = np.where(better[:, None], new, theta)
        chi2 = np.where(better, chi_new, chi2)
        lam = np.where(better, lam / 3, lam * 4)
    return theta, chi2


def _chi2(rec: Law, lb, Y, W, theta) -> np.ndarray:
    return (W * (Y - rec.log2_eta(lb, theta)) ** 2).sum(1)


def aic(chi2, n: int, k: int):
    """Akaike's criterion for a Gaussian fit of unknown scale: n log(chi2 / n) + 2 k.

        >>> aic(np.array([0.5]), n=7, k=LAWS["sign"].n_params)
        array([-14.47...])
    """
    return n * np.log(np.maximum(chi2, 1e-12) / n) + 2 * k


def fit_laws(log2_b, Y: np.ndarray, weights) -> dict:
    """Fit every law of :data:`LAWS`; choose by AIC (n log(chi2 / n) + 2 k) on the data row (row 0).

    Returns {"law", "theta" (R, 2; constant -> B_noise NaN), "aic": {law: value},
    "support": {law: fraction of bootstrap rows it wins}, "fits": {law: theta}}.

        >>> out = fit_laws(np.log2(B / c), log2_eta_reps, 1 / var)
        >>> out["law"], 2 ** out["theta"][0]
    """
    Y = np.atleast_2d(Y)
    n = Y.shape[1]
    names = list(LAWS)
    fits, scores = {}, {}
    for name in names:
        theta, chi2 = fit_law(name, log2_b, Y, weights)
        fits[name] = theta
        scores[name] = aic(chi2, n, LAWS[name].n_params)
    table = np.stack([scores[name] for name in names], 1)
    winner = np.argmin(table, 1)
    law = names[winner[0]]
    support = {name: float(np.mean(winner[1:] == i)) if len(Y) > 1 else float(i == winner[0])
               for i, name in enumerate(names)}
    theta = fits[law]
    if theta.shape[1] < 2:  # a law without B_noise: its column is NaN, so every theta is (R, 2)
        theta = np.c_[theta, np.full((len(Y), 2 - theta.shape[1]), np.nan)]
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
