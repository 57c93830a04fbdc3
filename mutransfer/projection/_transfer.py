"""Transfer: move the proxies' optimal learning rate (and a batch size) to the target width.

scaling.md section 6 as four fits over a tidy frame of trials (one row per trial, from
:func:`mutransfer.tuning.trials_frame`), each with a bootstrap interval (trials resampled within
each (width, batch) sweep; the math is in :mod:`mutransfer.projection._laws`):

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
   within the bootstrap noise (B << B_noise), the largest batch of the flat bottom.

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

from mutransfer.projection import _laws as laws
from mutransfer.projection._laws import N_BOOT, VAR_FLOOR, WINDOW, interval
from mutransfer.core import WD_POLICIES, timescale_weight_decay
from mutransfer.core import OPTIMIZERS, SCHEMES
from mutransfer.core import check_choice
from mutransfer.projection._transfer_plan import TransferPlan, json_ready
from mutransfer.tuning import DEFAULT_BETA1, trials_frame

DRIFT_LIMIT = 0.15  # octaves per doubling: more than this and the parametrization is suspect
NOISE_MISMATCH = 4.0  # the law's B_noise and the measured B_simple may differ by this factor


def transfer(results, target_width: int, *, target_depth: int | None = None,
             target_batch: int | str | None = None,
             tokens: int | None = None, optimizer: str | None = None, scheme: str | None = None,
             max_batch: int | None = None, correct_drift: bool = False, beta1: float | None = None,
             wd_policy: str | None = None, window: float = WINDOW, n_boot: int = N_BOOT,
             seed: int = 0) -> TransferPlan:
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

        >>> plan = transfer([study64, study128], 1024, target_batch="auto", max_batch=512)
        >>> plan.lr, plan.batch_size, plan.warnings
    """
    _check_args(target_width, target_batch, tokens, max_batch, n_boot, window, wd_policy)
    notes: list[str] = []
    frame, constants = _constants_group(trials_frame(results, keep_diverged=True), notes)
    rng = np.random.default_rng(seed)
    frame, budget_law = _across_budgets(frame, tokens, window, n_boot, rng, notes)
    ok = frame[~frame["diverged"]]
    budget = _budget(ok)
    tokens = budget if tokens is None else tokens
    scheme = _resolve(ok, "scheme", scheme, SCHEMES)
    optimizer = _resolve(ok, "optimizer", optimizer, OPTIMIZERS)
    if scheme == "sp":
        notes.append("scheme 'sp' does not keep eta* fixed across width: expect a drift; "
                     "use scheme 'mup' for transfer")
    groups, E, L = _optima(frame, window, n_boot, rng, notes)
    drift = _drift(groups, E, notes)
    if correct_drift and drift is None:
        raise ValueError(f"correct_drift=True needs eta* at >= 2 proxy widths with a common batch "
                         f"size; got widths {sorted(groups['width'].unique().tolist())}: sweep another "
                         f"width or drop correct_drift")
    lw = np.log2(groups["width"].to_numpy(float))
    En = E + drift[:, None] * (np.log2(target_width) - lw)[None] if correct_drift else E
    b1 = _resolve_beta1(ok, beta1, optimizer)
    c = laws.momentum_c(b1)
    law = _law(groups, En, c, notes)
    loss = _loss_projection(groups, L, target_width, notes)
    noise = _noise(ok, n_boot, rng, notes)
    shift, bn_target = _noise_at_target(noise, loss, law, L, c, notes)
    b_opt = (budget_law["projected"] if budget_law is not None
             else _compute_optimal(groups, L, budget, tokens, notes))
    batch, batch_ci = _batch(target_batch, ok, groups, bn_target, b_opt, max_batch, notes)
    log2_lr, lr_proxy = _lr_at(batch, groups, En, law, c, shift, notes)
    safe, risk = _risk_aware(frame, groups, batch, log2_lr, window, notes)
    steps, tpe = _steps(ok, tokens, batch, notes)
    diag = {"trials": int(len(ok)), "dropped": frame.attrs.get("dropped", {}), "beta1": b1,
            "momentum_c": c, "window_octaves": window, "n_boot": n_boot, "seed": seed,
            "correct_drift": correct_drift, "lr_proxy": float(2 ** lr_proxy[0]),
            "tokens_per_example": tpe, "proxy_tokens": _median(ok["tokens"])}
    if risk is not None:
        diag["risk"] = risk
    plan = {"lr": float(2 ** safe), "eta_star": float(2 ** log2_lr[0]), "lr_interval": _ci2(log2_lr),
            "batch_size": int(batch),
            "batch_interval": batch_ci, "target_width": int(target_width), "steps": steps,
            "scheme": scheme, "optimizer_name": optimizer, "muon_scale": _unique(ok["muon_scale"]),
            "base_width": _unique(ok["base_width"], int), "optima": _optima_records(groups),
            "constants": constants, **_depth_fields(ok, target_depth)}
    policy = wd_policy or _unique(ok["wd_policy"])
    plan.update(adam_lr=_adam_lr(ok, groups, plan["lr"]), budget=budget, wd_policy=policy,
                weight_decay=_weight_decay(ok, groups, plan["lr"], diag["lr_proxy"], batch, steps, tokens, tpe,
                                           policy))
    plan.update(_law_fields(law, diag), **_drift_fields(drift), **_loss_fields(loss, diag))
    if bn_target is not None:
        plan.update(b_noise_target=float(2 ** bn_target[0]), b_noise_target_interval=_ci2(bn_target),
                    critical_batch=float(2 ** bn_target[0]), critical_batch_interval=_ci2(bn_target))
    if b_opt is not None:
        plan.update(compute_optimal_batch=float(2 ** b_opt[0]), compute_optimal_batch_interval=_ci2(b_opt))
    if budget_law is not None:
        plan.update(budget_exponent=budget_law["exponent"], budget_exponent_interval=budget_law["interval"],
                    budgets=budget_law["records"])
    if noise is not None:
        diag.update(noise_exponent=float(noise[0, 0]), noise_exponent_interval=interval(noise[1:, 0]))
    return TransferPlan(**plan, warnings=tuple(notes), diagnostics=json_ready(diag))


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


