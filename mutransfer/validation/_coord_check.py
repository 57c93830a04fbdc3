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

from typing import Callable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mutransfer.core import parametrize
from mutransfer.core import Role

RECORD_COLUMNS = ("scheme", "optimizer", "width", "seed", "step", "module", "role", "kind", "rms")
ACTIVATION = "activation"  # the role of a module that owns no parameters
PROBE_SEED = 0  # the probe forward reseeds with this, so dropout masks match at every step


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
