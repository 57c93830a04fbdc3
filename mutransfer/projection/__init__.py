"""Transfer to the target: fit the lr landscapes and the eta*(batch) law on the proxies'
studies, project the optimum to the target width (:func:`transfer` -> :class:`TransferPlan`,
with bootstrap intervals and warnings), and train the target with the plan
(:func:`train_target`); :func:`pipeline` runs sweep -> transfer -> train target in one call.

May import every package below it: :mod:`mutransfer.optim`, :mod:`mutransfer.core`,
:mod:`mutransfer.models`, :mod:`mutransfer.training`, :mod:`mutransfer.runs` and
:mod:`mutransfer.tuning`.

The laws it fits are records: the eta*(B) laws in :data:`LAWS` (one :class:`Law` each) and
the B_opt(D) law of the token budget, :func:`fit_budget_law` (B_opt = b0 * D^p). At one budget,
:func:`fit_loss_surface` fits the loss over (log2 lr, log2 batch) as one smooth
:class:`LossSurface` that can rank batches, and :func:`batch_menu` lists what each batch costs
(:func:`recommended_batch`: the largest within eps of the best). Across budgets, :func:`fit_ladder`
holds every surface parameter linear in log2 D: eta*(B, D) and the within-eps batch B_eps(D)
become power laws in D, and ``transfer(..., tokens=N)`` reads the menu at the target's budget.

    >>> plan = mutransfer.projection.transfer(study, target_width=1024)
    >>> print(plan.summary())
"""
from mutransfer.projection._budget_laws import BudgetLaw, fit_budget_law
from mutransfer.projection._depth_rule import DepthRule, choose_depth_rule
from mutransfer.projection._ladder import BatchChoice, BudgetLadder, fit_ladder
from mutransfer.projection._laws import (CI_LEVEL, LAWS, VAR_FLOOR, Law, fit_law, fit_laws, fit_line,
                                         flat_optimum, interval, law_log2_eta, momentum_c,
                                         quadratic_optimum)
from mutransfer.projection._menu import batch_menu, recommended_batch
from mutransfer.projection._pipeline import PipelineResult, pipeline, run_depth_probe
from mutransfer.projection._surface import BestBatch, Estimate, LossSurface, fit_loss_surface
from mutransfer.projection._target import load_plan, train_target
from mutransfer.projection._transfer import transfer
from mutransfer.projection._transfer_plan import TransferPlan

__all__ = ["BatchChoice", "BestBatch", "BudgetLadder", "BudgetLaw", "DepthRule", "choose_depth_rule",
           "run_depth_probe", "CI_LEVEL", "Estimate", "LAWS", "Law", "LossSurface", "PipelineResult",
           "TransferPlan", "VAR_FLOOR", "batch_menu", "fit_budget_law", "fit_ladder", "fit_law", "fit_laws", "fit_line",
           "fit_loss_surface", "flat_optimum", "interval", "law_log2_eta", "load_plan", "momentum_c",
           "pipeline", "quadratic_optimum", "recommended_batch", "train_target", "transfer"]