def _check_args(target_width, target_batch, tokens, max_batch, n_boot, window, wd_policy) -> None:
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


def _optima(frame, window, n_boot, rng, notes):
    """eta* per (width, batch): the groups' table and (R+1, G) replicates of log2 eta* and loss."""
    import pandas as pd

    rows, E, L, skipped = [], [], [], []
    for (width, batch), sub in frame.groupby(["width", "batch_size"], sort=True):
        where = f"width {width}, batch {batch}"
        stable = sub[~sub["diverged"]]
        try:
            opt = laws.quadratic_optimum(np.log2(stable["lr"].to_numpy(float)), stable["loss"].to_numpy(float),
                                         window=window, n_boot=n_boot, rng=rng)
        except ValueError as e:
            skipped.append(f"{where}: {e}")
            continue
        notes.extend(_edge_notes(opt, sub, where, window))
        lo, hi = _ci2(opt.log2_lr)
        rows.append({"width": int(width), "batch_size": int(batch), "lr": float(2 ** opt.log2_lr[0]),
                     "lr_low": lo, "lr_high": hi, "loss": float(opt.loss[0]),
                     "n_trials": int(len(sub)), "n_fit": opt.n_fit})
        E.append(opt.log2_lr)
        L.append(opt.loss)
    if not rows:
        raise ValueError("too few trials near the optimum in every (width, batch) sweep: "
                         + "; ".join(skipped) + ". Sweep at least 3-5 lrs around the optimum")
    notes.extend(f"{s}; this sweep is skipped" for s in skipped)
    return pd.DataFrame(rows), np.stack(E, 1), np.stack(L, 1)


