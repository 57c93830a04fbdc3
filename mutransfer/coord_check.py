"""Coordinate check (scaling.md section 7): do activations keep their size as width grows?

For each width and seed, :func:`coord_check` builds the model with :func:`mutransfer.parametrize`,
trains it a few steps with the plan's optimizer, and records on a fixed probe batch the RMS of
every module's output ("out"), of that output's change since step 0 ("delta"), and of the part
of that change its own parameters made ("update": ``f(x_t; theta_t) - f(x_t; theta_0)``, which
for a Linear is ``(W_t - W_0) x_t``; modules owning parameters only). Then
:func:`coord_slopes` fits ``log2 RMS = slope * log2 width + c`` per module, step and kind, and
:func:`coord_verdict` judges the slopes: a width-consistent parametrization has slopes near 0;
the standard one shows +0.5 to +1 after a step at a fixed learning rate.

Module roles. A module's role is the plan role of its own ``weight`` (else of its first own
parameter): ``hidden`` for q/k/v/o and MLP projections, ``output`` for the readout, ``input`` for
embeddings (an ``nn.Embedding`` is always ``input``, even when its table is tied to the readout:
its output is a lookup, not logits), ``vector`` for norms. Modules that own no parameters
(GELU, dropout, attention functions, containers named in ``modules=``) get the role
``"activation"``. Only ``hidden`` and ``output`` modules are judged; the rest are recorded and
plotted because they help locate a problem.

    >>> df = coord_check(make_model, [64, 128, 256, 512], batches, lr=1e-2)
    >>> coord_verdict(df).passed
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .frames import require_columns
from .parametrize import parametrize
from .roles import Role

RECORD_COLUMNS = ("scheme", "optimizer", "width", "seed", "step", "module", "role", "kind", "rms")
FIT_KEYS = ["scheme", "optimizer", "module", "role", "step", "kind"]
SLOPE_COLUMNS = FIT_KEYS + ["slope", "r2", "stderr", "n_widths", "rms_min", "rms_max"]
ACTIVATION = "activation"  # the role of a module that owns no parameters
JUDGED_ROLES = (Role.HIDDEN.value, Role.OUTPUT.value)
BASELINES = ("sp",)  # reported, but they decide `passed` only when nothing else was checked
PROBE_SEED = 0  # the probe forward reseeds with this, so dropout masks match at every step
WORST_ROWS = 5  # rows per scheme in CoordVerdict.worst


# ---------------------------------------------------------------- recording


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the last dim; LM logits (B, T, V) and targets (B, T) are flattened.

        >>> cross_entropy(torch.randn(2, 5, 256), torch.randint(256, (2, 5)))
    """
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]).float(), targets.reshape(-1))


def default_step(loss_fn: Callable = cross_entropy) -> Callable:
    """The step :func:`coord_check` uses without ``step_fn``:
    ``loss_fn(model(x), y).backward(); optimizer.step(); optimizer.zero_grad()``.

        >>> step = default_step()
        >>> loss = step(model, optimizer, (x, y))
    """

    def step(model: nn.Module, optimizer: torch.optim.Optimizer, batch) -> torch.Tensor:
        x, y = batch
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().double().pow(2).mean().sqrt())


