"""``parametrize``: roles + scheme -> a :class:`~mutransfer.core.Plan`; the model's init is
rewritten in place (scaling.md sections 1-3 and 8).
"""
from __future__ import annotations

import copy
import functools
import inspect
from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from mutransfer.core._checks import check_choice
from mutransfer.core._constants import Constants
from mutransfer.core._plan import ParamPlan, Plan, _rescale_, _rms, _set_readout_hooks
from mutransfer.core._roles import ParamInfo, Role, find_example, infer_roles
from mutransfer.core._depth import Depth, branch_ends, match_depth, set_residual_hooks
from mutransfer.core._optimizer_rules import OPTIMIZER_RULES, optimizer_rule
from mutransfer.core._scaling import (DEFAULT_DEPTH_ALPHA, MUON_SCALES, READOUTS, SCHEMES,
                                      DepthMultipliers, depth_multipliers, multipliers,
                                      spectral_sigma)

def _base_rms(base: nn.Module, seed: int | None) -> dict[str, float]:
    """RMS of every base parameter; a meta base is materialized on CPU and re-initialized by its
    modules' ``reset_parameters()`` (torch's default init)."""
    params = dict(base.named_parameters())
    if not any(p.is_meta for p in params.values()):
        return {n: _rms(p) for n, p in params.items()}
    real = copy.deepcopy(base).to_empty(device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else seed)
        with torch.no_grad():
            for p in real.parameters():
                p.fill_(float("nan"))
            for module in real.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    out, uncovered = {}, []
    for n, p in real.named_parameters():
        if torch.isnan(p).any():
            uncovered.append(n)
        out[n] = _rms(p)
    if uncovered:
        raise ValueError(
            f"the base model is on the meta device and nothing re-initializes {uncovered[:8]} "
            f"(their modules have no reset_parameters()), so their base init std is unknown. "
            f"Pass a real base model (it is the small one), or use the factory form."
        )
    return out


def _target_std(info: ParamInfo, init_mult: float, base_rms: float, scheme: str, readout: str,
                c: Constants, tied_sigma: float | None = None) -> float:
    """The init std: the scheme's (base std x init_mult, or spectral's absolute sigma) times the
    role's init constant; zero for a zero-init readout. In a model with a tied table
    (``tied_sigma`` given) every embedding table takes that sigma under spectral and keeps its
    base init under the other schemes."""
    output = info.role is Role.OUTPUT
    if output and readout == "zero" and scheme != "sp" and not info.tied:
        return 0.0
    if tied_sigma is not None and (info.is_embedding or info.tied):
        return (tied_sigma if scheme == "spectral" else base_rms) * init_mult
    if (scheme == "spectral" and len(info.shape) >= 2 and info.role in (Role.INPUT, Role.HIDDEN, Role.OUTPUT)
            and not (output and (info.tied or readout == "multiplier"))):
        return spectral_sigma(info.fan_in, info.fan_out) * c.init(info.role)
    return base_rms * init_mult


def _tied_sigma(infos: dict[str, ParamInfo]) -> float | None:
    """The tables' spectral init in a model with a tied table: the readout's absolute sigma at
    the base width, ``spectral_sigma(n_base, vocab)``; None when nothing is tied.

    The tied table is the readout too, so it cannot take spectral's O(1) input init; the
    multiplier form keeps it at its base std at every width (the readout scale ``m^-1`` does
    the width scaling). Every other table (positions) takes the same std, so neither swamps
    the other, and the blocks keep spectral's absolute sigma, in balance with the tables
    (reports/gpt2-cpu-300: GPT-2's own 0.02 tables under spectral blocks trained 0.15 nat worse)."""
    tied = [i for i in infos.values() if i.tied and i.role is Role.OUTPUT]
    if not tied:
        return None
    i = tied[0]
    return spectral_sigma(max(1, round(i.fan_in / i.width_mult)), i.fan_out)