def _edge_notes(opt, sub, where: str, window: float) -> list[str]:
    x = np.log2(sub["lr"].to_numpy(float))
    stable = x[~sub["diverged"].to_numpy(bool)]
    best, out = opt.best_log2_lr, []
    if best >= x.max():
        out.append(f"{where}: the best lr {2 ** best:.3g} is the largest searched; the optimum may lie "
                   f"above it: widen the lr range higher (to ~{2 ** (best + 2):.3g})")
    elif best >= stable.max():
        above = x[x > best].min()
        out.append(f"{where}: the best lr {2 ** best:.3g} is the largest that did not diverge (lr "
                   f"{2 ** above:.3g} diverged): the optimum is at the stability edge; sample lrs between them")
    if best <= x.min():
        out.append(f"{where}: the best lr {2 ** best:.3g} is the smallest searched; the optimum may lie "
                   f"below it: widen the lr range lower (to ~{2 ** (best - 2):.3g})")
    if opt.curvature <= 0:
        side = "higher" if opt.log2_lr[0] > best else "lower"
        out.append(f"{where}: the loss does not curve upward around lr {2 ** best:.3g} (flat or noisy): "
                   f"add lrs around it or widen the lr range {side}")
    if opt.exact and not opt.weak:
        out.append(f"{where}: only 3 lrs within +-{window:g} octaves of the best lr {2 ** best:.3g}: the "
                   f"parabola passes through them, so its interval is the lr grid's resolution, not "
                   f"measured; sample more lrs near the optimum")
    if opt.weak:
        out.append(f"{where}: too few trials near the optimum: under 3 distinct lrs within +-{window:g} "
                   f"octaves of the best lr {2 ** best:.3g}, so the fit used the nearest 3 (weak): "
                   f"sample more lrs near it")
    return out


def _drift(groups, E, notes):
    widths = sorted(groups["width"].unique().tolist())
    counts = groups.groupby("batch_size")["width"].nunique()
    shared = counts.index[counts >= 2]
    if len(widths) < 2 or not len(shared):
        notes.append(f"proxy widths {widths} share no batch size at >= 2 widths: no drift fit; assuming "
                     f"muP's width invariance of eta* (sweep a second width, e.g. {2 * widths[-1]}, to test it)")
        return None
    m = groups["batch_size"].isin(shared).to_numpy()
    weights = 1 / np.maximum(E[1:, m].var(0), VAR_FLOOR)
    slope = laws.fit_line(np.log2(groups.loc[m, "width"].to_numpy(float)), E[:, m], weights,
                          groups.loc[m, "batch_size"].to_numpy())[:, 0]
    if abs(slope[0]) > DRIFT_LIMIT:
        lo, hi = interval(slope[1:])
        unsure = " (the interval includes 0: sample more lrs near the optimum to tell)" if lo < 0 < hi else ""
        notes.append(f"eta* drifts {slope[0]:+.2f} octaves per doubling of width (95% CI [{lo:+.2f}, "
                     f"{hi:+.2f}]){unsure}, beyond +-{DRIFT_LIMIT}: the parametrization is suspect; run "
                     f"`mutransfer coord-check`, or pass correct_drift=True to extrapolate the drift")
    return slope


def _law(groups, En, c, notes):
    batches = sorted(groups["batch_size"].unique().tolist())
    if len(batches) < 3:
        if len(batches) == 2:
            notes.append(f"batch sizes {batches}: too few to fit the eta*(B) law (needs >= 3)")
        return None
    lb = np.log2(groups["batch_size"].to_numpy(float) / c)
    out = laws.fit_laws(lb, En, 1 / np.maximum(En[1:].var(0), VAR_FLOOR))
    share = out["support"][out["law"]]
    if share < 0.6:
        ranked = ", ".join(f"{k} {v:.0%}" for k, v in sorted(out["support"].items(), key=lambda kv: -kv[1]))
        notes.append(f"the eta*(B) law is uncertain: bootstrap picks {ranked}; sweep more batch sizes")
    t1 = out["theta"][0, 1]
    if out["law"] != "constant" and not (lb.min() - 4 < t1 < lb.max() + 4):
        notes.append(f"B_noise ~ {2 ** t1:.3g} lies far outside the swept batches {batches} (after the "
                     f"momentum correction c = {c:.3g}): only a bound is known; sweep batches nearer it")
    if out["law"] == "constant":
        notes.append(f"eta* does not change with batch size over {batches}: B_noise is well below them")
    return out


