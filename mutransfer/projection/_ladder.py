"""The budget ladder: loss surfaces at >= 2 token budgets, and the laws that carry them to the
target's budget (issue 28; scaling.md section 6).

At each budget D the proxy's trials give a :class:`LossSurface` L(x = log2 lr, y = log2 B)
(:func:`fit_loss_surface`). The ladder holds every surface parameter theta_k (q0, q1, q2, p0, p1,
r0, r1) linear in z = log2 D, theta_k(z) = u_k + v_k z, fitted replicate by replicate on the
per-budget bootstrap draws, so the surface at any budget is ``surface_at(D)`` and two power laws
in D follow from it:

- the lr: log2 eta*(B, D) = p0(z) + p1(z) y, a power law in D at each batch, with exponent
  dp0/dz + y dp1/dz (:meth:`BudgetLadder.eta_exponent`);
- the batch: at each budget, B_eps(D), the largest swept batch whose best-lr loss a(y) stays within
  ``eps`` of the lowest, fitted as B_eps = b0 D^k (:func:`fit_budget_law`'s line in log2 space).

A rung at the target's own budget is used as it is (no law). The plan's batch is read off the
menu at the target's budget (:func:`batch_menu`); :meth:`BudgetLadder.choose` hands over the
best measured batch instead where the batch law is unresolved.

    >>> ladder = fit_ladder(trials_frame(study))        # trials at 3 budgets
    >>> ladder.choose(786432).batch, 2 ** ladder.log2_eta(8, 786432)[0]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from mutransfer.projection._budget_laws import BudgetLaw, fit_budget_law
from mutransfer.projection._laws import N_BOOT, WINDOW, distinct_values, interval, replicate_interval
from mutransfer.projection._menu import EPS, batch_menu, check_eps, recommended_batch
from mutransfer.projection._surface import LossSurface, fit_loss_surface
from mutransfer.runs import training_flops

RESOLVED_SPAN = 2.0  # octaves: the batch law is resolved when its 95% interval at the target spans <= 4x
MISFIT = 0.5  # octaves: ... and it passes within sqrt(2)x of every rung's B_eps
Y_GRID = 129  # points per swept batch range where a(y) is scanned for the within-eps batch
RUNG_BATCHES, RUNG_LRS = 3, 4  # the runs a missing rung at the target's budget is offered with


class BatchChoice(NamedTuple):
    """The batch the ladder hands over at one budget, why, and its menu."""

    batch: int
    source: str  # "rung" (the target's own budget), "law" (the menu at the projected surface), "measured"
    menu: object  # the batch menu (DataFrame) at ``menu_tokens``
    notes: tuple[str, ...]
    menu_tokens: int  # the budget the menu's costs are for: the target's, or the largest rung's ("measured")


@dataclass(frozen=True)
class BudgetLadder:
    """Loss surfaces at ascending budgets and the laws in D fitted on them (see the module).

        >>> ladder = fit_ladder(frame, eps=0.005)
        >>> ladder.records(), ladder.batch_law.exponent_interval
    """

    budgets: tuple[int, ...]  # D, ascending
    surfaces: tuple[LossSurface, ...] = field(repr=False)
    width: int
    eps: float
    log2_eps_batch: np.ndarray = field(repr=False)  # (R+1, budgets): B_eps per replicate
    eps_at_edge: tuple[bool, ...]  # B_eps is the largest swept batch: only bounded below
    batch_law: BudgetLaw = field(repr=False)  # B_eps = b0 D^k
    coef: np.ndarray = field(repr=False)  # (R+1, 2, 7): theta = coef[:, 0] + coef[:, 1] z
    trial_tokens: float = 0.0  # tokens the ladder's trials trained on, all together

    def rung(self, tokens: float) -> int | None:
        """The index of the ladder's rung at ``tokens`` (within 1%), else None."""
        hits = [j for j, b in enumerate(self.budgets) if abs(b - tokens) <= 0.01 * tokens]
        return hits[0] if hits else None

    def surface_at(self, tokens: float) -> LossSurface:
        """The loss surface at ``tokens``: the rung's own there, else every parameter's line in
        log2 D read at log2 ``tokens`` (per replicate), on the largest rung's batches."""
        j = self.rung(tokens)
        if j is not None:
            return self.surfaces[j]
        top = self.surfaces[-1]
        params = self.coef[:, 0] + self.coef[:, 1] * np.log2(tokens)
        return LossSurface(params, top.n_boot, top.batches, top.log2_lr_range, top.n_fit, top.rms)

    def log2_eta(self, batch: float, tokens: float) -> np.ndarray:
        """(R+1,) log2 eta*(B, D) = p0(z) + p1(z) log2 B, z = log2 D."""
        return self.surface_at(tokens).log2_eta_draws(batch)[:, 0]

    def eta_exponent(self, batch: float) -> np.ndarray:
        """(R+1,) d log2 eta* / d log2 D at ``batch``: dp0/dz + log2 B dp1/dz (eta* ~ D^this)."""
        return self.coef[:, 1, 3] + np.log2(batch) * self.coef[:, 1, 4]

    def flops(self, params: int) -> float:
        """The ladder's training FLOPs at ``params`` parameters per proxy: 6 N x its trials' tokens."""
        return training_flops(params, self.trial_tokens)

    def records(self) -> tuple[dict, ...]:
        """One row per rung: budget, best batch (interval, at_edge), B_eps (interval, at_edge), eta* there."""
        out = []
        for j, (b, s) in enumerate(zip(self.budgets, self.surfaces)):
            best, col = s.best_batch(), self.log2_eps_batch[:, j]
            lo, hi = replicate_interval(col)
            eta = s.eta_star(best.batch)
            out.append({"budget": int(b), "best_batch": best.batch, "best_batch_low": best.low,
                        "best_batch_high": best.high, "best_at_edge": best.at_edge,
                        "eps_batch": float(2 ** col[0]), "eps_batch_low": float(2 ** lo),
                        "eps_batch_high": float(2 ** hi), "eps_at_edge": self.eps_at_edge[j],
                        "eta_star": float(2 ** eta.value), "loss": float(s.loss(best.batch).value)})
        return tuple(out)

    def choose(self, tokens: float, eps: float | None = None, rung_cost: str = "") -> BatchChoice:
        """The batch to hand over at ``tokens``: the menu's (largest within ``eps``, never
        extrapolated) at the rung there, or on the projected surface when the batch law is resolved
        (its interval at ``tokens`` <= 4x, within sqrt(2)x of every rung, and no rung's best batch
        at the smallest swept: reports/budget-ladder measured the law missing 4x from such
        rungs); else the best measured batch of the largest rung, with a note naming the rung to
        run (``rung_cost``: its cost, said in the note)."""
        eps = self.eps if eps is None else eps
        menu = batch_menu(self.surface_at(tokens), eps=eps)
        records = self.records()
        notes = self._edge_notes(records)
        if self.rung(tokens) is not None:
            return BatchChoice(int(recommended_batch(menu)), "rung", menu, tuple(notes), int(tokens))
        law = self.batch_law.project(tokens)
        lo, hi = replicate_interval(law)
        notes.append(f"the batch within {100 * eps:.2g}% of the best across budgets: B_eps ~ "
                     f"D^{self.batch_law.exponent[0]:.2f} (95% [{self.batch_law.exponent_interval[0]:.2f}, "
                     f"{self.batch_law.exponent_interval[1]:.2f}]), projected to {tokens:.4g} tokens: "
                     f"{2 ** law[0]:.3g} [{2 ** lo:.3g}, {2 ** hi:.3g}]")
        misfit = float(np.max(np.abs(self.batch_law.log2_b_opt[0] - self.batch_law.project(
            np.asarray(self.budgets, float)[:, None])[:, 0])))
        bounded = [r["budget"] for r, s in zip(records, self.surfaces)
                   if r["best_at_edge"] and np.isclose(r["best_batch"], s.batches[0])]
        if hi - lo <= RESOLVED_SPAN and misfit <= MISFIT and not bounded:
            return BatchChoice(int(recommended_batch(menu)), "law", menu, tuple(notes), int(tokens))
        best = self._best_measured()
        why = (f"its 95% interval spans {2 ** (hi - lo):.3g}x > {2 ** RESOLVED_SPAN:.0f}x" if hi - lo > RESOLVED_SPAN
               else f"it misses a rung's B_eps by {2 ** misfit:.3g}x > {2 ** MISFIT:.3g}x: no power law in D "
                    f"fits the rungs" if misfit > MISFIT
               else f"at budget(s) {', '.join(map(str, bounded))} the best batch is the smallest swept, so B_eps "
                    f"there is measured from a bounded optimum")
        notes.append(f"the batch law is unresolved at {tokens:.4g} tokens ({why}): the plan hands over batch {best}, "
                     f"the best measured at the largest rung {self.budgets[-1]}, not a projected one; run "
                     f"the rung at the target's budget ([sweep] budgets += {int(tokens)}{rung_cost}) and "
                     f"transfer again")
        # the menu the batch was read from: the largest rung's, measured (reports/budget-ladder: nearer the
        # target's costs than the unresolved projection)
        return BatchChoice(best, "measured", self._rung_menu(tokens, eps), tuple(notes), self.budgets[-1])

    def _rung_menu(self, tokens: float, eps: float):
        """The largest rung's menu (its measured costs) with each batch's lr projected to ``tokens``."""
        menu = batch_menu(self.surfaces[-1], eps=eps)
        draws = self.surface_at(tokens).log2_eta_draws(menu["batch"].to_numpy(float))
        bounds = np.array([replicate_interval(draws[:, j]) for j in range(draws.shape[1])])
        return menu.assign(log2_lr=draws[0], lr=2 ** draws[0], lr_low=2 ** bounds[:, 0], lr_high=2 ** bounds[:, 1])

    def _best_measured(self) -> int:
        top = self.surfaces[-1]
        loss = top.loss_draws(top.batches)[0]
        return int(top.batches[int(np.argmin(loss))])

    def _edge_notes(self, records) -> list[str]:
        out = []
        for r in records:
            s = self.surfaces[self.budgets.index(r["budget"])]
            if r["best_at_edge"] and np.isclose(r["best_batch"], s.batches[0]):
                out.append(f"budget {r['budget']}: the best batch is the smallest swept, {s.batches[0]}: "
                           f"the optimum is only bounded above (sweep batch {s.batches[0] // 2 or 1} to place it)")
            elif r["best_at_edge"]:
                out.append(f"budget {r['budget']}: the best batch is the largest swept, {s.batches[-1]}: the "
                           f"optimum is only bounded below (sweep batch {2 * s.batches[-1]} to place it)")
            if r["eps_at_edge"]:
                out.append(f"budget {r['budget']}: every swept batch up to {s.batches[-1]} is within "
                           f"{100 * self.eps:.2g}% of the best: B_eps is only bounded below; sweep larger batches")
        return out


