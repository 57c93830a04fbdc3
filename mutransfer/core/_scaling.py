"""The scaling rules of scaling.md section 3-4, as small pure functions in one table.

Every multiplier is relative to the base model: at width ratio ``m == 1`` each one is exactly 1,
so a model parametrized at its base width *is* the user's standard model.

The table maps (quantity, role) to the exponent of ``m``; the lr and eps columns are each
optimizer's record (:class:`~mutransfer.core.OptimizerRule`, in :data:`OPTIMIZER_RULES`):

| role   | init std | Adam lr | SGD lr | Adam eps |
|--------|----------|---------|--------|----------|
| input  | m^0      | m^0     | m^1    | m^-1     |
| hidden | m^-1/2   | m^-1    | m^0    | m^-1     |
| output | m^-1     | m^-1    | m^-1   | m^0      |
| vector | m^0      | m^0     | m^1    | m^-1     |
| fixed  | m^0      | m^0     | m^0    | m^0      |
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from mutransfer.core._checks import check_choice
from mutransfer.core._optimizer_rules import (ADAM_LR_EXPONENT, EPS_EXPONENT, MUON_SCALES,
                                              OPTIMIZER_RULES, SGD_LR_EXPONENT, muon_alpha,
                                              optimizer_rule)
from mutransfer.core._roles import Role

SCHEMES = ("sp", "mup", "spectral")
OPTIMIZERS = tuple(OPTIMIZER_RULES)  # the records' names, as the registry had them at import
READOUTS = ("init", "zero", "multiplier")

# Exponent of the width ratio m, per quantity and role (scaling.md section 3); lr and eps are
# the optimizers' (their records). LR_EXPONENT: the lr column of each optimizer that takes
# every role itself (Muon's own exponents are in its record, the rest of its model is AdamW's).
INIT_EXPONENT = {Role.INPUT: 0.0, Role.HIDDEN: -0.5, Role.OUTPUT: -1.0, Role.VECTOR: 0.0, Role.FIXED: 0.0}
LR_EXPONENT = {name: rule.lr_exponent for name, rule in OPTIMIZER_RULES.items() if rule.side is None}


@dataclass(frozen=True)
class Multipliers:
    """Per-parameter multipliers relative to the base model (all 1 at the base width)."""

    init: float = 1.0
    lr: float = 1.0
    eps: float = 1.0
    optimizer: str = "adamw"  # which update rule the parameter gets: adamw, adam, sgd or muon
    muon_alpha: float = float("nan")  # Muon's update scale; NaN where the parameter is not Muon's


def attention_scale(d_head: int, base_d_head: int | None = None) -> float:
    """Attention logit scale: muP's ``sqrt(d_head0) / d_head`` (scaling.md section 2).

    Equals the standard ``1/sqrt(d_head)`` at the base and shrinks like ``1/d_head`` beyond it;
    with ``base_d_head=None`` it is the plain muP ``1/d_head``.

        >>> attention_scale(64, base_d_head=64) == 1 / 8
        True
    """
    if int(d_head) <= 0:
        raise ValueError(f"d_head must be a positive integer; got {d_head!r}")
    if base_d_head is None:
        return 1.0 / d_head
    if int(base_d_head) <= 0:
        raise ValueError(f"base_d_head must be a positive integer; got {base_d_head!r}")
    return math.sqrt(base_d_head) / d_head


def spectral_sigma(fan_in: int, fan_out: int) -> float:
    """Absolute spectral init std: ``sqrt(fan_out/fan_in) / (sqrt(fan_in) + sqrt(fan_out))``.

    A Gaussian matrix with this std has spectral norm about ``sqrt(fan_out / fan_in)``.

        >>> round(spectral_sigma(256, 256), 6) == round(1 / 32, 6)
        True
    """
    if fan_in <= 0 or fan_out <= 0:
        raise ValueError(f"fan_in and fan_out must be positive; got {fan_in}, {fan_out}")
    return math.sqrt(fan_out / fan_in) / (math.sqrt(fan_in) + math.sqrt(fan_out))


def multipliers(
    role: Role,
    m: float,
    *,
    scheme: str = "mup",
    optimizer: str = "adamw",
    fan_in: int = 1,
    fan_out: int = 1,
    ndim: int = 2,
    is_embedding: bool = False,
    muon_scale: str = "spectral",
    m_max: float | None = None,
) -> Multipliers:
    """Multipliers for one parameter of ``role`` at width ratio ``m`` (scaling.md section 3).

    With ``rule = optimizer_rule(optimizer)`` (or its ``side`` for a parameter it does not
    take): ``lr = m ** rule.lr_exponent[role]``, ``init = m ** INIT_EXPONENT[role]``,
    ``eps = m ** rule.eps_exponent[role]``; under ``sp`` every multiplier is 1. Muon matrices
    keep the base lr (times ``m_max ** -1/2 * m ** (F/2)`` for the moonlight rule, ``m_max`` being
    the ratio of ``max(fan_in, fan_out)`` to the base's and ``fan_out/fan_in ~ m^F``) and get
    ``alpha`` from :func:`muon_alpha`.

        >>> multipliers(Role.HIDDEN, 4.0, optimizer="adamw").lr
        0.25
    """
    check_choice("scheme", scheme, SCHEMES)
    rule = optimizer_rule(optimizer)
    if m <= 0:
        raise ValueError(f"width ratio m must be positive; got {m!r}")
    update = rule if rule.takes(role, ndim, is_embedding) else optimizer_rule(rule.side)
    if not update.takes(role, ndim, is_embedding):
        raise ValueError(f"optimizer {optimizer!r} has no rule for a {role.value} parameter "
                         f"(ndim {ndim}); give its OptimizerRule that role or a side rule that has it")
    alpha = update.alpha(fan_in, fan_out, muon_scale) if update.alpha else float("nan")
    if scheme == "sp":
        return Multipliers(optimizer=update.name, muon_alpha=alpha)
    init = m ** INIT_EXPONENT[role]
    lr = m ** update.lr_exponent[role]
    e_max, e_m = update.scale_lr_exponents(role, muon_scale)  # Muon's moonlight rule
    if e_max or e_m:
        lr *= (m_max or m) ** e_max * m ** e_m
    eps = m ** update.eps_exponent[role] if update.eps_exponent is not None else 1.0
    return Multipliers(init=init, lr=lr, eps=eps, optimizer=update.name, muon_alpha=alpha)


# Weight decay across width (scaling.md section 5): see group_weight_decay.
WD_POLICIES = ("fixed_product", "coupled", "independent", "timescale")


def group_weight_decay(wd: float, lr: float, lr_mult: float, policy: str) -> float:
    """A group's weight decay under ``policy`` (scaling.md section 5), for a group with lr
    multiplier ``k``:

    | policy          | group weight decay   | decay per step              |
    |-----------------|----------------------|-----------------------------|
    | fixed_product   | wd / k               | lr * wd (same at any width) |
    | coupled         | wd                   | lr * k * wd                 |
    | independent     | wd / (lr * k)        | wd * scheduled_lr / peak_lr |
    | timescale       | wd / k               | lr * wd, and the transfer holds tau = B / (lr wd D) |

    ``timescale`` (Power Lines, Bergsma et al. 2025) decays each group like ``fixed_product``
    within a run; what it adds is :func:`timescale_weight_decay`, which :func:`mutransfer.transfer`
    uses when the target's batch B or token budget D differs from the proxies'.

        >>> group_weight_decay(0.1, 1e-3, 0.25, "fixed_product")
        0.4
    """
    check_choice("wd_policy", policy, WD_POLICIES)
    if policy in ("fixed_product", "timescale"):
        return wd / lr_mult
    if policy == "coupled":
        return wd
    return wd / (lr * lr_mult)


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


# Depth (scaling.md section 9): residual blocks h <- h + m_L^-alpha F(h), m_L = L / L0.
DEPTH_ALPHAS = (0.0, 0.5, 1.0)  # width-only muP, depth-muP (Yang et al. 2023), CompleteP (Dey et al. 2025)
# The default of parametrize() and of a run without a plan, and the depth probe's prior, by
# measurement (reports/README.md, "Depth"): at the lr transferred from depth 2 to 16, alpha 1/2 lost
# least in the worse of the two families (zoo GPT, transformers Llama), 0.038 nat against 0.10
# (alpha 1) and 0.12 (alpha 0). A config's sweep probes the rule instead (depth_alpha unset or
# "auto": reports/depth-auto). Only acts when the model has more blocks than its base.
DEFAULT_DEPTH_ALPHA = 0.5


@dataclass(frozen=True)
class DepthMultipliers:
    """Multipliers of a parameter inside the residual blocks, relative to the base depth."""

    branch: float = 1.0  # the residual branch's output (set on the branch's last map)
    lr: float = 1.0
    eps: float = 1.0


def depth_multipliers(m_depth: float, alpha: float, update: str) -> DepthMultipliers:
    """scaling.md section 9 for a parameter inside a residual block, at depth ratio ``m_L``, with
    the lr and eps rules of optimizer ``update``'s record (``depth_lr``, ``depth_eps``):

    | what                         | multiplier                                    |
    |------------------------------|-----------------------------------------------|
    | residual branch output       | m_L^-alpha                                    |
    | lr, Adam/AdamW (CompleteP, Table 1) and Muon [derived] | m_L^(alpha - 1)     |
    | lr, SGD [derived]            | m_L^(2 alpha - 1)                             |
    | Adam eps (block parameters)  | m_L^-alpha (embedding and readout: 1)         |

    Adam's and Muon's updates have a fixed size whatever the gradient, so a branch's change per
    step is ~ lr and the stream's ~ L m_L^-alpha lr: lr ~ m_L^(alpha - 1) keeps it Theta(1). An
    SGD update is ~ lr |g| and the branch's gradient carries m_L^-alpha: lr ~ m_L^(2 alpha - 1).
    The gradients of block parameters carry m_L^-alpha, so Adam's eps follows them. Init and
    weight decay are unchanged in depth (the fixed_product policy keeps lr x wd). ``alpha = 0``
    is width-only muP: no depth rule at all (every multiplier 1; eta* then drifts like 1/L).
    Sources:
    Dey et al. 2025 (CompleteP, alpha = 1), arXiv 2505.01618, and the nanoGPT-mup ``completep``
    branch; Yang et al. 2023 and Bordelon et al. 2023 (alpha = 1/2).

        >>> depth_multipliers(4.0, 1.0, "adamw")
        DepthMultipliers(branch=0.25, lr=1.0, eps=0.25)
        >>> depth_multipliers(4.0, 0.5, "muon").lr
        0.5
        >>> depth_multipliers(4.0, 0.0, "adamw")
        DepthMultipliers(branch=1.0, lr=1.0, eps=1.0)
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"depth_alpha must be a number in [0, 1] (0: width-only, 0.5: depth-muP, "
                         f"1: CompleteP); got {alpha!r}")
    if not m_depth > 0:
        raise ValueError(f"depth ratio m_L must be positive; got {m_depth!r}")
    if alpha == 0:
        return DepthMultipliers()
    rule = optimizer_rule(update)
    eps = m_depth ** -alpha if rule.depth_eps else 1.0
    return DepthMultipliers(branch=m_depth ** -alpha, lr=m_depth ** rule.depth_lr_exponent(alpha), eps=eps)
