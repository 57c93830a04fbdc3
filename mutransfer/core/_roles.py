"""Parameter roles (scaling.md section 1) and their inference by comparing shapes with a base.

A role says which of a parameter's dims grow with width:

| role   | which dims scale     | examples                                   |
|--------|----------------------|--------------------------------------------|
| input  | fan_out only         | embeddings, the first Linear from data     |
| hidden | fan_in and fan_out   | attention q/k/v/o, MLP up/down             |
| output | fan_in only          | LM head, classifier                        |
| vector | a 1-D param's length | biases, LayerNorm gains                    |
| fixed  | nothing              | a scalar temperature, a vocab-sized bias   |

Fused experts and routers (scaling.md sections 2-4). A tensor (E, out, in) or (E, in, out) whose
expert dim is picked before a matmul is E independent linear maps: each W[e] meets the spectral
condition on its own, so fan_in and fan_out are one expert's (not products over E), both grow
with width, and the role is hidden: init x m^-1/2, Adam lr x 1/m, and Muon's msign per expert
matrix with alpha = sqrt(fan_out / fan_in) of that matrix. A router (width -> n_experts) is a
width -> fixed map: fan_in grows, fan_out does not, so it is an output (init x 1/m, Adam lr x 1/m,
never Muon), which keeps its logits, hence the routing, Theta(1) at every width.
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
import warnings
from dataclasses import dataclass, field, replace

import torch
from torch import nn

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_KNOWN = (nn.Linear, nn.Embedding, nn.EmbeddingBag, nn.MultiheadAttention) + _CONVS + _NORMS


@dataclass(frozen=True)
class ModuleSlot:
    """How one module holds a parameter (its slot): the attribute, the kind the module type gives
    it and its fans there. Not a traced :class:`~mutransfer.core.Use` (one op of the forward that
    consumes the parameter)."""

    module: str
    attr: str
    kind: str  # linear, embedding, conv, norm, mha_in, generic
    fan_in: int
    fan_out: int
    numel: int
    ndim: int
    source: str = "module"  # what decided the kind: module (its type), usage (traced), shape
    expert_dims: int = 0  # leading dims indexing independent matrices (fused MoE experts)


# Kinds that are matrices multiplying activations: the only ones Muon may update.
MATRIX_KINDS = ("linear", "conv", "mha_in", "generic", "experts")
# Kinds whose role follows from their length alone (vectors, gains, per-channel tables).
NUMEL_KINDS = ("vector", "norm", "depthwise", "gain")
_MODULE_KINDS = ("linear", "embedding", "conv", "norm", "mha_in", "depthwise")


class RoleWarning(UserWarning):
    """Role inference fell back to shape rules (the message names the reason and the fix)."""


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
    source: str = "module"  # module (its type), usage (traced forward), shape (alone), override
    expert_dims: int = 0  # leading dims of a fused expert tensor: fans and Muon are per slice

    @property
    def is_embedding(self) -> bool:
        return self.kind == "embedding"

    @property
    def is_matrix(self) -> bool:
        """Whether the parameter multiplies activations as a matrix (Muon may update it)."""
        return self.kind in MATRIX_KINDS and len(self.shape) - self.expert_dims >= 2


def _fans(module: nn.Module, attr: str, p: torch.Tensor) -> tuple[str, int, int]:
    """(kind, fan_in, fan_out) of parameter ``attr`` of ``module`` (scaling.md section 0)."""
    shape = tuple(p.shape)
    if p.ndim <= 1 or _effectively_1d(shape) and not isinstance(module, (nn.Linear, nn.Embedding)):
        return ("norm" if isinstance(module, _NORMS) else "vector"), 1, p.numel()
    if isinstance(module, nn.Embedding) or isinstance(module, nn.EmbeddingBag):
        return "embedding", 1, shape[1]
    if isinstance(module, nn.Linear):
        return "linear", shape[1], shape[0]
    if _is_hf_conv1d(module, attr):
        return "linear", shape[0], shape[1]  # transformers' Conv1D (GPT-2) stores (in, out)
    if isinstance(module, _CONVS) and module.groups > 1 and shape[1] == 1:
        return "depthwise", math.prod(shape[1:]), shape[0]  # one input channel each: no matrix
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


def _is_hf_conv1d(module: nn.Module, attr: str) -> bool:
    """transformers.pytorch_utils.Conv1D: ``y = x @ W + b`` with W of shape (nx, nf)."""
    return (attr == "weight" and type(module).__name__ == "Conv1D" and hasattr(module, "nf")
            and hasattr(module, "nx"))


def _effectively_1d(shape: tuple[int, ...]) -> bool:
    return sum(1 for s in shape if s != 1) <= 1


def module_slots(model: nn.Module) -> dict[int, list[tuple[str, ModuleSlot, torch.Tensor]]]:
    """Every (module, attribute) use of each parameter, keyed by ``id(param)``; tied weights
    appear once per module that holds them, under their canonical (first) name."""
    canonical = {id(p): n for n, p in model.named_parameters()}
    out: dict[int, list[tuple[str, ModuleSlot, torch.Tensor]]] = {}
    for mname, module in model.named_modules(remove_duplicate=False):
        for attr, p in module.named_parameters(recurse=False):
            kind, fi, fo = _fans(module, attr, p)
            known = kind in _MODULE_KINDS or isinstance(module, _KNOWN) or _is_hf_conv1d(module, "weight")
            source = "module" if known else "shape"
            use = ModuleSlot(mname, attr, kind, fi, fo, p.numel(), p.ndim, source)
            entries = out.setdefault(id(p), [])
            if all((u.module, u.attr) != (mname, attr) for _, u, _ in entries):
                entries.append((canonical[id(p)], use, p))
    return out


def _by_name(model: nn.Module) -> dict[str, tuple[torch.Tensor, list[ModuleSlot]]]:
    return {entries[0][0]: (entries[0][2], [u for _, u, _ in entries]) for entries in module_slots(model).values()}


_PRIORITY = ("matmul", "lookup", "add", "conv_dw", "mul", "other")


def _traced(use: ModuleSlot, p: torch.Tensor, found: list) -> ModuleSlot:
    """The module-less ``use`` of ``p`` rewritten from how the forward consumed it (usage.py)."""
    t = min(found, key=lambda u: _PRIORITY.index(u.kind))
    shape, ndim = tuple(p.shape), p.ndim
    fields = dict(module=use.module, attr=use.attr, numel=p.numel(), ndim=ndim, source="usage")
    if ndim <= 1 or _effectively_1d(shape):
        return ModuleSlot(kind="vector", fan_in=1, fan_out=p.numel(), **fields)
    if t.kind == "matmul" and t.in_dims and t.out_dims:
        fan_in, fan_out, _ = t.fans(shape)
        lead = len(t.expert_dims)
        if lead and t.expert_dims == tuple(range(lead)) and ndim - lead == 2:
            return ModuleSlot(kind="experts", fan_in=fan_in, fan_out=fan_out, expert_dims=lead, **fields)
        # Muon flattens (dim 0, rest): a matrix up to transpose only when dim 0 is all of in or out
        kind = "generic" if not lead and (ndim == 2 or (0,) in (t.in_dims, t.out_dims)) else "tensor"
        return ModuleSlot(kind=kind, fan_in=fan_in, fan_out=fan_out, **fields)
    if t.kind == "lookup":
        return ModuleSlot(kind="embedding", fan_in=1, fan_out=t.fans(shape)[1], **fields)
    if t.kind == "add":  # a positional table added to the residual stream (features last)
        return ModuleSlot(kind="embedding", fan_in=1, fan_out=shape[-1], **fields)
    if t.kind == "conv_dw":
        return ModuleSlot(kind="depthwise", fan_in=math.prod(shape[1:]), fan_out=shape[0], **fields)
    return ModuleSlot(kind="gain", fan_in=1, fan_out=p.numel(), **fields)


def _with_usage(by_name: dict, traced: dict) -> dict:
    out = {}
    for name, (p, uses) in by_name.items():
        if name in traced and uses[0].source == "shape":
            uses = [_traced(u, p, traced[name]) for u in uses]
        out[name] = (p, uses)
    return out


def _subject(model: nn.Module, base: nn.Module) -> nn.Module:
    """The module to run forward: the base (small and real), else the model if real, else the base."""
    real = [m for m in (base, model) if not any(p.is_meta for p in m.parameters())]
    return real[0] if real else base


def _trace(model: nn.Module, base: nn.Module, example) -> dict:
    """Traced uses on the base (small and real) or else the model; {} with a RoleWarning when
    the forward cannot run on ``example``."""
    from mutransfer.core._usage import TraceError, trace_usage

    try:
        return trace_usage(_subject(model, base), example)
    except TraceError as err:
        warnings.warn(
            f"could not trace how parameters are used ({err}); their roles come from shape rules "
            f"alone (the plan lists them). Pass example= an input the model's forward accepts, "
            f"or overrides= for the listed names.", RoleWarning, stacklevel=3)
        return {}


def _fixed_sizes(model_uses: dict, base_uses: dict) -> list[int]:
    """The sizes that do not grow with width in the bare parameters' shapes (a positional
    table's rows, a vocabulary, a patch count): the lengths an example input may need."""
    sizes = set()
    for name, (p, uses) in model_uses.items():
        if uses[0].source == "shape" and p.ndim >= 2:
            q = base_uses[name][0]
            sizes.update(a for a, b in zip(p.shape, q.shape) if a == b and a > 1)
    return sorted(sizes)