def fit_ladder(frame, *, eps: float = EPS, n_boot: int = N_BOOT, seed: int = 0,
               window: float = WINDOW) -> BudgetLadder:
    """Fit a :class:`LossSurface` per token budget (the widest width's trials) and the laws in D.

    theta_k(log2 D) = u_k + v_k log2 D per surface parameter and replicate (least squares over the
    budgets); B_eps(D) = max {B swept : a(log2 B) <= (1 + eps) min a} per budget and replicate,
    fitted as log2 B_eps = log2 b0 + k log2 D. ``frame``: trials with columns lr, batch_size,
    loss, budget (and width, tokens); diverged rows are dropped.

        >>> ladder = fit_ladder(trials_frame(study), eps=0.005)
        >>> ladder.batch_law.exponent[0], ladder.eta_exponent(8)[0]
    """
    check_eps(eps)
    frame = _widest(frame)
    budgets = _budgets(frame)
    surfaces = []
    for j, b in enumerate(budgets):
        try:
            surfaces.append(fit_loss_surface(frame[frame["budget"].astype(float) == b],
                                             n_boot=n_boot, seed=seed + j, window=window))
        except ValueError as err:
            raise ValueError(f"budget {b:.0f} of the ladder: {err}") from None
    eps_batch = np.stack([_eps_batch(s, eps) for s in surfaces], 1)
    edges = tuple(bool(np.isclose(eps_batch[0, j], np.log2(s.batches[-1]))) for j, s in enumerate(surfaces))
    keep = np.all(np.isfinite(eps_batch), 1)
    keep[0] = True
    law = fit_budget_law(budgets, eps_batch[keep], at_edge=edges)
    tokens = frame["tokens"].astype(float) if "tokens" in frame.columns else frame["budget"].astype(float)
    return BudgetLadder(tuple(int(b) for b in budgets), tuple(surfaces), int(frame["width"].max()), float(eps),
                        eps_batch, edges, law, _param_lines(surfaces, budgets), float(np.nansum(tokens)))


