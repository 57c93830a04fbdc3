"""The loss surface at one token budget: loss against (log2 lr, log2 batch) as one smooth fit.

Per-batch grid minima cannot rank batches 0.01-0.02 nat apart on an octave lr grid (issue 28);
a surface fitted to every trial near the optimum shares the information across batches:

    L(x, y) = a(y) + c(y) (x - x*(y))^2,   x = log2 lr, y = log2 B,
    x*(y) = p0 + p1 y,   a(y) = q0 + q1 y + q2 y^2,   c(y) = exp(r0 + r1 y),

so log2 eta*(B) = x*(y) (p1: octaves of lr per doubling of the batch), the best-lr loss at B is
a(y) and the curvature c(y) > 0 may change with the batch (the interaction term). With 2 batches
q2 = 0 (two parabolas fix only a line in y). Each batch contributes the trials within ``window``
octaves of its best lr (at least its 3 nearest distinct lrs), weighted by
exp(-dx^2 / (2 window^2)) as in :func:`mutransfer.projection.quadratic_optimum`; the fit is
weighted least squares (Levenberg-Marquardt from the exact 2-D quadratic fit, the r1 = 0 case),
vectorised over the bootstrap: row 0 fits the trials as observed, rows 1..n_boot refit trials
resampled with replacement within each batch.

    >>> s = fit_loss_surface(trials_frame(study))
    >>> s.eta_star(64), s.best_batch()
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import numpy as np

from mutransfer.projection._laws import N_BOOT, WINDOW, bootstrap_counts, distinct_values, interval, replicate_interval, wls

PARAMS = ("q0", "q1", "q2", "p0", "p1", "r0", "r1")
LM_ITERS = 40


class Estimate(NamedTuple):
    """A fitted value (row 0) with the 95% percentile interval of its bootstrap replicates."""

    value: float
    low: float
    high: float


class BestBatch(NamedTuple):
    """The batch minimising the best-lr loss over the swept range, its interval, and whether the
    data's minimiser sits at the range's edge (then the optimum is only bounded)."""

    batch: float
    low: float
    high: float
    at_edge: bool


@dataclass(frozen=True)
class LossSurface:
    """A fitted L(log2 lr, log2 B) at one budget (see :func:`fit_loss_surface` for the model).

    ``params`` is (n_boot + 1, 7) in the order :data:`PARAMS` = (q0, q1, q2, p0, p1, r0, r1), in
    raw log2 units (no centring): row 0 the fit to the data, rows 1.. the bootstrap replicates
    (NaN where a resample left the model unidentified).

        >>> s = fit_loss_surface(frame)
        >>> 2 ** s.eta_star(32).value, s.loss(32), s.best_batch().batch
    """

    formula: ClassVar[str] = ("L = a(y) + c(y) (x - x*(y))^2, x = log2 lr, y = log2 B; x* = p0 + p1 y, "
                              "a = q0 + q1 y + q2 y^2, c = exp(r0 + r1 y)")
    params: np.ndarray = field(repr=False)
    n_boot: int
    batches: tuple[int, ...]  # the swept batches, ascending
    log2_lr_range: tuple[float, float]  # the lrs in the fit (log2)
    n_fit: int  # trials in the fit
    rms: float  # weighted RMS residual of row 0 (loss units)

    def log2_eta_draws(self, batch) -> np.ndarray:
        """(n_boot + 1, n) log2 eta* = p0 + p1 log2 B at each batch."""
        y = np.log2(np.atleast_1d(np.asarray(batch, float)))
        return self.params[:, 3:4] + self.params[:, 4:5] * y[None]

    def loss_draws(self, batch) -> np.ndarray:
        """(n_boot + 1, n) best-lr loss a(log2 B) at each batch."""
        y = np.log2(np.atleast_1d(np.asarray(batch, float)))[None]
        q0, q1, q2 = (self.params[:, i:i + 1] for i in range(3))
        return q0 + q1 * y + q2 * y ** 2

    def eta_star(self, batch: float) -> Estimate:
        """log2 eta* at ``batch`` (any batch; outside the swept range the line is extrapolated)."""
        return _estimate(self.log2_eta_draws(batch)[:, 0])

    def loss(self, batch: float) -> Estimate:
        """The predicted loss at ``batch`` and its best lr, a(log2 B)."""
        return _estimate(self.loss_draws(batch)[:, 0])

    def predict(self, lr, batch) -> np.ndarray:
        """Row 0's L at (lr, batch) (broadcast arrays)."""
        x, y = np.log2(np.asarray(lr, float)), np.log2(np.asarray(batch, float))
        q0, q1, q2, p0, p1, r0, r1 = self.params[0]
        return q0 + q1 * y + q2 * y ** 2 + np.exp(r0 + r1 * y) * (x - p0 - p1 * y) ** 2

    def best_draws(self) -> tuple[np.ndarray, np.ndarray]:
        """(log2 B_best (n_boot + 1,), a there): each replicate's argmin and minimum of a(log2 B)
        over the swept batches [B_min, B_max] (NaN for an unidentified replicate)."""
        lo, hi = np.log2(self.batches[0]), np.log2(self.batches[-1])
        q0, q1, q2 = self.params[:, 0], self.params[:, 1], self.params[:, 2]
        convex = q2 > 0
        vertex = np.where(convex, -q1 / (2 * np.where(convex, q2, 1.0)), lo)
        cand = np.stack([np.full_like(q0, lo), np.full_like(q0, hi), np.clip(vertex, lo, hi)], 1)
        vals = q0[:, None] + q1[:, None] * cand + q2[:, None] * cand ** 2
        i = np.argmin(np.where(np.isnan(vals), np.inf, vals), 1)
        rows = np.arange(len(q0))
        y, a = cand[rows, i], vals[rows, i]
        y[np.isnan(q0)] = np.nan
        return y, a

    def best_batch(self) -> BestBatch:
        """argmin of a(log2 B) over the swept batches [B_min, B_max], with its interval; ``at_edge``
        when the data's argmin is B_min or B_max (the optimum is then only bounded)."""
        y = self.best_draws()[0]
        low, high = interval(y[1:]) if self.n_boot else (y[0], y[0])
        lo, hi = np.log2(self.batches[0]), np.log2(self.batches[-1])
        edge = bool(np.isclose(y[0], lo) or np.isclose(y[0], hi))
        return BestBatch(float(2 ** y[0]), float(2 ** low), float(2 ** high), edge)


