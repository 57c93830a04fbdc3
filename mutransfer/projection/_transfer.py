"""Transfer: move the proxies' optimal learning rate (and a batch size) to the target width.

scaling.md section 6 as five fits over a tidy frame of trials (one row per trial, from
:func:`mutransfer.tuning.trials_frame`), each with a bootstrap interval (trials resampled within
each (width, batch) sweep). This module gathers them into a :class:`TransferPlan`; steps 1-3 are
in :mod:`mutransfer.projection._eta`, 4-5 in :mod:`mutransfer.projection._batch`, and the laws
they fit in :mod:`mutransfer.projection._laws` (eta*(B): :data:`LAWS`) and
:mod:`mutransfer.projection._budget_laws` (B_opt(D)):

1. eta* per (width, batch): a quadratic in log2 lr around the best trial.
2. drift: log2 eta* against log2 width (octaves per doubling); muP predicts 0.
3. the eta*(B) law (sgd / sign-like / surge, or constant) with the momentum correction
   B -> B / c, c = (1 - beta1) / (1 + beta1), for every form (scaling.md states it for momentum
   in general); beta1 is the optimizer's (Adam's beta1, Muon/SGD momentum) from the trials'
   config, defaulting to 0.9 (Adam), 0.95 (Muon), 0 (SGD). c only rescales the law's B_noise
   (reported in effective examples B / c); the law choice and eta*(B) do not depend on it.
4. B_noise against loss (power law, from the trials' noise statistics) read at the target's
   loss, itself from a plain power law of loss against width (with 2-3 proxy widths the
   offset of L = a w^-b + c cannot be identified). The law's B_noise moves by the same factor.
5. With a token budget (trials run with ``[train] tokens``), the compute-optimal batch: the
   batch whose best-lr loss (step 1) is lowest at that budget; where that loss is flat in B
   within the bootstrap noise (B << B_noise), the largest batch of the flat bottom. With
   trials at >= 2 budgets, the B_opt(D) law B_opt = b0 * D^p projects it to the target's budget.

Two batches, both in examples per optimizer step (sequences for byte corpora, never tokens):
- the critical batch B_crit ~ B_noise (scaling.md section 6: steps to a loss are 2 S_min there,
  (S/S_min - 1)(E/E_min - 1) = 1 with E_min / S_min = B_noise), read at the target's loss;
- the compute-optimal batch B_opt at the proxies' budget D (Power Lines: B_opt depends on D,
  not on the model size, so the target at the same D shares it).
``target_batch="auto"`` takes B_opt when the proxies ran at a budget, else B_crit.

Which noise estimate drives B_crit (reports/batch-noise): the measured B_simple = tr(Sigma) /
|G|^2 against loss, in raw examples per step. The law's B_noise is compared with it in the
same raw units, c B_noise (the raw batch where eta*(B) bends): in reports/gpt-cpu-batch the two
differed 30x only because the law's 1212 is in effective examples B / c (1 / c = 19 at
beta1 = 0.9); in raw units they are 64 and 40, inside the law's interval. c B_noise stands in
for B_simple when the trials carry no noise statistics. B_simple approximates the true
tr(H Sigma) / (G^T H G) only when H ~ I (see :mod:`mutransfer.training.teacher`), so the 4x mismatch
warning is kept as the cross-check.

    >>> plan = mutransfer.transfer([study64, study128], target_width=1024, target_batch="auto")
    >>> print(plan.summary()); opt = plan.optimizer(model, base=base_model)
"""
from __future__ import annotations

import json
import math

import numpy as np

from mutransfer.core import OPTIMIZERS, SCHEMES, WD_POLICIES, check_choice, timescale_weight_decay
from mutransfer.projection._batch import (across_budgets, choose_batch, compute_optimal, finite_median, fit_noise,
                                          noise_at_target, project_loss, proxy_budget, steps_for)
from mutransfer.projection._eta import fit_batch_law, fit_drift, lr_at_batch, recommended_lr, sweep_optima
from mutransfer.projection._depth_rule import choose_depth_rule
from mutransfer.projection._ladder import fit_ladder, ladder_plan
from mutransfer.projection._laws import N_BOOT, WINDOW, distinct_values, exp2_interval, interval, momentum_c
from mutransfer.projection._menu import EPS, check_eps
from mutransfer.projection._transfer_plan import TransferPlan, json_ready
from mutransfer.runs import DEPTH_AUTO
from mutransfer.tuning import DEFAULT_BETA1, trials_frame


