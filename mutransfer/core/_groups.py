"""Optimizers from a Plan: param groups over torch's AdamW/Adam/SGD, or Muon (+AdamW groups).

Each group carries ``lr = base_lr * lr_mult`` and records ``lr_mult``, so torch LR schedulers
(which scale each group's ``initial_lr``) keep the multipliers. Weight-decay policies
(scaling.md section 5), for a group with lr multiplier ``k``:

| policy          | group weight decay   | decay per step             |
|-----------------|----------------------|----------------------------|
| fixed_product   | wd / k               | lr * wd (same at any width)|
| coupled         | wd                   | lr * k * wd                |
| independent     | wd / (lr * k)        | wd * scheduled_lr / peak_lr|
| timescale       | wd / k               | lr * wd, and the plan holds |
|                 |                      | tau = B / (lr wd D)         |

``timescale`` (Power Lines, Bergsma et al. 2025) decays each group like ``fixed_product`` within a
run; what it adds is the rule :func:`timescale_weight_decay` that :func:`mutransfer.transfer` uses
when the target's batch B or token budget D differs from the proxies': the AdamW timescale
tau = B / (lr wd D), i.e. 1 / (lr wd) steps as a share of the D / B steps, is held fixed.

Decay kinds (``decay=``): ``"decoupled"`` (torch's ``W -= lr * wd * W``) or ``"spectral"``
(``W -= lr * wd * W v1 v1^T``: only the top singular direction, scaling.md section 4), with the
same per-group weight decay under every policy. Spectral decay acts on matrices; vectors keep the
decoupled kind. Muon applies it itself (group key ``decay``); for torch's AdamW the plan's matrix
groups carry ``decay="spectral"``, ``weight_decay=0`` and ``spectral_weight_decay=wd``, and a
step pre-hook (:class:`SpectralDecayHook`) applies it before AdamW's update, as AdamW decays.
The power-iteration vector lives in ``optimizer.state[p]["spectral_v"]``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from mutransfer.optim._muon import DECAY_KINDS, spectral_decay_
from mutransfer.core._scaling import check_choice

if TYPE_CHECKING:
    from mutransfer.core._parametrize import Plan

WD_POLICIES = ("fixed_product", "coupled", "independent", "timescale")


def group_weight_decay(wd: float, lr: float, lr_mult: float, policy: str) -> float:
    """A group's weight decay under ``policy`` (see the module table).

        >>> group_weight_decay(0.1, 1e-3, 0.25, "fixed_product")
        0.4
    """
    check_choice("wd_policy", policy, WD_POLICIES)
    if policy in ("fixed_product", "timescale"):
        return wd / lr_mult
    if policy == "coupled":
        return wd
    return wd / (lr * lr_mult)


class SpectralDecayHook:
    """Step pre-hook of a torch optimizer: ``W -= lr * spectral_weight_decay * W v1 v1^T`` for
    each parameter with a gradient in the groups that have ``spectral_weight_decay``.

    v1 is warm-started from ``optimizer.state[p]["spectral_v"]``, stored there once the optimizer
    has created that parameter's state (AdamW creates its state lazily when it is empty; until then
    the hook starts cold).

        >>> opt.register_step_pre_hook(SpectralDecayHook())
    """

    def __call__(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        with torch.no_grad():
            for group in optimizer.param_groups:
                wd = group.get("spectral_weight_decay", 0.0)
                params = [p for p in group["params"] if p.grad is not None and p.ndim >= 2]
                if wd and params:
                    states = [optimizer.state[p] if optimizer.state.get(p) else {} for p in params]
                    spectral_decay_(params, states, group["lr"] * wd)


def timescale_weight_decay(wd: float, *, lr: float, batch: float, tokens: float, new_lr: float,
                           new_batch: float, new_tokens: float) -> float:
    """The weight decay that keeps the AdamW timescale tau = B / (lr wd D) when lr, batch B and
    budget D change: wd' = wd (B' / B) (lr / lr') (D / D') (tau' = tau exactly).

        >>> timescale_weight_decay(0.1, lr=1e-3, batch=32, tokens=1e6, new_lr=1e-3, new_batch=64, new_tokens=1e6)
        0.2
    """
    from numbers import Real

    values = {"wd": wd, "lr": lr, "batch": batch, "tokens": tokens, "new_lr": new_lr,
              "new_batch": new_batch, "new_tokens": new_tokens}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, Real) or not (
                value >= 0 if name == "wd" else value > 0):
            raise ValueError(f"{name} must be a {'number >= 0' if name == 'wd' else 'positive number'}; "
                             f"got {value!r}")
    return float(wd * (new_batch / batch) * (lr / new_lr) * (tokens / new_tokens))


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


def param_groups(plan: "Plan", model: nn.Module, lr: float, *, weight_decay: float = 0.0,
                 eps: float = 1e-8, adam_lr: float | None = None,
                 wd_policy: str = "fixed_product", decay: str = "decoupled") -> list[dict]:
    """Param groups of ``model`` with the plan's multipliers: one group per distinct
    (update rule, lr_mult, eps_mult, muon_alpha, role), and with ``decay="spectral"`` outside
    Muon also per (matrix or not).

    ``group["lr"] = lr * lr_mult`` (``adam_lr`` for Muon's AdamW groups),
    ``group["eps"] = eps * eps_mult``, ``group["weight_decay"]`` from :func:`group_weight_decay`,
    ``group["decay"] = decay``; for spectral decay of torch-optimizer matrix groups the weight
    decay moves to ``group["spectral_weight_decay"]`` (module docstring).

        >>> groups = param_groups(plan, plan.model, 1e-3)
        >>> torch.optim.AdamW(groups)
    """
    _check_numbers(lr, weight_decay, eps, adam_lr)
    check_choice("wd_policy", wd_policy, WD_POLICIES)
    check_choice("decay", decay, DECAY_KINDS)
    if decay == "spectral" and plan.optimizer_name not in ("adamw", "muon"):
        raise ValueError(f"decay='spectral' is a decoupled decay, for optimizer 'adamw' or 'muon'; "
                         f"plan.optimizer_name is {plan.optimizer_name!r} (whose weight decay is L2). "
                         "Parametrize with optimizer='adamw' or 'muon', or use decay='decoupled'")
    named = dict(model.named_parameters())
    missing = sorted(set(named) - set(plan.params))
    if missing:
        raise ValueError(f"parameters {missing[:8]} of the model are not in the plan; "
                         f"call parametrize() on this model (or pass the model the plan was made for)")
    groups: dict[tuple, dict] = {}
    for name, p in named.items():
        pp = plan.params[name]
        muon = pp.optimizer == "muon"
        base_lr = lr if (muon or plan.optimizer_name != "muon" or adam_lr is None) else adam_lr
        experts = getattr(pp, "expert_dims", 0) if muon else 0
        key = (pp.optimizer, pp.lr_mult, pp.eps_mult, pp.muon_alpha if muon else None, pp.role, experts)
        hooked = decay == "spectral" and plan.optimizer_name != "muon" and p.ndim >= 2
        key += (hooked,) if decay == "spectral" else ()
        if key not in groups:
            wd = group_weight_decay(weight_decay, base_lr, pp.lr_mult, wd_policy)
            group = {"params": [], "names": [], "role": pp.role, "lr_mult": pp.lr_mult,
                     "lr": base_lr * pp.lr_mult, "weight_decay": 0.0 if hooked else wd,
                     "decay": decay if (hooked or plan.optimizer_name == "muon") else "decoupled"}
            if hooked:
                group["spectral_weight_decay"] = wd
            if muon:
                group.update(use_muon=True, alpha=pp.muon_alpha)
                if experts:  # fused experts: msign of each expert matrix, not of the whole tensor
                    group["expert_dims"] = experts
            else:
                group["eps"] = eps * pp.eps_mult
                if plan.optimizer_name == "muon":
                    group["use_muon"] = False
            groups[key] = group
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())


def build_optimizer(plan: "Plan", model: nn.Module, lr: float, *, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                    momentum: float | None = None, adam_lr: float | None = None,
                    wd_policy: str = "fixed_product", nesterov: bool = True,
                    decay: str = "decoupled", **kwargs) -> torch.optim.Optimizer:
    """The torch optimizer for ``plan.optimizer_name`` over :func:`param_groups`.

    adamw/adam -> torch.optim.AdamW/Adam; sgd -> torch.optim.SGD (momentum default 0);
    muon -> :class:`mutransfer.muon.Muon` (momentum default 0.95) with AdamW groups at ``adam_lr``
    (default ``lr``) for embeddings, the readout and vectors. Extra ``kwargs`` go to the optimizer.
    ``decay="spectral"`` (adamw, muon) decays matrices by ``lr * wd * W v1 v1^T`` instead of
    ``lr * wd * W`` (module docstring).

        >>> plan = parametrize(mutransfer.zoo.mlp, width=256, base_width=64, optimizer="muon")
        >>> opt = plan.optimizer(0.02, adam_lr=3e-3, weight_decay=0.01, decay="spectral")
    """
    groups = param_groups(plan, model, lr, weight_decay=weight_decay, eps=eps, adam_lr=adam_lr,
                          wd_policy=wd_policy, decay=decay)
    name = plan.optimizer_name
    if name == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)
        if decay == "spectral":
            opt.register_step_pre_hook(SpectralDecayHook())
        return opt
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps, **kwargs)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum or 0.0,
                               nesterov=nesterov and bool(momentum), **kwargs)
    from mutransfer.optim._muon import Muon

    return Muon(groups, lr=lr, momentum=0.95 if momentum is None else momentum, nesterov=nesterov,
                betas=betas, eps=eps, **kwargs)