def _plan_row(info: ParamInfo, base_rms: float, scheme, optimizer, muon_scale, readout,
              c: Constants, tied_sigma: float | None = None,
              depth: DepthMultipliers | None = None) -> ParamPlan:
    """One parameter's row: the width rules of its role, the constants, and for a parameter
    inside the residual blocks the depth rules (``depth``, scaling.md section 9)."""
    mult = multipliers(info.role, info.width_mult, scheme=scheme, optimizer=optimizer,
                       fan_in=info.fan_in, fan_out=info.fan_out, ndim=len(info.shape),
                       is_embedding=info.is_embedding or not info.is_matrix, muon_scale=muon_scale,
                       m_max=info.max_mult)
    lr_mult, eps_mult, init_mult = mult.lr, mult.eps, mult.init
    if info.role is Role.OUTPUT and (info.tied or readout == "multiplier") and scheme != "sp":
        # multiplier form: base init, and the lr of an input (the m^-1 is on the logits): Adam's
        # base lr, SGD's x m. The weight's gradient carries the logits' m^readout_exponent, so
        # Adam's eps follows it (at eps 1 it would swamp the gradient at width)
        update = optimizer_rule(mult.optimizer)
        init_mult = 1.0
        eps_mult = info.width_mult ** c.readout_exponent if update.eps_exponent is not None else 1.0
        lr_mult = info.width_mult ** update.lr_exponent[Role.INPUT]
    elif info.role is Role.OUTPUT and scheme == "mup":
        init_mult = info.width_mult ** c.readout_exponent
    init_mult *= c.init(info.role)
    lr_mult *= c.lr(info.role)
    if mult.optimizer != optimizer:
        lr_mult *= c.adam_lr_ratio  # the side's groups (Muon's AdamW) run at lr x adam_lr_ratio
    depth_mult = 1.0
    if depth is not None and scheme != "sp":
        depth_mult = depth.lr
        lr_mult *= depth.lr
        eps_mult *= depth.eps
    std = _target_std(info, init_mult, base_rms, scheme, readout, c, tied_sigma)
    return ParamPlan(info.name, info.shape, info.role.value, info.fan_in, info.fan_out,
                     info.width_mult, std, init_mult, lr_mult, 1.0 / lr_mult, eps_mult,
                     mult.optimizer, mult.muon_alpha, info.kind, info.tied, info.source,
                     info.expert_dims, depth_mult)


def _update_rule(info: ParamInfo, optimizer: str) -> str:
    """The update rule a parameter gets under ``optimizer`` (Muon's non-matrices: AdamW)."""
    return multipliers(info.role, 1.0, optimizer=optimizer, fan_in=info.fan_in,
                       fan_out=info.fan_out, ndim=len(info.shape),
                       is_embedding=info.is_embedding or not info.is_matrix).optimizer


def _in_blocks(name: str, depth: Depth | None, alpha: float, update: str) -> DepthMultipliers | None:
    """The depth rules of a parameter inside the grown block lists; None outside them."""
    if depth is None or depth.block_of(name) is None:
        return None
    return depth_multipliers(depth.ratio, alpha, update)


def _readout_scales(infos: dict[str, ParamInfo], scheme, readout, c: Constants) -> dict[str, float]:
    """The readout hooks' input scales: ``output_mult * m ** readout_exponent`` in the
    multiplier form (tied weights, ``readout="multiplier"``; the table's ``-1`` gives muP's
    ``output_mult / m``), ``output_mult`` otherwise and under sp."""
    output_mult = c.output_mult
    if scheme == "sp":
        return {} if output_mult == 1.0 else {m: output_mult for i in infos.values()
                                              if i.role is Role.OUTPUT for m in i.readout_modules}
    scales = {}
    for info in infos.values():
        if info.role is not Role.OUTPUT:
            continue
        multiplier_form = info.tied or readout == "multiplier"
        scale = output_mult * info.width_mult ** c.readout_exponent if multiplier_form else output_mult
        for module in info.readout_modules:
            if scale != 1.0:
                scales[module] = scale
    return scales


