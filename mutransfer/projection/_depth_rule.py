"""``depth_alpha = "auto"``: the depth rule chosen by the regret a user would pay (issue 32).

The depth probe (:func:`mutransfer.tuning.probe_depth`) trains the proxy at 4x its depth under
each candidate branch multiplier m_L^-alpha on a short lr grid around the handed-over lr, plus
one run per alpha at its grid's fitted optimum eta*_probe. Each alpha's rule keeps m_L^-alpha and
moves the lr by the depth exponent measured there (the branch multiplier and the lr decoupled):

    s = log2(eta*_probe / lr) / log2(L_probe / L0),   the target's lr = lr x (L / L0)^s,

because the fitted optimum of five runs at 4x depth places eta* better than a comparison of two
single runs (at the shallow proxy the lr landscape is flat and its eta* noisy; deeper it is sharp:
reports/depth-auto). For each rule

    regret = L_rule / min over every alpha and lr of L - 1

at the probe's depth. The prior, alpha 1/2 (:data:`PRIOR_ALPHA`, depth-muP), is kept unless another
alpha's rule beats it there by more than :data:`MARGIN` (one run's seed spread: a smaller win at
4x depth did not hold at 8x in reports/llama-cpu-depth). A warning says when the chosen rule pays
more than :data:`REGRET_GOAL`, or when its optimum sat at the probe grid's edge.

    >>> rule = choose_depth_rule(probe_study, base_depth=2)
    >>> rule.alpha, rule.lr_depth_exponent, rule.records
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mutransfer.runs import training_flops

REGRET_GOAL = 0.01  # a rule whose regret at the probe's depth exceeds 1% is warned about
PRIOR_ALPHA = 0.5  # depth-muP: kept unless another alpha wins at the probe by more than MARGIN
MARGIN = 0.01  # relative loss: one probe run's seed spread (0.7-0.8% per cell on these models)


@dataclass(frozen=True)
class DepthRule:
    """The chosen alpha, the evidence per candidate and the probe's cost (see the module).

        >>> rule = choose_depth_rule(frame, lr=0.01)
        >>> rule.alpha, rule.regret_pct, rule.as_dict()["candidates"]
    """

    alpha: float
    records: tuple[dict, ...]  # per alpha: depth_alpha, loss_at_lr, best_loss, best_log2_lr, regret_pct
    base_depth: int
    probe_depth: int
    lr: float  # the handed-over lr the rules were judged at
    regret_pct: float  # the chosen rule's
    probe_flops: float | None = None  # 6 N D over the probe's runs
    lr_depth_exponent: float = 0.0  # the target's lr x (L / L0)^this (0: the lr as handed over)

    def lr_factor(self, target_depth: int) -> float:
        """(target_depth / base_depth)^s: what the chosen rule multiplies the handed-over lr by."""
        return (target_depth / self.base_depth) ** self.lr_depth_exponent

    def as_dict(self) -> dict:
        """The plan's record of the choice (plan.depth_rule)."""
        return {"chosen": self.alpha, "lr_depth_exponent": self.lr_depth_exponent,
                "base_depth": self.base_depth, "probe_depth": self.probe_depth,
                "lr": self.lr, "regret_pct": self.regret_pct, "candidates": list(self.records),
                "probe_flops": self.probe_flops}

    def notes(self) -> list[str]:
        """The choice in a sentence; warnings when the chosen rule pays more than the goal at the
        probe's depth or its lr sat at the probe grid's edge."""
        listed = ", ".join(f"{r['rule']}: {r['regret_pct']:+.2f}%" for r in self.records)
        rule = f"alpha {self.alpha:g}" + (f" with the lr x (L / {self.base_depth})^{self.lr_depth_exponent:+.2f}"
                                          if self.lr_depth_exponent else " at the handed-over lr")
        out = [f"depth_alpha auto: the probe at {self.probe_depth} blocks (the proxy's {self.base_depth} x "
               f"{self.probe_depth // self.base_depth}) chose {rule} ({self.lr:.4g} at {self.base_depth}; alpha "
               f"{PRIOR_ALPHA:g} unless another wins there by > {100 * MARGIN:g}%); regret against the best of any "
               f"rule tuned at that depth: {listed}"]
        if self.regret_pct > 100 * REGRET_GOAL:
            out.append(f"no depth rule keeps the regret at {self.probe_depth} blocks under {100 * REGRET_GOAL:g}% "
                       f"(the chosen, alpha {self.alpha:g}, pays {self.regret_pct:.2f}%): the lr handed over from "
                       f"{self.base_depth} blocks will be off at the target's depth; sweep the proxy nearer "
                       f"the target's depth ([sweep] depth)")
        chosen = next((r for r in self.records if r["depth_alpha"] == self.alpha
                       and r["lr_depth_exponent"] == self.lr_depth_exponent), {})
        if chosen.get("at_edge"):
            out.append(f"alpha {self.alpha:g}'s best lr at {self.probe_depth} blocks is the probe grid's edge "
                       f"({chosen['lr']:.4g}): its depth exponent {self.lr_depth_exponent:+.2f} is a bound, not a fit; "
                       f"sweep the proxy's lr range wider and run `mutransfer sweep CONFIG` again")
        return out


