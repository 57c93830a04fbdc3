"""mutransfer: hyperparameter transfer (muP) for PyTorch.

Three verbs: :func:`parametrize` a model for muP, :func:`sweep` a small proxy with Optuna, and
:func:`transfer` the optimum to the target width (:func:`train_target` trains it with the plan);
:func:`coord_check` and :func:`validate` measure that it works. Heavy optional parts (optuna, matplotlib) are imported inside the functions that
need them, so ``import mutransfer`` costs little more than ``import torch``.

    >>> import mutransfer
    >>> plan = mutransfer.parametrize(mutransfer.zoo.mlp, width=256, base_width=64)

Several functions share their module's name (``mutransfer.sweep`` is the function; its module is
reached with ``from mutransfer.sweep import ...`` or ``importlib.import_module``).
"""
from __future__ import annotations

__version__ = "0.1.0"

# Every submodule is imported here, before the functions are bound: importing a submodule sets a
# package attribute of the same name, which must not hide the same-named function afterwards.
from . import (config, coord_check, data, landscape, laws, locks, muon, objective,  # noqa: F401
               optim, parametrize, plots, qkclip, recipe, report, roles, scaling, storage,
               sweep, sweep_reports, target, train, transfer, transfer_plan, trials, usage,
               validate, verdict, zoo)
from .config import ExperimentConfig, load_config
from .coord_check import coord_check
from .muon import Muon, newton_schulz
from .parametrize import Plan, parametrize
from .plots import plot_coord_check, plot_lr_landscape, plot_training, plot_transfer
from .qkclip import QKClip, QKPair
from .report import write_report
from .roles import ParamInfo, Role, infer_roles
from .scaling import Constants, attention_scale, multipliers, muon_alpha, spectral_sigma
from .sweep import sweep
from .target import train_target
from .train import TrainResult, train
from .transfer import transfer
from .transfer_plan import TransferPlan
from .usage import trace_usage
from .verdict import coord_slopes, coord_verdict
from .validate import validate

__all__ = [
    "Constants", "ExperimentConfig", "Muon", "ParamInfo", "Plan", "QKClip", "QKPair", "Role",
    "TrainResult", "TransferPlan",
    "__version__", "attention_scale", "coord_check", "coord_slopes", "coord_verdict", "data",
    "infer_roles", "load_config", "multipliers", "muon_alpha", "newton_schulz", "parametrize",
    "plot_coord_check", "plot_lr_landscape", "plot_training", "plot_transfer", "spectral_sigma",
    "sweep", "trace_usage", "train", "train_target", "transfer", "validate", "write_report", "zoo",
]