def _settings(scheme, optimizer, muon_scale, readout, output_mult, constants) -> Constants:
    """Check the choices and return the constants, ``output_mult`` folded in."""
    check_choice("scheme", scheme, SCHEMES)
    rule = optimizer_rule(optimizer)
    check_choice("muon_scale", muon_scale, MUON_SCALES)
    check_choice("readout", readout, READOUTS)
    c = Constants.coerce(constants)
    if output_mult is not None:
        if isinstance(output_mult, bool) or not isinstance(output_mult, (int, float)) or not output_mult > 0:
            raise ValueError(f"output_mult must be a positive number; got {output_mult!r}")
        if c.output_mult not in (1.0, output_mult):
            raise ValueError(f"output_mult={output_mult!r} and constants output_mult="
                             f"{c.output_mult!r} disagree; give it in one place")
        c = c.replace(output_mult=float(output_mult))
    if rule.side is None and c.adam_lr_ratio != 1.0:
        sided = [r for r in OPTIMIZER_RULES.values() if r.side is not None]
        owners = ", ".join(f"{r.label}'s {optimizer_rule(r.side).label}" for r in sided)
        raise ValueError(f"constant adam_lr_ratio={c.adam_lr_ratio:g} sets {owners} groups' lr; "
                         f"optimizer {optimizer!r} has one lr for every group: leave it at 1, or "
                         f"parametrize with optimizer={' or '.join(repr(r.name) for r in sided)}")
    if scheme == "sp" and any(c.init(r) != 1.0 for r in Role):
        raise ValueError(f"init constants {c.changed()} need scheme 'mup' or 'spectral': 'sp' keeps "
                         f"your model's own init (scale it yourself, or use the sweep's init_scale)")
    return c


def _attention_kwargs(factory: Callable, params, c: Constants) -> dict:
    """``attention_mult`` for a factory that takes it; an error when it is set and cannot be."""
    if c.attention_mult == 1.0:
        return {}
    if factory is None or ("attention_mult" not in params
                           and not any(p.kind is p.VAR_KEYWORD for p in params.values())):
        what = "a model instance" if factory is None else f"factory {getattr(factory, '__name__', factory)!r}"
        raise ValueError(f"constant attention_mult={c.attention_mult:g} needs a factory that accepts "
                         f"attention_mult= (as mutransfer.zoo.gpt does); {what} does not. "
                         f"Scale the attention logits in your model, or leave attention_mult at 1")
    return {"attention_mult": c.attention_mult}


def _accepts(params, name: str) -> bool:
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _from_factory(factory: Callable, width, base_width, delta_width, depth, base_depth, device,
                  c: Constants):
    """(model, base, delta) from ``factory``: the model at (width, depth), a real seeded base at
    (base_width, base_depth) and a meta delta at (delta_width, base_depth)."""
    name = getattr(factory, "__name__", factory)
    if width is None or base_width is None:
        raise ValueError("the factory form needs width= and base_width=, "
                         "e.g. parametrize(make_model, width=1024, base_width=64)")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {"width": None, "depth": None}
    if not _accepts(params, "width"):
        raise TypeError(f"factory {name!r} does not accept the keyword 'width'; make it "
                        f"def make_model(width, ...) -> nn.Module")
    if base_depth is not None and depth is None:
        raise ValueError(f"base_depth={base_depth} needs depth= too (the model's depth)")
    if depth is not None and not _accepts(params, "depth"):
        raise TypeError(f"depth={depth} needs a factory that accepts the keyword 'depth'; "
                        f"{name!r} does not: make it def make_model(width, depth, ...)")
    factory = functools.partial(factory, **_attention_kwargs(factory, params, c))
    at = (lambda d: {"depth": d}) if depth is not None else (lambda d: {})
    with torch.device(device or "cpu"):
        model = factory(width=width, **at(depth))
    with torch.random.fork_rng(devices=[]):
        # small and real: its init std is measured; seeded so that repeated calls agree exactly
        torch.manual_seed(0)
        base = factory(width=base_width, **at(base_depth or depth))
    with torch.device("meta"):
        delta = factory(width=delta_width or 2 * base_width, **at(base_depth or depth))
    return model, base, delta