def _widest(frame):
    if "budget" not in frame.columns:
        raise ValueError("the trials record no token budget: a ladder needs trials run with [train] tokens "
                         "at >= 2 budgets ([sweep] budgets = [D, 2 * D, 4 * D])")
    if "diverged" in frame.columns:
        frame = frame[~frame["diverged"].astype(bool)]
    if "width" in frame.columns and frame["width"].nunique() > 1:
        frame = frame[frame["width"] == frame["width"].max()]
    return frame


def _budgets(frame) -> list[float]:
    budgets = distinct_values(frame["budget"])
    if len(budgets) < 2:
        raise ValueError(f"a budget ladder needs trials at >= 2 token budgets; got {budgets or 'none'}: "
                         f"set [sweep] budgets = [D, 2 * D, 4 * D] and sweep again")
    return budgets


def _eps_batch(surface: LossSurface, eps: float) -> np.ndarray:
    """(R+1,) log2 of the largest batch in the swept range whose a(y) <= (1 + eps) min a (per replicate)."""
    lo, hi = np.log2(surface.batches[0]), np.log2(surface.batches[-1])
    y = np.linspace(lo, hi, Y_GRID)
    a = surface.loss_draws(2 ** y)  # (R+1, Y)
    finite = np.isfinite(a).all(1)  # an unidentified replicate is NaN throughout
    out = np.full(len(a), np.nan)
    within = a[finite] <= a[finite].min(1, keepdims=True) * (1 + eps) + 1e-12
    out[finite] = y[Y_GRID - 1 - np.argmax(within[:, ::-1], 1)]
    return out