def _estimate(draws: np.ndarray) -> Estimate:
    return Estimate(float(draws[0]), *replicate_interval(draws))


def fit_loss_surface(frame, *, n_boot: int = N_BOOT, seed: int = 0, window: float = WINDOW) -> LossSurface:
    """Fit L(x = log2 lr, y = log2 B) = a(y) + c(y) (x - x*(y))^2 at one token budget.

    x*(y) = p0 + p1 y, a(y) = q0 + q1 y + q2 y^2, c(y) = exp(r0 + r1 y), by weighted least squares
    on each batch's trials within ``window`` octaves of its best lr, with ``n_boot`` bootstrap
    refits on trials resampled within each batch (``seed`` seeds the resampling).

    ``frame``: one row per trial with columns lr, batch_size, loss (others, e.g. seed, are
    ignored), e.g. ``mutransfer.tuning.trials_frame(study)``'s rows of one budget and width.
    Non-finite losses are dropped. Raises ValueError for fewer than 2 batches, a batch with fewer
    than 3 distinct lrs, no finite loss, or rows of several budgets or widths.

        >>> s = fit_loss_surface(trials_frame(study), n_boot=200)
        >>> s.eta_star(16), s.best_batch()
    """
    x, y, loss = _checked(frame)
    sel, weights = _window(x, y, loss, window)
    x, y, loss, weights = x[sel], y[sel], loss[sel], weights[sel]
    rng = np.random.default_rng(seed)
    counts = np.ones((1, len(x)))
    if n_boot:
        counts = np.zeros((n_boot + 1, len(x)))
        for b in np.unique(y):  # resample within each batch: every batch keeps its trial count
            idx = np.flatnonzero(y == b)
            counts[:, idx] = bootstrap_counts(len(idx), n_boot, rng)
    W = counts * weights[None]
    xc, yc = float(np.mean(x)), float(np.mean(y))  # centred for conditioning, uncentred at the end
    quadratic_y = len(np.unique(y)) >= 3
    theta = _start(x - xc, y - yc, loss, W, quadratic_y)
    theta, chi2 = _levenberg_marquardt(x - xc, y - yc, loss, W, theta, quadratic_y)
    params = _uncentre(theta, xc, yc)
    rms = float(np.sqrt(chi2[0] / W[0].sum()))
    return LossSurface(params, int(n_boot), tuple(int(round(2 ** b)) for b in np.unique(y)),
                       (float(x.min()), float(x.max())), int(len(x)), rms)


