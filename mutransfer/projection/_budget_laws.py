"""The B_opt(D) law: the compute-optimal batch as a power of the token budget, B_opt = b0 * D^p.

Power Lines (Bergsma et al. 2025, arXiv 2505.13738) finds B_opt a power of the training
budget D (tokens, or examples for synthetic data), independent of the model size, so proxies
swept at >= 2 budgets fix b0 and p and the law projects B_opt to the target's budget. The fit
is a line in log2 space, log2 B_opt = log2 b0 + p log2 D, refitted on every bootstrap
replicate of the per-budget optima (row 0 the data, rows 1.. replicates, as in
:mod:`mutransfer.projection._laws`), so p and the projection carry percentile intervals.

    >>> law = fit_budget_law([1024, 4096, 16384], np.log2([[4.0, 8.0, 16.0]]))
    >>> law.exponent[0], 2 ** law.project(65536)[0]   # 0.5, 32.0
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from mutransfer.projection._laws import exp2_interval, interval

EXTRAPOLATION = 2.0  # octaves of D beyond the largest swept budget before the projection is flagged


@dataclass(frozen=True)
class BudgetLaw:
    """B_opt(D) = b0 * D^p fitted on per-budget compute-optimal batches (see :func:`fit_budget_law`).

    Arrays are bootstrap stacks: row 0 the fit to the data, rows 1.. the replicates.

        >>> law = fit_budget_law([1024, 4096], np.log2([[4.0, 8.0]]))
        >>> law.formula, law.exponent[0]   # ('B_opt = b0 * D^p', 0.5)
    """

    formula: ClassVar[str] = "B_opt = b0 * D^p"
    budgets: tuple[float, ...]  # D, ascending
    log2_b_opt: np.ndarray = field(repr=False)  # (R+1, budgets): the optima the law was fitted on
    exponent: np.ndarray = field(repr=False)  # (R+1,) p
    log2_b0: np.ndarray = field(repr=False)  # (R+1,) log2 b0 (B_opt at D = 1)
    at_edge: tuple[bool, ...] = ()  # per budget: its optimum sits at a swept batch's edge (only bounded)

    @property
    def exponent_interval(self) -> tuple[float, float]:
        """The 95% bootstrap interval of p."""
        return interval(self.exponent[1:])

    def project(self, tokens: float) -> np.ndarray:
        """(R+1,) log2 B_opt at budget ``tokens``: log2 b0 + p log2 D."""
        return self.log2_b0 + self.exponent * np.log2(tokens)

    def records(self) -> tuple[dict, ...]:
        """One row per budget: its B_opt and interval (in batches) and whether it sits at an edge."""
        out = []
        for j, b in enumerate(self.budgets):
            lo, hi = exp2_interval(self.log2_b_opt[:, j])
            out.append({"budget": int(b), "b_opt": float(2 ** self.log2_b_opt[0, j]), "b_opt_low": lo,
                        "b_opt_high": hi, "at_edge": bool(self.at_edge[j]) if self.at_edge else False})
        return tuple(out)

    def notes(self, tokens: float | None = None) -> list[str]:
        """What the law says and where it is weak, projected to ``tokens`` (default the largest budget):
        the fit; an exponent whose interval includes 0; optima at a batch edge; a far extrapolation."""
        target = np.log2(tokens if tokens is not None else self.budgets[-1])
        projected = self.log2_b0 + self.exponent * target
        lo, hi = self.exponent_interval
        out = [f"compute-optimal batch across budgets {', '.join(f'{b:.3g}' for b in self.budgets)}: "
               f"B_opt ~ D^{self.exponent[0]:.2f} (95% [{lo:.2f}, {hi:.2f}]), projected to "
               f"{2 ** target:.3g} tokens: {2 ** projected[0]:.3g}"]
        out.extend(unresolved_notes(self.records(), (lo, hi)))
        x = np.log2(self.budgets)
        if not x.min() <= target <= x.max() + EXTRAPOLATION:
            out.append(f"the target budget {2 ** target:.3g} lies more than 4x beyond the swept budgets: "
                       f"the B_opt(D) power law is extrapolated far")
        return out


def fit_budget_law(budgets, log2_b_opt, at_edge=None) -> BudgetLaw:
    """Fit B_opt = b0 * D^p, i.e. log2 B_opt = log2 b0 + p log2 D, on each row of ``log2_b_opt``
    ((R+1, n): row 0 the per-budget optima, rows 1.. their bootstrap replicates) at the n
    ``budgets`` D (ascending, >= 2 distinct). ``at_edge``: per budget, whether its optimum sits
    at a swept batch's edge (said in :meth:`BudgetLaw.notes`).

        >>> law = fit_budget_law([1024, 4096, 16384], np.log2([[4.0, 8.0, 16.0]]))
        >>> law.exponent[0], 2 ** law.project(65536)[0]   # 0.5, 32.0
    """
    D = np.asarray(budgets, float)
    Y = np.atleast_2d(np.asarray(log2_b_opt, float))
    if D.ndim != 1 or len(D) < 2 or not np.all(np.isfinite(D)) or np.any(D <= 0) or np.any(np.diff(D) <= 0):
        raise ValueError(f"budgets must be >= 2 increasing positive token counts, e.g. [1024, 4096]; "
                         f"got {D.tolist()}")
    if Y.shape[1] != len(D) or not np.all(np.isfinite(Y)):
        raise ValueError(f"log2_b_opt must be finite with one column per budget ({len(D)}); got shape "
                         f"{Y.shape}: pass log2 of each budget's compute-optimal batch")
    if at_edge is not None and len(at_edge) != len(D):
        raise ValueError(f"at_edge must hold one flag per budget ({len(D)}); got {len(at_edge)}")
    coef = np.array([np.polyfit(np.log2(D), row, 1) for row in Y])  # (slope, intercept) per replicate
    return BudgetLaw(tuple(float(b) for b in D), Y, coef[:, 0], coef[:, 1],
                     tuple(bool(e) for e in at_edge) if at_edge is not None else ())


def unresolved_notes(records, p_interval) -> list[str]:
    """Say when the B_opt(D) law rests on no trend (p's interval spans 0) or on optima at a grid edge."""
    out = []
    edges = [f"{r['budget']:.3g}" for r in records if r["at_edge"]]
    values = ", ".join(f"{r['b_opt']:.3g}" for r in records)
    if p_interval[0] <= 1e-9 and p_interval[1] >= -1e-9:
        out.append(f"B_opt's trend in D is not resolved: the exponent's 95% interval [{p_interval[0]:.2f}, "
                   f"{p_interval[1]:.2f}] includes 0 (per-budget B_opt {values}), so the power law projects "
                   f"either no trend or the noise between budgets; measure the proxy at the target's budget "
                   f"(a few batches near the projection, cheap at the proxy's width) or add seeds")
    if edges:
        out.append(f"the B_opt(D) law rests on budgets {', '.join(edges)} whose optimum sits at a swept "
                   f"batch's edge, where B_opt is only bounded; extend the batch grid past that edge")
    return out