def probe_frame(probe):
    """One row per finished probe trial: depth_alpha, lr, loss, tokens, params (from a study or a
    DataFrame with those columns)."""
    import pandas as pd

    if isinstance(probe, pd.DataFrame):
        return probe if "kind" in probe else probe.assign(kind="grid")
    import optuna

    rows = []
    for t in probe.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        a = t.user_attrs
        loss = a.get("loss")
        rows.append({"depth_alpha": a.get("depth_alpha"), "lr": a.get("lr"), "depth": a.get("depth"),
                     "handed_lr": a.get("handed_lr"), "kind": a.get("kind", "grid"),
                     "loss": math.inf if loss is None or a.get("diverged") else float(loss),
                     "tokens": float(a.get("steps", 0)) * float(a.get("batch_size", 0)) * _seq_len(a)})
    frame = pd.DataFrame(rows)
    frame.attrs["params_probe"] = probe.user_attrs.get("params_probe")
    return frame


def _seq_len(attrs: dict) -> float:
    cfg = attrs.get("config", {})
    synthetic = cfg.get("data", {}).get("source") == "synthetic"
    return 1.0 if synthetic else float(cfg.get("train", {}).get("seq_len", 1))


def choose_depth_rule(probe, *, base_depth: int, lr: float | None = None) -> DepthRule:
    """The depth rule the probe supports (see the module), each candidate with its regret.

    Candidates: every alpha at ``lr`` (the handed-over lr; default the one the probe ran around,
    its runs' ``handed_lr``), and every alpha with a run at its grid's fitted optimum
    (:func:`tuned_points`) at that lr: the lr moved by s = log2(eta*_probe / lr) / log2(probe
    depth / base depth) (the target then gets lr x (L / L0)^s). Each alpha's rule is its moved
    candidate where it has one, else its plain one; the rule of :data:`PRIOR_ALPHA` is chosen
    unless another's loss at the probe is lower by more than :data:`MARGIN`. ``probe``: the
    probe's study or a frame with columns depth_alpha, lr, loss, kind (and handed_lr, depth, tokens).

        >>> choose_depth_rule(study, base_depth=2).alpha
        0.5
    """
    frame = probe_frame(probe)
    if frame.empty:
        raise ValueError("the depth probe holds no finished runs: run `mutransfer sweep CONFIG` with "
                         "[parametrization] depth_alpha = \"auto\" (it runs the probe) before transfer")
    lr = _handed_lr(frame) if lr is None else float(lr)
    best = float(frame["loss"].min())
    if not math.isfinite(best):
        raise ValueError("every depth-probe run diverged: lower the sweep's lr range and sweep again")
    depth = int(frame["depth"].max()) if "depth" in frame else 0
    octaves = math.log2(depth / base_depth) if depth > base_depth else 1.0
    records, rules = [], {}
    tuned = {p["depth_alpha"]: p for p in tuned_points(frame)}
    for alpha, g in frame.groupby("depth_alpha", sort=True):
        rules[float(alpha)] = _candidate(g, alpha, lr, best, 0.0)
        records.append(rules[float(alpha)])
        at = tuned.get(float(alpha))
        if at is not None and np.isclose(np.log2(g["lr"].astype(float)), math.log2(at["lr"]), atol=1e-6).any():
            rules[float(alpha)] = {**_candidate(g, alpha, at["lr"], best, (math.log2(at["lr"]) - math.log2(lr)) / octaves),
                                   "at_edge": at["at_edge"]}
            records.append(rules[float(alpha)])
    chosen = _prior_or_winner(rules)
    params = frame.attrs.get("params_probe")
    flops = training_flops(params, float(frame["tokens"].sum())) if params and "tokens" in frame else None
    return DepthRule(chosen["depth_alpha"], tuple(records), int(base_depth), depth, float(lr),
                     chosen["regret_pct"], flops, chosen["lr_depth_exponent"])


