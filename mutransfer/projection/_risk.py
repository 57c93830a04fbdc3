"""The risk-aware lr: the lr with the lowest expected target loss, when the loss rises faster on
one side of eta* than on the other and the projected eta* is uncertain.

Around its optimum x* (log2 lr) a landscape is fitted as an asymmetric parabola

    L(x) = L* + a_left (x - x*)^2  for x < x*,     L* + a_right (x - x*)^2  for x > x*,

with common curvatures over the proxies' sweeps (each with its own L*, centred on its own
quadratic-fit eta*, plus one common offset of the vertex, since a symmetric fit of an asymmetric
curve is pulled toward the gentle side). The target's optimum X is unknown: its distribution is
the bootstrap replicates of the projected eta* (shifted by that offset). The risk-aware lr
minimises the expected excess loss

    R(x) = E_X [ a_left (X - x)^2 1{x < X} + a_right (x - X)^2 1{x > X} ],

whose minimiser is the expectile of X at level a_left / (a_left + a_right): below the mean of X
when the curve is steeper above the optimum (a cliff), the mean itself when it is symmetric.

    >>> curve = fit_asymmetric([x64, x128], [y64, y128], centers=[-7.1, -7.2])
    >>> x_safe, r = risk_aware(reps, curve)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OFFSETS = np.round(np.arange(-1.0, 1.0 + 1e-9, 0.02), 6)  # vertex offsets searched, octaves
MIN_SIDE = 2  # distinct lrs needed on each side of the vertex to fit that side's curvature
MIN_CURVATURE = 1e-4  # nats per octave^2: a flatter side is treated as this flat
# An asymmetry acted on: one side at least twice as steep. A few noisy points per side fit
# ratios of ~1.5 to a symmetric curve (measured on tests/test_transfer.py's synthetic sweeps).
MIN_ASYMMETRY = 2.0


@dataclass(frozen=True)
class Curve:
    """An asymmetric parabola's shape: curvatures below/above the vertex (nats per octave^2)
    and the vertex's offset from the symmetric fit's eta* (octaves)."""

    a_left: float
    a_right: float
    offset: float
    n_left: int
    n_right: int

    @property
    def asymmetry(self) -> float:
        """a_right / a_left: > 1 when the loss rises faster above the optimum."""
        return self.a_right / self.a_left

    def excess(self, d) -> np.ndarray:
        """Excess loss at ``d = x - x*`` octaves from the optimum.

            >>> Curve(0.01, 0.04, 0.0, 3, 3).excess(np.array([-1.0, 1.0]))
            array([0.01, 0.04])
        """
        d = np.asarray(d, float)
        return np.where(d < 0, self.a_left, self.a_right) * d ** 2


def _design(xs, ys, centers, offset: float, window: float):
    """Rows within ``window`` of each sweep's centre: group intercepts, left and right squares
    (and each row's distance u from the vertex)."""
    cols, targets, sides = [], [], []
    for g, (x, y, c) in enumerate(zip(xs, ys, centers)):
        x, y = np.asarray(x, float), np.asarray(y, float)
        keep = np.isfinite(y) & (np.abs(x - c) <= window + 1e-9)
        u = x[keep] - c - offset
        onehot = np.zeros((keep.sum(), len(xs)))
        onehot[:, g] = 1.0
        cols.append(np.c_[onehot, np.where(u < 0, u ** 2, 0.0), np.where(u > 0, u ** 2, 0.0)])
        targets.append(y[keep])
        sides.append(u)
    return np.vstack(cols), np.concatenate(targets), np.concatenate(sides)


def _aic(sse: float, n: int, k: int) -> float:
    return n * math.log(max(sse, 1e-300) / n) + 2 * k


def _side_counts(u) -> tuple[int, int]:
    return len(np.unique(np.round(u[u < 0], 6))), len(np.unique(np.round(u[u > 0], 6)))


def _best_offset(xs, ys, centers, window: float, symmetric: bool):
    """(AIC, Curve) of the best vertex offset in ``OFFSETS`` for the symmetric (one curvature)
    or asymmetric (two) parabola; (inf, None) when no offset leaves two sides."""
    best = (math.inf, None)
    for offset in OFFSETS:
        A, y, u = _design(xs, ys, centers, float(offset), window)
        left, right = _side_counts(u)
        if left < MIN_SIDE or right < MIN_SIDE:
            continue
        if symmetric:
            A = np.c_[A[:, :-2], A[:, -2] + A[:, -1]]
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        aic = _aic(float(np.sum((A @ coef - y) ** 2)), len(y), A.shape[1] + 1)  # + the offset
        if aic < best[0]:
            a_l, a_r = (coef[-1], coef[-1]) if symmetric else (coef[-2], coef[-1])
            best = (aic, Curve(max(float(a_l), MIN_CURVATURE), max(float(a_r), MIN_CURVATURE),
                               float(offset), left, right))
    return best


def fit_asymmetric(xs, ys, centers, *, window: float = 2.0) -> Curve | None:
    """Fit the parabola to sweeps (``xs``: log2 lrs, ``ys``: losses, one array per sweep,
    ``centers``: each sweep's eta*), by least squares at every vertex offset in ``OFFSETS``,
    with one curvature (symmetric) and with two (asymmetric). The asymmetric curve is kept only
    when its AIC is lower by more than 2 (its extra parameter must buy a real fit) and one side
    is at least ``MIN_ASYMMETRY`` times as steep as the other; otherwise the symmetric one is
    returned with offset 0 (``asymmetry == 1``: eta* itself is then the best lr). None when either side has fewer than ``MIN_SIDE`` distinct lrs within
    ``window`` octaves of the centre.

        >>> fit_asymmetric([np.arange(-10.0, -3.0)], [loss], centers=[-7.0]).asymmetry
    """
    _, _, u = _design(xs, ys, centers, 0.0, window)
    if min(_side_counts(u)) < MIN_SIDE:
        return None
    aic_sym, sym = _best_offset(xs, ys, centers, window, symmetric=True)
    aic_asym, asym = _best_offset(xs, ys, centers, window, symmetric=False)
    lopsided = asym is not None and max(asym.asymmetry, 1 / asym.asymmetry) >= MIN_ASYMMETRY
    if lopsided and (sym is None or aic_asym < aic_sym - 2.0):
        return asym
    if sym is None:
        return None
    return Curve(sym.a_left, sym.a_right, 0.0, *_side_counts(u))


def expected_excess(x, optima, curve: Curve) -> np.ndarray:
    """R(x): the mean excess loss at each log2 lr ``x`` over the possible optima ``optima``.

        >>> expected_excess([-7.0], np.array([-7.0, -6.0]), Curve(1.0, 1.0, 0.0, 3, 3))
        array([0.5])
    """
    x = np.asarray(x, float)[:, None]
    return curve.excess(x - np.asarray(optima, float)[None, :]).mean(1)


def risk_aware(reps, curve: Curve, *, step: float = 0.005) -> tuple[float, dict]:
    """(the log2 lr minimising R, a summary): ``reps`` are the projected log2 eta* (point
    estimate first, then the bootstrap replicates), shifted by the curve's offset.

    The summary holds ``eta_excess`` (R at the plain eta*, nats), ``safe_excess`` (R at the
    risk-aware lr), a grid of R for the plan's figure, and the expectile level.

        >>> x, info = risk_aware(np.array([-7.0, -7.2, -6.8, -7.1]), Curve(0.02, 0.2, 0.0, 3, 3))
        >>> x < -7.0
        True
    """
    reps = np.asarray(reps, float)
    optima = (reps[1:] if len(reps) > 1 else reps) + curve.offset
    center = reps[0] + curve.offset
    spread = max(1.0, 3 * float(np.std(optima)))
    grid = np.arange(center - spread, center + spread + step / 2, step)
    r = expected_excess(grid, optima, curve)
    x = float(grid[int(np.argmin(r))])
    coarse = grid[:: max(1, int(round(0.05 / step)))]
    return x, {"eta_excess": float(expected_excess([reps[0]], optima, curve)[0]),
               "safe_excess": float(r.min()),
               "level": curve.a_left / (curve.a_left + curve.a_right),
               "grid_log2_lr": [round(float(v), 4) for v in coarse],
               "grid_excess": [float(v) for v in expected_excess(coarse, optima, curve)],
               "a_left": curve.a_left, "a_right": curve.a_right, "offset": curve.offset}


def expectile(values, level: float, weights=None) -> float:
    """The ``level``-expectile e of a sample: ``level E[(X - e)+] = (1 - level) E[(e - X)+]``
    (0.5: the mean), by bisection.

        >>> expectile(np.array([0.0, 1.0, 2.0]), 0.5)
        1.0
    """
    v = np.asarray(values, float)
    w = np.ones_like(v) if weights is None else np.asarray(weights, float)
    lo, hi = float(v.min()), float(v.max())
    for _ in range(100):
        e = 0.5 * (lo + hi)
        g = level * np.sum(w * np.clip(v - e, 0, None)) - (1 - level) * np.sum(w * np.clip(e - v, 0, None))
        lo, hi = (e, hi) if g > 0 else (lo, e)
    return 0.5 * (lo + hi) if math.isfinite(lo) else math.nan