def transfer(results, target_width: int, *, target_depth: int | None = None,
             target_batch: int | str | None = None,
             tokens: int | None = None, optimizer: str | None = None, scheme: str | None = None,
             max_batch: int | None = None, correct_drift: bool = False, beta1: float | None = None,
             wd_policy: str | None = None, window: float = WINDOW, n_boot: int = N_BOOT,
             seed: int = 0, eps: float = EPS, proxy_params: int | None = None,
             target_params: int | None = None, use_ladder: bool = True, depth_probe=None) -> TransferPlan:
    """Project eta* (and a batch size) from proxy sweeps to ``target_width`` (scaling.md section 6).

    lr = eta*(B_target) of the chosen law, eta_max / (1 + B_noise c / B) (sgd),
    eta_max / sqrt(1 + B_noise c / B) (sign) or 2 eta_max / (sqrt(B_noise c / B) + sqrt(B / (B_noise c)))
    (surge), c = (1 - beta1) / (1 + beta1), with B_noise moved to the target's projected loss;
    with < 3 batch sizes, eta* at the nearest swept batch. muP's width invariance is assumed
    unless ``correct_drift`` extrapolates the fitted log2 eta* ~ slope * log2 width.
    Weight decay keeps lr * wd (scaling.md section 5) and its share of training; with
    ``wd_policy="timescale"``, wd = wd_p (B / B_p) (lr_p / lr) (D_p / D), which holds the AdamW
    timescale tau = B / (lr wd D) of the proxies' best trial (batch B_p, budget D_p).

    Args:
        results: Optuna studies (as the sweeper writes them) or a DataFrame of trials.
        target_width: the width to train. target_batch: an int, None (the best proxy trial's)
            or "auto" (B_noise at the target's loss, a multiple of 8, <= max_batch).
        target_depth: the target's blocks (default: the proxies'); the lr carries across depth
            by the depth rules the proxies were parametrized with (scaling.md section 9).
        tokens: the target's training tokens (gives steps and scales weight decay).
        optimizer, scheme: the target's; trials swept otherwise are an error.
        beta1: momentum for B -> B / c (default: from the trials' config, else per optimizer).
        window: octaves around the best lr used by the quadratic fit. n_boot, seed: bootstrap.
        eps: with trials at >= 2 token budgets (a budget ladder, :func:`fit_ladder`), the batch is
            the largest whose predicted loss at ``tokens`` is within ``eps`` of the best batch's
            (the batch menu), and its lr eta*(B, D) is projected along the budget.
        proxy_params, target_params: parameter counts, for the ladder's FLOPs (6 N D) beside one
            target run's.
        depth_probe: the depth probe's study for a deeper target (:func:`run_depth_probe`; or
            frame): the plan takes the rule :func:`choose_depth_rule` picks and records why.
        use_ladder: False keeps the route before the ladder across budgets: the B_opt(D) law on each
            budget's grid optimum sets the batch (reports/gpt-cpu-budgets measures it missing 7.8x).

        >>> plan = transfer([study64, study128], 1024, target_batch="auto", max_batch=512)
        >>> plan.lr, plan.batch_size, plan.warnings
    """
    _check_args(target_width, target_batch, tokens, max_batch, n_boot, window, wd_policy, eps)
    notes: list[str] = []
    frame, constants = _constants_group(trials_frame(results, keep_diverged=True), notes)
    rng = np.random.default_rng(seed)
    if frame.attrs.get("dropped", {}).get("rejected"):
        notes.append(f"{frame.attrs['dropped']['rejected']} trials failed at their point (no finite loss, "
                     f"or a point the trial refused) and are left out; `mutransfer sweep` lists them "
                     f"under 'failed trials'")
    ladder = _ladder(frame, eps, n_boot, seed) if use_ladder else None
    frame, budget_law = _old_budget_law(frame, tokens, window, n_boot, rng, notes, ladder)
    ok = frame[~frame["diverged"]]
    budget = proxy_budget(ok)
    tokens = budget if tokens is None else tokens
    scheme = _resolve(ok, "scheme", scheme, SCHEMES)
    optimizer = _resolve(ok, "optimizer", optimizer, OPTIMIZERS)
    if scheme == "sp":
        notes.append("scheme 'sp' does not keep eta* fixed across width: expect a drift; "
                     "use scheme 'mup' for transfer")
    groups, E, L = sweep_optima(frame, window, n_boot, rng, notes)
    drift = fit_drift(groups, E, notes)
    if correct_drift and drift is None:
        raise ValueError(f"correct_drift=True needs eta* at >= 2 proxy widths with a common batch "
                         f"size; got widths {sorted(groups['width'].unique().tolist())}: sweep another "
                         f"width or drop correct_drift")
    lw = np.log2(groups["width"].to_numpy(float))
    En = E + drift[:, None] * (np.log2(target_width) - lw)[None] if correct_drift else E
    b1 = _resolve_beta1(ok, beta1, optimizer)
    c = momentum_c(b1)
    law = fit_batch_law(groups, En, c, notes)
    loss = project_loss(groups, L, target_width, notes)
    noise = fit_noise(ok, n_boot, rng, notes)
    shift, bn_target = noise_at_target(noise, loss, law, L, c, notes)
    b_opt = (budget_law.project(tokens) if budget_law is not None
             else compute_optimal(groups, L, budget, tokens, notes if ladder is None else []))
    if ladder is not None:  # the batch and lr along the budget
        batch, log2_lr, ladder_fields = ladder_plan(ladder, tokens, target_batch, eps=eps, max_batch=max_batch,
                                                    proxy_params=proxy_params, target_params=target_params,
                                                    notes=notes)
        batch_ci, lr_proxy = ladder_fields.pop("batch_interval"), lr_at_batch(batch, groups, En, law, c, shift, [])[1]
        safe, risk = float(log2_lr[0]), None
    else:
        batch, batch_ci = choose_batch(target_batch, ok, groups, bn_target, b_opt, max_batch, notes)
        log2_lr, lr_proxy = lr_at_batch(batch, groups, En, law, c, shift, notes)
        safe, risk = recommended_lr(frame, groups, batch, log2_lr, window, notes)
        ladder_fields = {}
    steps, tpe = _steps(ok, tokens, batch, ladder is not None, notes)
    diag = {"trials": int(len(ok)), "dropped": frame.attrs.get("dropped", {}), "beta1": b1,
            "momentum_c": c, "window_octaves": window, "n_boot": n_boot, "seed": seed,
            "correct_drift": correct_drift, "lr_proxy": float(2 ** lr_proxy[0]),
            "tokens_per_example": tpe, "proxy_tokens": finite_median(ok["tokens"]), "target_tokens": tokens}
    if risk is not None:
        diag["risk"] = risk
    depth = _depth_fields(ok, target_depth, depth_probe, notes)  # "auto" may move the lr with the depth:
    safe, log2_lr = safe + _depth_lr_octaves(depth), log2_lr + _depth_lr_octaves(depth)
    # the TransferPlan's fields, gathered as the fits produce them
    fields = {"lr": float(2 ** safe), "eta_star": float(2 ** log2_lr[0]), "lr_interval": exp2_interval(log2_lr),
              "batch_size": int(batch), "batch_interval": batch_ci, "target_width": int(target_width),
              "steps": steps, "scheme": scheme, "optimizer_name": optimizer,
              "muon_scale": _one(ok, "muon_scale"), "readout": _one(ok, "readout"),
              "base_width": _one(ok, "base_width", int),
              "optima": _optima_records(groups), "constants": constants,
              **depth}
    policy = wd_policy or _one(ok, "wd_policy")
    fields.update(adam_lr=_adam_lr(ok, groups, fields["lr"]), budget=budget, wd_policy=policy,
                  weight_decay=_weight_decay(ok, groups, fields["lr"], diag["lr_proxy"], batch, steps, tokens,
                                             tpe, policy))
    fields.update(_law_fields(law, diag), **_drift_fields(drift), **_loss_fields(loss, diag), **ladder_fields)
    if bn_target is not None:
        fields.update(b_noise_target=float(2 ** bn_target[0]), b_noise_target_interval=exp2_interval(bn_target),
                      critical_batch=float(2 ** bn_target[0]), critical_batch_interval=exp2_interval(bn_target))
    if b_opt is not None:
        fields.update(compute_optimal_batch=float(2 ** b_opt[0]),
                      compute_optimal_batch_interval=exp2_interval(b_opt))
    if budget_law is not None:
        fields.update(budget_exponent=float(budget_law.exponent[0]),
                      budget_exponent_interval=budget_law.exponent_interval, budgets=budget_law.records())
    if noise is not None:
        diag.update(noise_exponent=float(noise[0, 0]), noise_exponent_interval=interval(noise[1:, 0]))
    return TransferPlan(**fields, warnings=tuple(notes), diagnostics=json_ready(diag))


