"""The constants muP leaves free (scaling.md section 8): per-role init and lr constants, the
output multiplier, the readout's width exponent and the attention multiplier. They are
width-independent, so their values tuned on the proxy carry unchanged to every width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from mutransfer.core._roles import Role
from mutransfer.core._scaling import INIT_EXPONENT

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
    ``adam_lr_ratio`` (Muon plans) sets the AdamW groups' lr to ``lr * adam_lr_ratio * lr_mult``:
    with a fixed ``adam_lr`` instead, the AdamW groups' optimum moved with width and dragged
    Muon's (reports/gpt-cpu-300-muon-ratio).
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
    # Muon plans: the AdamW groups' (embeddings, readout, vectors) lr over the Muon lr
    adam_lr_ratio: float = 1.0

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
    "output_mult", "readout_exponent", "attention_mult", "adam_lr_ratio")