def _checked(frame):
    """(log2 lr, log2 B, loss) of the finite trials, or a ValueError naming the fix."""
    missing = [c for c in ("lr", "batch_size", "loss") if c not in getattr(frame, "columns", ())]
    if missing:
        raise ValueError(f"the frame lacks column(s) {', '.join(missing)}: pass one row per trial with "
                         f"lr, batch_size and loss, e.g. mutransfer.tuning.trials_frame(study)")
    for col, what in (("budget", "token budget"), ("width", "width")):
        if col in frame.columns:
            values = distinct_values(frame[col])
            if len(values) > 1:
                raise ValueError(f"the trials span several values of {col} {values}: a loss surface is fitted "
                                 f"at one {what}; pass one's rows, e.g. frame[frame.{col} == {values[-1]:g}]")
    lr, batch = frame["lr"].to_numpy(float), frame["batch_size"].to_numpy(float)
    loss = frame["loss"].to_numpy(float)
    ok = np.isfinite(loss) & np.isfinite(lr) & (lr > 0) & np.isfinite(batch) & (batch > 0)
    if not ok.any():
        raise ValueError(f"no finite loss among the {len(loss)} trials (all diverged or failed): nothing to "
                         f"fit; lower the lr range of the sweep and rerun it")
    x, y, loss = np.log2(lr[ok]), np.log2(batch[ok]), loss[ok]
    ys = np.unique(y)
    if len(ys) < 2:
        raise ValueError(f"the trials hold {len(ys)} batch size ({', '.join(f'{2 ** b:g}' for b in ys)}) with a "
                         f"finite loss: a loss surface over the batch needs >= 2; sweep more batch sizes")
    thin = [(2 ** b, len(np.unique(x[y == b]))) for b in ys if len(np.unique(x[y == b])) < 3]
    if thin:
        listed = ", ".join(f"batch {b:g}: {n}" for b, n in thin)
        raise ValueError(f"too few distinct lrs with a finite loss ({listed}); each batch needs >= 3 lrs "
                         f"for its curvature: sweep more lrs there, or drop the batch")
    return x, y, loss


def _window(x, y, loss, window: float):
    """(rows kept, weights): per batch the trials within ``window`` octaves of its best lr (at
    least its 3 nearest distinct lrs), weighted exp(-dx^2 / (2 s^2)), s = max(window, max |dx|)."""
    keep, weights = np.zeros(len(x), bool), np.zeros(len(x))
    for b in np.unique(y):
        rows = np.flatnonzero(y == b)
        xs, inverse = np.unique(x[rows], return_inverse=True)
        means = np.bincount(inverse, weights=loss[rows]) / np.bincount(inverse)
        best = xs[np.argmin(means)]
        dist = np.abs(xs - best)
        near = xs[dist <= window + 1e-9]
        if len(near) < 3:
            near = xs[np.argsort(dist, kind="stable")[:3]]
        sel = rows[np.isin(x[rows], near)]
        dx = x[sel] - best
        scale = max(window, float(np.abs(dx).max()))
        keep[sel] = True
        weights[sel] = np.exp(-0.5 * (dx / scale) ** 2)
    return keep, weights