def _ladder(frame, eps, n_boot, seed):
    """The budget ladder of trials at >= 2 token budgets (:func:`fit_ladder`), else None."""
    if len(distinct_values(frame["budget"])) < 2:
        return None
    return fit_ladder(frame, eps=eps, n_boot=n_boot, seed=seed)


def _old_budget_law(frame, tokens, window, n_boot, rng, notes, ladder):
    """(the largest budget's trials, the B_opt(D) law on grid optima or None). With a ladder the
    law is a diagnostic (plan.compute_optimal_batch, for reports/gpt-cpu-budgets): its notes are
    left out (the ladder's speak for the plan) and a budget it cannot fit drops it."""
    if ladder is None:
        return across_budgets(frame, tokens, window, n_boot, rng, notes)
    quiet: list[str] = []
    try:
        return across_budgets(frame, tokens, window, n_boot, rng, quiet)
    except ValueError:
        top = distinct_values(frame["budget"])[-1]
        return frame[frame["budget"].astype(float) == top], None


def _constants_group(frame, notes):
    """The trials that share the constants the plan will carry, and those constants.

    eta* is fitted across lr at fixed constants, so when the trials tried several constant
    settings (a staged or joint sweep), the plan takes the setting with the lowest loss among
    those swept over >= 3 lrs at one (width, batch size), and fits on its trials alone.
    """
    keys = frame["constants"].fillna("{}")
    if keys.nunique() == 1:
        return frame, json.loads(keys.iloc[0])
    ok = ~frame["diverged"]
    candidates = {}
    for key, g in frame[ok].groupby(keys[ok]):
        if g.groupby(["width", "batch_size"])["lr"].nunique().max() >= 3:
            candidates[key] = float(g["loss"].min())
    if not candidates:
        raise ValueError(f"the trials tried {keys.nunique()} settings of the constants and none was "
                         f"swept over >= 3 lrs, so eta* cannot be fitted at fixed constants; sweep an "
                         f"lr grid with the constants fixed (the staged recipe: [sweep] recipe = "
                         f"\"staged\") and transfer that")
    best = min(candidates, key=candidates.get)
    chosen = keys == best
    notes.append(f"the trials tried {keys.nunique()} settings of the constants; eta* is fitted on the "
                 f"{int(chosen.sum())} trials at the best one swept over an lr grid: {best}")
    return frame[chosen], json.loads(best)