def _param_lines(surfaces, budgets) -> np.ndarray:
    """(R+1, 2, 7): per replicate, intercept and slope of each surface parameter against log2 D."""
    z = np.log2(np.asarray(budgets, float))
    X = np.c_[np.ones_like(z), z]
    P = np.stack([s.params for s in surfaces], 1)  # (R+1, budgets, 7)
    coef = np.einsum("ij,rjk->rik", np.linalg.pinv(X), P)  # (R+1, 2, 7); NaN rows stay NaN
    return coef


def ladder_plan(ladder: BudgetLadder, tokens: float, target_batch, *, eps: float, max_batch: int | None,
                proxy_params: int | None, target_params: int | None, notes: list[str]):
    """(batch, log2 eta* replicates at (batch, tokens), the plan's ladder fields) for
    :func:`mutransfer.transfer`: the batch of :meth:`BudgetLadder.choose` unless ``target_batch``
    is an int, capped at ``max_batch``; its lr from the ladder's eta*(B, D) law.

        >>> batch, log2_lr, fields = ladder_plan(fit_ladder(frame), 786432, None, eps=0.005,
        ...                                      max_batch=None, proxy_params=None, target_params=None, notes=[])
    """
    compute, rung_cost = _compute(ladder, tokens, proxy_params, target_params)
    choice = ladder.choose(tokens, eps, rung_cost)
    notes.extend(choice.notes)
    if ladder.rung(tokens) is None and choice.source != "measured":  # "measured" names the rung already
        notes.append(f"the ladder has no rung at the target's budget {int(tokens)}: a rung there "
                     f"({RUNG_BATCHES} batches x {RUNG_LRS} lrs at width {ladder.width}{rung_cost}) replaces "
                     f"both laws by a measurement")
    batch, source = choice.batch, choice.source
    if isinstance(target_batch, (int, np.integer)) and not isinstance(target_batch, bool):
        batch, source = int(target_batch), "given"
    if max_batch is not None and batch > max_batch:
        notes.append(f"the ladder's batch {batch} is capped by max_batch={max_batch}")
        batch = int(max_batch)
    menu, menu_tokens = choice.menu, choice.menu_tokens
    if source == "given":
        menu = batch_menu(ladder.surface_at(tokens), sorted(set(menu["batch"].tolist()) | {batch}), eps=eps)
        menu_tokens = int(tokens)
    _outside_notes(menu, batch, notes)
    log2_lr = ladder.log2_eta(batch, tokens)
    _eta_notes(ladder, batch, tokens, log2_lr, notes)
    law = ladder.batch_law
    projected = law.project(tokens)
    fields = {"eps": float(eps), "batch_source": source, "batch_menu": tuple(menu.to_dict("records")),
              "menu_tokens": menu_tokens,
              "ladder": ladder.records(), "eta_budget_exponent": float(ladder.eta_exponent(batch)[0]),
              "eta_budget_exponent_interval": interval(ladder.eta_exponent(batch)[1:]),
              "eps_batch_exponent": float(law.exponent[0]), "eps_batch_exponent_interval": law.exponent_interval,
              "eps_batch_target": float(2 ** projected[0]),
              "eps_batch_target_interval": tuple(float(2 ** v) for v in interval(projected[1:])),
              "compute": compute}
    fields["batch_interval"] = _batch_interval(ladder, tokens, source, fields["eps_batch_target_interval"])
    return batch, log2_lr, fields