def find_example(model: nn.Module, base: nn.Module, example=None, *,
                 need: bool = False) -> tuple[object, str | None]:
    """(an input for one forward, where it came from) to trace roles on.

    In order: ``example`` itself; the model's own (``example_input()``, or a transformers
    model's, built from its config: :func:`~mutransfer.core.default_example`); and, only when
    some parameter would otherwise take its role from shape alone, an input built from the
    model's first input modules (:func:`~mutransfer.core._examples.candidate_examples`), the
    first one its forward accepts. ``(None, None)`` when no input is needed (every parameter
    belongs to a module type that gives its role, and not ``need``); ``(None, why)`` when every
    built input failed.

        >>> find_example(Net(256), Net(64))[1]
        "built: token ids (2, 8) in [0, 256) for the first nn.Embedding 'tok'"
    """
    from mutransfer.core._examples import candidate_examples, default_example
    from mutransfer.core._usage import TraceError, trace_usage

    mu, bu, _ = _aligned_uses(model, base, "base")
    if not need and not any(uses[0].source == "shape" for _, uses in mu.values()):
        return None, None  # module types give every role: nothing to trace
    if example is not None:
        return example, "given (example=)"
    own = default_example(base)
    if own is not None:
        own_method = callable(getattr(base, "example_input", None))
        return own, "the model's example_input()" if own_method else "built from the transformers config"
    subject, failures = _subject(model, base), []
    for candidate, how in candidate_examples(subject, _fixed_sizes(mu, bu)):
        try:
            trace_usage(subject, candidate)
        except TraceError as err:
            failures.append(f"{how}: {err}")
            continue
        return candidate, f"built: {how}"
    if not failures:
        return None, "no input could be built: the model has no nn.Embedding, nn.Linear or conv"
    return None, (f"no built input ran the forward ({len(failures)} tried; the last, "
                  f"{failures[-1]})")