def _models(model, base, delta, c: Constants, *, width, base_width, delta_width, depth,
            base_depth, device):
    """(model, base, delta) from the two forms: instances, or a factory and sizes."""
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a factory width -> nn.Module; got {model!r}")
        if base is not None:
            raise TypeError("with a factory, give width= and base_width= instead of a base model")
        model, base, default_delta = _from_factory(model, width, base_width, delta_width, depth,
                                                   base_depth, device, c)
        return model, base, delta if delta is not None else default_delta
    if base is None:
        raise TypeError("parametrize(model, base) needs the base model (the same architecture at "
                        "the base width; torch.device('meta') costs no memory)")
    if depth is not None or base_depth is not None:
        raise TypeError("depth= and base_depth= belong to the factory form; with instances, build "
                        "the base with fewer blocks (its depth is read from the block lists)")
    _attention_kwargs(None, {}, c)
    return model, base, delta


def _residual_scales(model: nn.Module, base: nn.Module, depth: Depth, branch: float,
                     example, traced_on: str | None) -> dict[str, float]:
    """Module name -> ``m_L ** -alpha`` for every residual branch's last map of the model, traced
    on the base (else the model) with ``example``."""
    if example is None:
        raise ValueError(f"depth transfer scales each block's residual branch, found by one forward "
                         f"pass, and no example input could be built ({traced_on}); pass example= "
                         f"(an input the model's forward accepts)")
    real = [m for m in (base, model) if not any(p.is_meta for p in m.parameters())]
    subject = real[0] if real else base
    ends = branch_ends(subject, depth, example)
    names = [e for block in ends.values() for e in block]
    if subject is base:
        names = [n for e in names for n in depth.model_names(e)]
    return {n: branch for n in sorted(names)}