def _first_tensor(output):
    """The tensor a hook records: the output itself, or the first tensor of a tuple/list."""
    if isinstance(output, torch.Tensor):
        return output if output.is_floating_point() else None
    if isinstance(output, (tuple, list)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


class _Recorder:
    """Forward hooks that keep, per module, the first output of a probe forward and, once
    ``initial`` parameters are set, the output the same call gives with them. They record
    nothing during training steps, so they cost nothing there."""

    def __init__(self):
        self.active = False
        self.outputs: dict[str, torch.Tensor] = {}
        self.updates: dict[str, torch.Tensor] = {}
        self.initial: dict[str, dict[str, torch.Tensor]] = {}

    def hook(self, name: str) -> Callable:
        def record(module, args, kwargs, output):
            tensor = _first_tensor(output) if self.active and name not in self.outputs else None
            if tensor is None:
                return
            self.outputs[name] = tensor.detach().clone()
            if self.initial.get(name):
                before = _first_tensor(_forward_with(module, self.initial[name], args, kwargs))
                self.updates[name] = tensor.detach() - before

        return record

    def probe(self, model: nn.Module, x) -> tuple[dict, dict]:
        self.outputs, self.updates, self.active = {}, {}, True
        try:
            with torch.no_grad(), _forked_rng(x):
                torch.manual_seed(PROBE_SEED)
                model(x)
        finally:
            self.active = False
        return self.outputs, self.updates


def _forward_with(module: nn.Module, params: dict[str, torch.Tensor], args, kwargs):
    """``module.forward`` with ``params`` swapped in. Hooks are bypassed on purpose: ``args`` are
    what the forward hook saw, already transformed by pre-hooks (e.g. a readout multiplier)."""
    own = dict(module.named_parameters())
    saved = {n: p.data for n, p in own.items()}
    try:
        for n, p in own.items():
            p.data = params[n]
        return module.forward(*args, **kwargs)
    finally:
        for n, p in own.items():
            p.data = saved[n]


def _forked_rng(x):
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def module_roles(model: nn.Module, roles: Mapping[str, Role]) -> dict[str, str]:
    """Every module's role for the coordinate check (see the module docstring): the role of its
    own ``weight``, else of its first own parameter; ``"activation"`` when it owns none.

        >>> module_roles(plan.model, plan.roles)["blocks.0.mlp.fc"]
        'hidden'
    """
    by_id = {id(p): roles[n].value for n, p in model.named_parameters() if n in roles}
    out = {}
    for name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False, remove_duplicate=False))
        param = own.get("weight", next(iter(own.values()), None))
        if isinstance(module, nn.Embedding):
            out[name] = Role.INPUT.value
        elif param is None or id(param) not in by_id:
            out[name] = ACTIVATION
        else:
            out[name] = by_id[id(param)]
    return out


def _targets(model: nn.Module, roles: dict[str, str], modules) -> dict[str, tuple[nn.Module, str]]:
    named = dict(model.named_modules())
    if modules is None:
        return {n: (m, roles[n]) for n, m in named.items() if n and not any(True for _ in m.children())}
    if isinstance(modules, str):
        raise TypeError(f"modules must be a list of module names (or a dict name -> role); "
                        f"got the string {modules!r}: write modules=[{modules!r}]")
    unknown = [n for n in modules if n not in named]
    if unknown:
        raise ValueError(f"unknown modules {unknown}; the model has {list(named)[1:12]}... "
                         f"(names as in model.named_modules())")
    given = dict(modules) if isinstance(modules, Mapping) else {n: roles[n] for n in modules}
    return {n: (named[n], str(role)) for n, role in given.items()}


def _trace(model, optimizer, batches, steps, step_fn, modules, roles) -> list[tuple]:
    """(step, module, role, kind, rms) for probe forwards at steps 0..steps."""
    targets = _targets(model, roles, modules)
    recorder = _Recorder()
    handles = [m.register_forward_hook(recorder.hook(n), with_kwargs=True)
               for n, (m, _) in targets.items()]
    rows, first = [], None
    try:
        for t in range(steps + 1):
            outs, updates = recorder.probe(model, batches[0][0])
            if first is None:
                first = outs
                recorder.initial = {n: {k: p.detach().clone() for k, p in m.named_parameters()}
                                    for n, (m, _) in targets.items()}
            for name, out in outs.items():
                role = targets[name][1]
                rows.append((t, name, role, "out", _rms(out)))
                if t:
                    rows.append((t, name, role, "delta", _rms(out - first[name])))
                if name in updates:
                    rows.append((t, name, role, "update", _rms(updates[name])))
            if t < steps:
                step_fn(model, optimizer, batches[t % len(batches)])
    finally:
        for h in handles:
            h.remove()
    _check_recorded(modules, first)
    return rows


def _check_recorded(modules, first: dict) -> None:
    if modules is not None:
        silent = [n for n in modules if n not in first]
        if silent:
            raise ValueError(f"modules {silent} produced no floating-point tensor in the forward "
                             f"pass; name modules that run in model(x) and return activations")
    if not first:
        raise ValueError("no module produced a floating-point output in model(x); "
                         "check that batches hold (x, y) pairs the model accepts")