def _check_args(target_width, target_batch, tokens, max_batch, n_boot, window, wd_policy, eps=EPS) -> None:
    check_eps(eps)
    for name, value, optional in (("target_width", target_width, False), ("tokens", tokens, True),
                                  ("max_batch", max_batch, True), ("n_boot", n_boot, False)):
        if optional and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if not (target_batch is None or target_batch == "auto" or (
            isinstance(target_batch, (int, np.integer)) and not isinstance(target_batch, bool) and target_batch >= 1)):
        raise ValueError(f"target_batch must be a positive int, 'auto' or None; got {target_batch!r}")
    if wd_policy is not None:
        check_choice("wd_policy", wd_policy, WD_POLICIES)
    if not (isinstance(window, (int, float)) and window > 0):
        raise ValueError(f"window must be a positive number of octaves, e.g. 2; got {window!r}")


def _resolve(ok, column: str, wanted, choices):
    have = sorted({str(v) for v in ok[column] if isinstance(v, str)})
    if wanted is None:
        if len(have) > 1:
            raise ValueError(f"the trials mix {column}s {have}; pass {column}= for the target and "
                             f"give transfer() only the studies swept with it")
        return have[0] if have else None
    check_choice(column, wanted, choices)
    other = [h for h in have if h != wanted]
    if other:
        studies = sorted({str(s) for s in ok.loc[ok[column] == other[0], "study"] if s is not None})
        source = f"study {', '.join(studies)}" if studies else "the trials"
        raise ValueError(f"{source} swept {column} {other[0]!r} but the target asks for {wanted!r}: an "
                         f"optimum does not carry across {column}s. Sweep the proxy with {column} "
                         f"{wanted!r} ([parametrization] {column} = \"{wanted}\") or transfer with "
                         f"{column}={other[0]!r}")
    return wanted