def parametrize(
    model: nn.Module | Callable,
    base: nn.Module | None = None,
    *,
    delta: nn.Module | None = None,
    scheme: str = "spectral",
    optimizer: str = "adamw",
    overrides: dict[str, str] | None = None,
    muon_scale: str = "spectral",
    readout: str = "init",
    output_mult: float | None = None,
    constants: Constants | dict | None = None,
    seed: int | None = None,
    width: int | None = None,
    base_width: int | None = None,
    delta_width: int | None = None,
    depth: int | None = None,
    base_depth: int | None = None,
    depth_alpha: float | None = None,
    device: str | torch.device | None = None,
    example=None,
    allow_shape_roles: bool = False,
) -> Plan:
    """Wrap ``model`` for muP: infer roles against ``base``, rewrite the init, return the Plan.

    The default scheme is ``spectral``, chosen by measurement: on the zoo GPT at 300 steps it
    trained the best target of sp/mup/spectral with its lr transferring from 1/8 of the width,
    and on the MLP it matched ``mup`` (reports/gpt-cpu-300, reports/mlp-synthetic). ``mup``
    leaves your model bit for bit as your own init made it at the base width.

    Each parameter's init std becomes ``base_std * m ** INIT_EXPONENT[role]`` (``mup``), the
    absolute ``sqrt(fan_out/fan_in) / (sqrt(fan_in) + sqrt(fan_out))`` for matrices (``spectral``),
    or stays as is (``sp``); lr/eps multipliers follow scaling.md section 3 for ``optimizer``.
    The factory form builds the model at ``width``, a real base at ``base_width`` and a meta
    delta at ``delta_width`` (default ``2 * base_width``). ``constants``
    (:class:`mutransfer.Constants` or a dict of its names) are the width-independent constants of
    scaling.md section 8: ``init std = c_init[role] * std``, ``lr_mult = c_lr[role] * lr_mult``,
    the readout init ``x m ** readout_exponent`` under ``mup``, ``output_mult`` on the logits
    (``output_mult=`` is the same constant) and ``attention_mult`` passed to the factory.
    ``example`` (a tensor, a tuple of args or a dict of kwargs for one forward) lets roles come
    from how each parameter is used (:func:`mutransfer.infer_roles`); without it the base's own
    (``example_input()``, or a transformers model's from its config) is used, or one built from
    the model's first Embedding, Linear or conv (``plan.traced_on`` says which). A role that
    still rests on shape alone and reads two ways (table or readout) is a ValueError naming the
    parameter and the fix, unless ``allow_shape_roles=True`` (a RoleWarning instead).
    A base with fewer residual blocks (``depth`` / ``base_depth``, or fewer blocks in ``base``)
    scales each branch by ``m_L^-depth_alpha`` with ``m_L = L / L0`` and the blocks' lr and Adam
    eps by ``m_L^(alpha-1)`` and ``m_L^-alpha`` (scaling.md section 9); ``depth_alpha`` defaults
    to 1/2, chosen by measurement (reports/README.md, "Depth"); a config's sweep measures the rule
    for its own model instead (the depth probe, ``mutransfer.projection.choose_depth_rule``).

        >>> plan = parametrize(mutransfer.zoo.mlp, width=256, base_width=64)
        >>> opt = plan.optimizer(lr=1e-3)
    """
    c = _settings(scheme, optimizer, muon_scale, readout, output_mult, constants)
    alpha = DEFAULT_DEPTH_ALPHA if depth_alpha is None else depth_alpha
    model, base, delta = _models(model, base, delta, c, width=width, base_width=base_width,
                                 delta_width=delta_width, depth=depth, base_depth=base_depth,
                                 device=device)
    grown = match_depth(model, base)
    blocks = depth_multipliers(grown.ratio if grown else 1.0, alpha, optimizer)  # checks alpha
    scaled = grown is not None and scheme != "sp" and blocks.branch != 1.0
    example, traced_on = find_example(model, base, example, need=scaled)
    infos = infer_roles(model, base, delta, overrides, example=example,
                        allow_shape_roles=allow_shape_roles)
    model_is_meta = any(p.is_meta for p in model.parameters())
    measure = scheme != "sp" and not (model_is_meta and any(p.is_meta for p in base.parameters()))
    base_rms = _base_rms(base, seed) if measure else {}
    tied_sigma = _tied_sigma(infos)
    rows = {n: _plan_row(i, base_rms.get(grown.base_name(n) if grown else n, float("nan")), scheme,
                         optimizer, muon_scale, readout, c, tied_sigma,
                         _in_blocks(n, grown, alpha, _update_rule(i, optimizer)))
            for n, i in infos.items()}
    residual = _residual_scales(model, base, grown, blocks.branch, example, traced_on) if scaled else {}
    plan = Plan(rows, scheme, optimizer, muon_scale, readout, c,
                _readout_scales(infos, scheme, readout, c), traced_on=traced_on,
                depth=grown.depth if grown else None, base_depth=grown.base_depth if grown else None,
                depth_alpha=float(alpha), residual_scales=residual)
    if scheme != "sp":
        _rewrite_init_(model, plan, base, grown)
    else:  # sp leaves the init alone; the table reports what the model has
        named = dict(model.named_parameters())
        plan.params = {n: replace(p, init_std=float("nan") if named[n].is_meta else _rms(named[n]))
                       for n, p in plan.params.items()}
    _set_readout_hooks(model, plan.readout_scales)
    set_residual_hooks(model, plan.residual_scales)
    plan.model = model
    return plan


def _rewrite_init_(model: nn.Module, plan: Plan, base: nn.Module, depth: Depth | None) -> None:
    named, base_named = dict(model.named_parameters()), dict(base.named_parameters())
    for name, pp in plan.params.items():
        same_shape = tuple(base_named[depth.base_name(name) if depth else name].shape) == pp.shape
        if same_shape and pp.init_mult == 1.0 and plan.scheme == "mup" and pp.init_std != 0.0:
            continue  # at the base shape mup is the user's own init, bit for bit
        _rescale_(named[name], pp.init_std, name)
