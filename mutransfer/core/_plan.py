"""The Plan: what :func:`~mutransfer.core.parametrize` returns, as plain data.

One row per parameter (role, fans, multipliers relative to the base), the scheme's settings and
constants, and the readout hooks. Nothing is attached to tensors, so a parametrized model saves,
loads, compiles and wraps like any other module; the plan itself round-trips through JSON
(:meth:`Plan.save` / :meth:`Plan.load`) and re-applies to a fresh model (:meth:`Plan.apply_`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from mutransfer.core._constants import Constants
from mutransfer.core._depth import set_residual_hooks
from mutransfer.core._groups import build_optimizer
from mutransfer.core._roles import Role

# Relative std changes smaller than this are treated as "already there": this makes
# parametrizing twice give bit-identical tensors to parametrizing once.
_RESCALE_TOL = 1e-6
COLUMNS = ("name", "shape", "role", "fan_in", "fan_out", "width_mult", "init_std", "init_mult",
           "lr_mult", "depth_mult", "wd_mult", "eps_mult", "optimizer", "muon_alpha", "source")


@dataclass(frozen=True)
class ParamPlan:
    """One parameter's row of the plan: role, fans and multipliers relative to the base."""

    name: str
    shape: tuple[int, ...]
    role: str
    fan_in: int
    fan_out: int
    width_mult: float
    init_std: float  # target RMS about zero of the initial values; NaN when unknown (meta base)
    init_mult: float
    lr_mult: float
    wd_mult: float  # for the default wd_policy "fixed_product": 1 / lr_mult
    eps_mult: float
    optimizer: str
    muon_alpha: float
    kind: str = "linear"
    tied: bool = False
    source: str = "module"  # what set the role: module (type), usage (traced), shape, override
    expert_dims: int = 0  # leading expert dims: fans and Muon are per expert matrix
    depth_mult: float = 1.0  # the depth rule's share of lr_mult (1 outside the residual blocks)


class ReadoutScale:
    """Forward pre-hook multiplying a readout's input by ``scale`` (muP's multiplier form).

    ``scale = output_mult / m``: the readout keeps its base init and lr, and its logits keep their
    base size at any width. A class (not a closure) so that it pickles with the module.
    """

    def __init__(self, scale: float):
        self.scale = float(scale)

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (args[0] * self.scale,) + tuple(args[1:])

    def __repr__(self) -> str:
        return f"ReadoutScale({self.scale:g})"


