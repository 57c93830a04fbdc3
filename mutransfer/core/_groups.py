"""Optimizers from a Plan: param groups over torch's AdamW/Adam/SGD, or Muon (+AdamW groups),
each built as the optimizer's record says (:class:`~mutransfer.core.OptimizerRule`).

Each group carries ``lr = base_lr * lr_mult`` and records ``lr_mult``, so torch LR schedulers
(which scale each group's ``initial_lr``) keep the multipliers. Weight decay per group follows
the plan's policy (:func:`~mutransfer.core.group_weight_decay`, scaling.md section 5).

Decay kinds (``decay=``): ``"decoupled"`` (torch's ``W -= lr * wd * W``) or ``"spectral"``
(``W -= lr * wd * W v1 v1^T``: only the top singular direction, scaling.md section 4), with the
same per-group weight decay under every policy. Spectral decay acts on matrices; vectors keep the
decoupled kind. Muon applies it itself (group key ``decay``); for torch's AdamW the plan's matrix
groups carry ``decay="spectral"``, ``weight_decay=0`` and ``spectral_weight_decay=wd``, and a
step pre-hook (:class:`~mutransfer.optim.SpectralDecayHook`) applies it before AdamW's update, as AdamW decays.
The power-iteration vector lives in ``optimizer.state[p]["spectral_v"]``.

Wrapped models: DDP (``module.``), ``torch.compile`` (``_orig_mod.``), activation checkpointing
and FSDP1 add parts to parameter names that the plan, made on the bare model, lacks; FSDP2's
``fully_shard`` keeps the names. :func:`plan_name` maps a wrapped name back to the plan's.
"""
from __future__ import annotations

import torch
from torch import nn

from mutransfer.core._checks import check_choice
from mutransfer.core._optimizer_rules import OPTIMIZER_RULES, optimizer_rule
from mutransfer.core._scaling import WD_POLICIES, group_weight_decay
from mutransfer.optim import DECAY_KINDS, SpectralDecayHook

# Name parts that only wrappers add (compile, activation checkpointing, FSDP1): dropped anywhere.
WRAPPER_PARTS = ("_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module")
# DDP and DataParallel hold the model as ``module``: dropped only from the front, and only while
# the name is not the plan's (a model may have a child of its own called ``module``).
OUTER_WRAPPER = "module"


def plan_name(name: str, known) -> str | None:
    """The plan's name of a wrapped model's parameter ``name``, or None when it has none:
    ``name`` itself if ``known`` has it, else ``name`` without :data:`WRAPPER_PARTS`, then
    without leading ``module.`` parts one at a time, until ``known`` has it.

        >>> plan_name("_orig_mod.module.0.weight", {"0.weight"})
        '0.weight'
    """
    if name in known:
        return name
    parts = [part for part in name.split(".") if part not in WRAPPER_PARTS]
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        if parts[0] != OUTER_WRAPPER:
            return None
        parts = parts[1:]
    return None


def _check_numbers(lr, weight_decay, eps, adam_lr) -> None:
    for name, value, positive in (("lr", lr, True), ("weight_decay", weight_decay, False),
                                  ("eps", eps, False), ("adam_lr", adam_lr, True)):
        if value is None and name == "adam_lr":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number; got {value!r}")
        if (value <= 0) if positive else (value < 0):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be {bound}; got {value!r}. Use e.g. {name}=1e-3")