def _loss_projection(groups, L, target_width, notes):
    """log2 loss at the target from log2 L = a - b log2 width at the batch swept at most widths."""
    per_batch = groups.groupby("batch_size")["width"].nunique()
    ref = int(per_batch[per_batch == per_batch.max()].index.max())
    m = (groups["batch_size"] == ref).to_numpy()
    if per_batch.max() < 2:
        return None
    if (L[:, m] <= 0).any():
        notes.append("losses <= 0: no power law of loss against width; the target's loss is not projected")
        return None
    coef = laws.fit_line(np.log2(groups.loc[m, "width"].to_numpy(float)), np.log2(L[:, m]))
    if coef[0, 0] >= 0:
        notes.append(f"the loss does not fall with width across the proxies (batch {ref}): the projected "
                     f"loss, and B_noise read from it, are not reliable")
    return {"log2_loss": coef[:, 1] + coef[:, 0] * np.log2(target_width), "batch": ref,
            "exponent": -coef[:, 0]}


def _noise(ok, n_boot, rng, notes):
    """(R+1, 2) replicates of (slope, intercept) of log2 B_simple ~ log2 noise_loss, or None."""
    b, l = ok["b_simple"].to_numpy(float), ok["noise_loss"].to_numpy(float)
    m = np.isfinite(b) & np.isfinite(l) & (b > 0) & (l > 0)
    if m.sum() < 3:
        if m.any():
            notes.append(f"only {int(m.sum())} trial(s) carry noise statistics; need >= 3 to fit B_noise(loss)")
        return None
    x, y = np.log2(l[m]), np.log2(b[m])
    counts = laws.bootstrap_counts(len(x), n_boot, rng)
    if np.ptp(x) < 0.01:  # no spread in loss: only the level of B_noise is known
        notes.append("the noise statistics span too narrow a loss range to fit how B_noise grows as the "
                     "loss falls; B_noise is held at its measured level")
        level = (counts * y).sum(1) / counts.sum(1)
        return np.c_[np.zeros_like(level), level]
    coef = laws.fit_line(x, np.broadcast_to(y, counts.shape), counts)
    coef[np.isnan(coef[:, 0])] = coef[0]
    return coef


def _noise_at_target(noise, loss, law, L, c, notes):
    """(octaves to add to the law's log2 B_noise, log2 B_noise at the target or None), the
    latter in raw examples per step: B_simple's, or the law's c B_noise without noise statistics."""
    zero = np.zeros(len(L))
    if loss is None:
        if law is not None or noise is not None:
            notes.append("one proxy width: the target's loss cannot be projected, so B_noise is the "
                         "proxies' (it grows as the loss falls: larger at the target)")
        target_log2_loss = None
    else:
        target_log2_loss = loss["log2_loss"]
    if noise is None:
        if law is not None and loss is not None:
            notes.append("no noise statistics (set [train] measure_noise = true): B_noise is held at "
                         "the proxies' value although it grows as the loss falls; at batches near or "
                         "above it the lr may be too high")
        raw = law is not None and law["law"] != "constant"
        return zero, (law["theta"][:, 1] + np.log2(c) if raw else None)
    x = target_log2_loss if target_log2_loss is not None else np.full(len(L), np.nan)
    direct = noise[:, 1] + noise[:, 0] * x
    if target_log2_loss is None:
        return zero, noise[:, 1] + noise[:, 0] * np.median(np.log2(np.maximum(L, 1e-12)), 1)
    if law is None or law["law"] == "constant":
        return zero, direct
    ref = np.log2(np.maximum(L, 1e-12)).mean(1)  # the loss level the law was fitted at
    shift = noise[:, 0] * (target_log2_loss - ref)
    measured = noise[0, 1] + noise[0, 0] * ref[0]
    raw = law["theta"][0, 1] + np.log2(c)  # the raw batch where eta*(B) bends
    ratio = 2 ** (raw - measured)
    if not 1 / NOISE_MISMATCH < ratio < NOISE_MISMATCH:
        notes.append(f"the law's B_noise in raw examples (c B_noise = {c:.3g} x "
                     f"{2 ** law['theta'][0, 1]:.3g} = {2 ** raw:.3g}) and the measured B_simple "
                     f"({2 ** measured:.3g}) at the proxies' loss differ {max(ratio, 1 / ratio):.2g}x "
                     f"(the law's is {'smaller' if ratio < 1 else 'larger'}): the batch uses B_simple, "
                     f"the lr uses the law")
    return shift, direct