@dataclass
class Plan:
    """The result of :func:`parametrize`: per-parameter roles and multipliers, plus settings.

        >>> plan = parametrize(nn.Linear(256, 256), nn.Linear(64, 64))
        >>> plan.table()[["name", "role", "lr_mult"]]
    """

    params: dict[str, ParamPlan]
    scheme: str = "mup"
    optimizer_name: str = "adamw"
    muon_scale: str = "spectral"
    readout: str = "init"
    constants: Constants = field(default_factory=Constants)
    readout_scales: dict[str, float] = field(default_factory=dict)
    traced_on: str | None = None  # the example input roles were traced on, and where it came from
    depth: int | None = None  # blocks per grown block list in the model (L); None: the base's depth
    base_depth: int | None = None  # ... and in the base (L0)
    depth_alpha: float = 0.0  # branch multiplier m_L^-alpha (scaling.md section 9)
    residual_scales: dict[str, float] = field(default_factory=dict)  # branch's last map -> m_L^-alpha
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def roles(self) -> dict[str, Role]:
        return {n: Role(p.role) for n, p in self.params.items()}

    @property
    def output_mult(self) -> float:
        return self.constants.output_mult

    @property
    def depth_ratio(self) -> float:
        """m_L = L / L0 (1 when the model has its base's depth)."""
        return self.depth / self.base_depth if self.depth and self.base_depth else 1.0

    @property
    def shape_only(self) -> list[str]:
        """Names of the parameters whose role came from their shape alone (no traced usage)."""
        return [n for n, p in self.params.items() if p.source == "shape"]

    def table(self):
        """One row per parameter: name, shape, role, fans, width_mult and every multiplier
        (``init_mult`` and ``lr_mult`` include the plan's constants; ``.attrs["constants"]``
        holds them all)."""
        import pandas as pd

        rows = [{c: getattr(p, c) for c in COLUMNS} for p in self.params.values()]
        df = pd.DataFrame(rows, columns=list(COLUMNS))
        df.attrs["constants"] = self.constants.as_dict()
        return df

    def __str__(self) -> str:
        df = self.table()
        df["shape"] = df["shape"].map(lambda s: "x".join(map(str, s)))
        head = (f"mutransfer Plan: scheme={self.scheme} optimizer={self.optimizer_name} "
                f"muon_scale={self.muon_scale} readout={self.readout} output_mult={self.output_mult:g}")
        if self.depth is not None:
            head += (f"\ndepth: {self.depth} blocks on a base of {self.base_depth} (m_L = "
                     f"{self.depth_ratio:g}), depth_alpha={self.depth_alpha:g}")
        changed = {k: v for k, v in self.constants.changed().items() if k != "output_mult"}
        if changed:
            head += "\nconstants: " + ", ".join(f"{k}={v:g}" for k, v in changed.items())
        counts = ", ".join(f"{r}: {n}" for r, n in df["role"].value_counts().sort_index().items())
        with _pandas_display():
            body = df.to_string(index=False, float_format=lambda v: f"{v:.4g}")
        hooks = "".join(f"\nreadout multiplier on {m!r}: x{s:.4g}" for m, s in self.readout_scales.items())
        hooks += "".join(f"\nresidual branch multiplier on {m!r}: x{s:.4g}"
                         for m, s in self.residual_scales.items())
        traced = f"\nroles traced on: {self.traced_on}" if self.traced_on else ""
        shape = (f"\nroles from shape alone (pass example= to trace their use): {self.shape_only}"
                 if self.shape_only else "")
        return f"{head}\n{len(df)} parameters ({counts})\n{body}{hooks}{traced}{shape}"

    def optimizer(self, lr: float, *, model: nn.Module | None = None, **kwargs) -> torch.optim.Optimizer:
        """A torch optimizer whose param groups carry this plan's multipliers; see
        :func:`mutransfer.core.build_optimizer` for the arguments. ``model`` (default: the
        plan's) may be wrapped by DDP, ``fully_shard`` or ``torch.compile``; build the optimizer
        after wrapping, since FSDP2 replaces the parameters."""
        target = model if model is not None else self.model
        if target is None:
            raise ValueError("this plan has no model (it was loaded from JSON); pass model=your_model")
        return build_optimizer(self, target, lr, **kwargs)

    def apply_(self, model: nn.Module) -> nn.Module:
        """Rewrite ``model``'s init to this plan's target stds and register its readout and
        residual-branch hooks; for a plan loaded from JSON. Returns the model."""
        named = dict(model.named_parameters())
        missing = sorted(set(self.params) - set(named))
        if missing:
            raise ValueError(f"model lacks parameters {missing[:8]} named in the plan; "
                             f"apply the plan to the model it was made for")
        for name, pp in self.params.items():
            _rescale_(named[name], pp.init_std, name)
        _set_readout_hooks(model, self.readout_scales)
        set_residual_hooks(model, self.residual_scales)
        self.model = model
        return model

    def save(self, path: str | Path) -> None:
        """Write the plan as JSON (the model itself is not saved: use its state_dict)."""
        data = {k: v for k, v in asdict(self).items() if k not in ("model", "params")}
        data["constants"] = self.constants.as_dict()
        data["params"] = [asdict(p) for p in self.params.values()]
        Path(path).write_text(json.dumps(data, indent=1, default=_json_float))

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        """Read a plan written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        params = {}
        for p in data.pop("params"):
            p["shape"] = tuple(p["shape"])
            params[p["name"]] = ParamPlan(**{k: _float_or(v) for k, v in p.items()})
        constants = data.pop("constants", {})
        if "output_mult" in data:  # plans saved before the constants existed
            constants = {**constants, "output_mult": data.pop("output_mult")}
        return cls(params=params, constants=Constants.coerce(constants), **data)


def _json_float(v):
    raise TypeError(f"cannot serialize {v!r}")


def _float_or(v):
    return float("nan") if v is None else v


class _pandas_display:
    def __enter__(self):
        import pandas as pd

        self._ctx = pd.option_context("display.width", 200, "display.max_rows", 500,
                                      "display.max_columns", 20)
        self._ctx.__enter__()

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().float().pow(2).mean().sqrt()) if t.numel() else 0.0


@torch.no_grad()
def _rescale_(p: torch.Tensor, target: float, name: str) -> None:
    """Scale ``p`` in place so that its RMS about zero becomes ``target`` (uniform stays uniform)."""
    if p.is_meta or math.isnan(target):
        return
    if target == 0.0:
        p.zero_()
        return
    own = _rms(p)
    if own == 0.0:
        raise ValueError(
            f"parameter {name!r} is all zeros and cannot be rescaled to std {target:.3g}; "
            f"it was probably zero-initialized by an earlier parametrize(readout='zero'): "
            f"build the model again before parametrizing it with another readout."
        )
    factor = target / own
    if abs(factor - 1.0) > _RESCALE_TOL:
        p.mul_(factor)


def _set_readout_hooks(model: nn.Module, scales: dict[str, float]) -> None:
    modules = dict(model.named_modules(remove_duplicate=False))
    for module in modules.values():
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, ReadoutScale):
                del module._forward_pre_hooks[key]
    for name, scale in scales.items():
        modules[name].register_forward_pre_hook(ReadoutScale(scale))


