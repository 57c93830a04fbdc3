"""mutransfer: hyperparameter transfer (muP) for PyTorch.

Three verbs: :func:`parametrize` a model for muP, :func:`sweep` a small proxy with Optuna, and
:func:`transfer` the optimum to the target width (:func:`train_target` trains it with the plan;
:func:`pipeline` runs the three in one call);
:func:`coord_check` and :func:`validate` measure that it works. Heavy optional parts (optuna,
matplotlib, transformers) are imported inside the functions that need them, so
``import mutransfer`` costs little more than ``import torch``.

    >>> import mutransfer
    >>> plan = mutransfer.parametrize(mutransfer.zoo.mlp, width=256, base_width=64)

The package follows the user's path, one subpackage a stage; each may import only the ones
before it (``tests/test_layout.py`` keeps it so):

| subpackage | holds |
|---|---|
| :mod:`mutransfer.optim` | Muon, Newton-Schulz, spectral decay, QK-Clip (no muP inside) |
| :mod:`mutransfer.core` | scaling rules, roles, constants, :func:`parametrize`, the Plan and its param groups |
| :mod:`mutransfer.models` | the zoo (GPT, MLP, CNN) and transformers families |
| :mod:`mutransfer.training` | data, the training loop (DDP/FSDP2 under torchrun, compile, checkpoints that resume), the teacher task |
| :mod:`mutransfer.runs` | the experiment config and the trial that every later stage repeats |
| :mod:`mutransfer.tuning` | the Optuna sweep around the trial, its storage, workers and resume |
| :mod:`mutransfer.projection` | landscape and law fits, :func:`transfer`, :class:`TransferPlan`, :func:`train_target` |
| :mod:`mutransfer.validation` | coordinate check, validate, compare, exponents, plots, reports |
| :mod:`mutransfer.cli`, ``experiments``, ``bench`` | the command line, scripted experiments, benchmarks |

The nouns, one meaning each:

| noun | meaning |
|---|---|
| base | the model at ``base_width`` (and ``base_depth``) where muP equals the user's standard parametrization: every multiplier is 1 |
| proxy | the small model that is swept: the config's ``[sweep] width`` (and proxy depth) |
| target | the large model the result is carried to: ``[model] width``, usually a longer budget and larger batch |
| role | what a parameter is to width scaling (:class:`Role`: input, hidden, output, vector, fixed), from its module or its traced usage |
| usage | how one traced forward consumes a parameter: a :class:`~mutransfer.core.Use` per op (matmul, lookup, add); a module's slot for it is a ``ModuleSlot`` |
| plan | :class:`Plan`: one model parametrized for muP, with each parameter's role and multipliers; builds the optimizer's param groups |
| transfer plan | :class:`TransferPlan`: what :func:`transfer` projects from the proxy's study to the target (lr, batch, constants, weight decay, with intervals) |
| trial | one training run of the config at a width with one set of knobs (:func:`mutransfer.runs.run_trial`); in a sweep, one Optuna trial |
| study | the Optuna study holding a sweep's trials in its storage (SQLite, journal file or PostgreSQL) |

Each subpackage re-exports its public names from private modules, so no public function shares
its name with a module (``mutransfer.sweep`` is the function). ``mutransfer.zoo``,
``mutransfer.hf`` and ``mutransfer.data`` are the public modules of ``models`` and ``training``
under their short names, importable as such (``from mutransfer.hf import family``).
"""
from __future__ import annotations

import sys

from mutransfer._version import __version__
from mutransfer.core import (Constants, ParamInfo, Plan, Role, RoleWarning, attention_scale, infer_roles,
                             multipliers, muon_alpha, parametrize, spectral_sigma, trace_usage)
from mutransfer.models import hf, zoo
from mutransfer.optim import Muon, QKClip, QKPair, newton_schulz
from mutransfer.projection import PipelineResult, TransferPlan, pipeline, train_target, transfer
from mutransfer.training import TrainResult, data, train
from mutransfer.runs import ExperimentConfig, load_config
from mutransfer.tuning import sweep
from mutransfer.validation import (coord_check, coord_slopes, coord_verdict, plot_coord_check,
                                   plot_lr_landscape, plot_training, plot_transfer, validate,
                                   write_report)

# The public modules under their short names: configs and stored studies say "mutransfer.zoo:gpt".
sys.modules.update({f"{__name__}.zoo": zoo, f"{__name__}.hf": hf, f"{__name__}.data": data})

__all__ = [
    "Constants", "ExperimentConfig", "Muon", "ParamInfo", "PipelineResult", "Plan", "QKClip", "QKPair", "Role",
    "RoleWarning", "TrainResult", "TransferPlan",
    "__version__", "attention_scale", "coord_check", "coord_slopes", "coord_verdict", "data",
    "hf", "infer_roles", "load_config", "multipliers", "muon_alpha", "newton_schulz", "parametrize", "pipeline",
    "plot_coord_check", "plot_lr_landscape", "plot_training", "plot_transfer", "spectral_sigma",
    "sweep", "trace_usage", "train", "train_target", "transfer", "validate", "write_report", "zoo",
]