def _across_budgets(frame, tokens, window, n_boot, rng, notes):
    """With trials at >= 2 token budgets: (the largest budget's trials, the B_opt(D) law), where
    the law fits ``log2 B_opt = a + p log2 D`` on each budget's compute-optimal batch (bootstrap
    replicate by replicate) and projects it to ``tokens`` (default the largest budget). Power
    Lines (Bergsma et al. 2025, arXiv 2505.13738) finds B_opt a power of D, independent of the
    model size. With one budget (or none): (frame, None)."""
    budgets = sorted({float(v) for v in frame["budget"] if v is not None and np.isfinite(float(v))})
    if len(budgets) < 2:
        return frame, None
    per, records = [], []
    for b in budgets:
        sub = frame[frame["budget"].astype(float) == b]
        quiet: list[str] = []
        groups, _, L = _optima(sub, window, n_boot, rng, quiet)
        opt = _compute_optimal(groups, L, int(b), int(b), quiet)
        if opt is None:
            raise ValueError(f"budget {b:.0f}: no compute-optimal batch (>= 3 batch sizes at one width "
                             f"are needed at every budget); sweep more batches there")
        edge = [n for n in quiet if "smallest swept batch" in n or "largest swept batch" in n]
        notes.extend(f"budget {b:.3g}: {n}" for n in edge)
        per.append(opt)
        records.append({"budget": int(b), "b_opt": float(2 ** opt[0]), "b_opt_low": _ci2(opt)[0],
                        "b_opt_high": _ci2(opt)[1], "at_edge": bool(edge)})
    x = np.log2(budgets)
    Y = np.stack(per, 1)  # (R+1, budgets)
    coef = np.array([np.polyfit(x, row, 1) for row in Y])  # (slope, intercept) per replicate
    target = np.log2(tokens if tokens is not None else budgets[-1])
    projected = coef[:, 1] + coef[:, 0] * target
    notes.append(f"compute-optimal batch across budgets {', '.join(f'{b:.3g}' for b in budgets)}: "
                 f"B_opt ~ D^{coef[0, 0]:.2f} (95% [{interval(coef[1:, 0])[0]:.2f}, "
                 f"{interval(coef[1:, 0])[1]:.2f}]), projected to {2 ** target:.3g} tokens: "
                 f"{2 ** projected[0]:.3g}")
    _unresolved_law(records, interval(coef[1:, 0]), notes)
    if not x.min() <= target <= x.max() + 2:
        notes.append(f"the target budget {2 ** target:.3g} lies more than 4x beyond the swept budgets: "
                     f"the B_opt(D) power law is extrapolated far")
    largest = frame[frame["budget"].astype(float) == budgets[-1]]
    return largest, {"projected": projected, "exponent": float(coef[0, 0]),
                     "interval": interval(coef[1:, 0]), "records": tuple(records)}


def _unresolved_law(records, p_interval, notes):
    """Say when the B_opt(D) law rests on no trend (p's interval spans 0) or on optima at a grid edge."""
    edges = [f"{r['budget']:.3g}" for r in records if r["at_edge"]]
    values = ", ".join(f"{r['b_opt']:.3g}" for r in records)
    if p_interval[0] <= 1e-9 and p_interval[1] >= -1e-9:
        notes.append(f"B_opt's trend in D is not resolved: the exponent's 95% interval [{p_interval[0]:.2f}, "
                     f"{p_interval[1]:.2f}] includes 0 (per-budget B_opt {values}), so the power law projects "
                     f"either no trend or the noise between budgets; measure the proxy at the target's budget "
                     f"(a few batches near the projection, cheap at the proxy's width) or add seeds")
    if edges:
        notes.append(f"the B_opt(D) law rests on budgets {', '.join(edges)} whose optimum sits at a swept "
                     f"batch's edge, where B_opt is only bounded; extend the batch grid past that edge")