def _resolve_beta1(ok, beta1, optimizer) -> float:
    if beta1 is not None:
        return float(beta1)
    values = ok["beta1"].dropna().astype(float).unique()
    if len(values) > 1:
        raise ValueError(f"the trials use different momenta {sorted(values)}; pass beta1= explicitly")
    return float(values[0]) if len(values) else DEFAULT_BETA1.get(optimizer, 0.0)


def _best_rows(ok, groups):
    keys = set(zip(groups["width"], groups["batch_size"]))
    idx = ok.groupby(["width", "batch_size"])["loss"].idxmin()
    return ok.loc[[i for k, i in idx.items() if k in keys]]


def _adam_lr(ok, groups, lr):
    best = _best_rows(ok, groups)
    ratio = finite_median(np.log2(best["adam_lr"].to_numpy(float) / best["lr"].to_numpy(float)))
    return None if ratio is None else float(lr * 2 ** ratio)


def _weight_decay(ok, groups, lr, lr_proxy, batch, steps, tokens, tpe, policy):
    """Keep lr * wd (the decay timescale in steps, scaling.md section 5), and with a token
    budget keep that timescale the same share of training. "timescale": hold tau = B / (lr wd D)
    of the best trial at the widest width (its own lr, batch and budget)."""
    best = _best_rows(ok, groups)
    wd = finite_median(best["weight_decay"])
    if wd is None:
        return None
    if policy == "timescale":
        top = best.loc[best["loss"].idxmin()]
        per_step = tpe or 1.0
        proxy_tokens = float(top["steps"]) * float(top["batch_size"]) * per_step
        target_tokens = float(tokens) if tokens else float(top["steps"]) * batch * per_step
        return timescale_weight_decay(float(top["weight_decay"]), lr=float(top["lr"]),
                                      batch=float(top["batch_size"]), tokens=proxy_tokens, new_lr=lr,
                                      new_batch=float(batch), new_tokens=target_tokens)
    proxy_steps = finite_median(ok["steps"])
    share = proxy_steps / steps if steps and proxy_steps else 1.0
    if policy == "independent":  # its decay per step, wd x schedule, does not scale with the lr
        return float(wd * share)
    return float(wd / (lr / lr_proxy) * share)


def _law_fields(law, diag) -> dict:
    if law is None:
        return {}
    theta = law["theta"]
    diag.update(law_aic=law["aic"], law_support=law["support"],
                law_fits={k: [float(2 ** v) for v in t[0]] for k, t in law["fits"].items()})
    out = {"law": law["law"], "eta_max": float(2 ** theta[0, 0]), "eta_max_interval": exp2_interval(theta[:, 0])}
    if law["law"] != "constant":
        out.update(b_noise=float(2 ** theta[0, 1]), b_noise_interval=exp2_interval(theta[:, 1]))
    return out


def _drift_fields(drift) -> dict:
    if drift is None:
        return {}
    return {"drift_slope": float(drift[0]), "drift_interval": interval(drift[1:])}


def _loss_fields(loss, diag) -> dict:
    if loss is None:
        return {}
    diag.update(loss_reference_batch=loss["batch"], loss_width_exponent=float(loss["exponent"][0]))
    return {"predicted_loss": float(2 ** loss["log2_loss"][0]), "loss_interval": exp2_interval(loss["log2_loss"])}


