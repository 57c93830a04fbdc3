"""The transfer plan: what :func:`mutransfer.transfer` recommends for the target width.

A frozen dataclass of plain numbers (lr, batch size, their intervals, the fitted law and drift,
warnings) that round-trips through JSON, prints as a readable table, and builds the target's
optimizer or per-group lrs from a model. Fitting lives in :mod:`mutransfer.projection._transfer`.

    >>> plan = TransferPlan.from_json(Path("reports/quickstart/plan.json").read_text())
    >>> print(plan.summary()); opt = plan.optimizer(model, base=base_model)
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from mutransfer.projection._depth_rule import MARGIN, PRIOR_ALPHA


@dataclass(frozen=True)
class TransferPlan:
    """What :func:`transfer` recommends for the target, with 95% bootstrap intervals.

        >>> plan = transfer(study, target_width=1024)
        >>> plan.lr, plan.lr_interval, plan.warnings
    """

    lr: float  # the recommended lr: the risk-aware one (lowest expected target loss), else eta*
    lr_interval: tuple[float, float]  # of the projected eta*
    batch_size: int
    target_width: int
    eta_star: float | None = None  # the projected eta* itself (lr differs when the landscape is lopsided)
    target_depth: int | None = None  # the target's blocks; None: the factory's own (width-only)
    base_depth: int | None = None  # the base's blocks the depth rules are relative to
    depth_alpha: float | None = None  # the branch multiplier m_L^-alpha the proxies ran with
    depth_rule: dict = field(default_factory=dict)  # depth_alpha "auto": the probe's choice, evidence, cost
    adam_lr: float | None = None  # Muon's AdamW groups: carried as its ratio to lr in the best trials
    weight_decay: float | None = None  # keeps lr*wd (and its share of training, given tokens)
    batch_interval: tuple[float, float] | None = None  # "auto": the projected B_noise's interval
    steps: int | None = None  # tokens / (batch_size * tokens per example), when tokens is given
    scheme: str | None = None
    optimizer_name: str | None = None  # as Plan.optimizer_name (.optimizer() builds the optimizer)
    muon_scale: str | None = None
    readout: str | None = None  # how the proxies' readout was scaled ("init", "zero", "multiplier")
    base_width: int | None = None
    law: str | None = None  # the chosen eta*(B) law; None with < 3 batch sizes
    eta_max: float | None = None  # the law's eta_max (surge: eta_peak)
    eta_max_interval: tuple[float, float] | None = None
    b_noise: float | None = None  # the law's B_noise (surge: B_peak) in effective examples B / c
    b_noise_interval: tuple[float, float] | None = None
    b_noise_target: float | None = None  # B_noise projected to the target's loss
    b_noise_target_interval: tuple[float, float] | None = None
    # B_crit ~ B_noise at the target's loss (steps to a loss = 2 S_min), in examples per step
    critical_batch: float | None = None
    critical_batch_interval: tuple[float, float] | None = None
    # the batch whose best-lr loss is lowest at the proxies' token budget (None at fixed steps)
    compute_optimal_batch: float | None = None
    compute_optimal_batch_interval: tuple[float, float] | None = None
    budget: int | None = None  # the proxies' token (synthetic: example) budget (the largest, across budgets)
    # across >= 2 budgets: B_opt ~ D^exponent, fitted on each budget's compute-optimal batch
    budget_exponent: float | None = None
    budget_exponent_interval: tuple[float, float] | None = None
    budgets: tuple[dict, ...] = ()  # per budget: budget, b_opt, its interval, at_edge
    # the budget ladder (proxies at >= 2 budgets): loss surfaces per rung, laws in D, the batch menu
    eps: float | None = None  # the menu's tolerance: batch_size is the largest batch within it
    batch_source: str | None = None  # "rung" (measured at the target's budget), "law", "measured", "given"
    batch_menu: tuple[dict, ...] = ()  # per batch at menu_tokens: cost_pct (interval), lr, ...
    menu_tokens: int | None = None  # the target's budget, or the largest rung's when the batch law is unresolved
    ladder: tuple[dict, ...] = ()  # per rung: budget, best_batch, eps_batch (intervals, edges), eta*
    eta_budget_exponent: float | None = None  # eta* ~ D^this at batch_size
    eta_budget_exponent_interval: tuple[float, float] | None = None
    eps_batch_exponent: float | None = None  # B_eps ~ D^this (the largest batch within eps)
    eps_batch_exponent_interval: tuple[float, float] | None = None
    eps_batch_target: float | None = None  # B_eps projected to the target's budget
    eps_batch_target_interval: tuple[float, float] | None = None
    compute: dict = field(default_factory=dict)  # FLOPs: ladder, one target run, a rung at the target's budget
    wd_policy: str | None = None  # "timescale": weight_decay holds tau = B / (lr wd D)
    drift_slope: float | None = None  # octaves of eta* per doubling of width
    drift_interval: tuple[float, float] | None = None
    predicted_loss: float | None = None  # at the reference batch and the proxies' steps
    loss_interval: tuple[float, float] | None = None
    optima: tuple[dict, ...] = ()  # eta* per proxy (width, batch_size)
    constants: dict = field(default_factory=dict)  # muP's free constants that differ from 1 (Constants)
    warnings: tuple[str, ...] = ()
    diagnostics: dict = field(default_factory=dict)

    @property
    def eta_table(self):
        """eta* per proxy (width, batch_size) with its interval, as a DataFrame."""
        import pandas as pd

        return pd.DataFrame(list(self.optima))

    def to_json(self) -> str:
        """The plan as JSON (NaN -> null); :meth:`from_json` reads it back."""
        return json.dumps(json_ready(asdict(self)), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TransferPlan":
        """A plan from :meth:`to_json`'s text. A plan written before a setting was recorded gets
        the value every plan then trained with (:data:`OLD_PLAN_DEFAULTS`)."""
        data = json.loads(text)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"not a TransferPlan JSON: unknown keys {sorted(unknown)}")
        for key, value in OLD_PLAN_DEFAULTS.items():
            if key not in data and (key != "muon_scale" or data.get("optimizer_name") == "muon"):
                data[key] = value
        for key, value in data.items():
            if isinstance(value, list) and key not in TABLE_FIELDS:
                data[key] = tuple(value)
        for key in TABLE_FIELDS:
            data[key] = tuple(data.get(key, ()))
        return cls(**data)

    def summary(self) -> str:
        """A readable table of the recommendation, the fits, eta* per proxy and the warnings."""
        return _summary(self)

    def group_lrs(self, model, base=None, *, scheme: str | None = None, optimizer: str | None = None):
        """Per-parameter lrs for the target: ``lr * lr_mult`` (``adam_lr`` for Muon's AdamW params).

        ``model``: an nn.Module (with ``base``, its base-width twin; neither is modified), a
        factory width -> nn.Module (``base`` = base width, default the trials'), or a Plan.

            >>> plan.group_lrs(mutransfer.zoo.mlp, base=64)[["name", "role", "lr"]]
        """
        table = self._plan_for(model, base, scheme, optimizer, copy_model=True).table()
        from mutransfer.core import optimizer_rule

        name = self.settings(scheme, optimizer)["optimizer"]
        # the side groups of a rule that has one (Muon's AdamW groups) train at adam_lr
        side = (table["optimizer"] != name) & (optimizer_rule(name).side is not None) & (self.adam_lr is not None)
        table["lr"] = np.where(side, self.adam_lr or 0.0, self.lr) * table["lr_mult"]
        return table[["name", "shape", "role", "optimizer", "lr_mult", "lr"]]

    def optimizer(self, model, base=None, *, scheme: str | None = None, optimizer: str | None = None,
                  **kwargs):
        """The target's torch optimizer: ``mutransfer.parametrize(model, base)`` (the init is
        rewritten in place) with this plan's scheme, optimizer, muon_scale, readout, depth_alpha
        and constants, and its lr, adam_lr, weight_decay and wd_policy; ``kwargs`` (betas, ...)
        go to ``Plan.optimizer``. ``model`` may also be a ready Plan. A setting given here (or
        held by the Plan) that differs from the plan's is an error naming both.

            >>> opt = plan.optimizer(model, base=base_model)
        """
        from mutransfer.core import Plan

        if not isinstance(model, Plan) and not hasattr(model, "parameters"):
            raise TypeError(f"model must be an nn.Module (with base=) or a mutransfer Plan; got "
                            f"{type(model).__name__}; for a factory call it first: model = factory(width=W)")
        p = self._plan_for(model, base, scheme, optimizer, copy_model=False)
        if self.wd_policy is not None and kwargs.get("wd_policy", self.wd_policy) != self.wd_policy:
            raise ValueError(f"wd_policy={kwargs['wd_policy']!r} but this plan's weight decay was "
                             f"transferred under wd_policy {self.wd_policy!r}; leave wd_policy out")
        settings = {"weight_decay": self.weight_decay or 0.0, "adam_lr": self.adam_lr,
                    **({"wd_policy": self.wd_policy} if self.wd_policy else {}), **kwargs}
        return p.optimizer(self.lr, **settings)

    def settings(self, scheme: str | None = None, optimizer: str | None = None) -> dict:
        """What the target must be parametrized with for this plan's lr: scheme, optimizer,
        muon_scale, readout, depth_alpha (when recorded) and constants. ``scheme``/``optimizer``
        may only restate the plan's; a plan that recorded no scheme needs ``scheme``.

            >>> plan.settings()
            {'scheme': 'spectral', 'optimizer': 'adamw', 'muon_scale': 'spectral', 'readout': 'init', 'constants': {}}
        """
        for what, given, planned in (("scheme", scheme, self.scheme), ("optimizer", optimizer, self.optimizer_name)):
            if given is not None and planned is not None and given != planned:
                raise ValueError(f"{what}={given!r} but this plan's lr was transferred for {what} "
                                 f"{planned!r}; leave {what} out, or transfer again for {given!r}")
        scheme = scheme or self.scheme
        if scheme is None:
            raise ValueError("this plan records no scheme (its trials had none): pass scheme= "
                             "(the one the proxies ran with, e.g. scheme='spectral')")
        out = {"scheme": scheme, "optimizer": optimizer or self.optimizer_name or "adamw",
               "muon_scale": self.muon_scale or "spectral", "readout": self.readout or "init",
               "constants": self.constants}
        if self.depth_alpha is not None:
            out["depth_alpha"] = self.depth_alpha
        return out

    def _plan_for(self, model, base, scheme, optimizer, copy_model: bool):
        from mutransfer.core import Plan
        from mutransfer.core import parametrize

        settings = self.settings(scheme, optimizer)
        if isinstance(model, Plan):
            held = {"scheme": model.scheme, "optimizer": model.optimizer_name, "muon_scale": model.muon_scale,
                    "readout": model.readout, "constants": model.constants.changed(),
                    "depth_alpha": model.depth_alpha}
            for key, want in settings.items():
                if held[key] != want and not (key == "depth_alpha" and model.depth_ratio == 1.0):
                    raise ValueError(f"the Plan was parametrized with {key} {held[key]!r} but this lr "
                                     f"was transferred for {key} {want!r}; parametrize with {key}={want!r}")
            self._check_depth(model)
            return model
        if not hasattr(model, "parameters"):  # a factory
            base_width = base if base is not None else self.base_width
            if base_width is None:
                raise ValueError("a factory needs base= (the base width), e.g. base=64")
            depths = ({} if self.target_depth is None else
                      {"depth": self.target_depth, "base_depth": self.base_depth or self.target_depth})
            return parametrize(model, width=self.target_width, base_width=base_width,
                               device="meta", **depths, **settings)
        if base is None:
            raise TypeError("pass base= (the same model at the base width) or a Plan from "
                            "mutransfer.parametrize(model, base)")
        plan = parametrize(_meta_copy(model) if copy_model else model, base, **settings)
        self._check_depth(plan)
        return plan

    def _check_depth(self, plan) -> None:
        """Refuse a model whose depth ratio to its base differs from the one this lr is for."""
        want = (self.target_depth / self.base_depth if self.target_depth and self.base_depth else 1.0)
        if abs(plan.depth_ratio - want) > 1e-9:
            raise ValueError(f"the model has {plan.depth_ratio:g}x its base's blocks but this lr was "
                             f"transferred for {want:g}x ({self.target_depth} blocks on a base of "
                             f"{self.base_depth}); build the target and base at those depths")


# fields holding a list of records (or strings) that stay a tuple of them after a JSON round trip
TABLE_FIELDS = ("optima", "warnings", "budgets", "batch_menu", "ladder")

# What a plan.json written before a setting was recorded trained with: every plan then built its
# target with these (TransferPlan.optimizer passed no readout and no wd_policy; Muon's scale was spectral).
OLD_PLAN_DEFAULTS = {"readout": "init", "wd_policy": "fixed_product", "muon_scale": "spectral"}


def _meta_copy(model):
    """A copy of ``model`` on the meta device without copying its tensors (roles need shapes only)."""
    from torch import nn

    memo = {id(p): nn.Parameter(p.detach().to("meta"), p.requires_grad) for p in model.parameters()}
    memo.update({id(b): b.detach().to("meta") for b in model.buffers()})
    return copy.deepcopy(model, memo)


def json_ready(value):
    """``value`` with NaN/inf as None, numpy scalars as Python numbers, tuples as lists and
    dict keys as strings: what ``json.dumps`` writes as standard JSON.

        >>> json_ready({"x": float("nan"), 1: (np.float64(2.0),)})
        {'x': None, '1': [2.0]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return json_ready(value.item())
    return value


def _fmt(value, ci=None, fmt="{:.4g}") -> str:
    if value is None:
        return "-"
    text = fmt.format(value)
    return text + (f"   [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else "")


def _summary(p: TransferPlan) -> str:
    widths = sorted({o["width"] for o in p.optima})
    risk = p.diagnostics.get("risk")
    rows = [("lr (risk-aware)" if risk else "lr", _fmt(p.lr)),
            ("eta* (projected)", _fmt(p.eta_star if p.eta_star is not None else p.lr, p.lr_interval)),
            ("landscape", (f"a_left {risk['a_left']:.3g}, a_right {risk['a_right']:.3g} nat/octave^2; "
                           f"expected excess {risk['eta_excess']:.4f} at eta*, {risk['safe_excess']:.4f} at lr")
             if risk else "-"),
            ("adam_lr", _fmt(p.adam_lr)),
            ("batch_size", _fmt(p.batch_size, p.batch_interval, "{:.0f}")),
            ("weight_decay", _fmt(p.weight_decay) + (f"   ({p.wd_policy})" if p.wd_policy else "")),
            ("steps", _fmt(p.steps, None, "{:d}")), ("proxy budget", _fmt(p.budget, None, "{:.4g}")),
            *(_ladder_rows(p) if p.ladder else [
                ("compute-optimal B", _fmt(p.compute_optimal_batch, p.compute_optimal_batch_interval, "{:.0f}")
                 if p.budget else "- (needs a token budget: [train] tokens)"),
                ("B_opt ~ D^p", _fmt(p.budget_exponent, p.budget_exponent_interval, "{:.2f}")
                 + (f"   (budgets {', '.join(str(r['budget']) for r in p.budgets)})" if p.budgets else ""))]),
            ("critical B (B_noise)", _fmt(p.critical_batch, p.critical_batch_interval, "{:.0f}")),
            ("eta*(B) law", p.law or "- (needs >= 3 batch sizes)"),
            ("eta_max", _fmt(p.eta_max, p.eta_max_interval)),
            ("B_noise (proxies)", _fmt(p.b_noise, p.b_noise_interval, "{:.0f}")),
            ("B_noise (target)", _fmt(p.b_noise_target, p.b_noise_target_interval, "{:.0f}")),
            ("drift (oct/doubling)", _fmt(p.drift_slope, p.drift_interval, "{:+.3f}")),
            ("predicted loss", _fmt(p.predicted_loss, p.loss_interval)),
            ("constants", ", ".join(f"{k}={v:.4g}" for k, v in p.constants.items()) or "all 1 (defaults)")]
    if p.depth_rule:
        r = p.depth_rule
        cost = f"; probe {r['probe_flops']:.3g} FLOPs" if r.get("probe_flops") else ""
        rows.append(("depth rule", f"alpha {r['chosen']:g} chosen by the probe at {r['probe_depth']} blocks "
                                   f"(regret {r['regret_pct']:.2f}% there, alpha {PRIOR_ALPHA:g} unless another wins by "
                                   f"> {100 * MARGIN:g}%){cost}"))
    depth = (f", depth {p.base_depth} -> {p.target_depth} (alpha {p.depth_alpha:g})"
             if p.target_depth is not None and p.depth_alpha is not None else "")
    head = (f"mutransfer transfer plan: proxy widths {widths} -> {p.target_width}{depth} "
            f"(scheme {p.scheme}, optimizer {p.optimizer_name}); 95% bootstrap intervals")
    body = "\n".join(f"  {k:<22}{v}" for k, v in rows)
    table = p.eta_table
    if not table.empty:
        table = table.assign(lr=table["lr"].map("{:.4g}".format), lr_low=table["lr_low"].map("{:.4g}".format),
                             lr_high=table["lr_high"].map("{:.4g}".format), loss=table["loss"].map("{:.4g}".format))
        body += "\n\neta* per proxy:\n" + table.to_string(index=False)
    body += _menu_text(p)
    notes = "".join(f"\n  - {w}" for w in p.warnings) or "\n  (none)"
    return f"{head}\n{body}\n\nwarnings:{notes}"


def _ladder_rows(p: TransferPlan) -> list[tuple[str, str]]:
    """The summary's rows for a budget ladder: where the batch came from, the laws in D, the compute."""
    rungs = ", ".join(str(r["budget"]) for r in p.ladder)
    source = {"rung": "measured at the target's budget (a rung of the ladder)",
              "law": f"the menu at the target's budget: the largest batch within {100 * (p.eps or 0):.2g}%",
              "measured": "the best measured batch (the batch law is unresolved: see warnings)",
              "given": "given (--target-batch)"}.get(p.batch_source or "", "-")
    c = p.compute
    cost = (f"ladder {c['ladder_flops']:.3g} FLOPs = {c['ladder_flops'] / c['target_run_flops']:.2g} target runs "
            f"({c['target_run_flops']:.3g} FLOPs each)" if c.get("ladder_flops") and c.get("target_run_flops")
            else "-")
    return [("batch source", source), ("budget ladder", f"rungs {rungs} tokens"),
            ("eta* ~ D^x (at batch)", _fmt(p.eta_budget_exponent, p.eta_budget_exponent_interval, "{:+.3f}")),
            ("B_eps ~ D^k", _fmt(p.eps_batch_exponent, p.eps_batch_exponent_interval, "{:+.2f}")),
            ("B_eps at the target", _fmt(p.eps_batch_target, p.eps_batch_target_interval, "{:.3g}")),
            ("tuning compute", cost)]


def _menu_text(p: TransferPlan) -> str:
    """The batch menu as a table: each batch's predicted loss cost at the target's budget and its lr."""
    if not p.batch_menu:
        return ""
    where = p.menu_tokens or p.diagnostics.get("target_tokens", "?")
    if p.menu_tokens and p.menu_tokens != p.diagnostics.get("target_tokens"):
        where = f"{where} (the largest rung: the batch law to {p.diagnostics.get('target_tokens')} is unresolved)"
    lines = [f"\n\nbatch menu at {where} tokens (predicted loss cost over the "
             f"best batch, 95% interval; * = handed over; ~ = outside the swept batches, extrapolated):",
             f"  {'batch':>7}  {'cost %':>8}  {'interval':>17}  {'lr':>10}"]
    for r in p.batch_menu:
        mark = "*" if r["batch"] == p.batch_size else ("~" if r["extrapolated"] else " ")
        lines.append(f"{mark} {r['batch']:>7}  {r['cost_pct']:>+8.2f}  [{r['cost_low']:>+6.2f}, {r['cost_high']:>+6.2f}]"
                     f"  {r['lr']:>10.4g}")
    return "\n".join(lines)