def param_groups(plan, model: nn.Module, lr: float, *, weight_decay: float = 0.0,
                 eps: float = 1e-8, adam_lr: float | None = None,
                 wd_policy: str = "fixed_product", decay: str = "decoupled") -> list[dict]:
    """Param groups of ``model`` with the plan's multipliers: one group per distinct
    (update rule, lr_mult, eps_mult, muon_alpha, role), and with ``decay="spectral"`` outside
    Muon also per (matrix or not).

    ``group["lr"] = lr * lr_mult`` (``adam_lr * lr_mult`` for Muon's AdamW groups when
    ``adam_lr`` is given; otherwise their ``lr_mult`` holds the constant ``adam_lr_ratio``),
    ``group["eps"] = eps * eps_mult``, ``group["weight_decay"]`` from :func:`group_weight_decay`,
    ``group["decay"] = decay``; for spectral decay of torch-optimizer matrix groups the weight
    decay moves to ``group["spectral_weight_decay"]`` (module docstring). ``model`` may be
    wrapped by DDP, ``fully_shard`` or ``torch.compile`` (:func:`plan_name`); each group's
    ``names`` are the plan's.

        >>> groups = param_groups(plan, plan.model, 1e-3)
        >>> torch.optim.AdamW(groups)
    """
    _check_numbers(lr, weight_decay, eps, adam_lr)
    if adam_lr is not None and plan.constants.adam_lr_ratio != 1.0:
        raise ValueError(f"adam_lr={adam_lr!r} and the plan's constant adam_lr_ratio="
                         f"{plan.constants.adam_lr_ratio:g} both set the AdamW groups' lr; give one "
                         f"(adam_lr=None keeps the ratio, which transfers across width)")
    check_choice("wd_policy", wd_policy, WD_POLICIES)
    check_choice("decay", decay, DECAY_KINDS)
    rule = optimizer_rule(plan.optimizer_name)
    if decay == "spectral" and rule.spectral_decay is None:
        names = " or ".join(repr(n) for n, r in OPTIMIZER_RULES.items() if r.spectral_decay)
        raise ValueError(f"decay='spectral' is a decoupled decay, for optimizer {names}; "
                         f"plan.optimizer_name is {plan.optimizer_name!r} (whose weight decay is L2). "
                         f"Parametrize with optimizer={names}, or use decay='decoupled'")
    named = {own: (plan_name(own, plan.params), p) for own, p in model.named_parameters()}
    missing = sorted(own for own, (name, _) in named.items() if name is None)
    if missing:
        raise ValueError(f"parameters {missing[:8]} of the model are not in the plan; "
                         f"call parametrize() on this model (or pass the model the plan was made for)")
    groups: dict[tuple, dict] = {}
    for name, p in named.values():
        pp = plan.params[name]
        side = pp.optimizer != rule.name  # on the rule's side optimizer (Muon's AdamW groups)
        scaled = not side and rule.alpha is not None  # an update scale alpha instead of an eps
        base_lr = adam_lr if side and adam_lr is not None else lr
        hooked = decay == "spectral" and rule.spectral_decay == "hook" and p.ndim >= 2
        # fused experts: Muon's msign and spectral decay act on each expert matrix, not the stack
        experts = getattr(pp, "expert_dims", 0) if scaled or hooked or decay == "spectral" else 0
        key = (pp.optimizer, pp.lr_mult, pp.eps_mult, pp.muon_alpha if scaled else None, pp.role, experts)
        key += (hooked,) if decay == "spectral" else ()
        if key not in groups:
            wd = group_weight_decay(weight_decay, base_lr, pp.lr_mult, wd_policy)
            group = {"params": [], "names": [], "role": pp.role, "lr_mult": pp.lr_mult,
                     "lr": base_lr * pp.lr_mult, "weight_decay": 0.0 if hooked else wd,
                     "decay": decay if (hooked or rule.spectral_decay == "native") else "decoupled"}
            if hooked:
                group["spectral_weight_decay"] = wd
            if rule.own_key is not None:
                group[rule.own_key] = not side
            if experts:  # fused experts: per expert matrix (msign, spectral decay)
                group["expert_dims"] = experts
            if scaled:
                group["alpha"] = pp.muon_alpha
            else:
                group["eps"] = eps * pp.eps_mult
            groups[key] = group
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())


def build_optimizer(plan, model: nn.Module, lr: float, *, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                    momentum: float | None = None, adam_lr: float | None = None,
                    wd_policy: str = "fixed_product", nesterov: bool = True,
                    decay: str = "decoupled", **kwargs) -> torch.optim.Optimizer:
    """The torch optimizer for ``plan.optimizer_name`` over :func:`param_groups`, built by its
    record's ``build`` (:func:`~mutransfer.core.optimizer_rule`), momentum defaulting to the
    record's ``beta1``: adamw/adam -> torch.optim.AdamW/Adam; sgd -> torch.optim.SGD (momentum
    default 0); muon -> :class:`mutransfer.Muon` (momentum default 0.95) with AdamW groups at
    ``adam_lr`` (default ``lr``) for embeddings, the readout and vectors. Extra ``kwargs`` go to
    the optimizer.
    ``decay="spectral"`` (adamw, muon) decays matrices by ``lr * wd * W v1 v1^T`` instead of
    ``lr * wd * W`` (module docstring).

        >>> plan = parametrize(mutransfer.zoo.mlp, width=256, base_width=64, optimizer="muon")
        >>> opt = plan.optimizer(0.02, adam_lr=3e-3, weight_decay=0.01, decay="spectral")
    """
    groups = param_groups(plan, model, lr, weight_decay=weight_decay, eps=eps, adam_lr=adam_lr,
                          wd_policy=wd_policy, decay=decay)
    rule = optimizer_rule(plan.optimizer_name)
    if momentum is None and rule.beta1_setting == "momentum":
        momentum = rule.beta1
    opt = rule.build(groups, lr=lr, betas=betas, eps=eps, momentum=momentum, nesterov=nesterov, **kwargs)
    if decay == "spectral" and rule.spectral_decay == "hook":
        opt.register_step_pre_hook(SpectralDecayHook())
    return opt
