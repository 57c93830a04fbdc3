"""Transfer to the target: fit the lr landscapes and the eta*(batch) law on the proxies'
studies, project the optimum to the target width (:func:`transfer` -> :class:`TransferPlan`,
with bootstrap intervals and warnings), and train the target with the plan
(:func:`train_target`).

May import every package below it: :mod:`mutransfer.optim`, :mod:`mutransfer.core`,
:mod:`mutransfer.models`, :mod:`mutransfer.training` and :mod:`mutransfer.tuning`.

    >>> plan = mutransfer.projection.transfer(study, target_width=1024)
    >>> print(plan.summary())
"""
from mutransfer.projection._landscape import drift, eta_stars, regret, summarize
from mutransfer.projection._target import load_plan, train_target
from mutransfer.projection._transfer import transfer
from mutransfer.projection._transfer_plan import TransferPlan

__all__ = ["TransferPlan", "drift", "eta_stars", "load_plan", "regret", "summarize",
           "train_target", "transfer"]
