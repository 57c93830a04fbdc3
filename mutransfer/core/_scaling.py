"""The scaling rules of scaling.md section 3-4, as small pure functions in one table.

Every multiplier is relative to the base model: at width ratio ``m == 1`` each one is exactly 1,
so a model parametrized at its base width *is* the user's standard model.

The table maps (quantity, role) to the exponent of ``m``; the optimizer family picks the
learning-rate column:

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

from mutransfer.core._roles import Role

SCHEMES = ("sp", "mup", "spectral")
OPTIMIZERS = ("adamw", "adam", "sgd", "muon")
MUON_SCALES = ("spectral", "keller", "moonlight")
READOUTS = ("init", "zero", "multiplier")

# Exponent of the width ratio m, per quantity and role (scaling.md section 3).
INIT_EXPONENT = {Role.INPUT: 0.0, Role.HIDDEN: -0.5, Role.OUTPUT: -1.0, Role.VECTOR: 0.0, Role.FIXED: 0.0}
ADAM_LR_EXPONENT = {Role.INPUT: 0.0, Role.HIDDEN: -1.0, Role.OUTPUT: -1.0, Role.VECTOR: 0.0, Role.FIXED: 0.0}
SGD_LR_EXPONENT = {Role.INPUT: 1.0, Role.HIDDEN: 0.0, Role.OUTPUT: -1.0, Role.VECTOR: 1.0, Role.FIXED: 0.0}
EPS_EXPONENT = {Role.INPUT: -1.0, Role.HIDDEN: -1.0, Role.OUTPUT: 0.0, Role.VECTOR: -1.0, Role.FIXED: 0.0}
LR_EXPONENT = {"adamw": ADAM_LR_EXPONENT, "adam": ADAM_LR_EXPONENT, "sgd": SGD_LR_EXPONENT}


@dataclass(frozen=True)
class Multipliers:
    """Per-parameter multipliers relative to the base model (all 1 at the base width)."""

    init: float = 1.0
    lr: float = 1.0
    eps: float = 1.0
    optimizer: str = "adamw"  # which update rule the parameter gets: adamw, adam, sgd or muon
    muon_alpha: float = float("nan")  # Muon's update scale; NaN where the parameter is not Muon's


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError naming the options."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {choices}; got {value!r}")
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(choices)}")
    return value


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


def uses_muon(role: Role, ndim: int, is_embedding: bool) -> bool:
    """Whether Muon updates this parameter: hidden matrices and dense (non-embedding) input
    matrices do; embeddings, the readout, vectors and fixed parameters stay on AdamW."""
    if ndim < 2 or is_embedding:
        return False
    return role in (Role.HIDDEN, Role.INPUT)


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

    ``lr = m ** LR_EXPONENT[optimizer][role]``, ``init = m ** INIT_EXPONENT[role]``,
    ``eps = m ** EPS_EXPONENT[role]``; under ``sp`` every multiplier is 1. Muon matrices keep
    the base lr (times ``m_max ** -1/2`` for the moonlight rule, ``m_max`` being the ratio of
    ``max(fan_in, fan_out)`` to the base's) and get ``alpha`` from :func:`muon_alpha`.

        >>> multipliers(Role.HIDDEN, 4.0, optimizer="adamw").lr
        0.25
    """
    check_choice("scheme", scheme, SCHEMES)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    if m <= 0:
        raise ValueError(f"width ratio m must be positive; got {m!r}")
    muon = optimizer == "muon" and uses_muon(role, ndim, is_embedding)
    update = "muon" if muon else ("adamw" if optimizer == "muon" else optimizer)
    alpha = muon_alpha(fan_in, fan_out, muon_scale) if muon else float("nan")
    if scheme == "sp":
        return Multipliers(optimizer=update, muon_alpha=alpha)
    init = m ** INIT_EXPONENT[role]
    if muon:
        lr = (m_max or m) ** -0.5 if muon_scale == "moonlight" else 1.0
        return Multipliers(init=init, lr=lr, eps=1.0, optimizer=update, muon_alpha=alpha)
    lr = m ** LR_EXPONENT[update][role]
    eps = m ** EPS_EXPONENT[role] if update != "sgd" else 1.0
    return Multipliers(init=init, lr=lr, eps=eps, optimizer=update, muon_alpha=alpha)


# The width-independent constants muP leaves free (scaling.md section 8), by role.
CONSTANT_ROLES = (Role.INPUT, Role.HIDDEN, Role.OUTPUT, Role.VECTOR)
READOUT_EXPONENT = INIT_EXPONENT[Role.OUTPUT]  # the table's x m^-1 readout init