def _check_args(make_model, widths, batches, steps, seeds, loss_fn, data) -> tuple[list[int], list]:
    if not callable(make_model) or isinstance(make_model, nn.Module):
        raise TypeError(f"make_model must be a factory width -> nn.Module (e.g. "
                        f"functools.partial(mutransfer.zoo.gpt, depth=2)); got {make_model!r}")
    widths = sorted(set(widths)) if isinstance(widths, (list, tuple, range)) else widths
    if not isinstance(widths, list) or len(widths) < 2 or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ValueError(f"widths must be at least 2 distinct positive ints to fit a slope; "
                         f"got {widths!r}. Use e.g. widths=[64, 128, 256, 512]")
    if not isinstance(batches, (list, tuple)) or not batches or not all(
            isinstance(b, (list, tuple)) and len(b) == 2 for b in batches):
        raise TypeError(f"batches must be a non-empty list of (x, y) pairs; got "
                        f"{type(batches).__name__} {str(batches)[:80]!r}. batches[0] is the probe batch")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1 (the number of training steps); got {steps!r}")
    if not isinstance(seeds, (list, tuple, range)) or not seeds:
        raise ValueError(f"seeds must be a non-empty list of ints, e.g. seeds=(0, 1, 2); got {seeds!r}")
    if loss_fn is not None and data is not None:
        raise ValueError("give loss_fn or data (whose .loss is then used), not both")
    return widths, list(batches)


def coord_check(
    make_model: Callable[..., nn.Module],
    widths: Sequence[int],
    batches: Sequence[tuple],
    *,
    scheme: str = "mup",
    optimizer: str = "adamw",
    lr: float,
    steps: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
    base_width: int | None = None,
    step_fn: Callable | None = None,
    modules: Sequence[str] | Mapping[str, str] | None = None,
    loss_fn: Callable | None = None,
    muon_scale: str = "spectral",
    data=None,
    plan_kwargs: Mapping | None = None,
    optimizer_kwargs: Mapping | None = None,
) -> pd.DataFrame:
    """Record activation sizes across widths: one row per (width, seed, step, module, kind).

    For each width w and seed: ``torch.manual_seed(seed)``, ``plan = parametrize(make_model,
    width=w, base_width=base_width or min(widths), scheme=..., optimizer=...)``,
    ``opt = plan.optimizer(lr, **optimizer_kwargs)``; then for t = 0..steps a probe forward on
    ``batches[0][0]`` (no grad, same dropout mask each time) records, per module,
    ``out = RMS(y_t)`` and, for t >= 1, ``delta = RMS(y_t - y_0)`` and, for modules owning
    parameters, ``update = RMS(f(x_t; theta_t) - f(x_t; theta_0))`` (the module re-run on the
    same input with its step-0 parameters), with RMS(x) = ||x||_2/sqrt(numel);
    between probes one training step ``step_fn(model, opt, batches[t % len(batches)])``.

    Args:
        make_model: factory taking ``width=`` and returning an nn.Module.
        widths: at least 2 widths. batches: list of (x, y); batches[0] is also the probe batch.
        scheme, optimizer, muon_scale: as in :func:`mutransfer.parametrize`. lr: the base lr.
        step_fn: ``step_fn(model, optimizer, batch) -> loss`` owns the step (backward, step,
            zero_grad); default :func:`default_step` with ``loss_fn``.
        modules: module names to hook (default every leaf), or a dict name -> role.
        loss_fn: ``loss_fn(outputs, y)``; default cross-entropy over the last dim, or
            ``data.loss`` when a mutransfer dataset is given as ``data``.
        plan_kwargs / optimizer_kwargs: extra arguments for parametrize / ``plan.optimizer``
            (e.g. ``{"readout": "multiplier"}``, ``{"adam_lr": 3e-3}`` for Muon).

    Returns a DataFrame with columns scheme, optimizer, width, seed, step, module, role, kind
    (out/delta/update), rms. A module called twice in one forward is recorded at its first call.

        >>> df = coord_check(functools.partial(zoo.gpt, depth=2), [64, 128, 256], batches, lr=1e-2)
        >>> coord_verdict(df).passed
    """
    widths, batches = _check_args(make_model, widths, batches, steps, seeds, loss_fn, data)
    step_fn = step_fn or default_step(loss_fn or (data.loss if data is not None else cross_entropy))
    x0 = batches[0][0]
    device = x0.device if isinstance(x0, torch.Tensor) else None
    rows = []
    for width in widths:
        for seed in seeds:
            with _forked_rng(x0):
                torch.manual_seed(int(seed))
                plan = parametrize(make_model, width=width, base_width=base_width or widths[0],
                                   scheme=scheme, optimizer=optimizer, muon_scale=muon_scale,
                                   device=device, **dict(plan_kwargs or {}))
                opt = plan.optimizer(lr, **dict(optimizer_kwargs or {}))
                roles = module_roles(plan.model, plan.roles)
                trace = _trace(plan.model, opt, batches, steps, step_fn, modules, roles)
            rows += [(scheme, optimizer, width, int(seed)) + r for r in trace]
    return pd.DataFrame(rows, columns=list(RECORD_COLUMNS))