def _growing_dims(name: str, mu: dict, bu: dict, du: dict | None) -> list[int]:
    p, q = mu[name][0], bu[name][0]
    r = du[name][0] if du is not None else q
    return [k for k, (a, b, c) in enumerate(zip(p.shape, q.shape, r.shape)) if a != b or c != b]


def _ambiguous(infos: dict[str, ParamInfo]) -> list[ParamInfo]:
    """Roles from shape alone that read two ways: a tensor of >= 2 dims where only one side grows
    with width is a table (input) in one model and a readout (output) in another."""
    return [i for i in infos.values() if i.source == "shape" and len(i.shape) - i.expert_dims >= 2
            and i.role in (Role.INPUT, Role.OUTPUT)]


def _refuse_shape_guesses(infos: dict, mu: dict, bu: dict, du: dict | None, why: str | None,
                          allow: bool) -> None:
    """A ValueError naming every ambiguous shape-only role, its two readings and the fix; with
    ``allow``, a RoleWarning naming them instead."""
    found = _ambiguous(infos)
    if not found:
        return
    names = [i.name for i in found]
    if allow:
        warnings.warn(f"roles of {names} come from their shape alone (allow_shape_roles=True): "
                      f"{', '.join(f'{i.name} -> {i.role.value}' for i in found)}; pass example= "
                      f"to trace their use", RoleWarning, stacklevel=3)
        return
    readings = "; ".join(
        f"{i.name} {tuple(i.shape)}, only dim {','.join(map(str, _growing_dims(i.name, mu, bu, du)))} "
        f"growing with width, reads as an input (a table looked up or added to activations, or "
        f"a first layer) or as an output (a readout to a fixed size); its shape alone says "
        f"{i.role.value}" for i in found)
    raise ValueError(
        f"cannot tell the role of {len(found)} parameter(s) from shape alone: {readings}. "
        f"{('Tracing: ' + why + '. ') if why else ''}Pass example= (an input for one forward, "
        f"e.g. example=torch.zeros(2, 16, dtype=torch.long)) so their use is traced, or "
        f"overrides={{{names[0]!r}: 'input'}} (or 'output') for each; allow_shape_roles=True "
        f"keeps the shape reading with a RoleWarning")