def _prior_or_winner(rules: dict[float, dict]) -> dict:
    """The prior alpha's rule, unless another's loss is lower by more than MARGIN (then the lowest);
    without the prior among the probed alphas, the lowest."""
    top = min(rules.values(), key=lambda r: r["loss_at_lr"])
    prior = rules.get(PRIOR_ALPHA)
    if prior is None or top["loss_at_lr"] < prior["loss_at_lr"] * (1 - MARGIN):
        return top
    return prior


def _handed_lr(frame) -> float:
    if "handed_lr" not in frame or frame["handed_lr"].isna().all():
        raise ValueError("the probe's runs record no handed-over lr: pass lr= (the lr the proxy hands over)")
    return float(frame["handed_lr"].dropna().iloc[-1])


def _candidate(g, alpha, lr: float, best: float, exponent: float) -> dict:
    """One rule's record: its loss at ``lr`` (a run there, refused if missing) and its regret."""
    at = g[np.isclose(np.log2(g["lr"].astype(float)), math.log2(lr), atol=1e-6)]
    if at.empty:
        raise ValueError(f"the depth probe has no run of alpha {alpha:g} at the lr {lr:.4g} (its lrs: "
                         f"{sorted(g['lr'].round(6).tolist())}): the sweep changed since the probe ran; run "
                         f"`mutransfer sweep CONFIG` again to probe at the new lr")
    loss = float(at["loss"].mean())
    top = g.loc[g["loss"].idxmin()]
    label = f"alpha {alpha:g}" + (f", lr x m_L^{exponent:+.2f}" if exponent else "")
    return {"rule": label, "depth_alpha": float(alpha), "lr_depth_exponent": float(exponent), "lr": float(lr),
            "loss_at_lr": loss, "best_loss": float(top["loss"]), "best_log2_lr": float(math.log2(top["lr"])),
            "regret_pct": 100 * (loss - best) / best}


def tuned_points(probe, *, window: float = 2.0) -> list[dict]:
    """Per alpha of the probe's grid, a run at the lr a quadratic fit puts the optimum at
    (:func:`quadratic_optimum` on its grid): the "tuned" points that measure the drift-corrected
    candidates. Where the grid's best sits at its edge the edge lr is used.

        >>> tuned_points(study)
        [{'depth_alpha': 0.0, 'lr': 0.0081, 'offset': 0.31, 'kind': 'tuned', 'at_edge': False}, ...]
    """
    from mutransfer.projection._laws import quadratic_optimum

    out = []
    for alpha, x, loss, handed in _grids(probe):
        opt = float(quadratic_optimum(x, loss, window=window, n_boot=0).log2_lr[0])
        edge = not x.min() + 1e-6 < opt < x.max() - 1e-6
        out.append({"depth_alpha": alpha, "lr": 2.0 ** opt, "offset": opt - math.log2(handed), "kind": "tuned",
                    "at_edge": bool(edge)})
    return out


def _grids(probe):
    """Per alpha of the probe with >= 3 distinct grid lrs: (alpha, log2 lrs, losses, handed-over lr)
    of its finished grid runs."""
    frame = probe_frame(probe)
    frame = frame[(frame["kind"] == "grid") & np.isfinite(frame["loss"])]
    for alpha, g in frame.groupby("depth_alpha", sort=True):
        x = np.log2(g["lr"].to_numpy(float))
        if len(np.unique(x)) >= 3:
            yield float(alpha), x, g["loss"].to_numpy(float), float(g["handed_lr"].iloc[-1])


def edge_points(probe) -> list[dict]:
    """Per alpha whose best finite grid run sits at its grid's edge, one more grid point an octave
    beyond it (the probe then brackets each alpha's optimum before :func:`tuned_points` fits it).

        >>> edge_points(study)
        [{'depth_alpha': 1.0, 'offset': 3.0, 'lr': 0.08, 'kind': 'grid'}]
    """
    out = []
    for alpha, x, loss, handed in _grids(probe):
        best = x[int(np.argmin(loss))]
        if x.min() < best < x.max():
            continue
        step = 1.0 if best == x.max() else -1.0
        out.append({"depth_alpha": alpha, "offset": best + step - math.log2(handed),
                    "lr": 2.0 ** (best + step), "kind": "grid"})
    return out
