"""One record per optimizer: its whole rule (width and depth exponents, defaults, what it groups
onto itself, the torch optimizer it builds, its name in plots) in :class:`OptimizerRule`, and
the registry :data:`OPTIMIZER_RULES` that every stage reads (scaling.md sections 3, 4 and 9).

    >>> optimizer_rule("sgd").lr_exponent[Role.INPUT]
    1.0
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from mutransfer.core._checks import check_choice
from mutransfer.core._roles import Role
from mutransfer.optim import Muon

MUON_SCALES = ("spectral", "keller", "moonlight")
SPECTRAL_DECAY = (None, "hook", "native")  # not applicable; a SpectralDecayHook; the optimizer's own
BETA1_SETTINGS = ("betas", "momentum")  # where beta1 is set: betas[0] (Adam) or momentum (SGD, Muon)


@dataclass(frozen=True)
class OptimizerRule:
    """An optimizer's whole rule, read by parametrize, the param groups, tuning, validation and
    the cli (scaling.md sections 3, 4 and 9). For a parameter of role ``r`` it takes:

        lr   x m ** lr_exponent[r] (x m_max ** scale_lr_exponent[muon_scale]),
        eps  x m ** eps_exponent[r] (1 when eps_exponent is None),
        in the residual blocks: lr x m_L ** (a alpha + b), (a, b) = depth_lr; eps x m_L ** -alpha
        when depth_eps.

    It updates a parameter itself when the role is in ``lr_exponent`` (and, with
    ``matrices_only``, the parameter is a matrix and no embedding); the rest go to the rule
    named ``side`` (Muon's AdamW groups, flagged ``own_key=False``).

    To add an optimizer, add one record to :data:`OPTIMIZER_RULES`: here, so that config files
    and the cli's choices know it too (``OPTIMIZERS`` and the labels are read at import); a
    record added at run time works for :func:`multipliers`, :func:`parametrize` and
    ``Plan.optimizer``. Lion (Chen et al. 2023) makes a sign update, like Adam's, so it keeps
    Adam's width and depth exponents, and it has no eps::

        from lion_pytorch import Lion

        adam = optimizer_rule("adamw")
        OPTIMIZER_RULES["lion"] = OptimizerRule(
            name="lion", label="Lion", plot_style="D-",
            lr_exponent=adam.lr_exponent,      # a sign update: Adam's lr column
            eps_exponent=None,                 # no eps to scale
            depth_lr=adam.depth_lr, beta1=0.9, demo_lr=3e-4,
            spectral_decay="hook",             # a decoupled decay, so spectral decay applies
            build=lambda groups, *, lr, betas, eps, momentum, nesterov, **kw:
                Lion(groups, lr=lr, betas=betas, **kw))
        plan = parametrize(mutransfer.zoo.mlp, width=256, base_width=64, optimizer="lion")
    """

    name: str
    # (groups, *, lr, betas, eps, momentum, nesterov, **kwargs) -> torch.optim.Optimizer
    build: Callable[..., torch.optim.Optimizer]
    lr_exponent: Mapping[Role, float]  # width lr exponent per role it updates itself
    eps_exponent: Mapping[Role, float] | None = None  # None: no eps (SGD) or none to scale (Muon)
    depth_lr: tuple[float, float] = (1.0, -1.0)  # block lr ~ m_L^(a alpha + b)
    depth_eps: bool = False  # whether the blocks' eps follows their gradients, m_L^-alpha
    beta1: float = 0.9  # default beta1 (Adam's betas[0]) or momentum (SGD, Muon)
    beta1_setting: str = "betas"  # which argument sets beta1: "betas" or "momentum"
    # the coordinate check's default base lr: SP visibly blows up within 5 steps while muP stays
    # flat on the zoo models (mutransfer coord-check --model mutransfer.zoo:gpt / zoo:mlp)
    demo_lr: float = 3e-3
    matrices_only: bool = False  # takes only matrices that are not embeddings (Muon)
    side: str | None = None  # the rule for the parameters it does not take
    own_key: str | None = None  # group key: True on its own groups, False on the side's
    alpha: Callable[[int, int, str], float] | None = None  # update scale from fans and muon_scale
    scale_lr_exponent: Mapping[str, float] = field(default_factory=dict)  # per muon_scale, in m_max
    spectral_decay: str | None = None  # None (L2-like decay), "hook" or "native"
    label: str = ""  # its name in plots
    plot_style: str = "o-"  # its line and marker in plots (matplotlib's fmt)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"an OptimizerRule needs a name, e.g. name='lion'; got {self.name!r}")
        for what, table in (("lr_exponent", self.lr_exponent), ("eps_exponent", self.eps_exponent or {})):
            bad = [r for r in table if not isinstance(r, Role)]
            if bad:
                raise ValueError(f"rule {self.name!r}: {what} keys must be Roles (e.g. Role.HIDDEN); got {bad}")
        if self.spectral_decay not in SPECTRAL_DECAY:
            raise ValueError(f"rule {self.name!r}: unknown spectral_decay {self.spectral_decay!r}; use "
                             f"None (L2-like decay), 'hook' (a SpectralDecayHook) or 'native' (its own)")
        check_choice("beta1_setting", self.beta1_setting, BETA1_SETTINGS)
        if (self.side is None) != (self.own_key is None) or (self.matrices_only and self.side is None):
            raise ValueError(f"rule {self.name!r}: side and own_key go together, and matrices_only "
                             f"needs a side for the rest; got side={self.side!r}, own_key={self.own_key!r}")
        # read-only tables: a record is shared by every plan
        object.__setattr__(self, "lr_exponent", MappingProxyType(dict(self.lr_exponent)))
        if self.eps_exponent is not None:
            object.__setattr__(self, "eps_exponent", MappingProxyType(dict(self.eps_exponent)))
        object.__setattr__(self, "scale_lr_exponent", MappingProxyType(dict(self.scale_lr_exponent)))
        object.__setattr__(self, "label", self.label or self.name)

    def takes(self, role: Role, ndim: int, is_embedding: bool) -> bool:
        """Whether this rule updates the parameter itself (else its ``side`` does).

            >>> optimizer_rule("muon").takes(Role.INPUT, 2, is_embedding=True)
            False
        """
        if self.matrices_only and (ndim < 2 or is_embedding):
            return False
        return role in self.lr_exponent

    def scale_lr_exponents(self, role: Role, muon_scale: str) -> tuple[float, float]:
        """``(e_max, e_m)``: a parameter's lr takes ``m_max^e_max * m^e_m`` under ``muon_scale``,
        where ``m_max`` is the ratio of its larger fan to the base's. An update scale alpha
        growing like ``m_max^-e`` (Moonlight's ``0.2 sqrt(max(A, B))``: e = -1/2) is undone by
        ``m_max^e``, and the spectral condition's ``||dW|| ~ sqrt(fan_out/fan_in)`` is restored by
        ``m^(-e F)``, with ``fan_out/fan_in ~ m^F`` (:data:`FAN_RATIO_EXPONENT`: an input matrix's
        step then grows like sqrt(m), a hidden one's stays put).

            >>> optimizer_rule("muon").scale_lr_exponents(Role.INPUT, "moonlight")
            (-0.5, 0.5)
        """
        e = self.scale_lr_exponent.get(muon_scale, 0.0)
        return (e, -e * FAN_RATIO_EXPONENT[Role(role)]) if e else (0.0, 0.0)

    def depth_lr_exponent(self, alpha: float) -> float:
        """The exponent of m_L in a block's lr: ``a alpha + b`` with ``(a, b) = depth_lr``.

            >>> optimizer_rule("sgd").depth_lr_exponent(0.5)
            0.0
        """
        a, b = self.depth_lr
        return a * alpha + b


def muon_alpha(fan_in: int, fan_out: int, rule: str = "spectral") -> float:
    """Muon's update scale alpha for a (fan_out x fan_in) matrix (scaling.md section 4).

    spectral: ``sqrt(fan_out/fan_in)``; keller: ``sqrt(max(1, fan_out/fan_in))``;
    moonlight: ``0.2 * sqrt(max(fan_in, fan_out))``.

        >>> muon_alpha(256, 1024, "spectral")
        2.0
    """
    check_choice("muon_scale", rule, MUON_SCALES)
    if rule == "spectral":
        return math.sqrt(fan_out / fan_in)
    if rule == "keller":
        return math.sqrt(max(1.0, fan_out / fan_in))
    return 0.2 * math.sqrt(max(fan_in, fan_out))


def _adamw(groups, *, lr, betas, eps, momentum, nesterov, **kwargs):
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)


def _adam(groups, *, lr, betas, eps, momentum, nesterov, **kwargs):
    return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps, **kwargs)


def _sgd(groups, *, lr, betas, eps, momentum, nesterov, **kwargs):
    return torch.optim.SGD(groups, lr=lr, momentum=momentum or 0.0,
                           nesterov=nesterov and bool(momentum), **kwargs)


def _muon(groups, *, lr, betas, eps, momentum, nesterov, **kwargs):
    return Muon(groups, lr=lr, momentum=momentum, nesterov=nesterov, betas=betas, eps=eps, **kwargs)


# scaling.md section 3, per role: input, hidden, output, vector, fixed.
ADAM_LR_EXPONENT = {Role.INPUT: 0.0, Role.HIDDEN: -1.0, Role.OUTPUT: -1.0, Role.VECTOR: 0.0, Role.FIXED: 0.0}
SGD_LR_EXPONENT = {Role.INPUT: 1.0, Role.HIDDEN: 0.0, Role.OUTPUT: -1.0, Role.VECTOR: 1.0, Role.FIXED: 0.0}
EPS_EXPONENT = {Role.INPUT: -1.0, Role.HIDDEN: -1.0, Role.OUTPUT: 0.0, Role.VECTOR: -1.0, Role.FIXED: 0.0}
# The exponent of m in fan_out / fan_in per role (scaling.md section 3's shapes): an input matrix
# widens its outputs, a hidden one both sides, the readout its inputs.
FAN_RATIO_EXPONENT = {Role.INPUT: 1.0, Role.HIDDEN: 0.0, Role.OUTPUT: -1.0, Role.VECTOR: 0.0, Role.FIXED: 0.0}
# Muon's own matrices keep the base lr (their update scale is alpha); the moonlight rule's alpha
# grows like sqrt(max fan), so its lr falls like m_max^-1/2, and rises like sqrt(fan_out/fan_in)'s
# growth, so each step keeps the spectral condition (OptimizerRule.scale_lr_exponents).
MUON_LR_EXPONENT = {Role.INPUT: 0.0, Role.HIDDEN: 0.0}

OPTIMIZER_RULES: dict[str, OptimizerRule] = {
    "adamw": OptimizerRule("adamw", _adamw, ADAM_LR_EXPONENT, EPS_EXPONENT, depth_eps=True,
                           spectral_decay="hook", label="AdamW", plot_style="o-"),
    "adam": OptimizerRule("adam", _adam, ADAM_LR_EXPONENT, EPS_EXPONENT, depth_eps=True,
                          label="Adam", plot_style="o-"),
    # an SGD step is ~ lr |g| and a block's gradient carries m_L^-alpha: one more alpha in depth
    "sgd": OptimizerRule("sgd", _sgd, SGD_LR_EXPONENT, None, depth_lr=(2.0, -1.0), beta1=0.0,
                         beta1_setting="momentum", demo_lr=0.1, label="SGD", plot_style="^-"),
    "muon": OptimizerRule("muon", _muon, MUON_LR_EXPONENT, None, beta1=0.95, beta1_setting="momentum",
                          demo_lr=0.02, matrices_only=True, side="adamw", own_key="use_muon",
                          alpha=muon_alpha, scale_lr_exponent={"moonlight": -0.5},
                          spectral_decay="native", label="Muon", plot_style="s--"),
}


def optimizer_rule(name: str) -> OptimizerRule:
    """The record of optimizer ``name`` in :data:`OPTIMIZER_RULES`; a ValueError naming the
    known ones otherwise.

        >>> optimizer_rule("muon").beta1
        0.95
    """
    if not isinstance(name, str):
        raise TypeError(f"optimizer must be a string, one of {tuple(OPTIMIZER_RULES)}; got {name!r}")
    if name not in OPTIMIZER_RULES:
        raise ValueError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZER_RULES)} "
                         f"(or add an OptimizerRule to OPTIMIZER_RULES)")
    return OPTIMIZER_RULES[name]