def _budget(ok):
    """The proxies' token budget, None when they ran a step count; several budgets are an error."""
    values = sorted({float(v) for v in ok["budget"] if v is not None and np.isfinite(float(v))})
    if len(values) > 1:
        raise ValueError(f"the trials ran at several token budgets {values}: the compute-optimal batch "
                         f"is defined at one budget; pass transfer() the trials of one budget "
                         f"(e.g. frame[frame.budget == {values[0]:.0f}])")
    return int(values[0]) if values else None


def _compute_optimal(groups, L, budget, tokens, notes):
    """(R+1,) log2 of the batch whose best-lr loss is lowest at the widest proxy width (where it
    is flat in B within the noise, the largest such batch: :func:`laws.flat_optimum`), or None
    without a budget (at a fixed step count a larger batch always looks better) or < 3 batches."""
    if budget is None:
        return None
    per_width = {}
    for w, sub in groups.groupby("width"):
        if len(sub) >= 3:
            order = np.argsort(sub["batch_size"].to_numpy(float))
            cols = sub.index.to_numpy()[order]  # groups has a RangeIndex: its labels are L's columns
            per_width[int(w)] = laws.flat_optimum(np.log2(sub["batch_size"].to_numpy(float)[order]), L[:, cols])
    if not per_width:
        notes.append("the compute-optimal batch needs >= 3 batch sizes at one width; sweep more")
        return None
    widest = max(per_width)
    opt, edge = per_width[widest]
    _batch_edge_notes(groups[groups["width"] == widest], edge, budget, notes)
    by_width = {w: 2 ** v[0][0] for w, v in per_width.items()}
    if max(by_width.values()) > 2 * min(by_width.values()):
        listed = ", ".join(f"width {w}: {b:.3g}" for w, b in by_width.items())
        notes.append(f"the compute-optimal batch moves with width ({listed}); Power Lines finds it "
                     f"independent of model size: the widest proxy's is used")
    if tokens != budget:
        notes.append(f"the compute-optimal batch was measured at the proxies' budget {budget:.3g}, the "
                     f"target trains on {tokens:.3g}: B_opt grows with the budget (a power of D), "
                     f"sweep the proxies at that budget to measure it there")
    return opt


def _batch_edge_notes(sub, edge: bool, budget, notes) -> None:
    """Say when the widest proxy's compute-optimal batch sits at either end of the swept batches."""
    if edge:
        notes.append(f"the loss at budget {budget:.3g} is still at its lowest at the largest swept batch "
                     f"{sub['batch_size'].max()}: the compute-optimal batch may be larger; sweep larger batches")
        return
    best = sub.loc[sub["loss"].idxmin(), "batch_size"]
    if best == sub["batch_size"].min():
        notes.append(f"the loss at budget {budget:.3g} is lowest at the smallest swept batch {best} "
                     f"(width {sub['width'].iloc[0]}): the compute-optimal batch may be smaller; sweep "
                     f"smaller batches")


def _batch(target_batch, ok, groups, bn_target, b_opt, max_batch, notes):
    if target_batch is None:
        widest = ok[ok["width"] == ok["width"].max()]
        return int(widest.loc[widest["loss"].idxmin(), "batch_size"]), None
    if target_batch != "auto":
        return int(target_batch), None
    if b_opt is not None:
        return _capped(_round_batch(2 ** b_opt[0]), "compute-optimal batch", b_opt, max_batch, notes), _ci2(b_opt)
    if bn_target is None:
        raise ValueError("target_batch='auto' needs noise statistics ([train] measure_noise = true) or "
                         f"trials at >= 3 batch sizes (got {sorted(groups['batch_size'].unique().tolist())}) "
                         "for the eta*(B) law; or pass target_batch=<int>")
    return _capped(_round_batch(2 ** bn_target[0]), "B_noise", bn_target, max_batch, notes), _ci2(bn_target)