@dataclass(frozen=True)
class Constants:
    """The constants muP leaves free (scaling.md section 8): hyperparameters of the proxy that
    carry unchanged to every width, because every one multiplies a width-independent factor.

    A parameter of role ``r`` gets ``init std = c_init[r] * (scheme's std)`` and
    ``lr = c_lr[r] * lr * lr_mult``; the readout's init std under ``mup`` is
    ``base_std * m ** readout_exponent`` (the table's ``-1``; ``-0.5`` keeps SP's readout size),
    and in the multiplier form (tied weights) its logits are scaled by
    ``output_mult * m ** readout_exponent``;
    ``output_mult`` multiplies the readout's input (its logits) and ``attention_mult`` the
    attention logit scale of factories that take ``attention_mult=`` (the zoo GPT does).
    With every constant at its default the model and optimizer are exactly today's.

        >>> c = Constants(lr_hidden=0.5, readout_exponent=-0.5)
        >>> c.lr(Role.HIDDEN), c.changed()
        (0.5, {'lr_hidden': 0.5, 'readout_exponent': -0.5})
    """

    init_input: float = 1.0
    init_hidden: float = 1.0
    init_output: float = 1.0
    init_vector: float = 1.0
    lr_input: float = 1.0
    lr_hidden: float = 1.0
    lr_output: float = 1.0
    lr_vector: float = 1.0
    output_mult: float = 1.0
    readout_exponent: float = READOUT_EXPONENT
    attention_mult: float = 1.0

    def __post_init__(self):
        for name in CONSTANT_NAMES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TypeError(f"constant {name} must be a finite number; got {value!r}")
            if name != "readout_exponent" and value <= 0:
                raise ValueError(f"constant {name} must be > 0 (it multiplies a scale); got {value!r}. "
                                 f"Use 1 for the table's value")
        if not -2.0 <= self.readout_exponent <= 0.0:
            raise ValueError(f"readout_exponent must lie in [-2, 0] (-1 is muP's table, -0.5 SP's "
                             f"readout size); got {self.readout_exponent!r}")

    def init(self, role: Role) -> float:
        """The init-std constant of ``role`` (1 for fixed parameters)."""
        return getattr(self, f"init_{Role(role).value}", 1.0)

    def lr(self, role: Role) -> float:
        """The learning-rate constant of ``role`` (1 for fixed parameters)."""
        return getattr(self, f"lr_{Role(role).value}", 1.0)

    def as_dict(self) -> dict[str, float]:
        return {f: float(getattr(self, f)) for f in CONSTANT_NAMES}

    def changed(self) -> dict[str, float]:
        """The constants that differ from their defaults (what a plan or study name records)."""
        default = Constants()
        return {k: v for k, v in self.as_dict().items() if v != getattr(default, k)}

    def replace(self, **values) -> "Constants":
        """A copy with ``values`` set (unknown names are an error naming the known ones)."""
        return Constants.coerce({**self.as_dict(), **values})

    @classmethod
    def of_parametrization(cls, table: dict, knobs: dict | None = None) -> "Constants":
        """The constants of a ``[parametrization]`` table (its ``constants`` and
        ``output_mult``), with any constant among ``knobs`` (a trial's params) on top.

            >>> Constants.of_parametrization({"constants": {"lr_hidden": 2.0}, "output_mult": 3.0}).output_mult
            3.0
        """
        values = {**table.get("constants", {}), "output_mult": table.get("output_mult", 1.0)}
        values.update({k: v for k, v in (knobs or {}).items() if k in CONSTANT_NAMES})
        return cls.coerce(values)

    @classmethod
    def coerce(cls, value) -> "Constants":
        """``value`` as Constants: None (all defaults), a dict of names, or Constants.

            >>> Constants.coerce({"lr_output": 2.0}).lr_output
            2.0
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"constants must be a dict or mutransfer.Constants; got {value!r}")
        unknown = sorted(set(value) - set(CONSTANT_NAMES))
        if unknown:
            raise ValueError(f"unknown constant {unknown[0]!r}; the constants are "
                             f"{', '.join(CONSTANT_NAMES)}")
        return cls(**{k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                      for k, v in value.items()})


CONSTANT_NAMES = tuple(f"{kind}_{r.value}" for kind in ("init", "lr") for r in CONSTANT_ROLES) + (
    "output_mult", "readout_exponent", "attention_mult")
