"""Parameter roles (scaling.md section 1) and their inference by comparing shapes with a base.

A role says which of a parameter's dims grow with width:

| role   | which dims scale     | examples                                   |
|--------|----------------------|--------------------------------------------|
| input  | fan_out only         | embeddings, the first Linear from data     |
| hidden | fan_in and fan_out   | attention q/k/v/o, MLP up/down             |
| output | fan_in only          | LM head, classifier                        |
| vector | a 1-D param's length | biases, LayerNorm gains                    |
| fixed  | nothing              | a scalar temperature, a vocab-sized bias   |
"""
from __future__ import annotations

import enum


class Role(str, enum.Enum):
    """Which dims of a parameter scale with width."""

    INPUT = "input"
    HIDDEN = "hidden"
    OUTPUT = "output"
    VECTOR = "vector"
    FIXED = "fixed"

    def __str__(self) -> str:
        return self.value


import fnmatch
import math
from dataclasses import dataclass, field

import torch
from torch import nn

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass(frozen=True)
class Usage:
    """How one module uses a parameter: its fans in that module and whether it is an embedding."""

    module: str
    attr: str
    kind: str  # linear, embedding, conv, norm, mha_in, generic
    fan_in: int
    fan_out: int
    numel: int
    ndim: int


@dataclass(frozen=True)
class ParamInfo:
    """A parameter's role and fans, inferred from its shape against the base (and delta) model.

    ``width_mult`` is the width ratio m that the role's multipliers use: the fan_out ratio for
    input, the fan_in ratio for hidden and output, the length ratio for vector, 1 for fixed.
    ``max_mult`` is the ratio of ``max(fan_in, fan_out)`` (used by Muon's moonlight rule).
    """

    name: str
    shape: tuple[int, ...]
    role: Role
    fan_in: int
    fan_out: int
    width_mult: float
    max_mult: float
    kind: str
    tied: bool = False
    readout_modules: tuple[str, ...] = field(default=())

    @property
    def is_embedding(self) -> bool:
        return self.kind == "embedding"


def _fans(module: nn.Module, attr: str, p: torch.Tensor) -> tuple[str, int, int]:
    """(kind, fan_in, fan_out) of parameter ``attr`` of ``module`` (scaling.md section 0)."""
    shape = tuple(p.shape)
    if p.ndim <= 1 or _effectively_1d(shape) and not isinstance(module, (nn.Linear, nn.Embedding)):
        return ("norm" if isinstance(module, _NORMS) else "vector"), 1, p.numel()
    if isinstance(module, nn.Embedding) or isinstance(module, nn.EmbeddingBag):
        return "embedding", 1, shape[1]
    if isinstance(module, nn.Linear):
        return "linear", shape[1], shape[0]
    if isinstance(module, _CONVS):
        fan_in = math.prod(shape[1:])
        if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            # ConvTranspose stores (in, out/groups, *k): the roles of dims 0 and 1 swap.
            return "conv", shape[0] * math.prod(shape[2:]), shape[1]
        return "conv", fan_in, shape[0]
    if isinstance(module, nn.MultiheadAttention) and attr == "in_proj_weight":
        # packed q, k, v: three (E x E) blocks stacked along dim 0
        return "mha_in", shape[1], shape[0] // 3
    # any other module: torch's (out, in, *rest) layout
    return "generic", math.prod(shape[1:]), shape[0]


def _effectively_1d(shape: tuple[int, ...]) -> bool:
    return sum(1 for s in shape if s != 1) <= 1


def usages(model: nn.Module) -> dict[int, list[tuple[str, Usage, torch.Tensor]]]:
    """Every (module, attribute) use of each parameter, keyed by ``id(param)``; tied weights
    appear once per module that holds them, under their canonical (first) name."""
    canonical = {id(p): n for n, p in model.named_parameters()}
    out: dict[int, list[tuple[str, Usage, torch.Tensor]]] = {}
    for mname, module in model.named_modules(remove_duplicate=False):
        for attr, p in module.named_parameters(recurse=False):
            kind, fi, fo = _fans(module, attr, p)
            use = Usage(mname, attr, kind, fi, fo, p.numel(), p.ndim)
            entries = out.setdefault(id(p), [])
            if all((u.module, u.attr) != (mname, attr) for _, u, _ in entries):
                entries.append((canonical[id(p)], use, p))
    return out


def _by_name(model: nn.Module) -> dict[str, tuple[torch.Tensor, list[Usage]]]:
    return {entries[0][0]: (entries[0][2], [u for _, u, _ in entries]) for entries in usages(model).values()}


def _check_same_architecture(model: dict, other: dict, label: str) -> None:
    missing = sorted(set(model) - set(other))
    extra = sorted(set(other) - set(model))
    if missing or extra:
        raise ValueError(
            f"the {label} model has different parameter names than the model: "
            f"missing in {label}: {missing[:8]}, only in {label}: {extra[:8]}. "
            f"Build the {label} with the same architecture (same factory, only the width changed)."
        )
    for name, (p, uses) in model.items():
        q, other_uses = other[name]
        kinds = [u.kind for u in uses]
        if p.ndim != q.ndim or kinds != [u.kind for u in other_uses]:
            raise ValueError(
                f"parameter {name!r} has shape {tuple(p.shape)} in the model but {tuple(q.shape)} "
                f"in the {label}; the {label} must be the same architecture at another width."
            )


def _scales(get, use: Usage, base: Usage, delta: Usage | None) -> bool:
    return get(use) != get(base) or (delta is not None and get(delta) != get(base))