def _capped(batch: int, what: str, log2_reps, max_batch, notes) -> int:
    if max_batch is not None and batch > max_batch:
        notes.append(f"the recommended batch {batch} (~{what} {2 ** log2_reps[0]:.3g}) is capped by "
                     f"max_batch={max_batch}")
        return int(max_batch)
    return batch


def _round_batch(b: float) -> int:
    """A multiple of 8 (tensor-core friendly) near ``b``; below 8 the nearest power of two."""
    return int(8 * round(b / 8)) if b >= 8 else int(2 ** max(0, round(math.log2(max(b, 1)))))


def _lr_at(batch, groups, En, law, c, shift, notes):
    """(R+1,) log2 lr at the target batch, and the proxies' log2 eta* at the nearest swept batch."""
    lb = np.log2(groups["batch_size"].to_numpy(float))
    nearest = lb[np.argmin(np.abs(lb - np.log2(batch)))]
    m = lb == nearest
    w = 1 / np.maximum(En[1:, m].var(0), VAR_FLOOR)
    pooled = (En[:, m] * w).sum(1) / w.sum()
    if law is None:
        if 2 ** nearest != batch:
            notes.append(f"target batch {batch} was not swept and there is no eta*(B) law: eta* at "
                         f"batch {2 ** nearest:.0f} is used unchanged; sweep >= 3 batch sizes to move it")
        return pooled, pooled
    if not lb.min() - 1 <= np.log2(batch) <= lb.max() + 1:
        notes.append(f"batch {batch} extrapolates the {law['law']} law beyond the swept batches "
                     f"{2 ** lb.min():.0f}..{2 ** lb.max():.0f}")
    theta = law["theta"].copy()
    if law["law"] == "constant":
        return theta[:, 0], pooled
    theta[:, 1] += shift
    return laws.law_log2_eta(law["law"], [np.log2(batch / c)], theta)[:, 0], pooled


def _steps(ok, tokens, batch, notes):
    t, s = ok["tokens"].to_numpy(float), ok["steps"].to_numpy(float)
    per = t / (s * ok["batch_size"].to_numpy(float))
    tpe = _median(per)
    if tokens is None:
        return None, tpe
    proxy = _median(t)
    if proxy and not 0.5 <= tokens / proxy <= 2:
        notes.append(f"the proxies trained on ~{proxy:.3g} tokens, the target on {tokens:.3g}: eta* "
                     f"usually falls for longer training; this plan does not correct for it")
    if tpe is None:
        notes.append("tokens given but the trials record no tokens/steps: steps are not computed")
        return None, None
    return max(1, int(round(tokens / (batch * tpe)))), tpe


def _best_rows(ok, groups):
    keys = set(zip(groups["width"], groups["batch_size"]))
    idx = ok.groupby(["width", "batch_size"])["loss"].idxmin()
    return ok.loc[[i for k, i in idx.items() if k in keys]]


def _adam_lr(ok, groups, lr):
    best = _best_rows(ok, groups)
    ratio = _median(np.log2(best["adam_lr"].to_numpy(float) / best["lr"].to_numpy(float)))
    return None if ratio is None else float(lr * 2 ** ratio)


def _weight_decay(ok, groups, lr, lr_proxy, batch, steps, tokens, tpe, policy):
    """Keep lr * wd (the decay timescale in steps, scaling.md section 5), and with a token
    budget keep that timescale the same share of training. "timescale": hold tau = B / (lr wd D)
    of the best trial at the widest width (its own lr, batch and budget)."""
    best = _best_rows(ok, groups)
    wd = _median(best["weight_decay"])
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
    lr_ratio = lr / lr_proxy
    proxy_steps = _median(ok["steps"])
    share = proxy_steps / steps if steps and proxy_steps else 1.0
    return float(wd / lr_ratio * share)