def _depth_view(mu: dict, ou: dict, depth, label: str) -> dict:
    """``ou`` (the base's or delta's uses, fewer blocks) keyed by the model's names: the model's
    block i reads the other's block i mod L0."""
    missing = [n for n in mu if depth.base_name(n) not in ou]
    unused = sorted(set(ou) - {depth.base_name(n) for n in mu})
    if missing or unused:
        first = missing[0] if missing else unused[0]
        raise ValueError(
            f"the {label}'s blocks do not match the model's: the model's block i is the {label}'s "
            f"block i mod {depth.base_depth}, but {first!r} "
            f"{'has no counterpart ' + repr(depth.base_name(first)) if missing else 'is unused'} "
            f"(missing in the {label}: {missing[:4]}, only in the {label}: {unused[:4]}). Build the "
            f"{label} from the same blocks, repeated fewer times")
    return {n: ou[depth.base_name(n)] for n in mu}


def _aligned_uses(model: nn.Module, other: nn.Module, label: str):
    """(model's uses, the other's uses under the model's names, its Depth or None), checked to
    be the same architecture (at another width and, for the base and delta, fewer blocks)."""
    from mutransfer.core._depth import match_depth

    mu, ou = _by_name(model), _by_name(other)
    depth = match_depth(model, other)
    if depth is not None:
        ou = _depth_view(mu, ou, depth, label)
    try:
        _check_same_architecture(mu, ou, label)
    except ValueError as err:
        if depth is None:
            raise
        raise ValueError(f"{err} Blocks are matched by name with the index taken out (the model's "
                         f"block i against the {label}'s block i mod {depth.base_depth}), so these "
                         f"blocks differ in type: build the {label} from the model's first "
                         f"{depth.base_depth} blocks") from None
    return mu, ou, depth


def _traced_by_model_names(traced: dict, depth, subject_is_model: bool, names) -> dict:
    """Traced uses keyed by the model's names (a trace of the base names its blocks < L0)."""
    if depth is None or subject_is_model:
        return traced
    return {n: traced[depth.base_name(n)] for n in names if depth.base_name(n) in traced}


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