def _usage_role(use: Usage, base: Usage, delta: Usage | None) -> Role:
    if use.kind in ("vector", "norm"):
        return Role.VECTOR if _scales(lambda u: u.numel, use, base, delta) else Role.FIXED
    ins = _scales(lambda u: u.fan_in, use, base, delta)
    outs = _scales(lambda u: u.fan_out, use, base, delta)
    return {(True, True): Role.HIDDEN, (False, True): Role.INPUT,
            (True, False): Role.OUTPUT, (False, False): Role.FIXED}[(ins, outs)]


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b)


def _info(name: str, p, role: Role, use: Usage, base: Usage, tied: bool, readouts) -> ParamInfo:
    if role is Role.INPUT:
        m = _ratio(use.fan_out, base.fan_out)
    elif role in (Role.HIDDEN, Role.OUTPUT):
        m = _ratio(use.fan_in, base.fan_in)
    elif role is Role.VECTOR:
        m = _ratio(use.numel, base.numel)
    else:
        m = 1.0
    max_mult = _ratio(max(use.fan_in, use.fan_out), max(base.fan_in, base.fan_out))
    return ParamInfo(name, tuple(p.shape), role, use.fan_in, use.fan_out, m, max_mult,
                     use.kind, tied, tuple(readouts))


def _infer_one(name, p, uses, base_uses, delta_uses) -> ParamInfo:
    roles = [
        _usage_role(u, b, d)
        for u, b, d in zip(uses, base_uses, delta_uses or [None] * len(uses))
    ]
    if len(uses) > 1 and Role.OUTPUT in roles:
        # A tied weight: one parameter in the output role, handled in the multiplier form.
        k = roles.index(Role.OUTPUT)
        readouts = [u.module for u, r in zip(uses, roles) if r is Role.OUTPUT]
        return _info(name, p, Role.OUTPUT, uses[k], base_uses[k], True, readouts)
    readouts = [uses[0].module] if roles[0] is Role.OUTPUT else []
    return _info(name, p, roles[0], uses[0], base_uses[0], False, readouts)


VALID_ROLES = tuple(r.value for r in Role)


def _apply_overrides(infos: dict[str, ParamInfo], overrides: dict[str, str] | None,
                     model_uses, base_uses) -> dict[str, ParamInfo]:
    if not overrides:
        return infos
    if not isinstance(overrides, dict):
        raise TypeError(f"overrides must be a dict of glob -> role, e.g. {{'*.pos': 'input'}}; got {overrides!r}")
    unmatched = [g for g in overrides if not any(fnmatch.fnmatchcase(n, g) for n in infos)]
    if unmatched:
        raise ValueError(
            f"override pattern(s) {unmatched} match no parameter; parameter names are e.g. "
            f"{list(infos)[:6]}. Fix the glob (it matches full names, like 'blocks.*.attn.q.weight')."
        )
    out = dict(infos)
    for glob, role in overrides.items():
        if role not in VALID_ROLES:
            raise ValueError(f"override {glob!r} -> {role!r}: unknown role; use one of {VALID_ROLES}")
        for name in infos:
            if fnmatch.fnmatchcase(name, glob):
                p, uses = model_uses[name]
                if role in ("input", "hidden", "output") and p.ndim < 2:
                    raise ValueError(
                        f"override {glob!r} -> {role!r}: {name!r} has shape {tuple(p.shape)}, but the "
                        f"{role} role (and Muon) needs a matrix; give 1-D parameters 'vector' or 'fixed'")
                use, base = uses[0], base_uses[name][1][0]
                readouts = [use.module] if role == "output" else []
                out[name] = _info(name, p, Role(role), use, base, False, readouts)
    return out


def infer_roles(model: nn.Module, base: nn.Module, delta: nn.Module | None = None,
                overrides: dict[str, str] | None = None) -> dict[str, ParamInfo]:
    """Assign every parameter of ``model`` a role by comparing its fans with ``base`` (and ``delta``).

    A dim scales when it differs between model and base, or between delta and base; the role
    follows from which dims scale (input: fan_out, hidden: both, output: fan_in, vector: a 1-D
    length, fixed: none). ``overrides`` maps name globs to roles and beats inference.

        >>> from torch import nn
        >>> infer_roles(nn.Linear(256, 256), nn.Linear(64, 64))["weight"].role
        <Role.HIDDEN: 'hidden'>
    """
    for label, module in (("model", model), ("base", base), ("delta", delta)):
        if module is not None and not isinstance(module, nn.Module):
            raise TypeError(f"{label} must be a torch.nn.Module; got {type(module).__name__}")
    mu, bu = _by_name(model), _by_name(base)
    _check_same_architecture(mu, bu, "base")
    du = _by_name(delta) if delta is not None else None
    if du is not None:
        _check_same_architecture(mu, du, "delta")
    infos = {
        n: _infer_one(n, p, uses, bu[n][1], du[n][1] if du else None) for n, (p, uses) in mu.items()
    }
    if delta is None and not overrides and all(i.role is Role.FIXED for i in infos.values()) and infos:
        raise ValueError(
            f"no dimension of any parameter differs between the model and its base, so no role can be "
            f"inferred for {sorted(infos)[:8]}{'...' if len(infos) > 8 else ''}. "
            f"Pass delta= (the same model at another width), or use the factory form "
            f"parametrize(make_model, width=W, base_width=B), which builds one."
        )
    return _apply_overrides(infos, overrides, mu, bu)