# ---------------------------------------------------------------- slopes


def _check_columns(df, needed, what: str) -> None:
    require_columns(df, needed, what, "coord_check()'s output")


def fit_slope(widths, rms) -> dict[str, float]:
    """Least-squares fit ``log2 rms = slope * log2 width + c`` (numpy.polyfit).

    r2 = 1 - SS_res / SS_tot (1 when rms is exactly constant); stderr = sqrt(SS_res / (n - 2) /
    sum (x - mean x)^2), NaN for 2 widths. RMS exactly 0 at every width is flat (slope 0); any
    other rms that is not finite and > 0 gives a NaN slope.

        >>> fit_slope([64, 128, 256], [1.0, 2.0, 4.0])["slope"]
        1.0
    """
    x, y = np.log2(np.asarray(widths, float)), np.asarray(rms, float)
    if len(x) >= 2 and np.all(y == 0):  # no change at any width (e.g. no gradient yet) is flat
        return {"slope": 0.0, "r2": 1.0, "stderr": 0.0}
    if len(x) < 2 or not np.all(np.isfinite(y) & (y > 0)):
        return {"slope": np.nan, "r2": np.nan, "stderr": np.nan}
    y = np.log2(y)
    slope, intercept = np.polyfit(x, y, 1)
    ss_res = float(np.sum((y - (slope * x + intercept)) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    sxx = float(np.sum((x - x.mean()) ** 2))
    stderr = float(np.sqrt(ss_res / (len(x) - 2) / sxx)) if len(x) > 2 else np.nan
    return {"slope": float(slope), "r2": r2, "stderr": stderr}


def coord_slopes(df: pd.DataFrame) -> pd.DataFrame:
    """The log-log slope of RMS against width per (scheme, optimizer, module, role, step, kind).

    RMS is averaged over seeds first (a NaN/inf in any seed propagates: a diverged seed is not
    hidden), then :func:`fit_slope` gives slope, r2 and stderr; n_widths, rms_min, rms_max
    describe the points.

        >>> slopes = coord_slopes(coord_check(make_model, [64, 128, 256], batches, lr=1e-2))
        >>> slopes[slopes.kind == "delta"].slope.abs().max()
    """
    _check_columns(df, RECORD_COLUMNS, "coord_slopes")
    mean = (df.groupby(FIT_KEYS + ["width"], sort=False)["rms"]
              .agg(lambda s: float(np.mean(s.to_numpy(float)))).reset_index())
    rows = []
    for key, g in mean.groupby(FIT_KEYS, sort=False):
        g = g.sort_values("width")
        rows.append(dict(zip(FIT_KEYS, key), **fit_slope(g["width"], g["rms"]),
                         n_widths=len(g), rms_min=float(g["rms"].min()), rms_max=float(g["rms"].max())))
    return pd.DataFrame(rows, columns=SLOPE_COLUMNS)


# ---------------------------------------------------------------- verdict


@dataclass(frozen=True)
class SchemeVerdict:
    """One scheme's result: passed when no judged fit failed (see :func:`coord_verdict`)."""

    scheme: str
    optimizer: str
    passed: bool
    n_judged: int
    n_failed: int
    worst_slope: float  # the judged slope furthest outside the rule (NaN when a fit was NaN)
    worst_where: str  # "module kind step t"


@dataclass(frozen=True, eq=False)
class CoordVerdict:
    """The result of :func:`coord_verdict`.

    ``passed``: every non-baseline scheme passed (SP is the baseline: it is reported, and it
    decides ``passed`` only when it is the only scheme). ``worst``: per scheme, the judged fits
    furthest outside the rule (column ``failed``). ``notes``: fits reported and never failed: judged
    modules at init (step 0), and logits whose size or change shrinks with width.
    """

    passed: bool
    tol: float
    schemes: dict[str, SchemeVerdict]
    worst: pd.DataFrame
    notes: pd.DataFrame
    explanation: str
    slopes: pd.DataFrame = field(repr=False)

    def table(self) -> pd.DataFrame:
        """One row per scheme: scheme, optimizer, verdict, worst slope, where, failed/judged."""
        return pd.DataFrame([{"scheme": v.scheme, "optimizer": v.optimizer,
                              "verdict": "PASS" if v.passed else "FAIL",
                              "worst_slope": round(v.worst_slope, 3), "where": v.worst_where,
                              "failed": f"{v.n_failed}/{v.n_judged}"} for v in self.schemes.values()])

    def __str__(self) -> str:
        return f"{self.table().to_string(index=False)}\n\n{self.explanation}"


def _judged(slopes: pd.DataFrame) -> pd.Series:
    """Fits the verdict counts: hidden out/delta and output out/delta/update at steps >= 1.
    A hidden module's own update is recorded, not judged: with Adam its first steps carry an
    incoherent part ~ width^-1/2 that its delta (what the next layer sees) does not show."""
    hidden = (slopes["role"] == Role.HIDDEN.value) & slopes["kind"].isin(["out", "delta"])
    return (hidden | (slopes["role"] == Role.OUTPUT.value)) & (slopes["step"] >= 1)


def _shrink_allowed(slopes: pd.DataFrame) -> pd.Series:
    """Logits ("out"/"delta" of output modules) may shrink: their init-readout share W0 x_t ~
    width^-1/2 by design. Only the readout's own update W_t x_t - W0 x_t must stay flat."""
    return (slopes["role"] == Role.OUTPUT.value) & slopes["kind"].isin(["out", "delta"])


def _excess(slopes: pd.DataFrame) -> pd.Series:
    """How far each slope lies outside the rule: |slope|, or max(slope, 0) where shrinking is
    allowed; NaN (a diverged or zero-RMS fit) counts as infinitely far."""
    s = slopes["slope"]
    return s.abs().where(~_shrink_allowed(slopes), s.clip(lower=0)).fillna(np.inf)


def _scheme_verdict(scheme: str, rows: pd.DataFrame, tol: float) -> SchemeVerdict:
    optimizers = rows["optimizer"].unique()
    if len(optimizers) > 1:
        raise ValueError(f"scheme {scheme!r} appears with optimizers {list(optimizers)}; judge one "
                         f"optimizer at a time, e.g. coord_verdict(df[df.optimizer == "
                         f"{optimizers[0]!r}])")
    excess = _excess(rows)
    worst = rows.loc[excess.idxmax()]
    return SchemeVerdict(scheme, str(optimizers[0]), bool((excess <= tol).all()), len(rows),
                         int((excess > tol).sum()), float(worst["slope"]),
                         f"{worst['module']} {worst['kind']} step {worst['step']}")


def coord_verdict(df: pd.DataFrame, tol: float = 0.15, *, baselines: Sequence[str] = BASELINES) -> CoordVerdict:
    """Pass or fail: no hidden or output activation may change size with width after training starts.

    Judged fits, steps 1..steps (slopes from :func:`coord_slopes`; a NaN fit fails):
    hidden modules, kinds out/delta: ``|slope| <= tol``; output modules (the logits),
    kind update (the readout's own change ``f(x_t; W_t) - f(x_t; W_0)``): ``|slope| <= tol``, and
    kinds out/delta: ``slope <= tol``. Logits may shrink: muP's readout init ~ 1/width makes the
    init readout's share ``W_0 x_t`` shrink like width^-1/2, at step 0 and while it dominates
    the first steps. Such fits, and judged modules at step 0, land in ``notes``, never failing.

    Args:
        df: :func:`coord_check` records (or :func:`coord_slopes` output), one or more schemes.
        tol: the largest |slope| that passes. baselines: schemes that are reported but decide
            ``passed`` only when they are the only ones present.

        >>> v = coord_verdict(pd.concat([coord_check(f, ws, b, scheme=s, lr=1e-2) for s in ("sp", "mup")]))
        >>> v.passed, v.schemes["sp"].passed
    """
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"tol must be a positive number (the largest |slope| that passes); got {tol!r}")
    slopes = df if isinstance(df, pd.DataFrame) and "slope" in df.columns else coord_slopes(df)
    _check_columns(slopes, SLOPE_COLUMNS, "coord_verdict")
    in_role = slopes["role"].isin(JUDGED_ROLES)
    judged = slopes[_judged(slopes)]
    if judged.empty:
        raise ValueError("nothing to judge: no hidden/output module was recorded at a step >= 1; "
                         "run coord_check with steps >= 1 on a model with Linear layers, or name "
                         "them with modules={'name': 'hidden'}")
    schemes = {s: _scheme_verdict(s, rows, tol) for s, rows in judged.groupby("scheme", sort=False)}
    deciders = [v for s, v in schemes.items() if s not in baselines] or list(schemes.values())
    outside = ~(slopes["slope"].abs() <= tol)
    notes = slopes[in_role & outside & ((slopes["step"] == 0) | _shrink_allowed(slopes) & (slopes["slope"] < -tol))]
    notes = notes.reset_index(drop=True)
    return CoordVerdict(all(v.passed for v in deciders), float(tol), schemes, _worst(judged, tol),
                        notes, _explain(schemes, notes, slopes, tol, baselines), slopes)


def _worst(judged: pd.DataFrame, tol: float) -> pd.DataFrame:
    ranked = judged.assign(excess=_excess(judged))
    ranked = ranked.assign(failed=ranked["excess"] > tol)
    top = ranked.sort_values("excess", ascending=False).groupby("scheme", sort=False).head(WORST_ROWS)
    return top.drop(columns="excess").reset_index(drop=True)


def _explain(schemes, notes, slopes, tol, baselines) -> str:
    parts = [f"Coordinate check over {slopes['n_widths'].max()} widths: the slope of log2 RMS "
             f"against log2 width of each hidden and output module's output and its change since "
             f"init (and the readout's own update), at steps 1-{int(slopes['step'].max())}; a parametrization "
             f"passes when every |slope| <= {tol:g} (logits may shrink, never grow)."]
    for v in schemes.values():
        label = f"{v.scheme}+{v.optimizer}"
        base = " (baseline)" if v.scheme in baselines and len(schemes) > 1 else ""
        if v.passed:
            parts.append(f"{label}{base} passes: worst slope {v.worst_slope:+.2f} ({v.worst_where}).")
        else:
            parts.append(f"{label}{base} fails: {v.n_failed} of {v.n_judged} fits are outside, "
                         f"worst {v.worst_slope:+.2f} ({v.worst_where}); activations that grow "
                         f"with width mean the best lr shrinks with width.")
    return " ".join(parts + _explain_notes(notes, tol))


def _explain_notes(notes: pd.DataFrame, tol: float) -> list[str]:
    parts = []
    logits = notes[(notes["role"] == Role.OUTPUT.value) & (notes["slope"] < 0)]
    for label, rows in (("at step 0", logits[logits["step"] == 0]),
                        ("after training starts", logits[logits["step"] >= 1])):
        if len(rows):
            r = rows.loc[rows["slope"].idxmin()]
            parts.append(f"The logits shrink with width {label} (worst {r['slope']:+.2f}, "
                         f"{r['module']} {r['kind']} step {r['step']} under {r['scheme']}): the init "
                         f"readout's share W0 x shrinks like width^-1/2 by muP's design; reported, "
                         f"not a failure.")
    others = notes.drop(logits.index)
    if len(others):
        r = others.loc[others["slope"].abs().fillna(np.inf).idxmax()]
        parts.append(f"At init, {len(others)} other fits of judged modules exceed {tol:g} (worst "
                     f"{r['slope']:+.2f}, {r['module']} {r['kind']} under {r['scheme']}); init is "
                     f"not judged, but look at it if later steps fail.")
    return parts