def _scales(get, use: ModuleSlot, base: ModuleSlot, delta: ModuleSlot | None) -> bool:
    return get(use) != get(base) or (delta is not None and get(delta) != get(base))


def _usage_role(use: ModuleSlot, base: ModuleSlot, delta: ModuleSlot | None) -> Role:
    if use.kind in NUMEL_KINDS:
        return Role.VECTOR if _scales(lambda u: u.numel, use, base, delta) else Role.FIXED
    ins = _scales(lambda u: u.fan_in, use, base, delta)
    outs = _scales(lambda u: u.fan_out, use, base, delta)
    return {(True, True): Role.HIDDEN, (False, True): Role.INPUT,
            (True, False): Role.OUTPUT, (False, False): Role.FIXED}[(ins, outs)]


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b)


def _info(name: str, p, role: Role, use: ModuleSlot, base: ModuleSlot, tied: bool, readouts) -> ParamInfo:
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
                     use.kind, tied, tuple(readouts), use.source, use.expert_dims)


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
                out[name] = replace(_info(name, p, Role(role), use, base, False, readouts),
                                    source="override")
    return out


def infer_roles(model: nn.Module, base: nn.Module, delta: nn.Module | None = None,
                overrides: dict[str, str] | None = None, *, example=None,
                allow_shape_roles: bool = False) -> dict[str, ParamInfo]:
    """Assign every parameter of ``model`` a role by comparing its fans with ``base`` (and ``delta``).

    A dim scales when it differs between model and base, or between delta and base; the role
    follows from which dims scale (input: fan_out, hidden: both, output: fan_in, vector: a 1-D
    length, fixed: none). ``overrides`` maps name globs to roles and beats inference. The base
    (and delta) may have fewer residual blocks than the model: the model's block i is compared
    with their block i mod L0 (:func:`~mutransfer.core._depth.match_depth`).

    Fans come from the holding module's type (Linear, Embedding, conv, norm: ``source="module"``).
    A parameter of any other module (a bare Parameter, fused experts, GPT-2's Conv1D is known)
    gets them from how the forward uses it on ``example`` (usage.py, ``source="usage"``): the
    contracted dims are fan_in, the dims that reach the output fan_out, the dims an expert index
    picks are per-expert slices; a table looked up or added to activations is an input (never
    Muon); gains and per-channel tensors (``A_log``, depthwise convs) are vectors. Without
    ``example`` the model's own is used, or one built from its first input module
    (:func:`find_example`). What no trace reaches takes torch's (out, in, ...) layout
    (``source="shape"``), except where that reads two ways (a tensor of >= 2 dims with one side
    growing: a table or a readout): those raise a ValueError naming them and the fix, unless
    ``allow_shape_roles`` (then a RoleWarning names them).

        >>> from torch import nn
        >>> infer_roles(nn.Linear(256, 256), nn.Linear(64, 64))["weight"].role
        <Role.HIDDEN: 'hidden'>
    """
    for label, module in (("model", model), ("base", base), ("delta", delta)):
        if module is not None and not isinstance(module, nn.Module):
            raise TypeError(f"{label} must be a torch.nn.Module; got {type(module).__name__}")
    mu, bu, depth = _aligned_uses(model, base, "base")
    du = _aligned_uses(model, delta, "delta")[1] if delta is not None else None
    why = None
    if any(uses[0].source == "shape" for _, uses in mu.values()):
        if example is None:
            example, why = find_example(model, base)
        traced = _trace(model, base, example) if example is not None else {}
        traced = _traced_by_model_names(traced, depth, _subject(model, base) is model, mu)
        mu, bu = _with_usage(mu, traced), _with_usage(bu, traced)
        du = _with_usage(du, traced) if du is not None else None
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
    infos = _apply_overrides(infos, overrides, mu, bu)
    _refuse_shape_guesses(infos, mu, bu, du, why, allow_shape_roles)
    return infos