def _model(x, y, theta):
    """(f (R, n), J (R, n, 7)): the surface and its Jacobian in theta = (q0, q1, q2, p0, p1, r0, r1)."""
    q0, q1, q2, p0, p1, r0, r1 = (theta[:, i:i + 1] for i in range(7))
    c = np.exp(r0 + r1 * y[None])
    d = x[None] - p0 - p1 * y[None]
    f = q0 + q1 * y + q2 * y ** 2 + c * d ** 2
    one = np.ones_like(f)
    J = np.stack([one, one * y, one * y ** 2, -2 * c * d, -2 * c * d * y, c * d ** 2, c * d ** 2 * y], -1)
    return f, J


def _start(x, y, loss, W, quadratic_y: bool) -> np.ndarray:
    """The exact weighted fit of L = b0 + b1 y + b2 y^2 + b3 x + b4 x y + b5 x^2 (the r1 = 0 case)
    rewritten as theta; a replicate whose fit is singular or not convex in x takes row 0's."""
    X = np.c_[np.ones_like(x), y, y ** 2, x, x * y, x ** 2]
    if not quadratic_y:
        X = X[:, [0, 1, 3, 4, 5]]
    b = wls(X, np.broadcast_to(loss, W.shape), W)
    if not quadratic_y:
        b = np.c_[b[:, :2], np.zeros(len(b)), b[:, 2:]]
    b5 = b[:, 5]
    if not (np.isfinite(b5[0]) and b5[0] > 0):
        raise ValueError("the loss is not convex in the lr near the best lrs (the fitted curvature is "
                         f"{b5[0]:.3g}): the sweep does not bracket eta*; extend the lr range both ways")
    b[~(np.isfinite(b5) & (b5 > 0))] = b[0]
    b0, b1, b2, b3, b4, b5 = b.T
    p0, p1 = -b3 / (2 * b5), -b4 / (2 * b5)
    theta = np.c_[b0 - b5 * p0 ** 2, b1 - 2 * b5 * p0 * p1, b2 - b5 * p1 ** 2, p0, p1, np.log(b5), np.zeros(len(b))]
    if not quadratic_y:
        theta[:, 2] = 0.0
    return theta


def _levenberg_marquardt(x, y, loss, W, theta, quadratic_y: bool, iters: int = LM_ITERS):
    """Damped Gauss-Newton steps per replicate, each kept only where it lowers that row's chi2.
    Returns (theta, chi2); rows whose normal equations stay singular are NaN."""
    free = np.array([True, True, quadratic_y, True, True, True, True])
    eye = np.eye(free.sum())
    chi2 = (W * (loss - _model(x, y, theta)[0]) ** 2).sum(1)
    lam = np.full(len(theta), 1e-3)
    for _ in range(iters):
        f, J = _model(x, y, theta)
        J = J[..., free]
        A = np.einsum("rn,rni,rnj->rij", W, J, J)
        g = np.einsum("rn,rni,rn->ri", W, J, loss - f)
        M = A + lam[:, None, None] * (A * eye) + 1e-12 * eye
        ok = np.linalg.cond(M) < 1e12
        step = np.zeros_like(g)
        step[ok] = np.linalg.solve(M[ok], g[ok][..., None])[..., 0]
        new = theta.copy()
        new[:, free] += step
        new[:, 5:7] = np.clip(new[:, 5:7], -50, 50)
        chi_new = (W * (loss - _model(x, y, new)[0]) ** 2).sum(1)
        better = ok & (chi_new < chi2)
        theta = np.where(better[:, None], new, theta)
        chi2 = np.where(better, chi_new, chi2)
        lam = np.where(better, lam / 3, lam * 4)
    A = np.einsum("rn,rni,rnj->rij", W, *(2 * [_model(x, y, theta)[1][..., free]]))
    singular = np.linalg.cond(A) > 1e12
    singular[0] = False  # row 0 was checked identifiable (>= 2 batches with >= 3 lrs each)
    theta[singular] = np.nan
    return theta, chi2


def _uncentre(theta: np.ndarray, xc: float, yc: float) -> np.ndarray:
    """theta fitted at (x - xc, y - yc) -> the same surface in raw (x, y)."""
    q0, q1, q2, p0, p1, r0, r1 = theta.T
    return np.c_[q0 - q1 * yc + q2 * yc ** 2, q1 - 2 * q2 * yc, q2,
                 p0 + xc - p1 * yc, p1, r0 - r1 * yc, r1]