def _depth_fields(ok, target_depth: int | None, depth_probe, notes) -> dict:
    """target_depth, base_depth and depth_alpha of the plan: the proxies' depth unless the
    target's is given; proxies swept at several depths are an error (their lrs differ by the
    depth rules, not by width). A ``depth_probe`` gives the rule (the proxies' runs at their own
    depth are the same under every alpha); without one, the trials' depth_alpha (unset: alpha 1/2,
    with a note when the target is deeper; "auto" and a deeper target: refused)."""
    depths = sorted({int(v) for v in ok["depth"] if v is not None and v == v})
    if len(depths) > 1:
        raise ValueError(f"the trials ran at depths {depths}; transfer fits eta* across width at one "
                         f"depth: give it the studies of one proxy depth")
    if target_depth is not None and (isinstance(target_depth, bool) or not isinstance(target_depth, (int, np.integer))
                                     or target_depth < 1):
        raise ValueError(f"target_depth must be a positive int; got {target_depth!r}")
    if target_depth is not None and not depths:
        raise ValueError(f"target_depth={target_depth} needs proxies swept with [model] depth (their "
                         f"blocks passed to the factory and a base depth); these trials have none")
    fields = {"target_depth": target_depth if target_depth is not None else (depths[0] if depths else None),
              "base_depth": _one(ok, "base_depth", int) if depths else None}
    alpha = _one(ok, "depth_alpha")
    if alpha not in (None, DEPTH_AUTO) and depth_probe is None:
        return {**fields, "depth_alpha": _one(ok, "depth_alpha", float)}
    deeper = fields["target_depth"] is not None and depths and fields["target_depth"] > depths[0]
    if depth_probe is None:
        if deeper and alpha == DEPTH_AUTO:
            raise ValueError(f"the proxies ran depth_alpha = \"auto\" and the target is deeper ({fields['target_depth']} "
                             f"blocks against {depths[0]}), but no depth probe was given: `mutransfer sweep CONFIG` "
                             f"runs it (study <name>-w<width>-depth-probe); pass it as depth_probe=")
        if deeper:
            notes.append(f"no depth probe: the target ({fields['target_depth']} blocks against the proxy's {depths[0]}) "
                         f"gets alpha 1/2 at the lr handed over from {depths[0]} blocks, which the probe's rule beat "
                         f"at 8x depth on every family measured (reports/depth-auto); `mutransfer sweep CONFIG` "
                         f"runs the probe")
        return {**fields, "depth_alpha": None}
    rule = choose_depth_rule(depth_probe, base_depth=depths[0] if depths else 1)
    notes.extend(rule.notes())
    return {**fields, "depth_alpha": rule.alpha, "depth_rule": rule.as_dict()}


def _steps(ok, tokens, batch, along_budget: bool, notes):
    """steps_for's (steps, tokens per example); with a ladder its note that the lr is not corrected
    along the budget is left out (the ladder corrects it)."""
    quiet: list[str] = []
    steps, tpe = steps_for(ok, tokens, batch, quiet if along_budget else notes)
    if along_budget and steps is None:
        notes.extend(quiet)
    return steps, tpe


def _depth_lr_octaves(depth: dict) -> float:
    """log2 of the lr factor (L / L0)^s of a depth rule with a measured depth exponent s, else 0."""
    s = depth.get("depth_rule", {}).get("lr_depth_exponent") or 0.0
    if not s or not depth.get("target_depth") or not depth.get("base_depth"):
        return 0.0
    return float(s * math.log2(depth["target_depth"] / depth["base_depth"]))


def _one(ok, column: str, cast=str):
    """The one value the trials share in ``column`` (None where none recorded it); trials that
    mix values are refused, naming them: the plan would otherwise hold a setting none ran with."""
    v = sorted({x for x in ok[column] if x is not None and not (isinstance(x, float) and math.isnan(x))},
               key=str)
    if len(v) > 1:
        raise ValueError(f"the trials mix {column} {[cast(x) for x in v]}; give transfer() only the "
                         f"studies swept with one {column} (an optimum does not carry across them)")
    return cast(v[0]) if v else None


def _optima_records(groups) -> tuple[dict, ...]:
    return tuple({k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
                 for row in groups.to_dict("records"))