def _batch_interval(ladder: BudgetLadder, tokens: float, source: str, law_interval):
    """The handed-over batch's interval: the B_eps law's at the target (source "law"), the rung's own
    B_eps interval there ("rung"), else None (a measured or given batch)."""
    if source == "law":
        return law_interval
    j = ladder.rung(tokens)
    if source == "rung" and j is not None:
        r = ladder.records()[j]
        return (r["eps_batch_low"], r["eps_batch_high"])
    return None


ETA_SPREAD = 1.0  # octaves: an lr interval at the target's budget wider than this is warned about


def _eta_notes(ladder: BudgetLadder, batch: int, tokens: float, log2_lr, notes: list[str]) -> None:
    """Say how far the lr moved along the budget, and when its interval is too wide to trust."""
    x = ladder.eta_exponent(batch)
    lo, hi = replicate_interval(log2_lr)
    top = ladder.log2_eta(batch, ladder.budgets[-1])[0]
    notes.append(f"eta* at batch {batch} ~ D^{x[0]:+.3f} (95% [{interval(x[1:])[0]:+.3f}, {interval(x[1:])[1]:+.3f}]): "
                 f"{2 ** top:.4g} at the largest rung {ladder.budgets[-1]}, {2 ** log2_lr[0]:.4g} at {int(tokens)} "
                 f"tokens ({log2_lr[0] - top:+.2f} octave)")
    if hi - lo > ETA_SPREAD:
        notes.append(f"the lr at {int(tokens)} tokens is uncertain: its 95% interval [{2 ** lo:.4g}, {2 ** hi:.4g}] "
                     f"spans {hi - lo:.2f} octaves; add seeds to the ladder or a rung at the target's budget")


def _compute(ladder: BudgetLadder, tokens: float, proxy_params, target_params) -> tuple[dict, str]:
    """The FLOPs of the ladder, of one target run and of a rung at ``tokens`` (6 N D each), and the
    rung's cost as a phrase for the notes ("" without parameter counts)."""
    if not proxy_params:
        return {}, ""
    rung = RUNG_BATCHES * RUNG_LRS * training_flops(proxy_params, tokens)
    out = {"ladder_flops": ladder.flops(proxy_params), "rung_flops": float(rung), "proxy_params": int(proxy_params)}
    phrase = f": {rung:.3g} FLOPs"
    if target_params:
        target = training_flops(target_params, tokens)
        out.update(target_run_flops=float(target), target_params=int(target_params))
        ratio = rung / target
        phrase += f", {ratio:.2g}x one target run" if ratio >= 1 else f", {100 * ratio:.2g}% of one target run"
    return out, phrase


def _outside_notes(menu, batch: int, notes: list[str]) -> None:
    """Say when the batch handed over lies outside the swept batches, and when the surface at the
    target's budget keeps falling past the largest swept batch."""
    row = menu[menu["batch"] == batch]
    if not row.empty and bool(row["extrapolated"].iloc[0]):
        notes.append(f"batch {batch} lies outside the swept batches: its lr and cost are extrapolated "
                     f"along the surface; sweep it on the ladder")
    beyond = menu[menu["extrapolated"].astype(bool) & (menu["cost_pct"] < 0)]
    if not beyond.empty:
        b = beyond.loc[beyond["cost_pct"].idxmin()]
        notes.append(f"at the target's budget the projected loss keeps falling past the swept batches "
                     f"(batch {b['batch']}: {b['cost_pct']:+.2f}%): sweep larger batches on the ladder")