def _law_fields(law, diag) -> dict:
    if law is None:
        return {}
    theta = law["theta"]
    diag.update(law_aic=law["aic"], law_support=law["support"],
                law_fits={k: [float(2 ** v) for v in t[0]] for k, t in law["fits"].items()})
    out = {"law": law["law"], "eta_max": float(2 ** theta[0, 0]), "eta_max_interval": _ci2(theta[:, 0])}
    if law["law"] != "constant":
        out.update(b_noise=float(2 ** theta[0, 1]), b_noise_interval=_ci2(theta[:, 1]))
    return out


def _drift_fields(drift) -> dict:
    if drift is None:
        return {}
    return {"drift_slope": float(drift[0]), "drift_interval": interval(drift[1:])}


def _loss_fields(loss, diag) -> dict:
    if loss is None:
        return {}
    diag.update(loss_reference_batch=loss["batch"], loss_width_exponent=float(loss["exponent"][0]))
    return {"predicted_loss": float(2 ** loss["log2_loss"][0]), "loss_interval": _ci2(loss["log2_loss"])}


def _ci2(log2_reps) -> tuple[float, float]:
    lo, hi = interval(log2_reps[1:])
    return float(2 ** lo), float(2 ** hi)


def _median(values):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else None


def _risk_aware(frame, groups, batch, log2_lr, window, notes) -> tuple[float, dict | None]:
    """The recommended log2 lr: the risk-aware one (:mod:`mutransfer.projection._risk`) from the
    asymmetric curve of the sweeps at the batch nearest the target's, or eta* itself when the
    curve's two sides are not identified (said in the notes)."""
    from mutransfer.projection._risk import fit_asymmetric, risk_aware

    lb = np.log2(groups["batch_size"].to_numpy(float))
    near = groups[lb == lb[np.argmin(np.abs(lb - np.log2(batch)))]]
    live = frame[~frame["diverged"]]
    runs = [live[(live["width"] == r.width) & (live["batch_size"] == r.batch_size)] for r in near.itertuples()]
    curve = fit_asymmetric([np.log2(g["lr"].to_numpy(float)) for g in runs],
                           [g["loss"].to_numpy(float) for g in runs], np.log2(near["lr"].to_numpy(float)),
                           window=window)
    if curve is None:
        notes.append("the lr is eta* itself: the landscape's two sides are not identified (fewer than "
                     "2 lrs on a side of the optimum); sweep lrs on both sides for a risk-aware lr")
        return float(log2_lr[0]), None
    x, info = risk_aware(log2_lr, curve)
    if curve.asymmetry == 1.0 and curve.offset == 0.0:  # symmetric: E[X], estimated by eta* itself
        return float(log2_lr[0]), {**info, "symmetric": True}
    if curve.asymmetry > 2 or curve.asymmetry < 0.5:
        side = "above" if curve.asymmetry > 1 else "below"
        notes.append(f"the loss rises {max(curve.asymmetry, 1 / curve.asymmetry):.1f}x faster {side} eta* "
                     f"than on the other side: the risk-aware lr {2 ** x:.4g} ({x - log2_lr[0]:+.2f} octave "
                     f"from eta* {2 ** log2_lr[0]:.4g}) lowers the expected excess loss from "
                     f"{info['eta_excess']:.4f} to {info['safe_excess']:.4f} nats")
    return x, info


def _depth_fields(ok, target_depth: int | None) -> dict:
    """target_depth, base_depth and depth_alpha of the plan: the proxies' depth unless the
    target's is given; proxies swept at several depths are an error (their lrs differ by the
    depth rules, not by width)."""
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
    alpha = [float(v) for v in ok["depth_alpha"] if v is not None and v == v]
    return {"target_depth": target_depth if target_depth is not None else (depths[0] if depths else None),
            "base_depth": _unique(ok["base_depth"], int) if depths else None,
            "depth_alpha": alpha[0] if alpha else None}


def _unique(values, cast=str):
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return cast(v[0]) if v and len(set(v)) == 1 else None


def _optima_records(groups) -> tuple[dict, ...]:
    return tuple({k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
                 for row in groups.to_dict("records"))
