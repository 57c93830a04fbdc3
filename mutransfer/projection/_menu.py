"""The batch menu: what each batch costs in loss at one budget, read off a :class:`LossSurface`.

A user choosing a batch for throughput reads its predicted cost (% of loss over the best batch)
and its lr; :func:`recommended_batch` takes the largest batch within ``eps`` of the best that
the sweep covered (issue 28, item 4).

    >>> menu = batch_menu(fit_loss_surface(frame))
    >>> recommended_batch(menu), menu[["batch", "cost_pct", "lr"]]
"""
from __future__ import annotations

import numpy as np

from mutransfer.projection._laws import replicate_interval
from mutransfer.projection._surface import LossSurface

EPS = 0.005  # relative loss cost a recommended batch may have over the best (0.5%)
MENU_SPAN = 3  # octaves of batch past the best batch that the default menu lists (8x)


def batch_menu(surface: LossSurface, batches=None, *, eps: float = EPS):
    """One row per batch: its predicted loss cost over the best batch, its eta*, and whether the
    surface extrapolates there.

    cost(B) = 100 (a(log2 B) - a_min) / a_min  [%], a_min = min over the swept batches of a,
    with a(y) the surface's best-lr loss (:class:`LossSurface`), per bootstrap replicate (the
    interval is the 95% percentile range of the replicates' costs); eta*(B) = 2^(p0 + p1 log2 B).
    ``batches`` default: the powers of 2 from the smallest swept batch to about 8x the best batch
    (at least to the largest swept). Columns: batch, cost_pct, cost_low, cost_high, loss,
    log2_lr, lr, lr_low, lr_high, extrapolated, within_eps (cost_pct <= 100 eps). ``eps`` is
    kept in ``menu.attrs["eps"]`` for :func:`recommended_batch`.

        >>> menu = batch_menu(fit_loss_surface(frame), eps=0.005)
        >>> menu.loc[menu.within_eps & ~menu.extrapolated, "batch"].max()
    """
    import pandas as pd

    if not isinstance(surface, LossSurface):
        raise TypeError(f"surface must be a LossSurface from fit_loss_surface(); got {type(surface).__name__}")
    check_eps(eps)
    lo, hi = np.log2(surface.batches[0]), np.log2(surface.batches[-1])
    if batches is None:
        top = max(np.round(np.log2(surface.best_batch().batch)) + MENU_SPAN, hi)
        batches = 2.0 ** np.arange(np.ceil(lo - 1e-9), np.floor(top + 1e-9) + 1)
    b = np.asarray(batches, float).ravel()
    if not len(b) or not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise ValueError(f"batches must be positive numbers, e.g. [8, 16, 32]; got {list(batches)!r}")
    b = np.unique(b)
    a_min = surface.best_draws()[1][:, None]  # each replicate's best loss over the swept range
    cost = 100 * (surface.loss_draws(b) - a_min) / a_min
    eta = surface.log2_eta_draws(b)
    loss = surface.loss_draws(b)[0]
    rows = []
    for j, batch in enumerate(b):
        c_lo, c_hi = replicate_interval(cost[:, j])
        e_lo, e_hi = replicate_interval(eta[:, j])
        y = np.log2(batch)
        rows.append({"batch": int(batch) if float(batch).is_integer() else float(batch),
                     "cost_pct": float(cost[0, j]), "cost_low": c_lo, "cost_high": c_hi,
                     "loss": float(loss[j]), "log2_lr": float(eta[0, j]), "lr": float(2 ** eta[0, j]),
                     "lr_low": float(2 ** e_lo), "lr_high": float(2 ** e_hi),
                     "extrapolated": bool(y < lo - 1e-9 or y > hi + 1e-9),
                     "within_eps": bool(cost[0, j] <= 100 * eps)})
    menu = pd.DataFrame(rows)
    menu.attrs["eps"] = float(eps)
    return menu


def check_eps(eps) -> None:
    """Refuse an ``eps`` that is not a relative loss cost in [0, 1), naming the fix."""
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and 0 <= eps < 1):
        raise ValueError(f"eps is a relative loss cost in [0, 1), e.g. 0.005 for 0.5%; got {eps!r}")


def recommended_batch(menu, eps: float | None = None):
    """The largest batch of ``menu`` whose predicted cost is within ``eps`` (relative loss,
    default the menu's own, 0.5%), never an extrapolated one: max {B : cost(B) <= 100 eps, B swept
    range}. Where no batch inside the swept range is within eps (a coarse ``batches`` list that
    misses the best), the cheapest one inside it.

        >>> recommended_batch(batch_menu(surface), eps=0.01)
        32
    """
    eps = menu.attrs.get("eps", EPS) if eps is None else eps
    check_eps(eps)
    inside = menu[~menu["extrapolated"].astype(bool)]
    if inside.empty:
        raise ValueError("every batch of the menu lies outside the swept batches, where the surface is "
                         "extrapolated: list batches within the swept range, or sweep the batches you want")
    ok = inside[inside["cost_pct"] <= 100 * eps]
    if ok.empty:
        return inside.loc[inside["cost_pct"].idxmin(), "batch"]
    return ok["batch"].max()
