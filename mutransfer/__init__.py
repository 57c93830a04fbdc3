"""mutransfer: hyperparameter transfer (muP) for PyTorch.

Three verbs: ``parametrize`` a model for muP, ``sweep`` a small proxy with Optuna, and
``transfer`` the optimum to the target width. Heavy parts (optuna, matplotlib) are imported
lazily, so ``import mutransfer`` stays fast.

    >>> import mutransfer
    >>> plan = mutransfer.parametrize(mutransfer.zoo.mlp, width=256, base_width=64)
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (resolved on first access)
_EXPORTS = {
    "Role": "roles",
    "ParamInfo": "roles",
    "infer_roles": "roles",
    "attention_scale": "scaling",
    "multipliers": "scaling",
    "spectral_sigma": "scaling",
    "muon_alpha": "scaling",
    "parametrize": "parametrize",
    "Plan": "parametrize",
    "Muon": "muon",
    "newton_schulz": "muon",
    "train": "train",
    "TrainResult": "train",
    "coord_check": "coord_check",
    "coord_slopes": "coord_check",
    "coord_verdict": "coord_check",
    "plot_coord_check": "plots",
    "sweep": "sweep",
    "load_config": "config",
    "transfer": "transfer",
    "TransferPlan": "transfer",
    "validate": "validate",
    "write_report": "report",
}
_SUBMODULES = ("data", "zoo", "bench")

# Core names bound eagerly: importing a submodule sets a package attribute of the same name
# (mutransfer.parametrize the module), which would otherwise hide the function.
from .parametrize import Plan, parametrize  # noqa: E402
from .roles import ParamInfo, Role, infer_roles  # noqa: E402
from .scaling import attention_scale, multipliers, muon_alpha, spectral_sigma  # noqa: E402

__all__ = sorted(_EXPORTS) + list(_SUBMODULES) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        value = globals()[name] = getattr(module, name)  # beats the same-named submodule
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'mutransfer' has no attribute {name!r}")


def __dir__():
    return __all__
